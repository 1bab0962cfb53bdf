"""`make run`, the main job, read with `make -n` (nothing runs): the smoke suite afresh, its report, the demo beside it.

The target itself is timed by hand (README); its pieces are tested where they live: the smoke run
(test_harness_smoke), the report and the summary it prints (test_report_smoke), wan-generate (test_cli).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def test_make_run_sets_up_runs_smoke_afresh_then_reports_with_the_demo_video_beside_it(tmp_path):
    out = tmp_path / "reports"
    done = subprocess.run(["make", "-n", "run", f"OUT={out}", "PY=python"], cwd=ROOT, capture_output=True, text=True,
                          check=True)
    lines = done.stdout.splitlines()
    steps = ["pip install -q torch==", "pip install -q -e", f"rm -rf {out}/smoke", f"wanbench run smoke --out {out}/smoke",
             f"--save_file {out}/smoke/report/demo.mp4", f"wanbench report {out}/smoke",
             f"open {out}/smoke/report/report.html"]
    where = [next(i for i, line in enumerate(lines) if step in line) for step in steps]
    assert where == sorted(where), done.stdout
