"""Find suites by name: `smoke` means `suites/smoke.yaml` in the working folder or the project."""

from __future__ import annotations

import difflib
from pathlib import Path

from wan_runtime.errors import ConfigError

# The project's own suites (an editable install keeps them next to the package).
PROJECT_SUITES = Path(__file__).resolve().parents[1] / "suites"


def suite_dirs() -> list[Path]:
    """Folders searched for suites by name, first match wins: ./suites, then the project's suites/."""
    dirs = [Path.cwd() / "suites", PROJECT_SUITES]
    unique: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


def available() -> dict[str, Path]:
    """Every suite found by name, name -> file."""
    found: dict[str, Path] = {}
    for d in suite_dirs():
        for path in sorted([*d.glob("*.yaml"), *d.glob("*.yml")]):
            found.setdefault(path.stem, path)
    return found


def find_suite(name_or_path: str | Path) -> Path:
    """Resolve a suite argument: an existing file, or a name among `available()`."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        raise ConfigError(f"suite file {str(path)!r} does not exist")
    suites = available()
    if str(name_or_path) in suites:
        return suites[str(name_or_path)]
    close = difflib.get_close_matches(str(name_or_path), list(suites), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    searched = ", ".join(str(d) for d in suite_dirs()) or "no suites/ folder found"
    raise ConfigError(
        f"unknown suite {str(name_or_path)!r}; {hint}known suites: {sorted(suites) or 'none'} "
        f"(searched {searched}); or pass the path of a YAML file"
    )
