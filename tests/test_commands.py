"""``sweep <command>`` as a user types it: one command, its aliases, workers that read the
study from the storage, quiet output, and the exit code of a storage that went away."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import optuna
import pytest
from helpers import REPO, run_cli, study_toml

from sweep import records
from sweep.cli import COMMANDS

SWEEP = Path(sys.executable).with_name("sweep")  # the console script of this environment


def _tiny(n_trials: int = 2) -> str:
    """Two families, one epoch."""
    return study_toml(
        description="two families, one epoch",
        n_trials=n_trials,
        space={"family": ["baseline", "twoconv"]},
    )


NOISE = re.compile(r"absl::InitializeLog|oneDNN custom operations|cudart_stub")


def _env(**extra: str) -> dict[str, str]:
    drop = ("SWEEP_STORAGE", "TF_CPP_MIN_LOG_LEVEL", "SWEEP_VERBOSE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def _sweep(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SWEEP), *args], cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=600
    )


def test_sweep_help_lists_every_command(tmp_path: Path) -> None:
    assert SWEEP.exists(), "pip install -e . puts the sweep command beside python"
    for argv in ([str(SWEEP), "--help"], [sys.executable, "-m", "sweep", "--help"]):
        done = subprocess.run(argv, cwd=tmp_path, env=_env(), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        listed = re.findall(r"^    (\w+)", done.stdout, flags=re.M)
        assert listed == list(COMMANDS)


def test_sweep_without_a_command_shows_the_commands_and_exits_2(tmp_path: Path) -> None:
    done = _sweep(cwd=tmp_path)
    assert done.returncode == 2 and "launch" in done.stderr and "worker" in done.stderr


@pytest.mark.parametrize("name", list(COMMANDS))
def test_python_m_sweep_x_is_the_same_command(tmp_path: Path, name: str) -> None:
    alias = run_cli(f"sweep.{name}", "--help", cwd=tmp_path, env={"COLUMNS": "100"})
    command = _sweep(name, "--help", cwd=tmp_path, COLUMNS="100")
    assert alias.returncode == command.returncode == 0
    assert alias.stdout.startswith(f"usage: python -m sweep.{name} ")
    # Same options, same help: only the program's name differs (and the wrapping it causes).
    words = re.compile(r"\s+")
    same = command.stdout.replace(f"sweep {name}", f"python -m sweep.{name}")
    assert words.sub(" ", alias.stdout) == words.sub(" ", same)


def test_bad_input_through_the_sweep_command_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = _sweep("launch", "--study", "exp9", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "unknown study 'exp9'" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_worker_by_hand_with_no_study_file_runs_the_launchers_spec(tmp_path: Path) -> None:
    """The launcher's workers and one started by hand on "another host" (a folder with no
    study file) run the same spec: the file's family, epochs and the launch's data subset."""
    first, other = tmp_path / "first", tmp_path / "other"
    first.mkdir()
    other.mkdir()
    (first / "tiny.toml").write_text(_tiny())
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    launched = _sweep(
        "launch", "--study", "tiny.toml", "--storage", url, "--subset", "200",
        "--workers", "2", "--quiet", cwd=first,
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr
    assert "started 2 workers" in launched.stderr
    assert not NOISE.search(launched.stderr), launched.stderr  # its workers are quiet too

    by_hand = _sweep(
        "worker", "--study", "tiny", "--n-trials", "4", cwd=other, SWEEP_STORAGE=url,
        SWEEP_ARTIFACTS=str(other / "artifacts"),
    )  # fmt: skip
    assert by_hand.returncode == 0, by_hand.stderr
    assert "synthetic data: 160 train / 40 val / 40 test" in by_hand.stderr  # the stored subset
    assert sorted(p.name for p in other.iterdir()) == ["artifacts"]  # no study file needed

    study = optuna.load_study(study_name="tiny", storage=url)
    trials = records.read_all(study)
    assert len(trials) == 4 and all(t.complete for t in trials)
    workers = [t.worker for t in trials]
    assert len(set(workers[2:])) == 1 and not set(workers[2:]) & set(workers[:2])
    for t in trials:  # the file's space and epochs (not the defaults: 10 epochs, baseline only)
        assert t.params is not None and t.params.epochs == 1 and t.epochs_run == 1
        assert t.params.family in ("baseline", "twoconv")
    assert [t.is_baseline for t in trials].count(True) == 1


@pytest.mark.slow
def test_tensorflows_start_up_lines_are_dropped_unless_asked_for(tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text(
        study_toml(n_trials=1, space={"family": ["baseline", "twoconv"]})
    )
    raw = subprocess.run(
        [sys.executable, "-c", "import tensorflow"], env=_env(), capture_output=True, text=True
    )
    args = ("launch", "--study", "tiny.toml", "--subset", "100", "--quiet")
    quiet = _sweep(*args, "--storage", f"sqlite:///{tmp_path / 'q.db'}", cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert not NOISE.search(quiet.stderr), quiet.stderr
    assert "Δtest pp" in quiet.stdout
    verbose = _sweep(
        *args, "--verbose", "--storage", f"sqlite:///{tmp_path / 'v.db'}", cwd=tmp_path
    )
    assert verbose.returncode == 0, verbose.stderr
    assert "DEBUG" in verbose.stderr
    if NOISE.search(raw.stderr):  # TensorFlow prints them on this machine: --verbose shows them
        assert NOISE.search(verbose.stderr), verbose.stderr


def test_a_storage_that_stays_away_ends_the_retries_with_its_own_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real PostgreSQL driver against a port where no server listens."""
    import sqlalchemy

    from sweep import retry
    from sweep.errors import StorageUnavailable

    monkeypatch.setenv("SWEEP_STORAGE_RETRY", "1")
    engine = sqlalchemy.create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:1/test", connect_args={"connect_timeout": 2}
    )
    calls = []

    def connect() -> None:
        calls.append(1)
        with engine.connect():
            pass

    with pytest.raises(StorageUnavailable, match="did not answer for 1 s") as caught:
        retry.with_retries(connect, "probe")
    assert caught.value.exit_code == 3
    assert len(calls) >= 2  # it did retry before giving up
    with pytest.raises(ValueError, match="not a connection error"):  # others are not retried
        retry.with_retries(lambda: (_ for _ in ()).throw(ValueError("not a connection error")), "x")


