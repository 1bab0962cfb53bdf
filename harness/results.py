"""The results store: one flat JSON object per case in `results.jsonl`, and its documented schema.

This module is the ONE place where the fields of a result row are documented (`SCHEMA`). Rows
are appended as soon as a case ends (a crash later loses nothing), read back as a pandas
DataFrame, and written as CSV and parquet next to the JSONL file.

Run folder layout (written by harness.runner):
    run.json          which suite (name, fingerprint, cases) the folder belongs to
    results.jsonl     one row per finished case; a case run again later appends a newer row
    timeline.jsonl    sidecar: per case and repeat, the stage spans and the NVML memory samples
    results.csv       written at the end of a run (list fields as JSON text)
    results.parquet   written at the end of a run (list fields as lists)
    frames/           lossless frames (.npy) of reference cases, for quality metrics
    logs/             each worker process's stdout/stderr
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from wan_runtime.errors import ConfigError
from wan_runtime.observer import STAGES

if TYPE_CHECKING:  # pandas is only needed to read results back, not to produce them
    import pandas as pd

RESULTS_FILE = "results.jsonl"
TIMELINE_FILE = "timeline.jsonl"
MANIFEST_FILE = "run.json"
CSV_FILE = "results.csv"
PARQUET_FILE = "results.parquet"

STATUSES = ("ok", "oom", "error")
EXPERTS = ("high", "low")
# Stages timed per generation (load is timed once per process and reported as load_ms).
GENERATE_STAGES = tuple(s for s in STAGES if s != "load")


@dataclass(frozen=True)
class FieldDoc:
    """One documented result field. `<stage>`, `<expert>`, `<param>` and `<package>` are placeholders."""

    name: str
    kind: str  # str | int | float | bool | list[float] | list[int] | any
    unit: str
    doc: str
    metric: bool = False  # numeric and comparable between runs (what gates may name)


SCHEMA: tuple[FieldDoc, ...] = (
    # --- identity
    FieldDoc("suite", "str", "", "suite name"),
    FieldDoc("case_id", "str", "", "case identity: the parameters that vary in the suite, `k=v` joined by commas"),
    FieldDoc("group", "str", "", "process group: cases sharing a loaded model (same plan, attention, weights)"),
    FieldDoc("<param>", "any", "", "every case parameter (harness.params: request, refine.*, memory-plan fields, "
             "attention, image), with the value the case ran with"),
    FieldDoc("preset", "str", "", "model preset (tiny, a14b)"),
    FieldDoc("weights", "str", "", "weights source: `synthetic` or the checkpoint folder"),
    FieldDoc("weights_synthetic", "bool", "", "true when the weights are seeded random values"),
    FieldDoc("device", "str", "", "torch device the pipeline ran on"),
    FieldDoc("timing", "str", "", "`full` (every step run) or `sampled` (k steps per expert run, rest projected)"),
    FieldDoc("repeats", "int", "", "measured repeats of the case"),
    FieldDoc("warmup", "int", "", "unmeasured warmup generations before the repeats"),
    FieldDoc("status", "str", "", "ok | oom | error"),
    FieldDoc("error", "str", "", "the error message (null when ok)"),
    FieldDoc("failed_stage", "str", "", "stage the case died in (null when ok)"),
    FieldDoc("started_at", "str", "UTC", "ISO time the case started"),
    FieldDoc("finished_at", "str", "UTC", "ISO time the case ended"),
    FieldDoc("effective.experts", "str", "", "how the experts really ran on this device: `swap` or `resident` "
             "(on a CPU swapping is moot: all memory is host memory, so every plan runs `resident` or streamed)"),
    FieldDoc("effective.dit_blocks", "str", "", "how the active expert's blocks really ran: `resident` or `stream`"),
    FieldDoc("effective.host_memory", "str", "", "how parked expert weights were really held: `pinned`, `pageable` "
             "(always on a CPU: pinning exists to feed a GPU), or null when no expert was parked in host memory"),
    FieldDoc("effective.text_encoder", "str", "", "where the text encoder really ran: the plan's value on a GPU, "
             "`cpu` on a CPU (there `gpu` and `offload_after` are the same thing)"),
    # --- what was produced
    FieldDoc("out_width", "int", "px", "width of the returned frames"),
    FieldDoc("out_height", "int", "px", "height of the returned frames"),
    FieldDoc("out_frames", "int", "", "number of returned frames"),
    FieldDoc("tokens", "int", "", "DiT sequence length (latent frames x latent h/2 x latent w/2)"),
    FieldDoc("seed_used", "int", "", "seed the generation used"),
    FieldDoc("steps_high", "int", "", "scheduled steps on the high-noise expert"),
    FieldDoc("steps_low", "int", "", "scheduled steps on the low-noise expert"),
    FieldDoc("valid_video", "bool", "", "false when steps were skipped (sampled timing)"),
    # --- time
    FieldDoc("load_ms", "float", "ms", "loading the pipeline, once per process group (not part of total_ms)", True),
    FieldDoc("stage_ms.<stage>", "float", "ms", "median over measured repeats of the stage's synchronized wall "
             "clock; under sampled timing the denoise stages are projected (see projected)", True),
    FieldDoc("repeats_ms.<stage>", "list[float]", "ms", "the per-repeat values behind stage_ms.<stage>"),
    FieldDoc("repeats_ms.total", "list[float]", "ms", "the per-repeat values behind total_ms"),
    FieldDoc("stage_gpu_ms.<stage>", "float", "ms", "median of the stage's CUDA-event time on the current stream "
             "(null without CUDA); differs from stage_ms where host copies or other streams are involved", True),
    FieldDoc("step_ms.<expert>", "float", "ms", "median time of one measured denoising step (both CFG forwards "
             "and the solver) on that expert", True),
    FieldDoc("steps_measured.<expert>", "int", "", "how many step times went into step_ms.<expert>"),
    FieldDoc("total_ms", "float", "ms", "median over repeats of one generation, synchronized wall clock "
             "(projected under sampled timing)", True),
    FieldDoc("projected", "bool", "", "true when denoise times are projected from sampled steps: each expert's "
             "stage time = measured stage wall clock + skipped steps x mean measured step time"),
    FieldDoc("sampled_steps.<expert>", "list[int]", "", "schedule indices executed under sampled timing "
             "(the first `sampled.warmup_steps` of each expert are not counted in step_ms)"),
    # --- memory
    FieldDoc("peak_nvml_mib", "float", "MiB", "NVML peak of this process's GPU memory (CUDA context included) "
             "over the measured repeats, sampled every ~10 ms", True),
    FieldDoc("peak_nvml_device_mib", "float", "MiB", "NVML peak of the whole device's used memory "
             "(all processes) over the measured repeats", True),
    FieldDoc("peak_allocated_mib", "float", "MiB", "torch.cuda.max_memory_allocated over the measured repeats", True),
    FieldDoc("peak_reserved_mib", "float", "MiB", "torch.cuda.max_memory_reserved over the measured repeats", True),
    FieldDoc("stage_peak_allocated_mib.<stage>", "float", "MiB", "torch allocated peak within the stage "
             "(max over repeats; `load` is the load of the group)", True),
    FieldDoc("stage_peak_reserved_mib.<stage>", "float", "MiB", "torch reserved peak within the stage", True),
    FieldDoc("stage_peak_nvml_mib.<stage>", "float", "MiB", "NVML process peak within the stage", True),
    FieldDoc("memory_note", "str", "", "why memory fields are null (no CUDA, no NVML, process not visible)"),
    # --- quality
    FieldDoc("reference_case", "str", "", "case_id of the reference this case is compared with (itself for a "
             "reference case; null when the suite has no reference)"),
    FieldDoc("is_reference", "bool", "", "true for a reference case"),
    FieldDoc("psnr_db", "float", "dB", "mean over frames of per-frame PSNR against the reference (data range 1, "
             "100 dB for identical frames)", True),
    FieldDoc("ssim", "float", "", "mean over frames of per-frame SSIM (Gaussian 11x11, sigma 1.5)", True),
    FieldDoc("psnr_frames", "list[float]", "dB", "per-frame PSNR series"),
    FieldDoc("ssim_frames", "list[float]", "", "per-frame SSIM series"),
    FieldDoc("quality_resize", "str", "", "how frames were brought to the reference size (`none`, or the filter)"),
    FieldDoc("quality_note", "str", "", "why metrics are missing, or what they mean (synthetic weights)"),
    # --- the harness's own cost
    FieldDoc("probe_overhead_ms", "float", "ms", "the probe's cost per denoising step, measured in the worker on "
             "a fixed workload (see harness.overhead)"),
    FieldDoc("probe_overhead_pct", "float", "%", "probe_overhead_ms as a percentage of this case's mean step_ms"),
    FieldDoc("probe_overhead_method", "str", "", "how probe_overhead_ms was measured"),
    # --- environment
    FieldDoc("env.<package>", "str", "", "environment: python, torch, cuda, cudnn, gpu, gpu_memory_mib, driver, "
             "gpu_count, cpu, os, hostname, git_rev, git_dirty and package versions (diffusers, transformers, ...)"),
)

_PLACEHOLDERS = {
    "<stage>": "(" + "|".join(STAGES) + ")",
    "<expert>": "(" + "|".join(EXPERTS) + ")",
    "<package>": r"[A-Za-z0-9_.\-]+",
}


def _field_pattern(doc: FieldDoc, params: Iterable[str]) -> re.Pattern:
    if doc.name == "<param>":
        return re.compile("(" + "|".join(re.escape(p) for p in params) + ")$")
    pattern = re.escape(doc.name)
    for placeholder, regex in _PLACEHOLDERS.items():
        pattern = pattern.replace(re.escape(placeholder), regex)
    return re.compile(pattern + "$")


def undocumented_fields(row: dict[str, Any]) -> list[str]:
    """Keys of `row` that SCHEMA does not describe (a test keeps this empty)."""
    from harness.params import catalog

    patterns = [_field_pattern(doc, catalog()) for doc in SCHEMA]
    return [key for key in row if not any(p.match(key) for p in patterns)]


def metric_names() -> list[str]:
    """Every comparable numeric field name, placeholders expanded (what suite gates may name)."""
    names: list[str] = []
    for doc in SCHEMA:
        if not doc.metric:
            continue
        if "<stage>" in doc.name:
            names += [doc.name.replace("<stage>", s) for s in STAGES]
        elif "<expert>" in doc.name:
            names += [doc.name.replace("<expert>", e) for e in EXPERTS]
        else:
            names.append(doc.name)
    return names


def schema_markdown() -> str:
    """SCHEMA as a markdown table (for docs and `wanbench schema`)."""
    lines = ["| field | type | unit | meaning |", "|---|---|---|---|"]
    lines += [f"| `{d.name}` | {d.kind} | {d.unit} | {d.doc} |" for d in SCHEMA]
    return "\n".join(lines)


# ---------------------------------------------------------------- writing
def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one row to a JSONL file and force it to disk, so a crash right after loses nothing."""
    line = json.dumps(row, allow_nan=False, ensure_ascii=False)
    _drop_torn_tail(path)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _drop_torn_tail(path: Path) -> None:
    """Cut a half-written last line (a crash mid-write), so the next row starts on a line of its own."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "r+b") as fh:
        data = fh.read()
        if data.endswith(b"\n"):
            return
        fh.truncate(data.rfind(b"\n") + 1)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """All rows of a JSONL file in order; a torn last line (a crash mid-write) is skipped."""
    if not path.exists():
        return []
    rows = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines):  # only the last line can be half-written
                continue
            raise ConfigError(f"{path}: line {number} is not valid JSON ({exc}); the results file is damaged") from exc
    return rows


def latest_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last row of each case_id, in order of first appearance."""
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        latest[row["case_id"]] = row  # insertion order kept from the first row of the case
    return list(latest.values())


