"""The results store: one flat JSON object per case in `results.jsonl`, and its documented schema.

This module is the ONE place where the fields of a result row are documented (`SCHEMA`). Rows
are appended as soon as a case ends (a crash later loses nothing), read back as a pandas
DataFrame, and written as CSV and parquet next to the JSONL file.

Run folder layout (written by harness.runner):
    run.json          which suite (name, fingerprint, cases) the folder belongs to
    run.lock          the run folder's lock, and run.holder.json, who holds it (harness.runlock)
    results.jsonl     one row per finished case; a case run again later appends a newer row
    results.jsonl.torn  torn last lines cut from results.jsonl (a crash or a copy cut them), kept
    timeline.jsonl    sidecar: per case and repeat, the stage spans and the NVML memory samples
    results.csv       written at the end of a run (list fields as JSON text)
    results.parquet   written at the end of a run (list fields as lists)
    frames/           lossless frames (.npy) of reference cases, for quality metrics
    logs/             each worker process's stdout/stderr
"""

from __future__ import annotations

import errno
import json
import math
import numbers
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from harness.atomic import write_atomic
from wan_runtime.errors import ConfigError, WanError
from wan_runtime.observer import STAGES

if TYPE_CHECKING:  # pandas is only needed to read results back, not to produce them
    import pandas as pd

RESULTS_FILE = "results.jsonl"
TIMELINE_FILE = "timeline.jsonl"
MANIFEST_FILE = "run.json"
CSV_FILE = "results.csv"
PARQUET_FILE = "results.parquet"

# Version of the row layout that SCHEMA documents; every row carries it as `schema_version`. Rows
# written before the field existed carry none and are read as version 1 (the same layout).
SCHEMA_VERSION = 1
READABLE_SCHEMA_VERSIONS = (1,)
REQUIRED_FIELDS = ("suite", "case_id", "status")  # a row without them is refused, not guessed at

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
    FieldDoc("schema_version", "int", "", "version of this row layout (readers refuse versions they do not "
             "know; rows without it predate the field and are read as version 1)"),
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
    FieldDoc("ranks", "int", "", "GPUs (torchrun ranks) the case ran on: its ParallelPlan's world size; rank 0 "
             "reports the row"),
    FieldDoc("status", "str", "", "ok | oom | error"),
    FieldDoc("error", "str", "", "the error message (null when ok); a row whose figures held a NaN or an "
             "infinity is an error naming them (those figures null, the finite ones kept)"),
    FieldDoc("traceback", "str", "", "the full Python traceback of the failure, as the worker printed it "
             "(null when ok, or when the worker process died: see its log)"),
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
    FieldDoc("peak_nvml_mib_devices", "list[float]", "MiB", "NVML process peak of each rank on its own GPU over "
             "the measured repeats, in rank order (one entry for a case of one rank; null entries where NVML "
             "measured nothing); peak_nvml_mib and the other memory fields are rank 0's"),
    FieldDoc("peak_nvml_mib_max", "float", "MiB", "the largest of peak_nvml_mib_devices: what one GPU must hold "
             "(null when a device was not measured)", True),
    FieldDoc("peak_nvml_mib_sum", "float", "MiB", "the sum of peak_nvml_mib_devices: what the case holds on all "
             "its GPUs together (null when a device was not measured)", True),
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
             "gpu_count, cpu, os, hostname, git_rev, git_dirty and package versions (diffusers, transformers, ...); "
             "cuda_visible_devices (the GPUs the worker was pinned to, null when not pinned), devices (every GPU "
             "of the host as NVML lists it: `index: name, MiB`) and interconnect (`nvidia-smi topo -m`; null "
             "without nvidia-smi)"),
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


# Fields a run measures (times, memory, the machine, when it ran): the rest of a row (case ids, parameters,
# statuses, output shapes, seeds, quality) is the same however and wherever a run was spread.
MEASURED_FIELDS = re.compile(r"^(env\.|stage_|repeats_ms\.|step_ms\.|total_ms$|load_ms$|peak_|probe_overhead|"
                             r"memory_note$|started_at$|finished_at$)")


