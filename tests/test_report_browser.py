"""The report as a reader sees it: headless Chromium renders RUN_DIR/report/index.html, and
the screenshot must show every figure framed, drawn (colour inside each frame: data, not an
empty axis) and no frame without one. Skipped where Chromium is not installed
(`apt-get install chromium`; .ci/run installs it)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from test_analysis import make_run  # tests/ is on sys.path (no package)

from sweep.report.build import build_report

CHROMIUM = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed "
                                "(apt-get install chromium): the report is not rendered")
FRAME = 221  # the images' 1 px #ddd border in the report's CSS


def screenshot(url: str, out: Path, *, width: int = 1300, height: int = 9000,
               wait_ms: int = 0) -> Path:
    """A headless Chromium screenshot of ``url`` (no network, no profile, no GPU)."""
    with tempfile.TemporaryDirectory() as profile:
        args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--hide-scrollbars",
                f"--user-data-dir={profile}", f"--screenshot={out}",
                f"--window-size={width},{height}"]
        if wait_ms:
            args.append(f"--virtual-time-budget={wait_ms}")
        subprocess.run([*args, url], check=True, capture_output=True, timeout=180)
    return out


def frames(rgb: np.ndarray, *, min_run: int = 300) -> list[tuple[int, int, int, int]]:
    """Boxes (top, bottom, left, right) drawn with the figures' #ddd border."""
    edge = np.all(np.abs(rgb - FRAME) <= 2, axis=-1)
    lines = []
    for y in range(edge.shape[0]):
        row = np.flatnonzero(edge[y])
        if len(row) < min_run:
            continue
        breaks = np.flatnonzero(np.diff(row) > 1)
        runs = np.split(row, breaks + 1)
        longest = max(runs, key=len)
        if len(longest) >= min_run:
            lines.append((y, int(longest[0]), int(longest[-1])))
    # consecutive rows are one line; lines pair up as a frame's top and bottom border
    merged = [ln for i, ln in enumerate(lines) if i == 0 or ln[0] != lines[i - 1][0] + 1]
    return [(t[0], b[0], t[1], t[2]) for t, b in zip(merged[::2], merged[1::2], strict=False)]


@pytest.mark.parametrize("family", ["gaussian", "gmm"])
def test_report_renders_in_a_browser_with_every_figure_drawn(tmp_path, family):
    run = make_run(tmp_path, family=family, name=family)
    index = build_report(run)
    n_images = len(re.findall(r"<img src=\"data:image/png", index.read_text()))
    assert n_images == (5 if family == "gaussian" else 4)  # gmm: no theory section
    png = screenshot(index.resolve().as_uri(), tmp_path / "report.png")
    import matplotlib.image as mpimg

    rgb = (mpimg.imread(png)[..., :3] * 255).round().astype(int)
    boxes = frames(rgb)
    assert len(boxes) == n_images, f"{len(boxes)} framed figures on screen, {n_images} in the page"
    for top, bottom, left, right in boxes:
        assert bottom - top > 150, "a figure rendered as a sliver (broken image?)"
        inside = rgb[top + 2:bottom - 1, left + 2:right - 1]
        saturated = (inside.max(axis=-1) - inside.min(axis=-1)) > 60
        assert saturated.sum() > 300, f"frame at y={top} holds no coloured data: an empty panel"
    # nothing below the last figure but the config and versions text
    assert rgb[:boxes[0][0]].min() < 100  # the answer and tables above the figures
