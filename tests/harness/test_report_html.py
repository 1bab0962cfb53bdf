"""The HTML report opens in a real browser (Debian's headless Chromium) and shows its plots.

The test renders a copy of report.html with a small probe script appended (the report itself has
no script): after the page's load event, the probe writes, into the DOM, each image's decoded size
and whether its source is an embedded PNG. Chromium's --dump-dom prints that DOM, which the test
reads. An image that failed to decode has naturalWidth 0. `.ci/run` installs Chromium; without it
locally the test is skipped.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
from pathlib import Path

import pytest

from harness.report import build_report
from report_smoke_run import smoke_run_folder

CHROMIUM = Path("/usr/bin/chromium")
PROBE = """<script>
window.addEventListener("load", function () {
  var out = document.createElement("pre");
  out.id = "image-probe";
  out.textContent = JSON.stringify(Array.prototype.map.call(document.images, function (img) {
    return {alt: img.alt, complete: img.complete, width: img.naturalWidth, height: img.naturalHeight,
            embedded: img.src.indexOf("data:image/png;base64,") === 0};
  }));
  document.body.appendChild(out);
});
</script>"""

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it)")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """(report files, the DOM Chromium rendered from the probed copy of report.html)."""
    run = smoke_run_folder(tmp_path_factory)
    tmp = tmp_path_factory.mktemp("html")
    files = build_report([run], tmp / "report")
    probed = tmp / "probed.html"
    probed.write_text(files.html.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp / 'profile'}",
               "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return files, done.stdout


def test_every_plot_is_an_embedded_png_the_browser_decoded(rendered):
    files, dom = rendered
    probe = re.search(r'<pre id="image-probe">(.*?)</pre>', dom, re.S)
    assert probe, "the probe found no loaded page (no load event?)"
    images = json.loads(html.unescape(probe.group(1)))
    assert len(images) == len(files.pngs) == 4  # a CPU run has no memory timeline
    for image in images:
        assert image["embedded"] and image["complete"], image["alt"]
        assert image["width"] > 300 and image["height"] > 200, image  # decoded, at its drawn size


def test_the_rendered_page_holds_the_main_table_and_the_banner(rendered):
    _, dom = rendered
    table = re.search(r'<table id="table-memory_latency">(.*?)</table>', dom, re.S)
    assert table and table.group(1).count("<tr>") == 1 + 6  # heading + one row per smoke case
    assert "Synthetic weights (6 of 6 cases)" in dom
