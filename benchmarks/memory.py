"""A worker's memory, trial after trial: what each trial leaves behind in a long study.

One real ``sweep worker`` per backend, on its own SQLite study of short trials (one epoch on
240 synthetic images, the four built-in families drawn at random, figures and notes published
as in any study). From outside, every 0.2 s, this reads the worker's resident memory
(``/proc/PID/status``, VmRSS) and the study's finished trials; the RSS when trial N has
finished is the first reading that sees N. The figure is the growth per trial from trial 20
(everything imported, every family's code traced once) to the last: the slope of a straight
line through those readings, since a worker that replaces its process (``sweep.recycle``)
goes up and down; the least and most RSS beside it.

``python -m benchmarks.memory [--trials N] [BACKEND ...]`` prints one line per backend.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.suite import REPO, Result

__all__ = ["memory", "worker_rss"]

STUDY = """
description = "benchmark: a worker's memory over many short trials"
dataset = "synthetic"
n_trials = {n}
keep_models = 1
[space]
family = ["baseline", "dropout", "batchnorm", "twoconv"]
learning_rate = {{ low = 3e-4, high = 3e-3, log = true }}
batch_size = [32, 64]
epochs = 1
[sampler]
name = "random"
[baseline]
epochs = 1
"""
WARM = 20  # trials before the growth is counted: imports, first traces, caches filled
FLOOR_MB = 1.0


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    # 0 while the worker execs itself (sweep.recycle): no reading then.
                    return int(line.split()[1]) / 1024 or None
    except OSError:
        pass
    return None


def _finished(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            query = "SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED', 'FAIL')"
            return int(conn.execute(query).fetchone()[0])
    except sqlite3.Error:
        return 0


def worker_rss(backend: str, trials: int, work: Path) -> dict[int, float]:
    """The RSS (MB) of one ``sweep worker`` on ``backend`` after each of ``trials`` trials."""
    (work / f"{backend}.toml").write_text(STUDY.format(n=trials))
    db = work / f"{backend}.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWEEP_")}
    env |= {"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    argv = [sys.executable, "-m", "sweep", "worker", "--study", f"{backend}.toml"]
    argv += ["--storage", f"sqlite:///{db}", "--backend", backend, "--subset", "300"]
    seen: dict[int, float] = {}
    with open(work / f"{backend}.log", "wb") as log:
        proc = subprocess.Popen(argv, cwd=work, env=env, stdout=log, stderr=log)
        try:
            while proc.poll() is None:
                done, rss = _finished(db), _rss_mb(proc.pid)
                if done and done not in seen and rss is not None:
                    seen[done] = rss
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    if proc.returncode != 0:
        tail = (work / f"{backend}.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the {backend} worker exited {proc.returncode}:\n{tail}")
    return seen


def growth(seen: dict[int, float], warm: int = WARM) -> dict[str, float]:
    """RSS after trial ``warm`` (or the first seen past it), after the last, the most and
    least from there on, and the growth per trial: the least-squares slope of RSS over those
    trials, which a worker that replaces its process (a saw-tooth) keeps near 0."""
    after = {n: mb for n, mb in seen.items() if n >= warm} or seen
    warm, last = min(after), max(after)
    xs = sorted(after)
    slope = statistics.linear_regression(xs, [after[n] for n in xs]).slope if len(xs) > 1 else 0
    return {
        "warm_trial": warm, "rss_warm_mb": round(after[warm]), "last_trial": last,
        "rss_last_mb": round(after[last]), "rss_max_mb": round(max(after.values())),
        "rss_min_mb": round(min(after.values())), "mb_per_trial": round(slope, 2),
    }  # fmt: skip


def _shown(backend: str, g: dict[str, float]) -> str:
    return (
        f"{backend}: {g['rss_warm_mb']} MB after trial {g['warm_trial']}, {g['rss_last_mb']} MB "
        f"after trial {g['last_trial']} (from trial {g['warm_trial']} on: {g['rss_min_mb']} to "
        f"{g['rss_max_mb']} MB), {g['mb_per_trial']:+.2f} MB per trial"
    )


def memory(quick: bool) -> Result:
    """MB of resident memory one worker gains per trial after trial 20, the worst backend's;
    200 one-epoch trials on each of TensorFlow, JAX and PyTorch (--quick: 30 on TensorFlow,
    counted from trial 10). Floor: at most 1 MB per trial."""
    trials, warm = (30, 10) if quick else (200, WARM)
    backends = ("tensorflow",) if quick else ("tensorflow", "jax", "torch")
    per: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="sweep-memory-") as tmp:
        for backend in backends:
            per[backend] = growth(worker_rss(backend, trials, Path(tmp)), warm)
    worst = max(g["mb_per_trial"] for g in per.values())
    shown = "; ".join(_shown(b, g) for b, g in per.items())
    details = f"{shown} ({trials} one-epoch trials each)"
    return Result("memory", worst, FLOOR_MB, details=details, data=per)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory")
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("backends", nargs="*", default=["tensorflow", "jax", "torch"])
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sweep-memory-") as tmp:
        for backend in args.backends:
            seen = worker_rss(backend, args.trials, Path(tmp))
            points = ", ".join(f"{n}:{seen[n]:.0f}" for n in sorted(seen) if n % 10 == 0)
            print(f"{_shown(backend, growth(seen))} (every 10th: {points})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