def deterministic_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The row without its measured fields (MEASURED_FIELDS)."""
    return {key: value for key, value in row.items() if not MEASURED_FIELDS.match(key)}


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




# ---------------------------------------------------------------- writing
class NoSpaceLeft(WanError):
    """A write failed because the disk (or the quota) is full; what was written before is intact.

    `kept` (set by the runner) is the number of finished rows the run folder keeps.
    """

    def __init__(self, path: str | Path | None, cause: OSError, kept: int | None = None):
        kept_text = f"{kept} finished rows kept" if kept is not None else "rows written before are kept"
        super().__init__(f"no space left writing {path or 'the run folder'}; {kept_text}; free space and rerun")
        self.path = path
        self.cause = cause
        self.kept = kept


def is_no_space(exc: BaseException) -> bool:
    """True for the OSErrors of a full disk or quota."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class TornTail:
    """A torn last line cut from a JSONL file and kept aside."""

    path: Path
    line: int  # 1-based number the line had
    size: int  # bytes cut
    kept: Path  # where the cut bytes were appended

    def describe(self) -> str:
        """One line for the console."""
        return (f"{self.path}: line {self.line} was torn (a write cut by a crash or a copy; {self.size} bytes): "
                f"cut, and kept in {self.kept}")


def non_finite_fields(row: dict[str, Any]) -> list[str]:
    """`name=value` of every NaN or infinite number in a row (in lists too: `name[i]=value`)."""
    found = []
    for key, value in row.items():
        items = enumerate(value) if isinstance(value, (list, tuple)) else [(None, value)]
        for index, item in items:
            if _non_finite(item):
                found.append(f"{key}{'' if index is None else f'[{index}]'}={float(item)}")
    return found


def _non_finite(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) and not math.isfinite(value)


def guard_row(row: dict[str, Any]) -> dict[str, Any]:
    """The row with no NaN or infinity left: those become null and an `ok` row becomes an `error` naming them.

    A non-finite figure means the measurement (or a parameter) broke, so it is never stored as a result
    that gates and reports would trust; the finite figures stay for inspection and the next run retries.
    """
    bad = non_finite_fields(row)
    if not bad:
        return row

    def finite(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [None if _non_finite(v) else v for v in value]
        return None if _non_finite(value) else value

    out = {key: finite(value) for key, value in row.items()}
    reason = f"non-finite values in the result ({', '.join(bad)}); the case is not trusted as measured"
    if out.get("status") == "ok":
        out.update({"status": "error", "error": reason})
    else:
        out["error"] = f"{out.get('error') or ''}; {reason}".lstrip("; ")
    return out


def append_row(path: Path, row: dict[str, Any]) -> TornTail | None:
    """Append one row to a JSONL file and force it to disk, so a crash right after loses nothing.

    A torn last line is cut first (see `repair_tail`; returned so the caller can say so). A failed write
    is undone (the file is cut back to its old size), so a full disk never leaves half a row; it raises
    NoSpaceLeft when the disk or quota is full.
    """
    data = (json.dumps(guard_row(row), allow_nan=False, ensure_ascii=False) + "\n").encode("utf-8")
    try:
        torn = repair_tail(path)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        if is_no_space(exc):
            raise NoSpaceLeft(path, exc) from exc
        raise
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as exc:
            os.ftruncate(fd, size)  # no half row left behind
            if is_no_space(exc):
                raise NoSpaceLeft(path, exc) from exc
            raise
    finally:
        os.close(fd)
    return torn


def repair_tail(path: Path) -> TornTail | None:
    """Cut a torn last line (with or without its newline) and keep it in `<file>.torn`; None when intact.

    Only the last line can be torn (every append is forced to disk before the next): a last line that is
    not a JSON object is cut; a complete object that only lacks its newline gets one.
    """
    if not path.exists() or path.stat().st_size == 0:
        return None
    with open(path, "r+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        start = _last_line_start(fh, size)
        fh.seek(start)
        last = fh.read()
        if not last.strip():
            return None
        try:
            complete = isinstance(json.loads(last), dict)
        except ValueError:  # not JSON, or not UTF-8
            complete = False
        if complete:
            if not last.endswith(b"\n"):
                fh.write(b"\n")
            return None
        kept = path.with_name(path.name + ".torn")
        with open(kept, "ab") as aside:
            aside.write(last if last.endswith(b"\n") else last + b"\n")
            aside.flush()
            os.fsync(aside.fileno())
        number = _count_newlines(fh, start) + 1
        fh.truncate(start)
        fh.flush()
        os.fsync(fh.fileno())
    return TornTail(path, number, len(last), kept)


def _last_line_start(fh, size: int) -> int:
    """Byte offset of the last line of an open file of `size` bytes (read backwards from the end)."""
    fh.seek(max(0, size - 1))
    end = size - 1 if fh.read(1) == b"\n" else size  # the last line's own newline is part of it
    pos = end
    while pos > 0:
        step = min(1 << 16, pos)
        fh.seek(pos - step)
        found = fh.read(step).rfind(b"\n")
        if found >= 0:
            start = pos - step + found + 1
            break
        pos -= step
    else:
        start = 0
    return start


def _count_newlines(fh, limit: int) -> int:
    """Newlines in the first `limit` bytes of an open file."""
    fh.seek(0)
    count, read = 0, 0
    while read < limit:
        chunk = fh.read(min(1 << 20, limit - read))
        if not chunk:
            break
        count += chunk.count(b"\n")
        read += len(chunk)
    return count


def read_rows(path: Path) -> list[dict[str, Any]]:
    """All rows of a JSONL file in order; a torn last line (a crash mid-write) is skipped.

    Anything else that is not a result row is an error naming the line: a bad line before the last, a
    row of a schema version this reader does not know, a row without `suite`, `case_id` or a known `status`.
    """
    if not path.exists():
        return []
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}); it is not a results file") from None
    last = max((i for i, line in enumerate(lines, start=1) if line.strip()), default=0)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == last:  # only the last line can be half-written
                continue
            raise ConfigError(f"{path}: line {number} is not valid JSON ({exc}); the results file is damaged") from exc
        rows.append(check_row(row, f"{path}: line {number}"))
    return rows


