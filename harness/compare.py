"""Compare a run with a baseline: cases matched by parameters, noise-aware gates, a verdict for CI.

A baseline or a current run is a run folder or a `results.jsonl` file (e.g. one committed in a
repository). Cases are matched by what they ran, not by `case_id` (which names only the parameters
that vary in one suite): every case parameter of harness.params, plus `preset`, `device` and
`timing`. A parameter missing from an older results file takes its current default, so a baseline
stays usable after the runtime grows a new field.

A metric *regresses* when it is worse by more than BOTH its relative threshold (a fraction of the
baseline) and its absolute one (in the field's unit); a gate leaving one of them out (null) applies
the other alone. It *improves* when it is better by more than both. Lower is better for times and
memory, higher for `psnr_db` and `ssim`. Defaults follow the field (FastVideo's gates):

    time    (`*_ms`)  +8 %  and +500 ms
    memory  (`*_mib`) +5 %  and +256 MiB
    psnr_db           -0.5 dB (absolute only)
    ssim              -0.01   (absolute only)

Noise: when both sides kept at least `min_repeats` (5) raw repeats of a time metric
(`repeats_ms.<stage>`, `repeats_ms.total`), a change must also be significant by a one-sided
Mann-Whitney U test on those repeats at `alpha` (0.05): harness.stats.shift_test, the same rule the
report uses to mark a speed-up; otherwise the thresholds alone decide, and each verdict says which
way it was decided.

Gates come from, in increasing priority: the defaults, the suite's `gates:` (of the current run's
suite file, recorded in its run.json; a suite gate replaces the default of that metric), and the
command line (`--gate METRIC=rel:R,abs:A`, or `METRIC=off`).

Status changes (ok -> oom/error) are listed apart and count as regressions; cases present on one
side only are listed apart and do not. Two runs with no case in common compared nothing, so that is
an error (a wrong baseline would otherwise pass as "no regression") unless `allow_empty` is given.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

from harness import params as P
from harness.results import GENERATE_STAGES, MANIFEST_FILE, metric_names, read_manifest, results_path
from harness.shards import read_run
from harness.stats import ALPHA, MIN_REPEATS, shift_test
from wan_runtime.errors import ConfigError, first_line

MATCH_FIELDS = ("preset", "device", "timing")  # besides every case parameter
HIGHER_IS_BETTER = ("psnr_db", "ssim")
ENV_FIELDS = ("env.gpu", "env.driver", "env.torch", "env.cpu", "env.hostname")
Side = Union[str, Path, Sequence[Union[str, Path]]]  # a run folder, a results file, or the shard folders of one run


@dataclass(frozen=True)
class Gate:
    """Thresholds of one metric: worse by more than both `rel` (fraction) and `abs` (field unit) regresses."""

    rel: float | None
    abs: float | None

    def describe(self, metric: str) -> str:
        """The gate in words, e.g. '+8% & +500 ms'."""
        sign = "-" if metric in HIGHER_IS_BETTER else "+"
        parts = []
        if self.rel is not None:
            parts.append(f"{sign}{self.rel * 100:g}%")
        if self.abs is not None:
            parts.append(f"{sign}{self.abs:g}{(' ' + unit_of(metric)) if unit_of(metric) else ''}")
        return " & ".join(parts)


def unit_of(metric: str) -> str:
    """The unit of a metric field, read from its name."""
    if metric.endswith("_ms"):
        return "ms"
    if metric.endswith("_mib"):
        return "MiB"
    if metric.endswith("_db"):
        return "dB"
    return ""


def default_gates() -> dict[str, Gate]:
    """The metrics compared by default and their thresholds (see the module docstring)."""
    time, memory = Gate(0.08, 500.0), Gate(0.05, 256.0)
    gates: dict[str, Gate] = {"total_ms": time, "step_ms.high": time, "step_ms.low": time}
    gates.update({f"stage_ms.{stage}": time for stage in GENERATE_STAGES})
    gates.update({"peak_nvml_mib": memory, "peak_allocated_mib": memory, "peak_reserved_mib": memory})
    gates.update({"psnr_db": Gate(None, 0.5), "ssim": Gate(None, 0.01)})
    return gates


def raw_repeats_field(metric: str) -> str | None:
    """The field holding the raw per-repeat values behind a metric, if the results keep them."""
    if metric == "total_ms":
        return "repeats_ms.total"
    if metric.startswith("stage_ms."):
        return "repeats_ms." + metric.split(".", 1)[1]
    return None


# ---------------------------------------------------------------- gates from suite and command line
def parse_gate(text: str) -> tuple[str, Gate | None]:
    """`METRIC=rel:R,abs:A` (either part optional) or `METRIC=off` -> (metric, gate or None for off)."""
    metric, sep, spec = text.partition("=")
    metric, spec = metric.strip(), spec.strip()
    names = metric_names()
    if not sep or not metric:
        raise ConfigError(f"--gate {text!r}: write METRIC=rel:R,abs:A (e.g. total_ms=rel:0.08,abs:500) or METRIC=off")
    if metric not in names:
        raise ConfigError(f"--gate {text!r}: unknown metric {metric!r}; comparable metrics: {', '.join(names)}")
    if spec == "off":
        return metric, None
    values: dict[str, float] = {}
    for part in spec.split(","):
        key, colon, number = part.partition(":")
        key = key.strip()
        try:
            value = float(number)
        except ValueError:
            value = float("nan")
        if not colon or key not in ("rel", "abs") or not math.isfinite(value) or value < 0:
            raise ConfigError(f"--gate {text!r}: each part is rel:FRACTION or abs:AMOUNT, non-negative "
                              "(e.g. total_ms=rel:0.08,abs:500)")
        values[key] = value
    return metric, Gate(values.get("rel"), values.get("abs"))


def suite_gates(run: Side, suite: str | Path | None = None) -> tuple[dict[str, Gate], str | None]:
    """The `gates:` of a suite: `suite` if given, else the run's own suite.

    The run's suite is the file recorded in its run.json (with the run's overrides), or, for a bare
    results file or a folder moved from another machine, the suite of that name among the known
    suites (harness.registry). Returns (gates, where they came from), or ({}, None) when none is found."""
    from harness.registry import available
    from harness.suite import load_suite

    overrides: list[str] = []
    how = ""
    if not isinstance(run, (str, Path)):  # shard folders of one run: the first names the suite
        run = run[0]
    if suite is None:
        manifest = results_path(run).parent / MANIFEST_FILE
        data = (read_manifest(manifest)[0] if manifest.is_file() else None) or {}  # damaged: found by name
        if data.get("suite_file") and Path(data["suite_file"]).is_file():
            suite, overrides = data["suite_file"], list(data.get("overrides") or [])
        else:
            rows = load_rows(run)
            name = data.get("suite") or (rows[0].get("suite") if rows else None)
            if name not in available():
                return {}, None
            suite, how = name, " found by name"
    loaded = load_suite(suite, overrides)
    gates = {name: Gate(g.rel, g.abs) for name, g in loaded.spec.gates.items()}
    return gates, f"suite {loaded.name}{how} ({loaded.path})"


def resolve_gates(
    current: Side, suite: str | Path | None = None, cli: Iterable[str] = ()
) -> tuple[dict[str, Gate], list[str]]:
    """Defaults, then the suite's gates, then command-line gates; (gates, where each layer came from)."""
    gates = default_gates()
    sources = ["defaults"]
    from_suite, where = suite_gates(current, suite)
    if from_suite:
        gates.update(from_suite)
        sources.append(where or "suite")
    cli = list(cli)
    for text in cli:
        metric, gate = parse_gate(text)
        if gate is None:
            gates.pop(metric, None)
        else:
            gates[metric] = gate
    if cli:
        sources.append("command line")
    return gates, sources


