"""Headless Chromium (Debian's ``chromium`` and ``chromedriver``) for looking at built pages as a reader would.

Used by ``docs/screenshots.py`` and by the tests that open ``report.html`` and the built docs. The flags keep
Chromium off the network (the pages must not need one) and let it run as root in a container.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run", "--hide-scrollbars",
)  # fmt: skip


def missing() -> str | None:
    """Why Chromium cannot be driven here (``None`` when it can): the Debian packages to install."""
    absent = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists() and not shutil.which(Path(p).name)]
    if absent:
        return f"{' and '.join(absent)} not found: apt-get install chromium chromium-driver"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[dev]'"
    return None


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 1600) -> Iterator:
    """A Selenium driver of headless Chromium with a throw-away profile, quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or CHROMIUM
    with tempfile.TemporaryDirectory() as profile:
        for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or CHROMEDRIVER), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def open_page(driver, path: Path, settle: float = 20.0) -> None:
    """Load a local page, then wait (up to ``settle`` seconds) for MathJax to finish typesetting if the page uses it."""
    driver.get(Path(path).resolve().as_uri())
    driver.set_script_timeout(settle)
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "if (typeof MathJax === 'undefined' || !MathJax.startup || !MathJax.startup.promise) { done(false); }"
        "else { MathJax.startup.promise.then(() => done(true), () => done(false)); }"
    )


def image_states(driver) -> list[tuple[str, bool]]:
    """Every ``<img>`` of the page: its source (data URIs shortened) and whether it decoded to a picture."""
    rows = driver.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src') || '', i.complete && i.naturalWidth > 0])"
    )
    return [(src[:40] + "..." if src.startswith("data:") else src, ok) for src, ok in rows]


def typeset_formulas(driver) -> int:
    """How many formulas MathJax has rendered on the page (0 when it did not run)."""
    return driver.execute_script("return document.querySelectorAll('mjx-container').length")


def screenshot(driver, path: Path, full_page: bool = True) -> Path:
    """Save the page as a PNG; ``full_page`` grows the window to the page's height (capped) first."""
    if full_page:
        height = driver.execute_script("return Math.min(document.documentElement.scrollHeight, 6000)")
        driver.set_window_size(driver.get_window_size()["width"], max(height, 600))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    return path
