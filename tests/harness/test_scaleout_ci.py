"""The CI example, .github/workflows/gpu-regression.yml: actionlint finds nothing in it (and does find a
mistake planted in a copy), its shard matrix lists every shard once, and every `wanbench` command it runs is
one the command line accepts."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.cli.main import build_parser

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "gpu-regression.yml"


def _actionlint() -> str:
    found = shutil.which("actionlint") or str(Path(sys.executable).with_name("actionlint"))
    if not Path(found).is_file():
        pytest.fail("actionlint is not installed; it comes with the test extra: pip install -e '.[test]'")
    return found


def _lint(root: Path) -> subprocess.CompletedProcess:
    """actionlint over a checkout's gpu-regression workflow (its .github/actionlint.yaml names the runner labels)."""
    github = root / ".github"
    return subprocess.run([_actionlint(), "-color=false", "-oneline", "-config-file", str(github / "actionlint.yaml"),
                           str(github / "workflows" / WORKFLOW.name)], capture_output=True, text=True, timeout=120)


def test_the_gpu_regression_workflow_passes_actionlint():
    done = _lint(REPO)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_actionlint_finds_a_mistake_planted_in_a_copy(tmp_path):
    shutil.copytree(REPO / ".github", tmp_path / ".github")
    broken = tmp_path / ".github" / "workflows" / "gpu-regression.yml"
    broken.write_text(broken.read_text().replace("${{ matrix.shard }}/", "${{ matrix.shards }}/"))
    done = _lint(tmp_path)
    assert done.returncode == 1 and 'property "shards" is not defined' in done.stdout


def _workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def test_the_shard_matrix_lists_every_shard_once():
    shards = _workflow()["jobs"]["shard"]["strategy"]["matrix"]["shard"]
    assert shards == list(range(1, len(shards) + 1))


def _wanbench_commands() -> list[list[str]]:
    """Every `wanbench ...` command of the workflow's run steps, with its expressions and variables filled in."""
    doc = _workflow()
    values = {"matrix.shard": "1", "strategy.job-total": "2"}
    commands = []
    for job in doc["jobs"].values():
        for step in job["steps"]:
            for line in step.get("run", "").replace("\n--", " --").splitlines():
                line = re.sub(r"\$\{\{\s*([\w.-]+)\s*\}\}", lambda m: values[m[1]], line.strip())
                line = re.sub(r"\$(\w+)", lambda m: str(doc["env"].get(m[1], m[0])), line)
                if line.startswith("wanbench "):
                    commands.append(shlex.split(line)[1:])
    return commands


def test_every_wanbench_command_of_the_workflow_is_accepted():
    commands = _wanbench_commands()
    assert [c[0] for c in commands] == ["run", "merge", "compare"]
    for argv in commands:
        build_parser().parse_args(argv)  # argparse exits on an unknown option or a missing argument
    assert "--shard" in commands[0] and "--gpus" in commands[0]
