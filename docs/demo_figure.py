"""The figure of the README and the docs' front page: a run's reconstructions beside its latent traversals.

    python docs/demo_figure.py runs/demo            # writes docs/demo.png from the run of `make demo`

The two panels are the run folder's own ``figures/reconstructions.png`` and ``figures/traversals.png``, side by side
and scaled down, so the committed PNG stays small.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run folder (e.g. runs/demo)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "demo.png"))
    args = parser.parse_args(argv)
    run = Path(args.run)
    panels = [run / "figures" / name for name in ("reconstructions.png", "traversals.png")]
    missing = [str(p) for p in panels if not p.exists()]
    if missing:
        parser.error(f"{', '.join(missing)} not found: train the demo first (make demo)")
    metrics = json.loads((run / "metrics.json").read_text())
    settings = json.loads((run / "config.json").read_text())
    images = [plt.imread(p) for p in panels]
    ratios = [image.shape[1] / image.shape[0] for image in images]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.4), gridspec_kw={"width_ratios": ratios})
    for ax, image in zip(axes, images):
        ax.imshow(image)
        ax.axis("off")
    mig = metrics.get("mig", {}).get("mig") if isinstance(metrics.get("mig"), dict) else metrics.get("mig")
    fig.suptitle(f"{settings['model']} on quick dSprites, {settings['train']['epochs']} epochs on 2 CPU cores"
                 + (f": MIG {mig:.2f}" if mig is not None else ""), fontsize=11)  # fmt: skip
    fig.tight_layout()
    out = Path(args.out)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    print(out)
    return out


if __name__ == "__main__":
    main()
