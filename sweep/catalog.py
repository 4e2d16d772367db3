"""The study files a ``--study`` name can refer to: ``./studies`` first, then those packaged
with sweep (``sweep/studies/``, installed with the package, so a wheel finds them from any
folder). A file in ``./studies`` shadows the packaged one of the same name.

Only the standard library: ``sweep studies`` and ``--help`` must not pay for TensorFlow.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from sweep.errors import UserError

__all__ = [
    "available_studies",
    "describe",
    "find_study_file",
    "names_a_file",
    "packaged_dir",
    "studies_dirs",
]


def packaged_dir() -> Path:
    """The study files installed with the package (``sweep/studies/``)."""
    # sweep is installed as files, never run from a zip, so the resource is a real folder.
    return Path(str(resources.files("sweep") / "studies"))


def studies_dirs() -> list[Path]:
    """Where study names are looked up, in order: ``./studies``, then the packaged studies.

    One folder reached twice (in the repository ``studies`` links to ``sweep/studies``) is
    listed once, in its first place.
    """
    seen: set[Path] = set()
    out = []
    for d in (Path.cwd() / "studies", packaged_dir()):
        key = d.resolve()
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _files() -> dict[str, Path]:
    """Each study's name and the file it names: the first folder holding it wins."""
    found: dict[str, Path] = {}
    for d in studies_dirs():
        if d.is_dir():
            for path in sorted(d.glob("*.toml")):
                found.setdefault(path.stem, path)
    return dict(sorted(found.items()))


def available_studies() -> list[str]:
    """Names of the study files found in ``./studies`` and the packaged studies."""
    return list(_files())


def names_a_file(study: str) -> bool:
    """Whether ``--study`` is a path to a study file rather than a name."""
    return study.endswith(".toml") or "/" in study


def find_study_file(study: str) -> Path:
    """Resolve ``--study``: a path to a .toml file, or a name in ``studies/``.

    Raises:
        UserError: The path is a folder or does not exist, or no study has that name.
    """
    if names_a_file(study):
        path = Path(study)
        if path.is_dir():
            raise UserError(f"study file {study} is a folder; give the path of a .toml file")
        if not path.is_file():
            raise UserError(f"study file {study} does not exist; give the path of a .toml file")
        return path
    for d in studies_dirs():
        path = d / f"{study}.toml"
        if path.is_file():
            return path
    known = ", ".join(available_studies()) or "none found"
    raise UserError(f"unknown study {study!r}; the studies are: {known}")


def _description(path: Path) -> str:
    # A listing, not a validation: a broken file is shown as such, and the others still are.
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return f"(unreadable: {exc})"
    description = data.get("description", "")
    if not isinstance(description, str):
        return "(unreadable: description is not a string)"
    return description


def describe() -> list[tuple[str, str, Path]]:
    """Every study a name can refer to: its name, its ``description`` and its file, by name.

    A file that does not parse is listed with ``(unreadable: <reason>)`` as its description.
    """
    return [(name, _description(path), path) for name, path in _files().items()]
