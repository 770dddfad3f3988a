"""Look at the built docs as a reader does: screenshots of the index, an API page with math and a notebook page with
a figure, taken by headless Chromium, with a check that every formula was typeset and every image loaded.

    python docs/screenshots.py [docs/_build/html] [--out docs/_build/screenshots]

Exits non-zero (one line per problem) when a page is missing, shows no formula where it should, or has an image
that did not load. Run after ``make docs`` (``make docs-screenshots`` does both).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import browser

#: (screenshot name, page, formulas expected, figures expected)
PAGES = [
    ("index", "index.html", False, False),
    ("api-lp-nested", "api/generated/untwine.distributions.lp_nested.html", True, False),
    ("notebook-isa-vae", "notebooks/isa_vae.html", True, True),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", nargs="?", default=str(Path(__file__).parent / "_build" / "html"))
    parser.add_argument("--out", default=str(Path(__file__).parent / "_build" / "screenshots"))
    args = parser.parse_args(argv)
    why = browser.missing()
    if why:
        parser.error(why)
    html, out, problems = Path(args.html), Path(args.out), []
    with browser.chromium() as driver:
        for name, page, math, figures in PAGES:
            path = html / page
            if not path.exists():
                problems.append(f"{path} not found: build the docs first (make docs)")
                continue
            browser.open_page(driver, path)
            formulas, images = browser.typeset_formulas(driver), browser.image_states(driver)
            broken = [src for src, ok in images if not ok]
            if math and not formulas:
                problems.append(f"{page}: no formula typeset (is MathJax served from the build?)")
            if figures and not any(src.startswith("data:image/png") or src.endswith(".png") for src, _ in images):
                problems.append(f"{page}: no figure (were the notebooks executed?)")
            if broken:
                problems.append(f"{page}: {len(broken)} image(s) did not load: {', '.join(broken[:3])}")
            shot = browser.screenshot(driver, out / f"{name}.png")
            print(f"{shot}: {formulas} formulas, {len(images)} images, {len(broken)} broken")
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
