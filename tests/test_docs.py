"""The README a newcomer reads, and the generated reference in docs/, kept current."""

from __future__ import annotations

import re
import shlex

import pytest
from helpers import REPO

from sweep.cli import parser
from sweep.commands import reference

README = (REPO / "README.md").read_text(encoding="utf-8")


def test_the_readme_is_short_and_stands_alone() -> None:
    assert len(README.splitlines()) <= 200
    # No path outside the repository: no parent folder, no absolute path, no home folder.
    assert "../" not in README and "shared/" not in README
    assert not re.search(r"(?<![\w.:/])/(?:work|tmp|home|root|opt|usr|mnt)/", README)
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if not target.startswith("http"):
            assert (REPO / target).is_file(), target


def test_the_readme_has_the_two_set_up_commands() -> None:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    setup = [b.strip() for b in blocks if b.startswith("python3 -m venv .venv")]
    assert setup == [
        # The main job's: no test tools (pytest, ruff, mypy, playwright, JAX, PyTorch).
        "python3 -m venv .venv && .venv/bin/pip install -e . && "
        ".venv/bin/sweep launch --study quickstart",
        "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest",
    ]
    ci = (REPO / ".ci" / "run").read_text()
    assert setup[1] in ci  # CI runs the README's test command, exactly


def _sweep_commands() -> list[list[str]]:
    """Every `sweep ...` command the README shows: in bash blocks, and in backticks."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        found += re.findall(r"^(?:\.venv/bin/)?sweep ([^#\n]*)", block, flags=re.M)
    found += re.findall(r"`sweep ([^`]*)`", README)
    found += re.findall(r"&& \.venv/bin/sweep ([^\n`]*)", README)
    return [shlex.split(c) for c in found if not c.startswith("COMMAND")]


@pytest.mark.parametrize("argv", _sweep_commands(), ids=" ".join)
def test_every_sweep_command_in_the_readme_parses(argv: list[str]) -> None:
    if "--help" in argv:
        with pytest.raises(SystemExit) as done:
            parser().parse_args(argv)
        assert done.value.code == 0
        return
    args = parser().parse_args(argv)
    assert args.command == argv[0]


def test_the_readme_commands_were_found() -> None:
    names = {argv[0] for argv in _sweep_commands()}
    assert names >= {"launch", "worker", "dashboard", "report", "verify", "export"}


@pytest.mark.parametrize("name", sorted(reference.GENERATED))
def test_the_generated_reference_is_current(name: str) -> None:
    committed = (REPO / name).read_text(encoding="utf-8")
    assert committed == reference.GENERATED[name](), (
        f"{name} is out of date: run python -m sweep.commands.reference"
    )


def test_the_benchmark_table_is_the_recorded_run() -> None:
    page = (REPO / "docs" / "performance.md").read_text(encoding="utf-8")
    assert page == reference.performance_page(page), (
        "docs/performance.md is out of date: run python -m sweep.commands.reference"
    )
    assert reference.performance_markdown() in page


def test_a_benchmark_whose_details_span_lines_is_still_one_table_row(tmp_path) -> None:
    import json

    details = "1/2 stopped cleanly; failed: ...\ninterrupted\n"
    result = {"name": "signals", "ratio": 0.5, "floor": 1.0, "higher_is_better": True,
              "met": False, "details": details}  # fmt: skip
    run = {"quick": True, "started": "then", "machine": "here", "results": [result]}
    (tmp_path / "results.json").write_text(json.dumps(run))
    rows = reference.performance_markdown(tmp_path / "results.json").splitlines()[4:]
    assert rows == [
        "| `signals` | 0.500 | >= 1.0 | **no** | 1/2 stopped cleanly; failed: ... interrupted |"
    ]