# ---------------------------------------------------------------- matching
def _value_key(value: Any) -> str:
    return json.dumps(P.jsonable(value), sort_keys=True)


def case_key(row: dict[str, Any], defaults: dict[str, Any]) -> str:
    """What a case ran, as text: every case parameter (defaults filled in) plus preset, device, timing."""
    key = {name: _value_key(row[name] if name in row else default)
           for name, default in defaults.items()}
    key.update({name: _value_key(row.get(name)) for name in MATCH_FIELDS})
    return json.dumps(key, sort_keys=True)


def side_name(side: Side) -> str:
    """A side of the comparison in messages: its results file, or its shard folders joined with +."""
    if isinstance(side, (str, Path)):
        return str(results_path(side))
    return " + ".join(side_name(s) for s in side)


def load_rows(side: Side) -> list[dict[str, Any]]:
    """The latest row of each case of a run folder, a results file or the shard folders of one run, as plain
    dicts (no pandas dtype changes)."""
    return read_run([side] if isinstance(side, (str, Path)) else side).latest()


# ---------------------------------------------------------------- the comparison
@dataclass(frozen=True)
class Change:
    """One metric of one matched case: both values, the change, and the verdict with how it was decided."""

    case: str
    metric: str
    baseline: float | None
    current: float | None
    gate: Gate
    verdict: str  # regressed | improved | within | missing
    decided_by: str
    p_value: float | None = None

    @property
    def delta(self) -> float | None:
        """current - baseline."""
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline

    @property
    def relative(self) -> float | None:
        """(current - baseline) / |baseline|."""
        if self.delta is None or self.baseline == 0:
            return None
        return self.delta / abs(self.baseline)


