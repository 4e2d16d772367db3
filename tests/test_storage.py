"""The storage's fixes to Optuna, on real SQLite files."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import optuna
import pytest

from sweep import storage
from sweep.study import peek


def test_a_running_trial_that_never_beat_goes_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Optuna never fails a RUNNING trial without a heartbeat row (its worker died between
    claiming it and the first beat); here it is failed after the grace period and retried."""
    monkeypatch.setattr(storage, "HEARTBEAT_INTERVAL_S", 1)
    warnings.simplefilter("ignore", UserWarning)  # ask() without optimize(): on purpose
    monkeypatch.setattr(storage, "HEARTBEAT_GRACE_S", 2)
    rdb = storage.open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(study_name="s", storage=rdb, direction="maximize")
    orphan = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})  # no heartbeat
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
        assert study.get_trials()[0].state.name == "RUNNING"  # still young: left alone
        time.sleep(2.5)
        optuna.storages.fail_stale_trials(study)
    first, retry = study.get_trials()
    assert first.number == orphan.number and first.state.name == "FAIL"
    assert retry.state.name == "WAITING" and retry.params == first.params


def test_sqlite_transactions_take_the_write_lock_when_they_begin(tmp_path: Path) -> None:
    rdb = storage.open_storage(f"sqlite:///{tmp_path / 's.db'}")
    seen: list[str] = []
    import sqlalchemy

    sqlalchemy.event.listen(
        rdb.engine, "before_cursor_execute", lambda *a: seen.append(a[2]), named=False
    )
    optuna.create_study(study_name="s", storage=rdb).ask()
    assert "BEGIN IMMEDIATE" in seen
    with rdb.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_the_study_lock_excludes_other_processes(tmp_path: Path) -> None:
    import subprocess
    import sys

    from conftest import REPO

    url = f"sqlite:///{tmp_path / 's.db'}"
    rdb = storage.open_storage(url)
    probe = (
        "import sys, time, optuna; from sweep import storage; "
        f"rdb = storage.open_storage({url!r})\n"
        "print('ready', flush=True); sys.stdin.readline()\n"
        "with storage.study_lock(rdb, 's'): print(time.time())"
    )
    optuna.create_study(study_name="s", storage=rdb)
    other = subprocess.Popen(
        [sys.executable, "-c", probe], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, env={"PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert other.stdin is not None and other.stdout is not None
    assert other.stdout.readline().strip() == "ready"
    with storage.study_lock(rdb, "s"):
        other.stdin.write("go\n")
        other.stdin.flush()  # it asks for the lock now
        time.sleep(2)
        assert other.poll() is None  # still waiting for it
        released = time.time()
    out, _ = other.communicate(timeout=30)
    assert float(out) >= released  # it got the lock only once this process let go


def test_every_call_optunas_cache_makes_on_the_database_is_retried() -> None:
    """study._storage is Optuna's _CachedStorage: each backend method it calls must ride out
    a lost connection, or a PostgreSQL restart crashes a worker mid-poll."""
    import inspect
    import re

    from optuna.storages import _cached_storage

    called = set(re.findall(r"self\._backend\.(\w+)", inspect.getsource(_cached_storage)))
    local = {"get_heartbeat_interval", "get_heartbeat_stale_trial_callback", "delete_study"}
    from sweep._optuna import SweepStorage as cls

    for name in sorted(called - local):
        assert hasattr(getattr(cls, name), "__wrapped__"), name


RACE = """
import sys, time
from pathlib import Path
import optuna
from sweep import storage
from sweep.study import peek
from sweep.loop import run_trials
from sweep.stop import StopEvent

url, go = sys.argv[1], Path(sys.argv[2])
def wait(flag):
    while not flag.exists():
        time.sleep(0.005)
optuna.logging.set_verbosity(optuna.logging.WARNING)
wait(go)
rdb = storage.open_storage(url)  # all at once, on a database with no tables yet
with storage.study_lock(rdb, "race"):
    study = optuna.create_study(study_name="race", storage=rdb, load_if_exists=True)
print("ready", flush=True)
wait(go.with_suffix(".claim"))  # then all at once for the budget

def objective(trial):
    trial.suggest_float("x", 0, 1)
    time.sleep(0.3)
    return 0.5

print(run_trials(study, objective, storage=rdb, budget=3, stop=StopEvent()))
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_six_processes_racing_for_a_budget_of_three_run_exactly_three(
    tmp_path: Path, backend: str
) -> None:
    import subprocess
    import sys
    import uuid

    from conftest import REPO

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'race.db'}"
    else:  # a fresh database: the tables are created by the racing processes
        name = f"race_{uuid.uuid4().hex[:8]}"
        _psql(f"CREATE DATABASE {name}")
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    go = tmp_path / "go"
    try:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", RACE, url, str(go)],
                env={"PYTHONPATH": str(REPO)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(6)
        ]
        time.sleep(3)  # every process has imported and waits for the signal
        go.touch()
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        go.with_suffix(".claim").touch()
        outs = [p.communicate(timeout=120) for p in procs]
        for p, (_out, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, err
        trials = optuna.load_study(study_name="race", storage=url).get_trials()
        assert len(trials) == 3 and all(t.state.name == "COMPLETE" for t in trials)
        assert sum(int(out) for out, _ in outs) == 3
    finally:
        if backend == "postgresql":
            optuna.storages.RDBStorage(url).engine.dispose()
            _psql(f"DROP DATABASE {name} WITH (FORCE)")


def _psql(sql: str) -> None:
    import subprocess

    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c", sql],
        check=True,
        capture_output=True,
    )


def test_peeking_at_a_new_database_finds_nothing_and_writes_nothing(tmp_path: Path) -> None:
    import uuid

    name = f"fresh_{uuid.uuid4().hex[:8]}"
    _psql(f"CREATE DATABASE {name}")
    try:
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        assert peek(url, "s") is None  # no tables yet: not an error
    finally:
        _psql(f"DROP DATABASE {name} WITH (FORCE)")
    other = tmp_path / "other.db"
    import sqlite3

    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (x)")
    before = other.read_bytes()
    assert peek(f"sqlite:///{other}", "s") is None
    assert other.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "other.db"
    ]
