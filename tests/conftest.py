"""Shared fixtures: seeding, the CLI in this process, study files, PostgreSQL; and the markers
that say what a test needs (docs/development.md), applied here so that a new test cannot
forget them."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from helpers import CLI_ENV_DROPPED, POSTGRES, OwnPostgres, make_cifar_archive, study_toml

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

# What the fast loop leaves out (``pytest --fast``): see docs/development.md.
NOT_FAST = ("slow", "postgres", "docker", "browser")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fast",
        action="store_true",
        help="the developer's loop: skip tests marked " + ", ".join(NOT_FAST),
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        needs = set(getattr(item, "fixturenames", ()))
        if needs & {"postgres_url", "own_postgres"}:
            item.add_marker(pytest.mark.postgres)
        if "chromium" in needs:
            item.add_marker(pytest.mark.browser)
        if item.path.name == "test_compose.py":
            item.add_marker(pytest.mark.docker)
    if not config.getoption("fast"):
        return
    kept = [i for i in items if not any(i.get_closest_marker(m) for m in NOT_FAST)]
    config.hook.pytest_deselected(items=[i for i in items if i not in kept])
    items[:] = kept


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    random.seed(0)
    np.random.seed(0)


# --------------------------------------------------------------------------- the CLI in-process


@dataclass(frozen=True)
class Ran:
    """What a command left: as a CompletedProcess has it."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., Ran]:
    """``cli("sweep.launch", *args, cwd=..., env=...)``: ``python -m sweep.launch ARGS`` run
    in this process, through the entry the real process runs, with the environment a user's
    shell would give it. Exit code and output as :func:`helpers.run_cli` returns them, in a
    tenth of the time; whatever the command set (environment, signal handlers, logging) is
    put back afterwards; modules imported from the tests' folders (a user's families) are
    forgotten before and after."""
    import sweep.stop
    from sweep import cli as entry

    # The stop event a command installs stays module-global: put it back after the test.
    monkeypatch.setattr(sweep.stop, "_installed", getattr(sweep.stop, "_installed", None))

    tests_folder = tmp_path_factory.getbasetemp()

    def forget_tests_modules() -> None:
        """Forget the modules imported from the tests' folders (a user's families, all named
        ``mymodels``), as a new process would not have them."""
        for name, module in list(sys.modules.items()):
            if Path(getattr(module, "__file__", None) or "/").is_relative_to(tests_folder):
                del sys.modules[name]

    def run(module: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> Ran:
        saved_env = dict(os.environ)
        saved_signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        saved_hook = sys.unraisablehook
        saved_path = sys.path[:]
        forget_tests_modules()  # a family of the same name that another test imported
        root = logging.getLogger()
        saved_logging = (root.handlers[:], root.level)
        root.handlers = []  # as in a fresh process: the command's basicConfig takes effect
        for name in CLI_ENV_DROPPED:
            os.environ.pop(name, None)
        os.environ.update(env or {})
        monkeypatch.chdir(cwd)
        capfd.readouterr()  # what came before is not the command's
        try:
            if module == "sweep":
                code = entry.main(list(args))
            else:
                code = entry.alias(module.removeprefix("sweep."), list(args))
        except SystemExit as exc:  # argparse: --help, or a bad option
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            for handler in root.handlers:
                handler.close()
            root.handlers, level = saved_logging
            root.setLevel(level)
            sys.unraisablehook = saved_hook
            sys.path[:] = saved_path
            forget_tests_modules()
            for signum, handler in saved_signals.items():
                signal.signal(signum, handler)
            os.environ.clear()
            os.environ.update(saved_env)
        out, err = capfd.readouterr()
        return Ran(code, out, err)

    return run


# --------------------------------------------------------------------------- study files


@pytest.fixture
def study_file(tmp_path: Path) -> Callable[..., Path]:
    """``study_file(name="study", **keys)``: writes ``name.toml`` in ``tmp_path`` (or
    ``folder=``) from :func:`helpers.study_toml` (the tiny study with ``keys`` over it)."""

    def write(name: str = "study", *, folder: Path | None = None, **keys: object) -> Path:
        path = (folder or tmp_path) / f"{name}.toml"
        path.write_text(study_toml(**keys))
        return path

    return write


@pytest.fixture
def cifar_archive(tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    return make_cifar_archive(data_dir)


# --------------------------------------------------------------------------- servers


@pytest.fixture
def postgres_url() -> str:
    """The shared PostgreSQL database on 127.0.0.1:5432; a test that asks for it (directly or
    through another fixture) is marked ``postgres``."""
    return POSTGRES


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium, for Playwright; a test that asks for it is marked ``browser``."""
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "install Debian's chromium (apt-get install chromium; .ci/run does)"
    return path


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    """A started :class:`OwnPostgres`, stopped and removed afterwards. Its folder is outside
    pytest's (which only root may enter), for the server runs as ``postgres``."""
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="sweep-pg-"))
    root.chmod(0o755)
    server = OwnPostgres(root / "cluster")
    try:
        server.start()
        yield server
    finally:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(server.bin / "pg_ctl"), "-D",
             str(server.root / "data"), "-m", "immediate", "stop"],
            capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)