@dataclass(frozen=True)
class StatusChange:
    """A case whose status differs between the runs."""

    case: str
    baseline: str
    current: str
    error: str | None

    @property
    def is_regression(self) -> bool:
        """ok -> oom/error."""
        return self.baseline == "ok" and self.current != "ok"


@dataclass
class Comparison:
    """Everything `wanbench compare` reports."""

    baseline: str
    current: str
    gates: dict[str, Gate]
    gate_sources: list[str]
    alpha: float
    min_repeats: int
    changes: list[Change] = field(default_factory=list)
    status_changes: list[StatusChange] = field(default_factory=list)
    only_baseline: list[str] = field(default_factory=list)
    only_current: list[str] = field(default_factory=list)
    matched: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[Change]:
        """Metrics that regressed."""
        return [c for c in self.changes if c.verdict == "regressed"]

    @property
    def improvements(self) -> list[Change]:
        """Metrics that improved."""
        return [c for c in self.changes if c.verdict == "improved"]

    @property
    def failed(self) -> bool:
        """True when CI should fail: a regressed metric or an ok case that no longer is."""
        return bool(self.regressions) or any(s.is_regression for s in self.status_changes)


def _judge(metric: str, base: float, cur: float, gate: Gate) -> str:
    """regressed / improved / within, by the thresholds alone."""
    worse = (base - cur) if metric in HIGHER_IS_BETTER else (cur - base)

    def beyond(amount: float) -> bool:
        if gate.rel is None and gate.abs is None:
            return False
        rel_ok = gate.rel is None or (base != 0 and amount / abs(base) > gate.rel) or (base == 0 and amount > 0)
        abs_ok = gate.abs is None or amount > gate.abs
        return rel_ok and abs_ok

    if beyond(worse):
        return "regressed"
    if beyond(-worse):
        return "improved"
    return "within"


def _compare_metric(case: str, metric: str, base_row: dict, cur_row: dict, gate: Gate,
                    alpha: float, min_repeats: int) -> Change | None:
    base, cur = base_row.get(metric), cur_row.get(metric)
    if base is None and cur is None:
        return None
    if base is None or cur is None:
        side = "baseline" if base is None else "current run"
        return Change(case, metric, base, cur, gate, "missing", f"no value in the {side}")
    verdict = _judge(metric, float(base), float(cur), gate)
    raw = raw_repeats_field(metric)
    base_raw, cur_raw = (base_row.get(raw), cur_row.get(raw)) if raw else (None, None)
    if not raw:
        return Change(case, metric, base, cur, gate, verdict, "thresholds only (no raw repeats kept for this metric)")
    n_base, n_cur = len(base_raw or []), len(cur_raw or [])
    # The project's one significance rule (also the report's): the medians' direction, one-sided.
    # Lower is better for every metric with raw repeats (times), and the thresholds compare those
    # medians, so a regression is always "current greater" and an improvement "current less".
    shift = shift_test(cur_raw or [], base_raw or [], alpha, min_repeats)
    if not shift.tested:
        return Change(case, metric, base, cur, gate, verdict,
                      f"thresholds only ({n_base} vs {n_cur} repeats, fewer than {min_repeats})")
    if verdict == "within":
        return Change(case, metric, base, cur, gate, verdict, f"thresholds ({n_base} vs {n_cur} repeats)")
    p = f"p={shift.p_value:.3g}" if shift.p_value is not None else "equal medians"
    how = f"thresholds + Mann-Whitney U {p} ({n_base} vs {n_cur} repeats)"
    if not shift.significant:
        return Change(case, metric, base, cur, gate, "within", how + f": not significant at {alpha:g}", shift.p_value)
    return Change(case, metric, base, cur, gate, verdict, how, shift.p_value)


