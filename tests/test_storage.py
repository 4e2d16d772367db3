"""The storage's fixes to Optuna, on real SQLite files."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import optuna
import pytest

from sweep import _optuna, storage
from sweep.errors import UserError
from sweep.rdb import claiming
from sweep.study import peek


@pytest.fixture
def quick_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    """1 s heartbeat, 2 s grace: staleness within a test's patience."""
    monkeypatch.setenv("SWEEP_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("SWEEP_HEARTBEAT_GRACE", "2")
    warnings.simplefilter("ignore", UserWarning)  # ask() without optimize(): on purpose


def _fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _heartbeats(rdb: optuna.storages.RDBStorage) -> int:
    with rdb.engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM trial_heartbeats").scalar() or 0)


X = {"x": optuna.distributions.FloatDistribution(0, 1)}


@pytest.mark.usefixtures("quick_heartbeat")
def test_a_trial_made_by_ask_and_tell_is_never_failed_for_want_of_a_heartbeat(
    tmp_path: Path,
) -> None:
    """``optuna ask`` or ``study.ask()`` in a notebook: Optuna leaves such a trial RUNNING
    until it is told; so must a sweep worker, however old it grows."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    rdb = storage.open_storage(url)
    study = optuna.create_study(study_name="s", storage=rdb, direction="maximize")
    asked = optuna.load_study(study_name="s", storage=url).ask(X)  # the optuna CLI's storage
    mine = study.ask(X)  # and sweep's own, outside a worker's claim
    time.sleep(2.5)
    _fail_stale(study)
    assert [t.state.name for t in study.get_trials()] == ["RUNNING", "RUNNING"]
    study.tell(asked, 0.5)
    study.tell(mine, 0.25)
    assert study.best_value == 0.5 and len(study.get_trials()) == 2


@pytest.mark.usefixtures("quick_heartbeat")
def test_a_worker_that_dies_right_after_its_claim_leaves_a_trial_that_goes_stale(
    tmp_path: Path,
) -> None:
    """The first heartbeat is written in the claim's own transaction, for a new trial and
    for an enqueued one; a worker killed before its heartbeat thread ever ran therefore
    still leaves a trial that is failed after the grace period and run again."""
    rdb = storage.open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(study_name="s", storage=rdb, direction="maximize")
    study.enqueue_trial({"x": 0.5})
    with claiming(rdb):
        planned = study.ask(X)  # the enqueued one: WAITING -> RUNNING
        sampled = study.ask(X)  # a new one, RUNNING from its insert
        assert _heartbeats(rdb) == 2
    # ... and the worker dies here, before any heartbeat of its own.
    _fail_stale(study)
    assert [t.state.name for t in study.get_trials()] == ["RUNNING", "RUNNING"]
    time.sleep(3.5)  # 2 s of grace, and SQLite keeps whole seconds
    _fail_stale(study)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "FAIL", "WAITING", "WAITING"]
    assert {t.params["x"] for t in trials[2:]} == {planned.params["x"], sampled.params["x"]}


def test_a_sqlite_read_never_waits_for_a_writer(tmp_path: Path) -> None:
    """Under WAL a reader reads its snapshot; a read that took the write lock would wait the
    whole busy timeout (60 s) behind a writer, as the dashboard and every worker read."""
    import sqlite3
    import threading

    rdb = storage.open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(study_name="s", storage=rdb)
    study.tell(study.ask(X), 0.5)
    sid = _optuna.study_id(study)
    writer = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    read: list[int] = []
    reader = threading.Thread(target=lambda: read.append(len(rdb.get_all_trials(sid))))
    try:
        reader.start()
        reader.join(timeout=10)
        assert read == [1], "the read waited for the writer"
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        reader.join()


def test_optunas_schema_version_placeholder_names_the_file_optuna_names(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s-v{{SCHEMA_VERSION}}.db"
    optuna.create_study(study_name="s", storage=storage.open_storage(url))
    stock = optuna.storages.RDBStorage(url)  # what the optuna CLI and the dashboard open
    assert [p.name for p in tmp_path.glob("*.db")] == [Path(stock.url).name]
    assert optuna.get_all_study_names(stock) == ["s"]
    with pytest.raises(UserError, match="placeholder other than"):
        storage.open_storage(f"sqlite:///{tmp_path}/s-{{version}}.db")


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

    from helpers import REPO

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
    from sweep.rdb import SweepStorage as cls

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


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
@pytest.mark.slow
def test_six_processes_racing_for_a_budget_of_three_run_exactly_three(
    tmp_path: Path, backend: str
) -> None:
    import subprocess
    import sys
    import uuid

    from helpers import REPO

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


@pytest.mark.postgres
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
