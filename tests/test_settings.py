"""The SWEEP_* environment: parsed and checked once, into one frozen object, and handed by a
launcher to its workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep.errors import UserError
from sweep.settings import ENV, Settings, current


def test_every_variable_is_parsed_into_its_field() -> None:
    env = {
        "SWEEP_STORAGE": "sqlite:///x.db",
        "SWEEP_ARTIFACTS": "/tmp/a",
        "SWEEP_HEARTBEAT_INTERVAL": "3",
        "SWEEP_HEARTBEAT_GRACE": "9",
        "SWEEP_STORAGE_RETRY": "0",
        "SWEEP_RECYCLE_TRIALS": "0",
        "SWEEP_GPU_MEMORY_MB": "4096",
        "SWEEP_LOG_LEVEL": "debug",
        "SWEEP_VERBOSE": "1",
        "SWEEP_WORKER_LABEL": "worker 3",
        "UNRELATED": "x",
    }
    s = Settings.from_env(env)
    assert (s.storage, s.artifacts) == ("sqlite:///x.db", Path("/tmp/a"))
    assert (s.heartbeat_interval_s, s.heartbeat_grace_s, s.storage_retry_s) == (3, 9, 0)
    assert (s.recycle_trials, s.gpu_memory_mb) == (0, 4096)
    assert (s.log_level, s.verbose, s.worker_label) == ("DEBUG", True, "worker 3")
    assert Settings.from_env({}) == Settings()  # nothing set: the defaults
    assert Settings.from_env({"SWEEP_STORAGE": ""}).storage is None  # empty is unset


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"SWEEP_HEARTBEAT_GRACE": "soon"}, "$SWEEP_HEARTBEAT_GRACE='soon': expected a whole"),
        ({"SWEEP_RECYCLE_TRIALS": "-1"}, "$SWEEP_RECYCLE_TRIALS='-1': expected a whole number"),
        ({"OMP_NUM_THREADS": "four"}, "$OMP_NUM_THREADS='four': expected a whole number"),
        ({"SWEEP_WORKER_LOG_LEVEL": "loud"}, "$SWEEP_WORKER_LOG_LEVEL='loud': use DEBUG"),
        (
            {"SWEEP_HEARTBEAT_INTERVAL": "10", "SWEEP_HEARTBEAT_GRACE": "5"},
            "$SWEEP_HEARTBEAT_GRACE=5 is not longer than $SWEEP_HEARTBEAT_INTERVAL=10",
        ),
    ],
)
def test_a_bad_value_is_refused_in_one_line_naming_it(env: dict[str, str], said: str) -> None:
    with pytest.raises(UserError) as refused:
        Settings.from_env(env)
    assert said in str(refused.value) and "\n" not in str(refused.value)


def test_the_environment_is_parsed_again_only_when_it_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SWEEP_HEARTBEAT_INTERVAL", "4")
    first = current()
    assert first.heartbeat_interval_s == 4
    monkeypatch.setenv("PATH_UNRELATED_TO_SWEEP", "x")
    assert current() is first  # the same object: not parsed again
    monkeypatch.setenv("SWEEP_HEARTBEAT_INTERVAL", "5")
    assert current().heartbeat_interval_s == 5


def test_settings_handed_on_as_environment_come_back_the_same() -> None:
    s = Settings(
        storage="postgresql+psycopg://u@h/db",
        artifacts=Path("/srv/a"),
        heartbeat_interval_s=2,
        heartbeat_grace_s=30,
        log_level="WARNING",
        verbose=True,
        worker_label="worker 0 (cpu)",
    )
    assert Settings.from_env(s.to_env()) == s
    assert Settings.from_env(Settings().to_env()) == Settings()
    assert set(s.to_env()) <= {v.name for v in ENV.values()}


def test_a_launcher_hands_its_workers_its_settings_with_the_runs_own(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from sweep import api, runner
    from sweep.devices import Placement

    monkeypatch.setenv("SWEEP_HEARTBEAT_GRACE", "45")
    monkeypatch.setenv("SWEEP_LOG_LEVEL", "DEBUG")  # the launcher's own, not its workers'
    monkeypatch.setenv("SWEEP_WORKER_LOG_LEVEL", "ERROR")
    run = api.plan("quickstart", storage=f"sqlite:///{tmp_path / 's.db'}")
    env = runner._worker_env(run, Placement(1, None, {"OMP_NUM_THREADS": "1"}))
    worker = Settings.from_env(env)
    assert worker.heartbeat_grace_s == 45
    assert (worker.log_level, worker.storage) == ("ERROR", run.url)
    assert (worker.artifacts, worker.backend) == (run.artifacts, run.keras_backend)
    assert worker.worker_label.startswith("worker 1") and env["OMP_NUM_THREADS"] == "1"
