"""Several worker processes share one study: the exact budget, every grid point once, and a
killed worker or a restarted PostgreSQL costs no completed trial."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from helpers import REPO, run_cli, study_toml

TINY = study_toml(n_trials=5)


def _slow(epochs: int = 6) -> str:
    """Long enough trials (6 epochs on 1,200 images) that a worker can be stopped in one."""
    return study_toml(
        n_trials=3,
        space={"learning_rate": [0.001, 0.002, 0.0005], "epochs": epochs},
        sampler={"name": "grid"},
        baseline={"learning_rate": 0.001, "epochs": epochs},
    )


# SQLite timestamps have 1 s resolution and two TensorFlow processes share 2 cores: 5 s grace.
FAST_HEARTBEAT = {"SWEEP_HEARTBEAT_INTERVAL": "1", "SWEEP_HEARTBEAT_GRACE": "5"}


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials()


def _states(trials: list[optuna.trial.FrozenTrial]) -> list[str]:
    return [t.state.name for t in trials]


def _start_worker(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """``python -m sweep.worker`` as docker-compose or a user on another host starts it."""
    full = {k: v for k, v in os.environ.items() if k != "SWEEP_STORAGE"}
    full |= {"PYTHONPATH": str(REPO), **env}
    return subprocess.Popen(
        [sys.executable, "-m", "sweep.worker", *args],
        cwd=cwd,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(check: Callable[[], object], what: str, timeout: float = 300) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except Exception:  # noqa: BLE001 - tables not there yet, or the server restarting
            found = None
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _running_with_an_epoch(url: str, name: str) -> optuna.trial.FrozenTrial | None:
    """A RUNNING trial that has reported an epoch: its heartbeat has surely started."""
    for t in _trials(url, name):
        if t.state.name == "RUNNING" and t.intermediate_values and "worker" in t.user_attrs:
            return t
    return None


def _finish(procs: list[subprocess.Popen[str]], timeout: float = 400) -> list[str]:
    errors = []
    for proc in procs:
        _, err = proc.communicate(timeout=timeout)
        errors.append(err)
        assert proc.returncode == 0, err
        assert "Traceback" not in err, err
    return errors


@pytest.mark.slow
def test_three_workers_spend_exactly_the_studys_budget(tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text(TINY)
    url = f"sqlite:///{tmp_path / 'w.db'}"
    result = run_cli(
        "sweep.launch", "--study", "tiny.toml", "--storage", url, "--n-trials", "7",
        "--workers", "3", "--subset", "200", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "database is locked" not in result.stderr
    trials = _trials(url, "tiny")
    assert len(trials) == 7  # the study's budget, not 3 x 7 and not 8
    assert set(_states(trials)) <= {"COMPLETE", "PRUNED"}
    assert sum(bool(t.user_attrs.get("is_baseline")) for t in trials) == 1
    assert len({t.user_attrs["worker"] for t in trials}) >= 2  # the work was shared
    # Each trial reseeds the sampler with its own number: no two workers draw the same point.
    assert len({t.params["learning_rate"] for t in trials}) == 7
    assert "started 3 workers" in result.stderr
    assert "Δtest pp" in result.stdout  # the launcher prints the table when they are done


def test_exp3_grid_runs_each_point_once_with_four_workers_on_postgres(
    tmp_path: Path, postgres_url: str
) -> None:
    name = f"exp3-{uuid.uuid4().hex[:8]}"
    result = run_cli(
        "sweep.launch", "--study", "exp3", "--dataset", "synthetic", "--subset", "60",
        "--max-epochs", "1", "--storage", postgres_url, "--study-name", name, "--workers", "4",
        "--quiet", cwd=tmp_path,
    )  # fmt: skip
    try:
        assert result.returncode == 0, result.stderr
        trials = _trials(postgres_url, name)
        points = {tuple(sorted(t.params.items())) for t in trials}
        assert len(trials) == 27 and len(points) == 27
        assert set(_states(trials)) == {"COMPLETE"}
        assert sum(bool(t.user_attrs.get("is_baseline")) for t in trials) == 1
        assert len({t.user_attrs["worker"] for t in trials}) >= 2
    finally:
        optuna.delete_study(study_name=name, storage=postgres_url)


@pytest.mark.slow
def test_a_sigkilled_workers_trial_is_run_again_by_a_survivor(tmp_path: Path) -> None:
    """Two workers started by hand (as on two hosts) create the study together; one is
    killed mid-trial; the other fails its trial after the grace period, runs it again with the
    same params, and spends the budget. No completed trial is lost."""
    (tmp_path / "slow.toml").write_text(_slow())
    url = f"sqlite:///{tmp_path / 'k.db'}"
    args = ("--study", "slow.toml", "--storage", url, "--subset", "1500")
    workers = [_start_worker(tmp_path, *args, env=FAST_HEARTBEAT) for _ in range(2)]
    try:
        victim = _wait_for(lambda: _running_with_an_epoch(url, "slow"), "a running trial")
        assert isinstance(victim, optuna.trial.FrozenTrial)
        before = [t for t in _trials(url, "slow") if t.state.name == "COMPLETE"]
        pid = int(victim.user_attrs["worker"].rsplit(":", 1)[1])
        (killed,) = [w for w in workers if w.pid == pid]
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        survivors = [w for w in workers if w is not killed]
        errors = _finish(survivors)
    finally:
        for w in workers:
            w.kill()
    assert "database is locked" not in "".join(errors)
    trials = _trials(url, "slow")
    dead = trials[victim.number]
    assert dead.state.name == "FAIL"
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == victim.number)
    assert retry.state.name == "COMPLETE" and retry.params == victim.params
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 3  # the budget, reached without the dead worker
    assert sorted(t.params["learning_rate"] for t in complete) == [0.0005, 0.001, 0.002]
    assert sum(bool(t.user_attrs.get("is_baseline")) for t in complete) == 1
    by_number = {t.number: t for t in trials}
    for t in before:
        assert by_number[t.number] == t  # completed trials untouched
    assert "RUNNING" not in _states(trials) and "WAITING" not in _states(trials)


def _pg_ctl(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        check=True,
        capture_output=True,
        timeout=120,
    )


def _restart_postgres(down_s: float) -> None:
    """Stop the server, keep it down for ``down_s`` seconds, start it again."""
    _pg_ctl("stop")
    try:
        time.sleep(down_s)
    finally:
        _pg_ctl("start")


@pytest.mark.slow
def test_workers_survive_a_postgresql_restart(tmp_path: Path, postgres_url: str) -> None:
    (tmp_path / "slow.toml").write_text(_slow())
    name = f"restart-{uuid.uuid4().hex[:8]}"
    args = ("--study", "slow.toml", "--storage", postgres_url, "--study-name", name)
    env = {"SWEEP_HEARTBEAT_INTERVAL": "1", "SWEEP_HEARTBEAT_GRACE": "20"}
    workers = [_start_worker(tmp_path, *args, "--subset", "1500", env=env) for _ in range(2)]
    try:
        _wait_for(lambda: _running_with_an_epoch(postgres_url, name), "a running trial")
        before = {t.number: t for t in _trials(postgres_url, name) if t.state.is_finished()}
        _restart_postgres(down_s=4)
        errors = _finish(workers)
        trials = _trials(postgres_url, name)
    finally:
        for w in workers:
            w.kill()
        _wait_for(
            lambda: optuna.delete_study(study_name=name, storage=postgres_url) or True, "cleanup"
        )
    # The workers did lose the server for a while, retried, and went on.
    assert any("storage unavailable" in e for e in errors), errors
    states = _states(trials)
    assert "RUNNING" not in states and "WAITING" not in states
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert sorted(t.params["learning_rate"] for t in complete) == [0.0005, 0.001, 0.002]
    by_number = {t.number: t for t in trials}
    for number, t in before.items():
        assert by_number[number] == t


@pytest.mark.parametrize("times", [1, 2], ids=["once", "twice"])
@pytest.mark.slow
def test_sigterm_to_the_launcher_requeues_every_running_trial(tmp_path: Path, times: int) -> None:
    """Once: the workers requeue their trials and stop. Twice: the launcher kills them at
    once and requeues their trials itself. Either way no trial is left RUNNING."""
    (tmp_path / "slow.toml").write_text(_slow(epochs=30))
    url = f"sqlite:///{tmp_path / 't.db'}"
    env = {k: v for k, v in os.environ.items() if k != "SWEEP_STORAGE"}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "sweep.launch", "--study", "slow.toml", "--storage", url,
         "--subset", "1500", "--workers", "2", "--quiet"],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_for(lambda: _running_with_an_epoch(url, "slow"), "a running trial")
        started = time.monotonic()
        for _ in range(times):
            launcher.send_signal(signal.SIGTERM)
            time.sleep(0.2)
        out, err = launcher.communicate(timeout=60)
        stopped_in = time.monotonic() - started
    finally:
        launcher.kill()
    assert launcher.returncode == 130, err
    assert stopped_in < (15 if times == 1 else 5)
    assert "Traceback" not in err, err
    assert "interrupted" in out
    trials = _trials(url, "slow")
    assert "RUNNING" not in _states(trials)
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert failed  # the interrupted trials, each requeued with its params
    for t in failed:
        again = next(r for r in trials if r.system_attrs.get("failed_trial") == t.number)
        assert again.state.name == "WAITING" and again.params == t.params


@pytest.mark.slow
def test_the_launcher_goes_on_when_one_of_its_workers_is_killed(tmp_path: Path) -> None:
    (tmp_path / "slow.toml").write_text(_slow())
    url = f"sqlite:///{tmp_path / 'l.db'}"
    env = {k: v for k, v in os.environ.items() if k != "SWEEP_STORAGE"}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "sweep.launch", "--study", "slow.toml", "--storage", url,
         "--subset", "1500", "--workers", "2", "--quiet"],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO), **FAST_HEARTBEAT},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        victim = _wait_for(lambda: _running_with_an_epoch(url, "slow"), "a running trial")
        assert isinstance(victim, optuna.trial.FrozenTrial)
        os.kill(int(victim.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
        out, err = launcher.communicate(timeout=400)
    finally:
        launcher.kill()
    assert launcher.returncode == 0, err  # the study still reached its budget
    assert "exited with code -9" in err  # and the dead worker is named
    trials = _trials(url, "slow")
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert sorted(t.params["learning_rate"] for t in complete) == [0.0005, 0.001, 0.002]
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == victim.number)
    assert retry.state.name == "COMPLETE" and retry.params == victim.params
    assert "Δtest pp" in out


def test_an_exception_inside_a_trial_is_recorded_and_the_loop_goes_on(tmp_path: Path) -> None:
    """Out of memory, a bug in a layer: the trial ends FAIL with the reason, spends budget,
    and the worker takes the next one."""
    from sweep.loop import run_trials
    from sweep.stop import StopEvent
    from sweep.storage import open_storage

    rdb = open_storage(f"sqlite:///{tmp_path / 'x.db'}")
    study = optuna.create_study(study_name="x", storage=rdb, direction="maximize")

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 1:
            raise MemoryError("OOM when allocating tensor with shape [4096, 4096]")
        return x

    assert run_trials(study, objective, storage=rdb, budget=3, stop=StopEvent()) == 3
    trials = study.get_trials()
    assert _states(trials) == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[1].user_attrs["failure"].startswith("MemoryError: OOM when allocating")
    assert study.best_trial.number != 1


@pytest.mark.slow
def test_sigterm_to_a_worker_requeues_its_trial(tmp_path: Path) -> None:
    """What `docker compose stop` does to a worker."""
    (tmp_path / "slow.toml").write_text(_slow(epochs=30))
    url = f"sqlite:///{tmp_path / 'd.db'}"
    worker = _start_worker(tmp_path, "--study", "slow.toml", "--subset", "1500", env={
        "SWEEP_STORAGE": url})  # fmt: skip
    try:
        victim = _wait_for(lambda: _running_with_an_epoch(url, "slow"), "a running trial")
        assert isinstance(victim, optuna.trial.FrozenTrial)
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=120)
    finally:
        worker.kill()
    assert worker.returncode == 130 and "Traceback" not in err, err
    assert "was requeued" in err and "has 0 of 3 trials" in err  # a summary of what finished
    trials = _trials(url, "slow")
    assert trials[victim.number].state.name == "FAIL"
    # It stopped at once, not after its 30 epochs (an epoch may end while the signal lands).
    assert len(trials[victim.number].intermediate_values) <= len(victim.intermediate_values) + 1
    again = next(t for t in trials if t.system_attrs.get("failed_trial") == victim.number)
    assert again.state.name == "WAITING" and again.params == victim.params
    assert "RUNNING" not in _states(trials)


@pytest.mark.slow
def test_stops_do_not_use_up_the_retries_kept_for_dead_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three Ctrl-Cs on one trial, then its worker dies: it is still run again (Optuna's
    retry limit, 2, counts only dead workers), and none of the attempts spent budget."""
    import warnings

    from sweep import storage
    from sweep.budget import counts
    from sweep.errors import Interrupted
    from sweep.loop import run_trials
    from sweep.rdb import claiming
    from sweep.stop import StopEvent

    monkeypatch.setenv("SWEEP_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("SWEEP_HEARTBEAT_GRACE", "2")
    rdb = storage.open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(study_name="s", storage=rdb, direction="maximize")
    study.enqueue_trial({"x": 0.25})
    for _ in range(3):
        stop = StopEvent()

        def interrupted(trial: optuna.Trial, stop: StopEvent = stop) -> float:
            trial.suggest_float("x", 0, 1)
            stop.set()
            raise KeyboardInterrupt

        with pytest.raises(Interrupted):
            run_trials(study, interrupted, storage=rdb, budget=1, stop=stop)
    assert _states(study.get_trials()) == ["FAIL", "FAIL", "FAIL", "WAITING"]
    assert counts(study.get_trials()) == (0, 0)
    warnings.simplefilter("ignore", UserWarning)  # ask() outside optimize(): on purpose
    with claiming(rdb):
        study.ask()  # a worker claims the requeued trial and dies at once
    time.sleep(3.5)  # 2 s of grace, and SQLite keeps whole seconds
    run_trials(study, lambda t: t.suggest_float("x", 0, 1), storage=rdb, budget=1, stop=StopEvent())
    trials = study.get_trials()
    assert _states(trials) == ["FAIL", "FAIL", "FAIL", "FAIL", "COMPLETE"]
    assert trials[-1].params == {"x": 0.25} and counts(trials) == (1, 0)


@pytest.mark.parametrize(
    ("moment", "signum", "delay"),
    [
        ("starting", signal.SIGTERM, 1.5),
        ("mid-epoch", signal.SIGINT, 0.3),
        ("between trials", signal.SIGTERM, 0.1),
    ],
)
@pytest.mark.slow
def test_a_bare_worker_stops_cleanly_whenever_the_signal_lands(
    tmp_path: Path, moment: str, signum: int, delay: float
) -> None:
    """What ``docker compose stop`` (SIGTERM) or Ctrl-C (SIGINT) does to a worker, at three
    kinds of moment; ``python -m benchmarks --only signals`` sends 24 at random moments."""
    from benchmarks.signals import stop_worker

    stopped = stop_worker(tmp_path, moment, signum, delay)
    assert stopped.ok, str(stopped)


LOST_INTERRUPT = """
import os, signal, sys
from sweep.stop import StopEvent

stop = StopEvent()
stop.install()


class Dropper:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10_000):  # the handler runs in here, where Python drops what it raises
            pass


Dropper()
print("stop set" if stop.is_set() else "stop lost")
"""


def test_an_interrupt_lost_in_a_garbage_collection_callback_is_neither_printed_nor_lost() -> None:
    """SQLAlchemy's weakref callbacks run at any bytecode; a signal landing in one used to
    print "Exception ignored in ... KeyboardInterrupt" and was forgotten."""
    done = subprocess.run(
        [sys.executable, "-c", LOST_INTERRUPT],
        capture_output=True, text=True, env={"PYTHONPATH": str(REPO)}, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.split() == ["stop", "set"], done
    assert done.stderr == ""


def test_a_claim_made_after_the_server_dropped_the_study_lock_never_exceeds_the_budget(
    postgres_url: str,
) -> None:
    """A PostgreSQL restart between a worker's budget check and its claim drops its study
    lock; another worker takes the last slot meanwhile. The later claim gives way, unrun."""
    import sqlalchemy

    from sweep import storage
    from sweep.budget import counts
    from sweep.loop import run_trials
    from sweep.stop import StopEvent

    name = f"lostlock-{uuid.uuid4().hex[:8]}"
    drop_lock_holder = sqlalchemy.text(
        "SELECT pg_terminate_backend(pid) FROM pg_locks"
        " WHERE locktype = 'advisory' AND objid = :k AND granted"
    )
    a, b = storage.open_storage(postgres_url), storage.open_storage(postgres_url)
    study_a = optuna.create_study(study_name=name, storage=a, direction="maximize")
    study_b = optuna.load_study(study_name=name, storage=b)
    key = storage._lock_key(name) & 0xFFFFFFFF  # pg_locks shows the key's low 32 bits as objid
    ran: list[str] = []
    real_claim = a._create_new_trial

    def claim_after_a_restart(*args: object, **kwargs: object) -> object:
        if not ran:
            with b.engine.connect() as conn:  # the server drops the session holding A's lock
                dropped = conn.execute(drop_lock_holder, {"k": key}).scalars().all()
            assert dropped == [True]
            ran.append("b")  # and another worker claims the last slot
            run_trials(study_b, lambda t: t.suggest_float("x", 0, 1), storage=b, budget=1,
                       stop=StopEvent())  # fmt: skip
        return real_claim(*args, **kwargs)

    a._create_new_trial = claim_after_a_restart  # type: ignore[method-assign]

    def objective_a(trial: optuna.Trial) -> float:
        ran.append("a")
        return trial.suggest_float("x", 0, 1)

    try:
        run_trials(study_a, objective_a, storage=a, budget=1, stop=StopEvent())
        trials = study_a.get_trials()
    finally:
        optuna.delete_study(study_name=name, storage=postgres_url)
    assert ran == ["b"]  # A's trial never trained
    assert _states(trials) == ["COMPLETE", "FAIL"] and counts(trials) == (1, 0)
    assert "given back" in trials[1].user_attrs["failure"]


@pytest.mark.slow
def test_launches_that_share_a_seed_draw_other_params_and_each_trial_its_own_draw(
    tmp_path: Path,
) -> None:
    """Two ``sweep launch`` processes of one study (both lone workers with the study's seed,
    as compose workers on several hosts are) draw a different point for every trial; and
    trial n draws what trial n draws in a one-worker run of the same seed (the random
    sampler's draw depends on the seed and the trial number alone)."""
    (tmp_path / "tiny.toml").write_text(study_toml(n_trials=6))
    shared, alone = (f"sqlite:///{tmp_path / n}" for n in ("shared.db", "alone.db"))
    args = ("--study", "tiny.toml", "--subset", "60", "--quiet")
    env = {k: v for k, v in os.environ.items() if k != "SWEEP_STORAGE"}
    env |= {"PYTHONPATH": str(REPO)}
    launches = [
        subprocess.Popen(
            [sys.executable, "-m", "sweep.launch", *args, "--storage", shared],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    _finish(launches)
    result = run_cli("sweep.launch", *args, "--storage", alone, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    together, single = _trials(shared, "tiny"), _trials(alone, "tiny")
    assert len(together) == len(single) == 6
    assert len({t.user_attrs["worker"] for t in together}) == 2  # both launches ran trials
    assert len({t.params["learning_rate"] for t in together}) == 6
    assert [t.params for t in together] == [t.params for t in single]


@pytest.mark.slow
def test_a_trial_another_optuna_client_asked_holds_no_budget_and_no_launch_waits_for_it(
    tmp_path: Path,
) -> None:
    """``optuna ask`` leaves a RUNNING trial with no heartbeat: no worker runs it and it never
    goes stale. A launch runs its own budget past it and returns (it once waited forever)."""
    (tmp_path / "tiny.toml").write_text(TINY)
    url = f"sqlite:///{tmp_path / 'w.db'}"
    args = ("sweep.launch", "--study", "tiny.toml", "--storage", url, "--subset", "60", "--quiet")
    first = run_cli(*args, "--n-trials", "1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    asked = optuna.load_study(study_name="tiny", storage=url).ask()  # never told
    again = run_cli(*args, "--n-trials", "3", cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr
    trials = _trials(url, "tiny")
    states = {t.number: t.state.name for t in trials}
    assert states.pop(asked.number) == "RUNNING"
    assert len(states) == 3 and set(states.values()) <= {"COMPLETE", "PRUNED"}


@pytest.mark.slow
@pytest.mark.parametrize("command", ["worker", "launch"])
def test_a_worker_replaces_its_process_every_n_trials_and_loses_none(
    tmp_path: Path, command: str
) -> None:
    """What TensorFlow keeps per trial goes with the process: a worker execs itself every N
    trials, between trials, keeping its PID; the study runs to its budget as if it had not."""
    (tmp_path / "tiny.toml").write_text(TINY)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    args = ["sweep", command, "--study", "tiny.toml", "--storage", url, "--subset", "200"]
    env = {"SWEEP_RECYCLE_TRIALS": "2", "SWEEP_LOG_LEVEL": "INFO"}
    done = run_cli(*args, *(["--quiet"] if command == "launch" else []), cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = _trials(url, "tiny")
    assert _states(trials) == ["COMPLETE"] * 5  # none lost, none twice, the budget exact
    assert len({t.user_attrs["worker"] for t in trials}) == 1  # one PID throughout
    replaced = done.stderr.count("replacing this worker's process after 2 trials")
    assert replaced == 2  # after trials 2 and 4; the fifth ends the study
    if command == "launch":
        assert done.stdout.count("study 'tiny' in") == 1  # the table once, at the end

    # 0 turns it off: one process runs all five.
    url = f"sqlite:///{tmp_path / 'once.db'}"
    args[args.index("--storage") + 1] = url
    done = run_cli(*args, cwd=tmp_path, env={**env, "SWEEP_RECYCLE_TRIALS": "0"})
    assert done.returncode == 0 and "replacing" not in done.stderr
    assert _states(_trials(url, "tiny")) == ["COMPLETE"] * 5


def test_a_worker_on_any_backend_is_replaced_every_25_trials_unless_told(monkeypatch) -> None:
    """PyTorch and JAX workers keep memory per trial too (benchmarks/memory.py): every
    backend's worker is replaced by default, not TensorFlow's alone (``every`` takes no
    backend)."""
    from sweep import recycle

    monkeypatch.delenv("SWEEP_RECYCLE_TRIALS", raising=False)
    assert recycle.every() == 25
    monkeypatch.setenv("SWEEP_RECYCLE_TRIALS", "0")
    assert recycle.every() is None
    monkeypatch.setenv("SWEEP_RECYCLE_TRIALS", "7")
    assert recycle.every() == 7
