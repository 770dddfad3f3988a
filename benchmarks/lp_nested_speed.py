"""What the Lp-nested ISA prior costs next to a standard Normal: the distribution alone, then one SVI step.

Part 1 times, side by side, the 20-D ISA layout of the paper's dSprites runs
(``LpNestedSymmetric.isa(2.1, [2.2] * 5, [4] * 5, scale=2.0)``) against ``Normal(0, I).to_event(1)`` over 20
coordinates, at one batch size:

* ``log_prob`` forward;
* ``log_prob`` plus backward to the codes ``z`` and to the exponents (which require grad, as learned exponents do;
  the Normal's loc/scale require grad instead, so both sides build the same kind of graph);
* ``sample((batch,))``.

Part 2 times one full training step, ``Trace_ELBO().differentiable_loss(model, guide, x) / B``, ``backward()`` and
one Adam step (the step :func:`~untwine.inference.train.fit` takes), for ``build_model("isa-vae")`` against
``build_model("vae", latent_dim=20)`` (same encoder/decoder, only the prior differs) on random binary 64x64 images.

    python benchmarks/lp_nested_speed.py                              # CPU, batch 2048 (prior) and 256 (SVI step)
    python benchmarks/lp_nested_speed.py --svi-batches 256 2048       # also the paper's training batch
    python benchmarks/lp_nested_speed.py --device cuda --svi-batches 256 2048
    python benchmarks/lp_nested_speed.py --threads 1

Part 1 uses ``torch.utils.benchmark.Timer.blocked_autorange`` (which synchronises CUDA) and reports the median
microseconds per call. On a CPU shared with other processes use ``--threads 1``: with more intra-op threads than
free cores, every parallel op waits for a descheduled thread and small ops take milliseconds instead of
microseconds (both columns inflate, the ratios become meaningless). Not run by CI. Every number comes from one run
of this script.
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyro
import pyro.distributions as dist
import torch
from common import setup_device
from pyro.infer import Trace_ELBO
from torch.utils.benchmark import Timer

from untwine.distributions import LpNestedSymmetric
from untwine.pyro_models import build_model


def median_us(fn, min_run_time: float) -> float:
    """Median microseconds per call of ``fn()`` (after three warm-up calls)."""
    for _ in range(3):
        fn()
    measurement = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()).blocked_autorange(
        min_run_time=min_run_time
    )
    return measurement.median * 1e6


def prior_rows(batch: int, device: torch.device, min_run_time: float) -> list[tuple[str, float, float]]:
    """(operation, ISA µs, Normal µs) for construction, log_prob, log_prob + backward and sample."""
    d = 20
    exps = torch.tensor([2.2] * 5, device=device, requires_grad=True)
    loc = torch.zeros(d, device=device, requires_grad=True)
    scale = torch.ones(d, device=device, requires_grad=True)

    def make_isa() -> LpNestedSymmetric:
        return LpNestedSymmetric.isa(2.1, exps, [4] * 5, scale=2.0)

    def make_normal() -> dist.TorchDistribution:
        return dist.Normal(loc, scale).to_event(1)

    # The operations below reuse one instance each, as a prior module's forward() does within a step; building
    # the instance is its own row (``isa()`` parses a new tree each time; LpNestedPrior keeps its tree).
    isa, normal = make_isa(), make_normal()
    z = torch.randn(batch, d, device=device)

    def forward(d):
        def run():
            with torch.no_grad():
                d.log_prob(z)

        return run

    def backward(d, leaves):
        def run():
            zz = z.detach().requires_grad_(True)
            torch.autograd.grad(d.log_prob(zz).sum(), [zz, *leaves])

        return run

    def sample(d):
        return lambda: d.sample((batch,))

    rows = []
    for label, isa_fn, normal_fn in (
        ("construct (LpNestedSymmetric.isa)", make_isa, make_normal),
        ("log_prob", forward(isa), forward(normal)),
        ("log_prob + backward (z, params)", backward(isa, [exps]), backward(normal, [loc, scale])),
        (f"sample(({batch},))", sample(isa), sample(normal)),
    ):
        rows.append((label, median_us(isa_fn, min_run_time), median_us(normal_fn, min_run_time)))
    return rows


def svi_stepper(model, batch: int, device: torch.device):
    """A closure taking one ``differentiable_loss / B`` + ``backward`` + Adam step on random binary images."""
    model = model.to(device)
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)
    elbo = Trace_ELBO()
    x = (torch.rand(batch, 1, 64, 64, device=device) < 0.2).float()

    def step():
        optim.zero_grad(set_to_none=True)
        loss = elbo.differentiable_loss(model.model, model.guide, x) / batch
        loss.backward()
        optim.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step


def svi_row(batch: int, device: torch.device, rounds: int, warmup: int) -> tuple[float, float, float, float, float]:
    """Median ms per step of isa-vae and vae, and the median, min and max of their per-round ratio.

    The two models step alternately (A B, then B A, ...), so load from other processes on a shared machine hits
    both alike; the first ``warmup`` steps of each (allocator, oneDNN/cuBLAS set-up) are not timed.
    """
    pyro.clear_param_store()  # both models register under their own names; stale entries would be reused
    torch.manual_seed(0)
    steps = {"isa": svi_stepper(build_model("isa-vae", image_shape=(1, 64, 64)), batch, device)}
    torch.manual_seed(0)
    steps["vae"] = svi_stepper(build_model("vae", image_shape=(1, 64, 64), latent_dim=20), batch, device)
    for _ in range(warmup):
        for step in steps.values():
            step()
    times = {"isa": [], "vae": []}
    for r in range(rounds):
        for name in ("isa", "vae") if r % 2 == 0 else ("vae", "isa"):
            t0 = time.perf_counter()
            steps[name]()
            times[name].append((time.perf_counter() - t0) * 1e3)
    ratios = sorted(a / b for a, b in zip(times["isa"], times["vae"]))
    return (
        statistics.median(times["isa"]),
        statistics.median(times["vae"]),
        statistics.median(ratios),
        ratios[0],
        ratios[-1],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--batch", type=int, default=2048, help="codes per call in part 1")
    parser.add_argument("--svi-batches", type=int, nargs="*", default=[256], help="images per SVI step (part 2)")
    parser.add_argument("--svi-rounds", type=int, default=10, help="timed steps of each model per batch size")
    parser.add_argument("--svi-warmup", type=int, default=2, help="untimed steps of each model first")
    parser.add_argument("--min-run-time", type=float, default=1.0, help="seconds per part-1 measurement")
    args = parser.parse_args()

    device = setup_device(parser, args)
    torch.manual_seed(0)
    print()

    t0 = time.perf_counter()
    print(f"Part 1: prior over 20 coordinates, batch {args.batch} (ISA: 5 subspaces of 4, p0 2.1, pk 2.2, s 2)")
    header = f"{'operation':<34} {'ISA (µs)':>10} {'Normal (µs)':>12} {'ISA/Normal':>11}"
    print(header)
    print("-" * len(header))
    for label, t_isa, t_normal in prior_rows(args.batch, device, args.min_run_time):
        print(f"{label:<34} {t_isa:10.1f} {t_normal:12.1f} {t_isa / t_normal:11.2f}", flush=True)

    print("\nPart 2: one SVI step (Trace_ELBO loss / B, backward, Adam), random binary 1x64x64 images, 20 latents,")
    print(f"{args.svi_rounds} alternating rounds after {args.svi_warmup} warm-up steps each")
    header = f"{'batch':>6} {'isa-vae (ms)':>13} {'vae (ms)':>10} {'isa/vae':>8} {'(min-max)':>12}"
    print(header)
    print("-" * len(header))
    for batch in args.svi_batches:
        t_isa, t_vae, ratio, lo, hi = svi_row(batch, device, args.svi_rounds, args.svi_warmup)
        print(f"{batch:6d} {t_isa:13.1f} {t_vae:10.1f} {ratio:8.3f} {f'({lo:.2f}-{hi:.2f})':>12}", flush=True)
    print("\nisa/vae: median over rounds of the ratio of the two step times of a round (same networks; only the")
    print("prior differs, so ratio - 1 is what the Lp-nested prior adds to a training step).")
    print(f"total wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