def read_timeline(path: Path) -> list[dict[str, Any]]:
    """The records of a timeline.jsonl, in order ([] without the file); a torn line (an interrupted run) is left out."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def check_row(row: Any, where: str) -> dict[str, Any]:
    """`row` if it is a result row this version can read, else a ConfigError naming `where`."""
    if not isinstance(row, dict):
        raise ConfigError(f"{where} is a JSON {type(row).__name__}, not a result row (an object)")
    version = row.get("schema_version", 1)
    if isinstance(version, bool) or version not in READABLE_SCHEMA_VERSIONS:
        raise ConfigError(f"{where} has schema_version {version!r}; this wanbench reads version(s) "
                          f"{', '.join(map(str, READABLE_SCHEMA_VERSIONS))}: read it with the wanbench that wrote it")
    for name in REQUIRED_FIELDS:
        if not isinstance(row.get(name), str) or not row[name]:
            raise ConfigError(f"{where} has no {name} (every result row names its suite, case_id and status)")
    if row["status"] not in STATUSES:
        raise ConfigError(f"{where} has status {row['status']!r}; a result row's status is one of "
                          f"{', '.join(STATUSES)}")
    return row


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
        rows[last_index[case_id]] = guard_row(row)
    text = "".join(json.dumps(row, allow_nan=False, ensure_ascii=False) + "\n" for row in rows)
    try:
        write_atomic(path, text)
    except OSError as exc:
        if is_no_space(exc):
            raise NoSpaceLeft(path, exc) from exc
        raise


# ---------------------------------------------------------------- reading back
def read_manifest(path: Path) -> tuple[dict[str, Any] | None, str]:
    """(run.json's content, "") or (None, what is wrong with it: empty, torn, not an object...)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    if not text.strip():
        return None, "empty"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON: {exc}"
    if not isinstance(data, dict) or not isinstance(data.get("suite"), str):
        return None, f"a JSON {type(data).__name__}, not an object naming the suite"
    return data, ""


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
