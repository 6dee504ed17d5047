"""The report page as a person sees it: headless Chromium (Debian's, from
scripts/install-chromium) opens the HTML file with every network address refused, and
its screenshot must be the page — not blank, and the timeline drawn: one band per worker
slot in the map wave's colour, the reduce wave after it, the failed attempt marked.

In CI (``CI`` set) a Chromium that cannot be installed fails the test; elsewhere it skips
with the reason.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from kubemr.report import analysis as an
from kubemr.report import render
from kubemr.report.cost import job_cost
from tests.support import built_binary
from tests.unit.test_report_render import PRICES, realistic_report

WIDTH, HEIGHT = 1280, 2400


def chromium() -> str:
    try:
        return built_binary("KUBEMR_CHROMIUM_BIN", "install-chromium")
    except subprocess.CalledProcessError as exc:
        tail = "\n".join((exc.stderr or "").strip().splitlines()[-5:])
        reason = f"scripts/install-chromium failed (exit {exc.returncode}): {tail}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        reason = f"scripts/install-chromium could not run: {exc}"
    if os.environ.get("CI"):
        pytest.fail(f"headless Chromium is needed in CI: {reason}")
    pytest.skip(f"no headless Chromium: {reason}")


def screenshot(browser: str, page: Path, out: Path, profile: Path) -> None:
    command = [
        browser,
        "--headless",
        "--no-sandbox",  # as root (CI) Chromium's sandbox will not start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        # Nothing on the network answers: a page that fetched anything would show gaps.
        "--proxy-server=127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={profile}",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={WIDTH},{HEIGHT}",
        f"--screenshot={out}",
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and out.exists(), (
        f"chromium exited {done.returncode}: {done.stderr[-2000:]}"
    )


def mask(pixels: np.ndarray, colour: str, tolerance: int = 3) -> np.ndarray:
    """Where the screenshot has ``colour`` (#rrggbb)."""
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
    return (np.abs(pixels.astype(np.int16) - rgb) <= tolerance).all(axis=2)


def bands(rows: np.ndarray) -> list[tuple[int, int]]:
    """Runs of consecutive true rows: (first, last)."""
    runs: list[tuple[int, int]] = []
    for y in np.flatnonzero(rows):
        if runs and y == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], int(y))
        else:
            runs.append((int(y), int(y)))
    return runs


def test_the_page_in_chromium_shows_the_timeline(tmp_path: Path) -> None:
    browser = chromium()
    report: dict[str, Any] = realistic_report()
    analysis = an.analyse(report)
    page = tmp_path / "report.html"
    page.write_text(
        render.render_html(
            report, analysis, job_cost(report, PRICES), render.chart_svgs(report, analysis)
        )
    )
    shot = tmp_path / "shot.png"
    screenshot(browser, page, shot, tmp_path / "profile")

    image = Image.open(shot).convert("RGB")
    assert image.size == (WIDTH, HEIGHT)
    pixels = np.asarray(image)
    # Not blank: a good part of the page is not background, in many colours.
    ink = (pixels < 245).any(axis=2)
    assert ink.mean() > 0.03, f"only {ink.mean():.1%} of the screenshot is not white"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50

    # The timeline is the first chart: its bars are the first wide runs of the map
    # colour (the legend's and the table's swatches are a few pixels wide).
    maps = mask(pixels, render.wave_colour(0))
    wide = maps.sum(axis=1) >= 60
    assert wide.any(), "no bar in the map wave's colour"
    top = int(np.flatnonzero(wide)[0])
    assert top < HEIGHT // 2, f"the timeline starts at y={top}, below the page's first half"
    slots = [b for b in bands(wide[top : top + 400]) if b[1] - b[0] >= 8]
    assert len(slots) == analysis.timeline.rows == 4, f"slot bands: {slots}"
    bottom = top + slots[-1][1] + 1
    region = pixels[top:bottom]

    # Within the bands: the reduce wave of step 0 starts right of where its maps end...
    map_x = np.flatnonzero(mask(region, render.wave_colour(0)).any(axis=0))
    reduce_x = np.flatnonzero(mask(region, render.wave_colour(1)).any(axis=0))
    assert reduce_x.size > 0, "no reduce bar in the timeline"
    assert map_x.max() < reduce_x.min(), (map_x.max(), reduce_x.min())
    # ...step 1 after it, and the failed attempt's red edge and cross are drawn.
    step1_x = np.flatnonzero(mask(region, render.wave_colour(2)).any(axis=0))
    assert step1_x.size > 0 and step1_x.min() > reduce_x.min()
    assert mask(region, render.FAILED_COLOUR, tolerance=24).sum() > 20
