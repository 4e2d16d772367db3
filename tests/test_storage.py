"""The storage's fixes to Optuna, on real SQLite files."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import optuna
import pytest

from sweep import storage


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
        "import sys, time; from sweep import storage; "
        f"rdb = storage.open_storage({url!r})\n"
        "with storage.study_lock(rdb, 's'): print(time.time())"
    )
    with storage.study_lock(rdb, "s"):
        other = subprocess.Popen(
            [sys.executable, "-c", probe], stdout=subprocess.PIPE, text=True,
            env={"PYTHONPATH": str(REPO)},
        )  # fmt: skip
        time.sleep(3)
        assert other.poll() is None  # still waiting for the lock
        released = time.time()
    out, _ = other.communicate(timeout=30)
    assert float(out) >= released  # it got the lock only once this process let go