def compare_runs(
    baseline: Side,
    current: Side,
    gates: dict[str, Gate] | None = None,
    gate_sources: list[str] | None = None,
    alpha: float = ALPHA,
    min_repeats: int = MIN_REPEATS,
    allow_empty: bool = False,
) -> Comparison:
    """Compare `current` with `baseline` (run folders, results.jsonl files, or the shard folders of one run
    as a list); see the module docstring."""
    if gates is None:
        gates, gate_sources = default_gates(), ["defaults"]
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must lie in (0, 1), got {alpha}")
    if min_repeats < 2:
        raise ConfigError(f"min_repeats must be at least 2 for a significance test, got {min_repeats}")
    base_rows, cur_rows = load_rows(baseline), load_rows(current)
    defaults = {name: P.jsonable(v) for name, v in P.defaults().items()}
    base_by_key, cur_by_key = _index(base_rows, defaults, baseline), _index(cur_rows, defaults, current)
    result = Comparison(side_name(baseline), side_name(current), dict(gates),
                        list(gate_sources or []), alpha, min_repeats)
    for key, cur_row in cur_by_key.items():
        base_row = base_by_key.get(key)
        label = cur_row["case_id"]
        if base_row is None:
            result.only_current.append(label)
            continue
        result.matched += 1
        base_status, cur_status = base_row.get("status"), cur_row.get("status")
        if base_status != cur_status:
            result.status_changes.append(StatusChange(label, str(base_status), str(cur_status), cur_row.get("error")))
        if base_status != "ok" or cur_status != "ok":
            continue
        for metric, gate in gates.items():
            change = _compare_metric(label, metric, base_row, cur_row, gate, alpha, min_repeats)
            if change is not None:
                result.changes.append(change)
    result.only_baseline = [row["case_id"] for key, row in base_by_key.items() if key not in cur_by_key]
    result.notes = _environment_notes(base_rows, cur_rows)
    if not result.matched and not allow_empty:
        raise ConfigError(
            f"no case of {result.current} matches a case of {result.baseline} (cases are matched by every "
            f"parameter plus {', '.join(MATCH_FIELDS)}; {len(result.only_baseline)} case(s) only in the baseline, "
            f"{len(result.only_current)} only in the current run): nothing was compared; check that both are "
            "runs of the same suite and settings, or pass --allow-empty"
        )
    return result


def _index(rows: list[dict[str, Any]], defaults: dict[str, Any], source: Side) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = case_key(row, defaults)
        if key in out:
            raise ConfigError(
                f"{side_name(source)}: cases {out[key]['case_id']!r} and {row['case_id']!r} ran the same "
                "parameters; a compared results file must hold each configuration once"
            )
        out[key] = row
    return out


def _environment_notes(base_rows: list[dict], cur_rows: list[dict]) -> list[str]:
    """Warnings when the two runs were measured in different settings."""
    notes = []
    for name in ENV_FIELDS:
        base = sorted({str(r.get(name)) for r in base_rows if r.get(name) is not None})
        cur = sorted({str(r.get(name)) for r in cur_rows if r.get(name) is not None})
        if base and cur and base != cur:
            notes.append(f"{name} differs: baseline {', '.join(base)} vs current {', '.join(cur)}; "
                         "time and memory changes include the difference of the machines")
    synthetic = [{bool(r.get("weights_synthetic")) for r in rows} for rows in (base_rows, cur_rows)]
    if synthetic[0] != synthetic[1]:
        notes.append("one run used synthetic weights and the other did not: quality metrics are not comparable")
    return notes


# ---------------------------------------------------------------- output
def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    digits = max(0, 3 - int(math.floor(math.log10(abs(value)))))
    return f"{value:.{digits}f}"


def change_rows(comparison: Comparison, everything: bool = False) -> list[dict[str, str]]:
    """The changes as table rows: regressions, then improvements, then (with `everything`) the rest."""
    order = {"regressed": 0, "improved": 1, "missing": 2, "within": 3}
    picked = [c for c in comparison.changes if everything or c.verdict in ("regressed", "improved", "missing")]
    rows = []
    for c in sorted(picked, key=lambda c: (order[c.verdict], c.case, c.metric)):
        rel = c.relative
        rows.append({
            "case": c.case, "metric": c.metric, "unit": unit_of(c.metric),
            "baseline": _fmt(c.baseline), "current": _fmt(c.current),
            "change": ("+" if (c.delta or 0) > 0 else "") + _fmt(c.delta) if c.delta is not None else "-",
            "relative": f"{rel * 100:+.1f}%" if rel is not None else "-",
            "gate": c.gate.describe(c.metric), "verdict": c.verdict, "decided by": c.decided_by,
        })
    return rows


