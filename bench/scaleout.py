"""Scale-out checks that need a measurement, not a test: the same suite run several ways, compared.

compare RUN_DIR...   the first folder is the reference (the plain run): for every case, each run's status,
                     step_ms.high/low and total_ms with the ratio to the reference, the reference's own
                     spread over its repeats (the noise), and whether its deterministic fields (ids,
                     parameters, statuses, shapes, seeds, quality within 1e-5) are the reference's.
                     Exit 1 when a row differs or a case is missing.
cpu-ratio            the wall clock of the tiny smoke suite on the CPU, one worker at a time against two
                     side by side (`--gpus 0,1`, fake device list), alternated --rounds times; prints the
                     walls, the ratio and the conditions (cores, threads, load average).

GPU (one H200; the smoke suite on cuda, three ways, then the table; a few minutes):
    OUT=$OUT/scaleout; S="--set device=cuda"
    wanbench run smoke $S --out $OUT/plain && wanbench run smoke $S --gpus 0 --out $OUT/gpus0 &&
    wanbench run smoke $S --executor ray --out $OUT/ray && python bench/scaleout.py compare $OUT/plain $OUT/gpus0 $OUT/ray
CPU:
    OMP_NUM_THREADS=1 python bench/scaleout.py cpu-ratio --rounds 2 --work /tmp/scaleout-ratio
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.results import deterministic_fields, latest_rows, read_rows  # noqa: E402

TIMES = ("step_ms.high", "step_ms.low", "total_ms")


def _same(a: Any, b: Any) -> bool:
    """Equal, floats within 1e-5 relative (quality computed on a GPU in one run and on the CPU in another)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-9)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _spread(row: dict[str, Any]) -> str:
    """(max - min) / median of the row's per-repeat totals: how much its own repeats move."""
    totals = [t for t in row.get("repeats_ms.total") or [] if t is not None]
    if len(totals) < 2:
        return "-"
    return f"{(max(totals) - min(totals)) / statistics.median(totals):.1%}"


def compare(folders: list[Path]) -> int:
    """Print the table; 1 when a run's rows differ from the reference's."""
    runs = {folder.name: {r["case_id"]: r for r in latest_rows(read_rows(folder / "results.jsonl"))}
            for folder in folders}
    names = list(runs)
    reference = runs[names[0]]
    failed = False
    header = ["case", "spread"] + [f"{name}: {field}" for name in names for field in ("status", *TIMES)] + ["rows"]
    lines = [header]
    for case_id, ref in reference.items():
        cells = [case_id, _spread(ref)]
        verdicts = []
        for name in names:
            row = runs[name].get(case_id)
            if row is None:
                cells += ["missing", "-", "-", "-"]
                verdicts.append(f"{name}: missing")
                failed = True
                continue
            cells.append(row["status"])
            for field in TIMES:
                value, base = row.get(field), ref.get(field)
                ratio = f" ({value / base:.3f})" if value and base and name != names[0] else ""
                cells.append(f"{value:.2f}{ratio}" if isinstance(value, (int, float)) else "-")
            mine, theirs = deterministic_fields(row), deterministic_fields(ref)
            differ = sorted(k for k in set(mine) | set(theirs) if not _same(mine.get(k), theirs.get(k)))
            if differ:
                verdicts.append(f"{name}: {', '.join(differ)}")
                failed = True
        cells.append("same" if not verdicts else "DIFFER " + "; ".join(verdicts))
        lines.append(cells)
    extra = {name: sorted(set(rows) - set(reference)) for name, rows in runs.items() if set(rows) - set(reference)}
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip())
    print("(times in ms; in brackets the ratio to the first run; spread: (max - min) / median of the first run's "
          "per-repeat totals)")
    for name, cases in extra.items():
        print(f"{name} has cases the first run lacks: {', '.join(cases)}")
        failed = True
    print("rows: " + ("DIFFER" if failed else f"every run gives the rows of {names[0]}"))
    return 1 if failed else 0


def cpu_ratio(rounds: int, work: Path) -> int:
    """Time the tiny smoke suite plain and with two workers side by side, alternated; print the ratio."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    env.setdefault("OMP_NUM_THREADS", "1")
    walls: dict[str, list[float]] = {"1 worker": [], "2 workers (--gpus 0,1)": []}
    loads = []
    for round_ in range(rounds):
        for label, extra in (("1 worker", []), ("2 workers (--gpus 0,1)", ["--gpus", "0,1"])):
            out = work / f"{round_}-{len(extra)}"
            shutil.rmtree(out, ignore_errors=True)
            loads.append(os.getloadavg()[0])
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "harness.cli", "run", "smoke", "--out", str(out), *extra],
                           env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            walls[label].append(time.perf_counter() - started)
    from harness.suite import load_suite

    suite = load_suite("smoke")
    one, two = (statistics.median(w) for w in walls.values())
    for label, values in walls.items():
        print(f"{label}: " + ", ".join(f"{v:.1f} s" for v in values) + f" (median {statistics.median(values):.1f} s)")
    print(f"ratio 2 workers / 1 worker: {two / one:.2f} (speed-up {one / two:.2f}x)")
    print(f"conditions: smoke suite as shipped ({len(suite.cases)} cases, {len(suite.groups())} process groups, "
          f"{suite.spec.repeats} repeats + {suite.spec.warmup} warmup), tiny preset, CPU; "
          f"{os.cpu_count()} cores, OMP_NUM_THREADS={env['OMP_NUM_THREADS']} per worker; 1-minute load average "
          f"before each run {min(loads):.1f}-{max(loads):.1f}")
    return 0


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    c = sub.add_parser("compare", help="compare run folders of one suite with the first")
    c.add_argument("runs", nargs="+", type=Path)
    r = sub.add_parser("cpu-ratio", help="tiny smoke wall clock: 1 worker vs 2 side by side")
    r.add_argument("--rounds", type=int, default=2)
    r.add_argument("--work", type=Path, default=Path("/tmp/scaleout-ratio"))
    args = parser.parse_args()
    if args.what == "compare":
        return compare(args.runs)
    return cpu_ratio(args.rounds, args.work)


if __name__ == "__main__":
    sys.exit(main())
