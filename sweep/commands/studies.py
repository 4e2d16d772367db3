"""``sweep studies``: the studies ``--study NAME`` can name, each with its description and
where it comes from: packaged with sweep, or ``./studies`` (which shadows a packaged one)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sweep import catalog
from sweep.stop import StopEvent

__all__ = ["DESCRIPTION", "HELP", "add_arguments", "lines", "run"]

HELP = "list the studies --study NAME can name: description, packaged or ./studies"
DESCRIPTION = (
    "List the studies that --study NAME can name, one a line: the name, the study's "
    "description, and where it comes from: packaged with sweep, or a file in ./studies "
    "(which shadows the packaged study of the same name)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """No options of its own: it lists what the current folder and the package hold."""


def _origin(path: Path) -> str:
    if path.parent.resolve() == catalog.packaged_dir().resolve():
        return "packaged"
    try:
        return f"./{path.relative_to(Path.cwd())}"
    except ValueError:
        return str(path)


def lines() -> list[str]:
    """One line per study, the columns aligned: name, description, where it comes from."""
    rows = [(name, text, _origin(path)) for name, text, path in catalog.describe()]
    if not rows:
        return []
    name_width = max(len(r[0]) for r in rows)
    text_width = max(len(r[1]) for r in rows)
    return [
        f"{name:<{name_width}}  {text:<{text_width}}  {origin}".rstrip()
        for name, text, origin in rows
    ]


def run(args: argparse.Namespace, stop: StopEvent) -> int:
    found = lines()
    if not found:
        print("no study files: none packaged, none in ./studies", file=sys.stderr)
    for line in found:
        print(line)
    return 0
