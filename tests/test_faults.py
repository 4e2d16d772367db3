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
import pytest
from helpers import REPO, study_toml


def _study(
    *, n_trials: int = 2, epochs: int = 6, rates: tuple[float, ...] = (0.001, 0.002), **keys
):
    """A grid over learning rates, every trial ``epochs`` long."""
    return study_toml(
        n_trials=n_trials,
        space={"learning_rate": list(rates), "epochs": epochs},
        sampler={"name": "grid"},
        baseline={"learning_rate": 0.001, "epochs": epochs},
        **keys,
    )


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


def _launch(tmp_path: Path, study: str) -> tuple[list[str], dict[str, str], str]:
    (tmp_path / "s.toml").write_text(study)
    url = f"sqlite:///{tmp_path / 'k.db'}"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SWEEP_HEARTBEAT_INTERVAL": "1",
        "SWEEP_HEARTBEAT_GRACE": "3",
    }
    cmd = [sys.executable, "-m", "sweep.launch", "--study", "s.toml", "--storage", url]
    return [*cmd, "--subset", "1500", "--quiet"], env, url


def _start_and_wait_for_epoch(
    cmd: list[str], env: dict[str, str], cwd: Path, trial: int, *, running: bool = True
) -> subprocess.Popen[bytes]:
    """Start the CLI; return once ``trial`` runs and has reported an epoch (``running=False``:
    or has already ended, for trials shorter than the 0.5 s between looks).

    Waiting for an epoch means the trial's heartbeat has surely started (Optuna cannot tell
    a trial killed before its first heartbeat from a live one).
    """
    with (cwd / "launch.err").open("w") as err:  # read by a test once the process ends
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        time.sleep(0.5)
        progress = _progress(cwd / "k.db")
        if len(progress) > trial and progress[trial][1] >= 1:
            assert progress[trial][0] == "RUNNING" or not running
            assert all(state == "COMPLETE" for state, _ in progress[:trial])
            return proc
    proc.kill()
    raise AssertionError(f"trial {trial} never reported an epoch")


@pytest.mark.slow
def test_sigkill_mid_trial_then_resume(tmp_path: Path) -> None:
    cmd, env, url = _launch(tmp_path, _study())
    proc = _start_and_wait_for_epoch(cmd, env, tmp_path, trial=1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = optuna.load_study(study_name="s", storage=url).get_trials()[0]
    time.sleep(4)  # past the heartbeat grace period

    resumed = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    trials = optuna.load_study(study_name="s", storage=url).get_trials()
    states = [t.state.name for t in trials]
    assert states.count("FAIL") == 1 and states[1] == "FAIL"  # the killed trial
    # The killed trial was the budget's last: it must still be failed, retried and completed.
    assert states.count("COMPLETE") == 2
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 1)
    assert retry.params == trials[1].params and retry.state.name == "COMPLETE"
    assert trials[0] == before  # the completed trial is untouched
    lrs = sorted(t.params["learning_rate"] for t in trials if t.state.name == "COMPLETE")
    assert lrs == [0.001, 0.002]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
@pytest.mark.slow
def test_ctrl_c_requeues_the_running_trial_and_spends_no_budget(
    tmp_path: Path, signum: signal.Signals
) -> None:
    cmd, env, url = _launch(tmp_path, _study())
    proc = _start_and_wait_for_epoch(cmd, env, tmp_path, trial=0)
    started = time.monotonic()
    proc.send_signal(signum)
    assert proc.wait(timeout=30) == 130
    assert time.monotonic() - started < 15
    trials = optuna.load_study(study_name="s", storage=url).get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "WAITING", "WAITING"]
    requeued = trials[2]
    assert requeued.system_attrs["failed_trial"] == 0
    assert requeued.params == trials[0].params and requeued.user_attrs["is_baseline"]
    if signum == signal.SIGTERM:
        return  # the resume is the same as after Ctrl-C

    resumed = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    trials = optuna.load_study(study_name="s", storage=url).get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]  # budget 2


MEDIAN_PRUNER = {"name": "median", "n_startup_trials": 0, "n_warmup_steps": 0}