def change_records(comparison: Comparison) -> list[dict[str, Any]]:
    """Every compared metric with raw numbers (for CSV)."""
    return [
        {"case": c.case, "metric": c.metric, "unit": unit_of(c.metric), "baseline": c.baseline, "current": c.current,
         "delta": c.delta, "relative": c.relative, "gate_rel": c.gate.rel, "gate_abs": c.gate.abs,
         "verdict": c.verdict, "decided_by": c.decided_by, "p_value": c.p_value}
        for c in comparison.changes
    ]


def _text_table(rows: list[dict[str, str]]) -> list[str]:
    if not rows:
        return []
    headers = list(rows[0])
    widths = [max(len(h), *(len(r[h]) for r in rows)) for h in headers]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(r[h].ljust(w) for h, w in zip(headers, widths)).rstrip() for r in rows]
    return lines


def render_text(comparison: Comparison, everything: bool = False) -> str:
    """The comparison as plain text for a terminal or a CI log."""
    c = comparison
    lines = [f"baseline: {c.baseline}", f"current:  {c.current}",
             f"gates from: {' < '.join(c.gate_sources)} (later wins)"]
    lines.append(
        f"noise: time changes are also tested with a one-sided Mann-Whitney U test (alpha {c.alpha:g}) on the raw "
        f"repeats when both sides have at least {c.min_repeats}; otherwise thresholds alone decide (see 'decided by')"
    )
    lines += [f"note: {n}" for n in c.notes]
    verdicts = [ch.verdict for ch in c.changes]
    lines.append(
        f"{c.matched} matched case(s), {len(c.changes)} metric(s) compared: {verdicts.count('regressed')} regressed, "
        f"{verdicts.count('improved')} improved, {verdicts.count('within')} within thresholds, "
        f"{verdicts.count('missing')} missing on one side"
    )
    thresholds_only = [ch for ch in c.changes if ch.decided_by.startswith("thresholds only")]
    if thresholds_only:
        lines.append(f"thresholds alone decided {len(thresholds_only)} of them (too few repeats or no raw repeats)")
    rows = change_rows(c, everything)
    if rows:
        lines += ["", "changes:" if not everything else "all compared metrics:", *_text_table(rows)]
    if c.status_changes:
        lines += ["", "status changes:"]
        for s in c.status_changes:
            flag = "REGRESSION" if s.is_regression else "fixed" if s.current == "ok" else "changed"
            error = f": {first_line(s.error, 160)}" if s.error and s.current != "ok" else ""
            lines.append(f"  {s.case}: {s.baseline} -> {s.current} ({flag}){error}")
    if c.only_baseline:
        lines += ["", "only in the baseline (not compared):", *[f"  {x}" for x in c.only_baseline]]
    if c.only_current:
        lines += ["", "only in the current run (not compared):", *[f"  {x}" for x in c.only_current]]
    lines += ["", "RESULT: REGRESSION" if c.failed else "RESULT: no regression"]
    return "\n".join(lines)


def render_markdown(comparison: Comparison) -> str:
    """The comparison as markdown (every compared metric, for a CI summary or a PR comment)."""
    c = comparison
    out = [f"# Comparison: {'REGRESSION' if c.failed else 'no regression'}", "",
           f"- baseline: `{c.baseline}`", f"- current: `{c.current}`",
           f"- gates from: {' < '.join(c.gate_sources)}",
           f"- significance: one-sided Mann-Whitney U, alpha {c.alpha:g}, when both sides have >= {c.min_repeats} "
           "raw repeats of a time metric; otherwise thresholds alone decide"]
    out += [f"- note: {n}" for n in c.notes]
    rows = change_rows(c, everything=True)
    if rows:
        headers = list(rows[0])
        out += ["", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        out += ["| " + " | ".join(r[h].replace("|", "\\|") for h in headers) + " |" for r in rows]
    if c.status_changes:
        out += ["", "## Status changes", ""]
        out += [f"- `{s.case}`: {s.baseline} -> {s.current}" for s in c.status_changes]
    for title, cases in (("Only in the baseline", c.only_baseline), ("Only in the current run", c.only_current)):
        if cases:
            out += ["", f"## {title}", ""] + [f"- `{x}`" for x in cases]
    return "\n".join(out) + "\n"
