"""What a report reads: the latest row of each case of one or more run folders, labelled, with timelines.

Several run folders can go into one report (e.g. one GPU call per resolution); the shard folders of one
run (`wanbench run --shard`) are read as that run. Rows are read as
plain dicts (pandas would turn an int column holding a null into floats). Each case gets a label:
its `case_id` when there is one run, else the parameters that vary across all the rows, so cases
from different folders stay apart.

Plan fields are not listed here: the load-time parameters (every MemoryPlan and LoadOptions field)
come from the runtime's parameter spec, so a field the runtime adds shows up in the tables by itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import params as P
from harness.results import RESULTS_FILE, TIMELINE_FILE, latest_rows, read_rows, read_timeline, results_path
from harness.shards import RunFolders, read_folder, read_run
from wan_runtime.errors import ConfigError

# Parameters that set how much work a case is (its resolution and length), apart from how it runs.
SIZE_PARAMS = ("size", "frames", "output_size")


@dataclass(frozen=True)
class ReportCase:
    """One case of the report: its label, its result row and the run folder it came from."""

    label: str
    row: dict[str, Any]
    run: Path

    def get(self, name: str, default: Any = None) -> Any:
        """A field of the row (None where absent)."""
        value = self.row.get(name, default)
        return default if value is None else value

    @property
    def ok(self) -> bool:
        """True when the case finished."""
        return self.row.get("status") == "ok"


@dataclass
class ReportData:
    """The cases of a report and the parameters that distinguish them."""

    runs: list[Path]
    cases: list[ReportCase]
    varying: list[str]  # case parameters whose value differs between cases, in catalog order
    _timelines: dict[Path, list[dict[str, Any]]] = field(default_factory=dict, repr=False)

    @property
    def load_params(self) -> list[str]:
        """Parameters fixed when a pipeline loads: the memory plan's fields and the load options."""
        return list(P.load_param_names())

    @property
    def varying_plan(self) -> list[str]:
        """Load-time parameters that vary between the cases."""
        return [p for p in self.varying if p in self.load_params]

    @property
    def varying_other(self) -> list[str]:
        """Varying parameters that are neither the plan nor the size of the work."""
        return [p for p in self.varying if p not in self.load_params and p not in SIZE_PARAMS]

    def value(self, case: ReportCase, name: str) -> Any:
        """A parameter of a case, the current default when its row predates the parameter."""
        if name in case.row:
            return case.row[name]
        return P.defaults().get(name)

    def describe(self, case: ReportCase, names: list[str]) -> str:
        """`k=v, k=v` for the given parameters of a case; `k=v (effective: w)` where the device made it `w`.

        The runtime records where the plan really put each network (`effective.<field>`, e.g. a `gpu`
        text encoder runs on the CPU of a CPU run); a reader must not take the label for the placement."""
        parts = []
        for n in names:
            text = f"{n}={P.format_value(self.value(case, n))}"
            key = f"effective.{n}"
            if key in case.row and P.format_value(case.row[key]) != P.format_value(self.value(case, n)):
                effective = case.row[key]
                text += f" (effective: {'not used' if effective is None else P.format_value(effective)})"
            parts.append(text)
        return ", ".join(parts)

    def effective_plan(self, case: ReportCase) -> str:
        """Every load-time parameter as it really ran (`effective.<field>` where recorded)."""
        values = {n: case.row.get(f"effective.{n}", self.value(case, n)) if f"effective.{n}" in case.row
                  else self.value(case, n) for n in self.load_params}
        return ", ".join(f"{n}={P.format_value(v)}" for n, v in values.items())

    def plan(self, case: ReportCase) -> str:
        """The case's plan as the fields that vary between cases (or `same for all`)."""
        return self.describe(case, self.varying_plan) if self.varying_plan else "same for all"

    def common_plan(self) -> str:
        """The load-time parameters every case shares."""
        names = [p for p in self.load_params if p not in self.varying_plan]
        return self.describe(self.cases[0], names) if self.cases else ""

    def case(self, label: str) -> ReportCase:
        """The case with this label (a ConfigError listing the labels otherwise)."""
        for c in self.cases:
            if c.label == label:
                return c
        known = "\n  ".join(c.label for c in self.cases)
        raise ConfigError(f"no case {label!r} in this report; cases:\n  {known}")

    def timeline(self, case: ReportCase) -> list[dict[str, Any]]:
        """The sidecar records (one per measured repeat) of the case's latest attempt."""
        if case.run not in self._timelines:
            self._timelines[case.run] = read_timeline(case.run / TIMELINE_FILE)
        attempt: list[dict[str, Any]] = []
        for record in self._timelines[case.run]:
            if record.get("case_id") != case.row["case_id"]:
                continue
            if record.get("repeat") == 0:  # a case run again appends a new attempt, starting at repeat 0
                attempt = []
            attempt.append(record)
        return attempt


def load_report_data(runs: list[str | Path]) -> ReportData:
    """Read the latest rows of every run folder (or results file) and label the cases.

    Folders that are the shards of one run (`wanbench run --shard`: one suite definition, each case in
    one folder) are read as that one run; other folders are runs of their own.
    """
    if not runs:
        raise ConfigError("give at least one run folder (a folder holding results.jsonl)")
    one_run = _shards_of_one_run(runs)
    folders: list[Path] = []
    pairs: list[tuple[dict[str, Any], Path]] = []
    if one_run is not None:
        folders = [f.path for f in one_run.folders]
        origin = one_run.origin()
        pairs = [(row, origin[row["case_id"]]) for row in one_run.latest()]
        if not pairs:
            raise ConfigError(f"{one_run.describe()} hold no result rows yet")
    for run in runs if one_run is None else ():
        path = results_path(run)
        if not path.is_file():
            raise ConfigError(f"no results at {path}; give a run folder holding {RESULTS_FILE} "
                              "(written by `wanbench run SUITE --out DIR`)")
        folder = path.parent.resolve()
        if folder in folders:
            raise ConfigError(f"run folder {folder} is given twice")
        folders.append(folder)
        rows = latest_rows(read_rows(path))
        if not rows:
            raise ConfigError(f"{path} holds no result rows yet")
        pairs += [(row, folder) for row in rows]

    names = list(P.catalog())
    defaults = P.defaults()

    def value(row: dict[str, Any], name: str) -> str:
        return json.dumps(P.jsonable(row.get(name, defaults.get(name))), sort_keys=True)

    varying = [n for n in names if len({value(row, n) for row, _ in pairs}) > 1]
    if len(folders) == 1 or one_run is not None:
        labels = [row["case_id"] for row, _ in pairs]
    else:
        labels = [",".join(f"{n}={P.format_value(row.get(n, defaults.get(n)))}" for n in varying) or row["case_id"]
                  for row, _ in pairs]
        seen: dict[str, int] = {}
        for label in labels:
            seen[label] = seen.get(label, 0) + 1
        labels = [f"{label} [{folder.name}]" if seen[label] > 1 else label
                  for label, (_, folder) in zip(labels, pairs)]
    cases = [ReportCase(label, row, folder) for label, (row, folder) in zip(labels, pairs)]
    return ReportData(runs=folders, cases=cases, varying=varying)


def _shards_of_one_run(runs: list[str | Path]) -> RunFolders | None:
    """The folders read as one run when they are all shards of it (several folders, each run with --shard)."""
    if len(runs) < 2 or not all(Path(run).is_dir() for run in runs):
        return None
    if any(read_folder(run).shard is None for run in runs):
        return None
    return read_run(runs)