def test_a_worker_refuses_data_options_that_differ_from_the_studys(tmp_path: Path) -> None:
    from sweep import study
    from sweep.config import loads_study
    from sweep.run import RunOptions
    from sweep.storage import open_storage

    url = f"sqlite:///{tmp_path / 'g.db'}"
    spec = loads_study(
        '[space]\nlearning_rate = [0.001, 0.002]\nepochs = 1\n[sampler]\nname = "grid"\n',
        name="g",
        source="test",
    )
    study.open_study(RunOptions("g", url, spec, budget=3, subset=100), storage=open_storage(url))

    # A worker's --n-trials is capped at the grid's size, as the launcher's is.
    again = study.stored_run(url, "g", data_dir=None, artifacts=tmp_path, budget=100)
    assert again.budget == 3 and again.subset == 100 and again.spec.text == spec.text

    def dump() -> list[str]:  # what the database holds (WAL checkpoints move bytes about)
        import sqlite3

        with closing(sqlite3.connect(tmp_path / "g.db")) as conn:
            return list(conn.iterdump())

    before = dump()
    for flag, value, shown in (("--seed", "5", "seed 0, not 5"), ("--subset", "50", "subset 100")):
        done = _sweep("worker", "--study", "g", "--storage", url, flag, value, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert shown in line and f"drop {flag}" in line
    assert dump() == before


@pytest.mark.slow
def test_a_dry_run_touches_no_storage(tmp_path: Path) -> None:
    unreachable = "postgresql+psycopg://sweep@127.0.0.1:1/nowhere"
    done = _sweep("launch", "--study", "unam", "--dry-run", "--storage", unreachable, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "twoconv: 315,722 parameters" in done.stdout
    assert list(tmp_path.iterdir()) == []


def test_a_signal_before_the_command_starts_exits_130_quietly() -> None:
    """A launcher stopping workers still importing their modules: no traceback. The probe
    stands a stub in for the commands, so that the signal lands while they would load."""
    probe = (
        "import os, signal, sys, time, types\n"
        "stub = types.ModuleType('sweep.cli')\n"
        "stub.main = lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(30))\n"
        "sys.modules['sweep.cli'] = stub\n"
        "from sweep._entry import run\n"
        "sys.exit(run())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], env=_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 130
    assert done.stderr == ""
