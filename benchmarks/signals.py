"""Signals that always stop a worker: SIGTERM and SIGINT sent to a bare ``sweep worker`` at
varied moments (while it starts, mid-epoch, between trials), each try in a fresh study.

A try passes when the worker exits 130 within the grace period that ``docker compose stop``
gives it (``stop_grace_period`` in docker-compose.yml), prints no traceback, and leaves no
trial RUNNING: each trial it was running is failed and has a WAITING copy to run again.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.suite import REPO, Result

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

__all__ = ["GRACE_S", "MOMENTS", "Stopped", "signals", "stop_worker"]

GRACE_S = 30.0  # docker-compose.yml: stop_grace_period

# Tiny trials, many of them: a good share of the worker's time is spent between trials.
STUDY = """
dataset = "synthetic"
n_trials = 60

[space]
family = "baseline"
learning_rate = { low = 5e-4, high = 3e-3, log = true }
batch_size = 32
epochs = 2

[sampler]
name = "random"
"""

MOMENTS = ("starting", "mid-epoch", "between trials")


@dataclass(frozen=True)
class Stopped:
    """What one signal did."""

    moment: str
    signal: str
    seconds: float | None  # from the signal to the exit; None: still running at the grace
    returncode: int | None
    traceback: bool
    running_left: int  # trials left RUNNING
    unrequeued: int  # failed trials with no WAITING copy
    stderr: str = field(default="", repr=False)

    def __str__(self) -> str:
        return f"{self!r}\n{self.stderr[-3000:]}"

    @property
    def ok(self) -> bool:
        return (
            self.seconds is not None
            and self.returncode == 130
            and not self.traceback
            and self.running_left == 0
            and self.unrequeued == 0
        )


def _trials(url: str) -> list[FrozenTrial]:
    import optuna

    try:
        return optuna.load_study(study_name="signals", storage=url).get_trials()
    except Exception:  # noqa: BLE001 - no study yet, or its tables being created
        return []


def _reached(url: str, moment: str, after: int) -> bool:
    trials = _trials(url)
    if moment == "mid-epoch":
        return any(t.state.name == "RUNNING" and t.intermediate_values for t in trials)
    if moment == "between trials":
        return sum(t.state.name == "COMPLETE" for t in trials) >= after
    return True


def stop_worker(work: Path, moment: str, signum: int, delay: float) -> Stopped:
    """Start a worker in ``work``, wait for ``moment``, then ``delay`` seconds more, send
    ``signum`` and see what it did."""
    (work / "signals.toml").write_text(STUDY)
    url = f"sqlite:///{work / 'signals.db'}"
    env = {k: v for k, v in os.environ.items() if k != "SWEEP_STORAGE"}
    env |= {"PYTHONPATH": str(REPO), "SWEEP_STORAGE": url, "CUDA_VISIBLE_DEVICES": ""}
    argv = [sys.executable, "-m", "sweep", "worker", "--study", "signals.toml", "--subset", "1500"]
    worker = subprocess.Popen(argv, cwd=work, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not _reached(url, moment, after=1) and time.monotonic() < deadline:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited early:\n{worker.communicate()[1][-2000:]}")
            time.sleep(0.05)
        time.sleep(delay)
        sent = time.monotonic()
        worker.send_signal(signum)
        try:
            _, err = worker.communicate(timeout=GRACE_S)
            seconds: float | None = time.monotonic() - sent
        except subprocess.TimeoutExpired:
            seconds, err = None, ""
    finally:
        worker.kill()
        worker.wait()
    trials = _trials(url)
    failed = [t.number for t in trials if t.state.name == "FAIL"]
    copies = {t.system_attrs.get("failed_trial") for t in trials if t.state.name == "WAITING"}
    return Stopped(
        moment=moment,
        signal=signal.Signals(signum).name,
        seconds=seconds,
        returncode=worker.returncode if seconds is not None else None,
        traceback="Traceback" in err,
        running_left=sum(t.state.name == "RUNNING" for t in trials),
        unrequeued=sum(n not in copies for n in failed),
        stderr=err,
    )


def signals(quick: bool) -> Result:
    """Share of tries in which a bare worker stopped cleanly within the grace period: 24 tries
    (6 with --quick), alternating SIGTERM and SIGINT, over the three moments, each after a
    random extra delay (0 to 2 s starting, 0 to 1 s mid-epoch, 0 to 0.5 s between trials)."""
    rng = random.Random(0)
    tries = 6 if quick else 24
    spread = {"starting": 2.0, "mid-epoch": 1.0, "between trials": 0.5}
    outcomes = []
    for i in range(tries):
        moment = MOMENTS[i % len(MOMENTS)]
        signum = (signal.SIGTERM, signal.SIGINT)[i // len(MOMENTS) % 2]
        with tempfile.TemporaryDirectory() as tmp:
            outcomes.append(stop_worker(Path(tmp), moment, signum, rng.uniform(0, spread[moment])))
    good = [o for o in outcomes if o.ok]
    slowest = max((o.seconds for o in outcomes if o.seconds is not None), default=0.0)
    bad = "; ".join(f"{o.moment} {o.signal}: {o}" for o in outcomes if not o.ok)
    return Result(
        "signals",
        len(good) / tries,
        1.0,
        higher_is_better=True,
        details=f"{len(good)}/{tries} stopped cleanly within {GRACE_S:.0f} s, the slowest in "
        f"{slowest:.1f} s" + (f"; failed: {bad}" if bad else ""),
        data={"tries": tries, "ok": len(good), "slowest_s": slowest},
    )