@pytest.mark.parametrize("pruner", [None, MEDIAN_PRUNER], ids=["no-pruner", "median-pruner"])
@pytest.mark.slow
def test_a_diverging_trial_is_recorded_and_the_sweep_goes_on(tmp_path: Path, pruner) -> None:
    """With a pruner too: it may stop the run in the epoch its loss became NaN."""
    diverging = _study(epochs=2, rates=(0.001, 1e20), pruner=pruner)
    cmd, env, url = _launch(tmp_path, diverging)
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="s", storage=url)
    baseline, diverged = study.get_trials()
    assert baseline.state.name == "COMPLETE" and diverged.params["learning_rate"] == 1e20
    assert diverged.state.name == "PRUNED"  # spends budget, can never be the best
    assert diverged.user_attrs["failure"].startswith("diverged: training loss became nan")
    assert study.best_trial.number == baseline.number
    assert "diverged" in result.stdout  # the table says why


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_a_storage_lost_past_the_retry_window_ends_in_one_line_and_exit_3(
    tmp_path: Path, own_postgres, workers: int
) -> None:
    """The server stops for good mid-trial: the retries are said, then one error line and
    exit 3, with no traceback from the trial, Optuna's clean-up or the heartbeat threads."""
    (tmp_path / "s.toml").write_text(_study(epochs=30))
    env = {k: v for k, v in os.environ.items() if k != "SWEEP_STORAGE"}
    env |= {"PYTHONPATH": str(REPO), "SWEEP_STORAGE_RETRY": "4"}
    env |= {"SWEEP_HEARTBEAT_INTERVAL": "1", "SWEEP_HEARTBEAT_GRACE": "5"}
    launch = subprocess.Popen(
        [sys.executable, "-m", "sweep.launch", "--study", "s.toml", "--storage",
         own_postgres.url, "--subset", "1500", "--workers", str(workers), "--quiet"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                trials = optuna.load_study(study_name="s", storage=own_postgres.url).trials
            except (KeyError, Exception):  # noqa: BLE001 - not made yet
                trials = []
            if any(t.state.name == "RUNNING" and t.intermediate_values for t in trials):
                break
            time.sleep(0.5)
        own_postgres.stop()
        _, err = launch.communicate(timeout=120)
    finally:
        launch.kill()
    assert launch.returncode == 3, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: the storage did not answer for 4 s"), err
    assert len(lines) < 20 * workers, err  # the retries said, and the end: no tracebacks


QUICK = _study(n_trials=5, epochs=2, rates=(0.001, 0.002, 0.003))


@pytest.mark.slow
@pytest.mark.parametrize("after", [0.0, 0.45, 0.9, 1.35])
def test_two_ctrl_c_in_quick_succession_at_any_moment_requeue_and_resume(
    tmp_path: Path, after: float
) -> None:
    """Two SIGINTs 50 ms apart, landing wherever the one-process launch is (training, the
    claim, the tell, the requeue): exit 130, no traceback, no trial left RUNNING, no
    interrupted trial counted; the resume spends the budget on completed trials."""
    study = QUICK.replace('[sampler]\nname = "grid"', '[sampler]\nname = "random"')
    study = study.replace("n_trials = 5", "n_trials = 8")  # the signals land before the end
    cmd, env, url = _launch(tmp_path, study)
    cmd[cmd.index("1500")] = "300"
    # Two epochs of 300 images: on an idle machine trial 1 may end before the next look.
    proc = _start_and_wait_for_epoch(cmd, env, tmp_path, trial=1, running=False)
    time.sleep(after)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, (tmp_path / "launch.err").read_text()
    assert "Traceback" not in (tmp_path / "launch.err").read_text()
    trials = optuna.load_study(study_name="s", storage=url).get_trials()
    states = [t.state.name for t in trials]
    assert "RUNNING" not in states, states
    retried = {t.system_attrs.get("failed_trial") for t in trials}
    assert all(t.number in retried for t in trials if t.state.name == "FAIL"), states

    resumed = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr
    trials = optuna.load_study(study_name="s", storage=url).get_trials()
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == 8 and "RUNNING" not in states, states


@pytest.mark.slow
def test_a_storage_whose_disk_fills_ends_in_one_line_and_keeps_the_database_whole(
    tmp_path: Path,
) -> None:
    """The database cannot grow (a process file-size limit fails SQLite's write as a full
    disk does): exit 3 with one line, no traceback, and a database still sound to resume."""
    import resource

    (tmp_path / "s.toml").write_text(QUICK)
    url = f"sqlite:///{tmp_path / 'k.db'}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def small_files() -> None:  # Optuna's empty tables take 112 KiB
        resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))

    done = subprocess.run(
        [sys.executable, "-m", "sweep.launch", "--study", "s.toml", "--storage", url,
         "--subset", "100", "--quiet"],
        cwd=tmp_path, env=env, preexec_fn=small_files, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: the storage could not write")
    with closing(sqlite3.connect(tmp_path / "k.db")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert optuna.load_study(study_name="s", storage=url).trials  # readable, as it was
