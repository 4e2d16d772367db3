"""The benchmarks. Each returns a :class:`Result`: a ratio, its floor, and what was measured.

Timed pairs are interleaved (A, B, B, A, ...) and each side is summarised by its fastest
run: on a shared machine noise only ever adds time, so the minimum is the steadiest estimate
of what a thing costs, and interleaving puts a slow spell on both sides.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    name: str
    ratio: float | None  # None: skipped
    floor: float
    higher_is_better: bool = False
    details: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        if self.ratio is None:
            return None
        return self.ratio >= self.floor if self.higher_is_better else self.ratio <= self.floor

    def line(self) -> str:
        if self.ratio is None:
            return f"{self.name}: skipped ({self.details})"
        sign = ">=" if self.higher_is_better else "<="
        verdict = "" if self.met else " MISSED"
        floor = f"(floor {sign} {self.floor}){verdict}"
        return f"{self.name}: ratio {self.ratio:.3f} {floor} {self.details}"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SWEEP_STORAGE", "SWEEP_ARTIFACTS")}
    return {**env, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


def _timed(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    """Wall time of a command; it must succeed."""
    start = time.perf_counter()
    done = subprocess.run(
        argv, cwd=cwd, env={**_env(), **(env or {})}, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def _interleaved(
    a: Callable[[], float], b: Callable[[], float], rounds: int
) -> tuple[float, float]:
    """Fastest of ``rounds`` alternating timings of ``a`` and ``b``."""
    ta, tb = [], []
    for i in range(rounds):
        first, second = (a, b) if i % 2 == 0 else (b, a)
        x, y = first(), second()
        (ta if first is a else tb).append(x)
        (tb if first is a else ta).append(y)
    return min(ta), min(tb)


# --------------------------------------------------------------------------- startup


def startup(quick: bool) -> Result:
    """Wall time of ``python -m sweep.launch --help`` vs ``python -c "import tensorflow"``,
    each a fresh process (3 alternating runs each with --quick, else 7; medians). The CLI,
    its checks and its errors must not wait for TensorFlow."""
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        launch, tf = _interleaved(
            lambda: _timed([py, "-m", "sweep.launch", "--help"], Path(tmp)),
            lambda: _timed([py, "-c", "import tensorflow"], Path(tmp)),
            rounds=3 if quick else 7,
        )
    return Result(
        "startup",
        launch / tf,
        0.25,
        details=f"launch --help {launch:.2f} s, import tensorflow {tf:.2f} s",
        data={"launch_help_s": launch, "import_tensorflow_s": tf},
    )


# --------------------------------------------------------------------------- augmentation

_AUGMENT_CACHE: dict[bool, dict[str, float]] = {}


def _augment_epochs(quick: bool) -> dict[str, float]:
    """Median seconds of one Exp 4 training epoch three ways, measured once for both
    augmentation benchmarks: batchnorm family, batch 64, the reports' Exp 4 augmentation
    (rotation 15 degrees, shifts 0.1, horizontal flip), synthetic images."""
    if quick in _AUGMENT_CACHE:
        return _AUGMENT_CACHE[quick]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    from tensorflow.keras.preprocessing.image import ImageDataGenerator  # as the reports did

    from sweep import data, models
    from sweep.config import Augmentation, Params

    n = 4000 if quick else 10000
    x, y, _, _ = data.synthetic(n, 10, seed=0)
    params = Params(family="batchnorm", batch_size=64, learning_rate=1e-3, epochs=1)
    ours = data.augmenter(Augmentation(rotation=15, shift=0.1, zoom=0.0, flip=True), 1.0)
    legacy_generator = ImageDataGenerator(
        rotation_range=15, width_shift_range=0.1, height_shift_range=0.1, horizontal_flip=True
    )
    scaled = x.astype(np.float32) / 255  # the reports fed scaled float arrays
    feeds: dict[str, Callable[[], Any]] = {
        "none": lambda: data.train_dataset(x, y, batch_size=64, seed=0),
        "service": lambda: data.train_dataset(x, y, batch_size=64, seed=0, augment=ours),
        "legacy": lambda: legacy_generator.flow(scaled, y, batch_size=64, seed=0),
    }
    model = {}
    for name, feed in feeds.items():  # one model each, traced by a first epoch
        keras.utils.set_random_seed(0)
        model[name] = models.build(params)
        model[name].fit(feed(), epochs=1, verbose=0)
    times: dict[str, list[float]] = {name: [] for name in feeds}
    for r in range(3 if quick else 5):
        order = list(feeds) if r % 2 == 0 else list(reversed(feeds))
        for name in order:
            start = time.perf_counter()
            model[name].fit(feeds[name](), epochs=1, verbose=0)
            times[name].append(time.perf_counter() - start)
    _AUGMENT_CACHE[quick] = {k: min(v) for k, v in times.items()} | {"images": n}
    return _AUGMENT_CACHE[quick]


def augment(quick: bool) -> Result:
    """One Exp 4 training epoch with the reports' augmentation through the service's input
    pipeline (uint8 held once, cast, scaled and warped per batch in parallel tf.data calls)
    vs the same epoch without augmentation; same model, batch size and images (4,000 with
    --quick, else 10,000); the fastest of 3 (else 5) interleaved epochs after a first, traced
    one."""
    t = _augment_epochs(quick)
    return Result(
        "augment",
        t["service"] / t["none"],
        1.5,
        details=f"augmented {t['service']:.2f} s, plain {t['none']:.2f} s per epoch "
        f"of {t['images']:.0f} images",
        data=t,
    )


def augment_vs_legacy(quick: bool) -> Result:
    """The same augmented Exp 4 epoch through the service's pipeline vs the reports' own
    ``ImageDataGenerator(rotation_range=15, width_shift_range=0.1, height_shift_range=0.1,
    horizontal_flip=True).flow(x, y, batch_size=64)`` on the scaled float images."""
    t = _augment_epochs(quick)
    return Result(
        "augment_vs_legacy",
        t["service"] / t["legacy"],
        0.55,
        details=f"service {t['service']:.2f} s, ImageDataGenerator {t['legacy']:.2f} s per epoch; "
        f"with augmentation free it would be {t['none'] / t['legacy']:.3f}",
        data=t,
    )


# --------------------------------------------------------------------------- overhead


def _trials(db: Path, name: str) -> list[dict[str, Any]]:
    import optuna

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    from dataclasses import asdict

    from sweep import records

    return [
        {"params": asdict(r.params), "seed": r.seed, "epochs": r.epochs_run}
        for r in records.read_all(study)
        if r.params is not None
    ]


def overhead(quick: bool) -> Result:
    """The quick start's trials through ``python -m sweep.launch --study quickstart`` (a
    fresh SQLite file, artifacts, notes and all) vs the same trainings (same parameters,
    data, seeds, and epochs: a pruned trial's ``epochs_run``) in a plain Keras loop in one
    process, ``model.fit`` on the scaled arrays as the reports did (:mod:`benchmarks.plain`).
    Both are fresh processes timed whole, TensorFlow's import and the data included; with
    --quick on 2,000 images, else the quick start's 5,000; fastest of 1 (else 2) pairs."""
    py = sys.executable
    subset = ["--subset", "2000"] if quick else []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runs = {"n": 0}

        def service() -> float:
            runs["n"] += 1
            db = work / f"run{runs['n']}.db"
            argv = [py, "-m", "sweep.launch", "--study", "quickstart", "--quiet"]
            return _timed([*argv, "--storage", f"sqlite:///{db}", *subset], work)

        first = service()
        trials = _trials(work / "run1.db", "quickstart")
        (work / "trials.json").write_text(json.dumps(trials))

        def plain() -> float:
            argv = [py, "-m", "benchmarks.plain", "--trials", str(work / "trials.json")]
            return _timed([*argv, *subset], work)

        if quick:
            launch, loop = first, plain()
        else:
            launch, loop = _interleaved(plain, service, rounds=2)[::-1]
            launch = min(launch, first)
    epochs = sum(t["epochs"] for t in trials)
    return Result(
        "overhead",
        launch / loop,
        1.05,
        details=f"sweep.launch {launch:.1f} s, plain Keras loop {loop:.1f} s, "
        f"{len(trials)} trials, {epochs} epochs",
        data={"launch_s": launch, "plain_s": loop, "trials": len(trials), "epochs": epochs},
    )


# --------------------------------------------------------------------------- workers

_WORKERS_STUDY = """
description = "benchmark: identical-cost trials"
dataset = "synthetic"
n_trials = {n}
keep_models = 1

[space]
family = "baseline"
learning_rate = {{ low = 3e-4, high = 3e-3, log = true }}
batch_size = 64
epochs = {epochs}

[sampler]
name = "random"
"""


@contextlib.contextmanager
def _launcher(
    n: int, epochs: int, flag: list[str], extra: list[str], env: dict[str, str] | None = None
) -> Iterator[Callable[[int], float]]:
    """A timer of ``sweep.launch`` on the identical-cost study of ``n`` trials: called with
    ``k``, it runs the study with ``flag k`` on a fresh SQLite file and returns the seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "w.toml").write_text(_WORKERS_STUDY.format(n=n, epochs=epochs))
        runs = iter(range(1_000_000))

        def run(k: int) -> float:
            db = work / f"w{next(runs)}.db"
            argv = [sys.executable, "-m", "sweep.launch", "--study", "w.toml", *flag, str(k)]
            argv += ["--quiet", "--storage", f"sqlite:///{db}", *extra]
            return _timed(argv, work, env=env)

        yield run


def workers(quick: bool) -> Result:
    """Finished trials per minute of ``python -m sweep.launch --workers 2`` vs ``--workers 1``
    on this machine: a study of trials that all cost the same (Exp 1's network, batch 64, a
    random learning rate, no pruning), 6 trials of 2 epochs on 2,000 images with --quick,
    else 10 of 3 on 5,000; a fresh SQLite file each; wall time of the whole command."""
    n, epochs = (6, 2) if quick else (10, 3)
    subset = ["--subset", "2000"] if quick else []
    with _launcher(n, epochs, ["--workers"], subset) as run:
        one, two = _interleaved(lambda: run(1), lambda: run(2), rounds=1 if quick else 2)
    return Result(
        "workers",
        one / two,
        1.15,
        higher_is_better=True,
        details=f"{60 * n / two:.1f} trials/min with 2 workers, {60 * n / one:.1f} with 1 "
        f"({n} trials of {epochs} epochs)",
        data={"one_worker_s": one, "two_workers_s": two, "trials": n},
    )


def gpu_packing(quick: bool) -> Result:
    """Trials per minute with 4 workers on one GPU vs 1 (``--gpus 0 --trials-per-gpu 4``);
    skipped without a GPU."""
    from sweep.devices import visible_gpus

    if not visible_gpus():
        return Result("gpu_packing", None, 1.0, higher_is_better=True, details="no GPU")
    n = 8 if quick else 16
    gpu = {"CUDA_VISIBLE_DEVICES": "0"}
    with _launcher(n, 3, ["--gpus", "0", "--trials-per-gpu"], [], env=gpu) as run:
        one, four = _interleaved(lambda: run(1), lambda: run(4), rounds=1)
    return Result(
        "gpu_packing",
        one / four,
        1.0,
        higher_is_better=True,
        details=f"{60 * n / four:.1f} trials/min with 4 workers on GPU 0, "
        f"{60 * n / one:.1f} with 1",
        data={"one_s": one, "four_s": four, "trials": n},
    )


# --------------------------------------------------------------------------- search


def search(quick: bool) -> Result:
    """Epochs the ``search`` study (TPE over family, learning rate, batch size, epochs,
    dropout and augmentation, Hyperband pruning) spends until one of its trials first
    reaches the best validation accuracy of the full ``exp3`` grid, vs the grid's epochs
    (27 points, 270 epochs), both on the same synthetic data, one worker: with --quick 600
    images and one sampler seed, else 5,000 images and the median over 3 sampler seeds. A
    search that has spent the grid's 270 epochs without reaching it never reaches it."""
    import math
    from dataclasses import replace

    import optuna

    from sweep import data, records
    from sweep import study as studies
    from sweep.config import load_study
    from sweep.loop import run_trials
    from sweep.run import RunOptions
    from sweep.stop import StopEvent
    from sweep.storage import open_storage
    from sweep.trial import Objective

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # each trial retraces, by design
    splits = data.load("synthetic", seed=0, subset=600 if quick else None)
    stop = StopEvent()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'search.db'}"
        storage = open_storage(url)

        def opened(spec: Any, name: str, budget: int, worker: int | None) -> optuna.Study:
            run = RunOptions(study_name=name, url=url, spec=spec, budget=budget)
            return studies.open_study(run, storage=storage, worker=worker)

        def run(study: optuna.Study, objective: Objective, budget: int) -> None:
            run_trials(study, objective, storage=storage, budget=budget, stop=stop)

        grid_spec = replace(load_study("exp3"), dataset="synthetic")
        grid = opened(grid_spec, "grid", 27, None)
        run(grid, Objective(grid_spec, splits), 27)
        target = grid.best_value
        grid_epochs = sum(r.epochs_run or 0 for r in records.read_all(grid))

        search_spec = replace(load_study("search"), dataset="synthetic")
        objective = Objective(search_spec, splits)
        spent: list[float] = []
        trials_run: list[int] = []
        for k in range(1 if quick else 3):
            study = opened(search_spec, f"search-{k}", 1, k)
            total, reached = 0, math.inf
            for n in range(1, 1000):
                run(study, objective, n)
                last = study.trials[-1]
                total += records.read(last).epochs_run or 0
                if last.state.name == "COMPLETE" and last.value >= target:
                    reached = total
                    break
                if total >= grid_epochs:
                    break
            spent.append(reached)
            trials_run.append(len(study.trials))
    median = statistics.median(spent)  # inf when two of three never reach it
    shown = ", ".join("never" if math.isinf(e) else f"{e:.0f}" for e in spent)
    return Result(
        "search",
        median / grid_epochs,
        0.25,
        details=f"epochs to reach the grid's best val accuracy {target:.4f}: {shown} "
        f"(sampler seeds {', '.join(map(str, range(len(spent))))}; {trials_run} trials) "
        f"vs the grid's {grid_epochs}",
        data={
            "target": target,
            "grid_epochs": grid_epochs,
            "epochs_to_reach": [None if math.isinf(e) else e for e in spent],  # None: never
            "trials": trials_run,
        },
    )
