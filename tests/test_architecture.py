"""The package's shape: no import cycles, a core that never reaches a command, trial attrs
touched in one module, and a ``--help`` path free of TensorFlow, Keras and Optuna."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

PACKAGE = REPO / "sweep"
CORE = {
    "sweep.records", "sweep.trial", "sweep.models", "sweep.data", "sweep.storage",
    "sweep.study", "sweep.loop", "sweep.run", "sweep.space", "sweep.config", "sweep.tables",
    "sweep.artifacts", "sweep.plots", "sweep.devices", "sweep.errors", "sweep.stop",
    "sweep.retry", "sweep._optuna", "sweep._callbacks", "sweep.catalog", "sweep.api",
    "sweep.runner", "sweep.sources", "sweep.reporting", "sweep.verification", "sweep.sampling",
}  # fmt: skip
KERAS_MODULES = {"sweep._callbacks", "sweep._batches"}  # import Keras: only where it trains
OPTUNA_MODULES = {"sweep.sampling", "sweep.rdb"}  # subclass Optuna's: only where a study opens
COMMAND_NAMES = ("launch", "worker", "dashboard", "report", "verify", "export", "studies")
# Optuna attrs: trial attrs in records, the budget's own in budget, study attrs in study,
# Optuna's own in _optuna.
ATTR_OWNERS = {"sweep.records", "sweep.budget", "sweep.study", "sweep._optuna"}
ATTR_NAMES = {
    "user_attrs", "system_attrs", "set_user_attr", "set_system_attr",
    "set_trial_user_attr", "set_trial_system_attr", "get_study_user_attrs",
    "get_study_system_attrs", "set_study_user_attr", "set_study_system_attr",
}  # fmt: skip


def _modules(root: Path, package: str) -> dict[str, Path]:
    out = {}
    for path in root.rglob("*.py"):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, read with ``ast``: every import statement,
    at the top, inside functions and under ``if TYPE_CHECKING``."""
    modules = _modules(root, package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from sweep import records` names a module (and runs no more of the
                # package's __init__ than Python already has); `from sweep.x import f` does not.
                named = [f"{node.module}.{a.name}" for a in node.names]
                targets = named if all(t in modules for t in named) else [node.module, *named]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph(PACKAGE, "sweep")
    assert len(graph) > 20  # every module was read
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.c import g\n    return g\n")
    (pkg / "c.py").write_text("import pkg.a\n\ndef g():\n    pass\n")
    (pkg / "d.py").write_text("from pkg import a\n")  # imports into the cycle, not part of it
    assert cycles(import_graph(pkg, "pkg")) == [["pkg.a", "pkg.b", "pkg.c"]]


COMMAND_LAYER = {
    "sweep.cli", "sweep.__main__", "sweep._entry", *(f"sweep.{c}" for c in COMMAND_NAMES)
}  # fmt: skip


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_the_core_never_reaches_a_command() -> None:
    graph = import_graph(PACKAGE, "sweep")
    assert set(graph) >= CORE | COMMAND_LAYER, (CORE | COMMAND_LAYER) - set(graph)
    for module in CORE:
        reached = {
            t for t in _reachable(graph, module)
            if t.startswith("sweep.commands") or t in COMMAND_LAYER
        }  # fmt: skip
        assert not reached, f"{module} reaches {reached}"


def test_the_packages_own_modules_are_imported_at_the_top() -> None:
    """Inside a function only what is heavy, sweep._callbacks and sweep._batches (Keras) and
    sweep.sampling (Optuna), and the entry point's import of the commands, which must follow
    its signal handlers."""
    for name, path in _modules(PACKAGE, "sweep").items():
        for func in ast.walk(ast.parse(path.read_text())):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.ImportFrom) and node.module:
                    targets = [node.module]
                elif isinstance(node, ast.Import):
                    targets = [a.name for a in node.names]
                else:
                    continue
                for target in targets:
                    heavy = KERAS_MODULES | OPTUNA_MODULES
                    if target.split(".")[0] == "sweep" and target not in heavy:
                        # The entry point imports the commands once its early handler is set.
                        assert (name, target) == ("sweep._entry", "sweep"), f"{name}: {target}"


def test_only_the_record_modules_touch_optuna_attrs() -> None:
    for name, path in _modules(PACKAGE, "sweep").items():
        if name in ATTR_OWNERS or name.startswith("sweep.rdb"):
            continue  # sweep.rdb is the storage: it passes every storage call through
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                assert node.attr not in ATTR_NAMES, f"{path.name}:{node.lineno} .{node.attr}"


def test_only_the_private_api_module_touches_optunas_private_names() -> None:
    for name, path in _modules(PACKAGE, "sweep").items():
        if name == "sweep._optuna" or name.startswith("sweep.rdb"):
            continue  # the private API's module, and the storage subclass (listed there)
        text = path.read_text()
        for private in (
            "._storage", "._study_id", "._trial_id", "._backend", "optuna.storages._",
            "optuna.study._", "optuna.artifacts._", "optuna_dashboard._",
        ):  # fmt: skip
            assert private not in text, f"{path.name} uses {private}"


@pytest.mark.parametrize("argv", [["--help"], ["launch", "--help"], ["worker", "--help"]])
def test_help_imports_no_tensorflow_keras_or_optuna(argv: list[str]) -> None:
    probe = (
        "import sys\n"
        "from sweep.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "heavy = {m.split('.')[0] for m in sys.modules} & "
        "{'tensorflow', 'keras', 'optuna', 'sqlalchemy', 'matplotlib', 'plotly', 'pygal'}\n"
        "print('heavy:', sorted(heavy), file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert "heavy: []" in done.stderr, done.stderr
    assert "usage:" in done.stdout
