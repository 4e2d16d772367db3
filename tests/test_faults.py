"""A process killed mid-trial loses no completed trial; its trial is run again on resume."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import optuna
from conftest import REPO

STUDY = """
dataset = "synthetic"
n_trials = 2

[space]
family = "baseline"
learning_rate = [0.001, 0.002]
epochs = 6

[sampler]
name = "grid"

[baseline]
learning_rate = 0.001
epochs = 6
"""


def _progress(db: Path) -> list[tuple[str, int]]:
    """(state, epochs reported) per trial, read-only: polling must not create the tables."""
    if not db.exists():
        return []
    query = (
        "SELECT t.state, COUNT(v.trial_intermediate_value_id) FROM trials t "
        "LEFT JOIN trial_intermediate_values v ON v.trial_id = t.trial_id "
        "GROUP BY t.trial_id ORDER BY t.number"
    )
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
            return conn.execute(query).fetchall()
    except sqlite3.OperationalError:  # tables not there yet
        return []


def test_sigkill_mid_trial_then_resume(tmp_path: Path) -> None:
    (tmp_path / "kill.toml").write_text(STUDY)
    url = f"sqlite:///{tmp_path / 'k.db'}"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SWEEP_HEARTBEAT_INTERVAL": "1",
        "SWEEP_HEARTBEAT_GRACE": "3",
    }
    cmd = [sys.executable, "-m", "sweep.launch", "--study", "kill.toml", "--storage", url]
    cmd += ["--subset", "1500", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            time.sleep(0.5)
            progress = _progress(tmp_path / "k.db")
            # Kill once trial 1 has reported an epoch: its heartbeat has surely started then.
            # (Optuna cannot tell a trial killed before its first heartbeat from a live one.)
            if len(progress) >= 2 and progress[0][0] == "COMPLETE" and progress[1][1] >= 1:
                assert progress[1][0] == "RUNNING"
                break
        else:
            raise AssertionError("trial 1 never started")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    before = optuna.load_study(study_name="kill", storage=url).get_trials()[0]
    time.sleep(4)  # past the heartbeat grace period

    resumed = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    trials = optuna.load_study(study_name="kill", storage=url).get_trials()
    states = [t.state.name for t in trials]
    assert states.count("FAIL") == 1 and states[1] == "FAIL"  # the killed trial
    # The killed trial was the budget's last: it must still be failed, retried and completed.
    assert states.count("COMPLETE") == 2
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 1)
    assert retry.params == trials[1].params and retry.state.name == "COMPLETE"
    assert trials[0] == before  # the completed trial is untouched
    lrs = sorted(t.params["learning_rate"] for t in trials if t.state.name == "COMPLETE")
    assert lrs == [0.001, 0.002]