def replace_rows(path: Path, updated: dict[str, dict[str, Any]]) -> None:
    """Replace the latest row of each case in `updated`, atomically (write a copy, then rename)."""
    rows = read_rows(path)
    last_index = {row["case_id"]: i for i, row in enumerate(rows)}
    for case_id, row in updated.items():
        rows[last_index[case_id]] = row
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, allow_nan=False, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------- reading back
def results_path(run: str | Path) -> Path:
    """`results.jsonl` of a run folder, or the file itself."""
    run = Path(run)
    return run / RESULTS_FILE if run.is_dir() else run


def read_results(run: str | Path, latest_only: bool = True) -> "pd.DataFrame":
    """Results of a run folder (or a results.jsonl file) as a DataFrame, one row per case by default."""
    import pandas as pd

    path = results_path(run)
    if not path.exists():
        raise ConfigError(f"no results at {path}; run `wanbench run SUITE --out {path.parent}` first")
    rows = read_rows(path)
    if latest_only:
        rows = latest_rows(rows)
    return pd.DataFrame(rows)


def write_tables(run: str | Path) -> tuple[Path, Path]:
    """Write results.csv and results.parquet next to results.jsonl (latest row per case)."""
    df = read_results(run)
    folder = results_path(run).parent
    list_columns = [c for c in df.columns if df[c].map(lambda v: isinstance(v, list)).any()]
    csv_df = df.copy()
    for column in list_columns:  # CSV cells hold the lists as JSON text
        csv_df[column] = csv_df[column].map(lambda v: json.dumps(v) if isinstance(v, list) else v)
    csv_path, parquet_path = folder / CSV_FILE, folder / PARQUET_FILE
    csv_df.to_csv(csv_path, index=False)
    df.to_parquet(parquet_path, index=False, engine="pyarrow")
    return csv_path, parquet_path
