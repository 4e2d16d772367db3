"""The device run: what one GPU measures in one short command, prepared and tested beforehand.

A GPU machine lent for an issue gives minutes, starts bare (Python 3.12, JAX, PyTorch and CUDA;
no TensorFlow, Keras or Optuna) and reaches no package index. So the run is built here and
carried there as wheels, and the same command runs on a CPU in a tiny mode, which CI runs, so
that it cannot rot between the machines it is lent::

    python -m benchmarks.device wheels              # here: the carried wheels, into .whl/
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \\
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site \\
        && python3 -m benchmarks.device run --out "$OUT"        # there, in 8 minutes at most
    python -m benchmarks.device run --tiny --out DIR              # a CPU, in a few minutes

``run`` writes ``device.json`` (every figure) and ``device.log`` (the lines it printed) to
``--out``. On CIFAR-10-sized synthetic data (50,000 / 10,000 images, 32x32x3, 10 classes, made
there), it measures, on JAX unless a step says otherwise:

* ``epochs``: an epoch of the baseline family on JAX and on PyTorch (after one that
  compiles), with the GPU's utilisation and memory sampled by ``nvidia-smi`` alongside;
* ``gpu_packing``: exp3 grid points per hour with K = 1, 2, 4, 8 workers on the one GPU
  (``--gpus 0 --trials-per-gpu K``), from the epochs all K workers finish in a window once they
  are warm, identical trials (exp3's network at batch 64), with utilisation and peak memory;
  floor: K = 4 at least 2.5 times K = 1;
* ``grid``: the whole exp3 grid (27 trials, 270 epochs) with the best K, its wall time (floor
  10 minutes, moonshot 5); if the run's time is up first, it is stopped (its trials requeued)
  and the wall time the epochs so far project is given, marked as projected;
* ``precision``: the same trials in ``mixed_bfloat16`` and in ``float32``, speed and accuracy;
* ``out_of_memory``: a trial whose batch cannot fit in a ``--gpu-memory`` limit, on JAX and
  on PyTorch: it fails with "out of GPU memory at batch N" and the worker trains the next.

The tiny mode runs every step on a few hundred images with the CPU's workers
(``--workers K``, K = 1 and 2) and short windows; its figures say only that the steps work.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

# What the GPU machine lacks, carried as wheels at the versions installed here (the versions
# the tests pass on). Everything else a worker imports is there already (DEVICE_HAS).
CARRIED = (
    "keras", "namex", "optree",
    "optuna", "alembic", "mako", "colorlog", "sqlalchemy", "greenlet",
    "pygal", "importlib-metadata", "lazy-importer", "plotly", "optuna-dashboard", "bottle",
)  # fmt: skip
# On the GPU machine's image ('cuda'), as its package list gave them: what sweep's workers
# and the packages above need from it.
DEVICE_HAS = (
    "absl-py", "h5py", "jax", "jaxlib", "markupsafe", "matplotlib", "ml-dtypes", "narwhals",
    "numpy", "packaging", "pillow", "pyyaml", "rich", "scipy", "torch", "tqdm", "zipp",
    "typing-extensions",
)  # fmt: skip
# sweep's requirements that a worker on SQLite, not on TensorFlow, never imports.
NOT_NEEDED = ("tensorflow", "optuna-integration", "psycopg")
WHEEL_PLATFORMS = (
    "manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
    "manylinux2014_x86_64", "manylinux1_x86_64",
)  # fmt: skip
CARRY_LIMIT = 64 * 2**20  # what a call of the device tool takes: the wheels and the repository


# --------------------------------------------------------------------------- the wheels

_DEVICE_MARKERS = {
    "python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
    "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
    "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": "",
}  # fmt: skip


def _name(text: str) -> str:
    return text.lower().replace("_", "-").replace(".", "-")


def missing_requirements() -> list[str]:
    """What sweep and the carried packages require on the GPU machine (Python 3.12, Linux
    x86-64, no extras) that is neither carried, nor there, nor unused by a worker: each as
    ``requirement (of package)``. Read from the packages' metadata installed here."""
    from packaging.requirements import Requirement

    known = {_name(n) for n in (*CARRIED, *DEVICE_HAS, *NOT_NEEDED)}
    missing = []
    for package in ("sweep", *CARRIED):
        for text in metadata.requires(package) or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate(_DEVICE_MARKERS):
                continue
            if _name(req.name) not in known:
                missing.append(f"{req.name} (of {package})")
    return missing


def wheels(dest: Path) -> list[Path]:
    """Download the carried packages for CPython 3.12 on manylinux x86-64, at the versions
    installed here, and build sweep's own wheel, into ``dest`` (emptied first)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    pins = [f"{name}=={metadata.version(name)}" for name in CARRIED]
    platforms = [a for p in WHEEL_PLATFORMS for a in ("--platform", p)]
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run(
        [*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
         "--implementation", "cp", *platforms, "-d", str(dest), *pins],
        check=True,
    )  # fmt: skip
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(dest), str(REPO)], check=True)
    return sorted(dest.glob("*.whl"))


def _wheels_main(dest: Path) -> int:
    if missing := missing_requirements():
        print("not carried, and not on the GPU machine: " + ", ".join(missing), file=sys.stderr)
        return 1
    got = wheels(dest)
    size = sum(w.stat().st_size for w in got)
    for w in got:
        print(f"{w.stat().st_size / 2**20:7.2f} MiB  {w.name}")
    print(f"{len(got)} wheels, {size / 2**20:.1f} MiB in {dest} (a call carries 64 MiB in all)")
    return 0 if size < CARRY_LIMIT else 1


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class Sizes:
    """How big each step is: the full run on a GPU, or the tiny one on a CPU."""

    train: int
    test: int
    packing: tuple[int, ...]
    warm_s: float  # longest wait for K workers to finish their first epochs
    window_s: float  # the packing window, once they have
    precision_epochs: int
    out_of_memory_backends: tuple[str, ...]
    minutes: float  # the whole run's time: the grid gets what the other steps leave


FULL = Sizes(50_000, 10_000, (1, 2, 4, 8), 60.0, 20.0, 3, ("jax", "torch"), 8.0)
TINY = Sizes(400, 100, (1, 2), 60.0, 6.0, 1, ("jax",), 0.0)
GRID_LEAST_S = 40.0  # the grid's time at least (the tiny run's grid gets this)
AFTER_GRID_S = 150.0  # what precision and out_of_memory take after the grid, on a GPU


class Log:
    """Prints a line and keeps it, for ``device.log``."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)


class GpuSampler:
    """``nvidia-smi`` every 250 ms while in use: mean and top utilisation, peak memory used.
    Without ``nvidia-smi`` (a CPU), every figure is None."""

    def __init__(self) -> None:
        self.util: list[float] = []
        self.memory: list[float] = []
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        smi = shutil.which("nvidia-smi")
        if smi is not None:
            self._proc = subprocess.Popen(
                [smi, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                 "-lms", "250"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )  # fmt: skip
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            with contextlib.suppress(ValueError):
                util, memory = (float(v) for v in line.split(",")[:2])
                self.util.append(util)
                self.memory.append(memory)

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait()

    def summary(self) -> dict[str, float | None]:
        return {
            "gpu_util_mean": round(statistics.fmean(self.util), 1) if self.util else None,
            "gpu_util_max": max(self.util, default=None),
            "gpu_memory_peak_mib": max(self.memory, default=None),
        }


def _gpu_name() -> str | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    done = subprocess.run(
        [smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True
    )
    return done.stdout.splitlines()[0].strip() if done.returncode == 0 and done.stdout else None


def _sweep_env() -> dict[str, str]:
    """The environment of the commands the run starts: the repository importable, no storage
    or artifact folder of the caller's, quiet logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWEEP_")}
    path = [p for p in (env.get("PYTHONPATH"), str(REPO)) if p]
    return {**env, "PYTHONPATH": os.pathsep.join(path), "TF_CPP_MIN_LOG_LEVEL": "3"}


def _launch(
    work: Path, name: str, study: str, data: Path, *, backend: str, workers: int, gpu: bool,
    extra: tuple[str, ...] = (),
) -> tuple[list[str], Path]:  # fmt: skip
    """``sweep launch``'s command line for ``study`` on a fresh SQLite file of its own."""
    db = work / f"{name}.db"
    argv = [sys.executable, "-m", "sweep", "launch", "--study", study, "--dataset", str(data)]
    argv += ["--storage", f"sqlite:///{db}", "--backend", backend, "--quiet"]
    if gpu:
        argv += ["--gpus", "0", "--trials-per-gpu", str(workers)]
    else:
        argv += ["--workers", str(workers)]
    return [*argv, *extra], db


@contextlib.contextmanager
def _running(argv: list[str], cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A command in a session of its own; on the way out, still running, it is asked to stop
    (SIGINT: the launcher's workers requeue their trials) and killed after 40 s."""
    with open(cwd / "commands.log", "ab") as out:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=_sweep_env(), stdout=out, stderr=out, start_new_session=True
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def _epochs_reported(db: Path) -> int:
    """Epochs finished so far by every trial of the study in ``db`` (one report each)."""
    if not db.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM trial_intermediate_values").fetchone()[0])
    except sqlite3.Error:  # not created yet
        return 0


def _records(db: Path) -> list[Any]:
    import optuna

    from sweep import records

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{db}"
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    return [records.read(t) for t in study.get_trials()]


def _tail(work: Path) -> str:
    log = work / "commands.log"
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


# --------------------------------------------------------------------------- the steps


def make_data(work: Path, sizes: Sizes) -> Path:
    """CIFAR-10-shaped synthetic images (sweep's own), written once as an .npz the workers
    read as a dataset of one's own."""
    from sweep import data, sources

    x_train, y_train, x_test, y_test = data.synthetic(sizes.train, sizes.test, seed=0)
    path = work / "cifar_sized.npz"
    arrays = sources.check_arrays(
        x_train, y_train, x_test, y_test, data.CIFAR10_CLASSES, source="synthetic"
    )
    sources.write_npz(arrays, path)
    return path


def epoch(backend: str, npz: Path, batch: int) -> dict[str, float]:
    """In a process of its own (its backend): the baseline family, batch ``batch``, an epoch
    that compiles, then one timed epoch, through sweep's input pipeline."""
    from sweep import devices

    devices.configure(backend)
    import keras

    from sweep import data, models, sources
    from sweep.config import Params

    arrays = sources.read_npz(npz)
    keras.utils.set_random_seed(0)
    model = models.build(Params(family="baseline", batch_size=batch))
    start = time.perf_counter()
    model.fit(data.train_dataset(arrays.x_train, arrays.y_train, batch_size=batch, seed=0),
              epochs=1, verbose=0)  # fmt: skip
    first = time.perf_counter() - start
    feed = data.train_dataset(arrays.x_train, arrays.y_train, batch_size=batch, seed=1)
    print("timing", flush=True)  # the parent samples the GPU from here
    start = time.perf_counter()
    model.fit(feed, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    n = len(arrays.y_train)
    return {"first_epoch_s": first, "epoch_s": seconds, "images_per_s": n / seconds}


def epochs_step(work: Path, npz: Path, log: Log) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for backend in ("jax", "torch"):
        argv = [sys.executable, "-m", "benchmarks.device", "epoch", backend, str(npz), "32"]
        errors = work / f"epoch-{backend}.err"
        with open(errors, "w") as err:  # a file, not a pipe nobody reads while it runs
            proc = subprocess.Popen(
                argv, cwd=REPO, env=_sweep_env(), stdout=subprocess.PIPE, stderr=err, text=True
            )
            assert proc.stdout is not None
            lines: list[str] = []
            sampler = GpuSampler()
            for line in proc.stdout:
                lines.append(line)
                if line.strip() == "timing":
                    sampler.__enter__()
            sampler.__exit__()
        if proc.wait() != 0:
            raise RuntimeError(f"the {backend} epoch failed:\n{errors.read_text()[-3000:]}")
        got = {**json.loads(lines[-1]), **sampler.summary()}
        out[backend] = got
        log(f"epoch, baseline family, batch 32, {backend}: {got['epoch_s']:.2f} s "
            f"({got['images_per_s']:.0f} images/s; first epoch {got['first_epoch_s']:.2f} s), "
            f"GPU util mean {got['gpu_util_mean']} max {got['gpu_util_max']} %, "
            f"peak memory {got['gpu_memory_peak_mib']} MiB")  # fmt: skip
    return out


PACKING_STUDY = """
description = "device run: identical exp3 grid points (exp3's network, batch 64)"
n_trials = 1000
keep_models = 0
[space]
family = "baseline"
learning_rate = [0.01, 0.001, 0.0001]
batch_size = 64
epochs = 15
[sampler]
name = "random"
[baseline]
batch_size = 64
epochs = 15
"""
EXP3_EPOCHS_PER_TRIAL = 10  # 270 epochs over 27 points


def packing_step(work: Path, npz: Path, sizes: Sizes, *, gpu: bool, log: Log) -> dict[str, Any]:
    """Epochs per hour of K workers on one GPU, in a window once each has finished an epoch."""
    (work / "packing.toml").write_text(PACKING_STUDY)
    per_k: dict[str, dict[str, Any]] = {}
    for k in sizes.packing:
        argv, db = _launch(work, f"packing{k}", "packing.toml", npz, backend="jax",
                           workers=k, gpu=gpu)  # fmt: skip
        with _running(argv, work) as proc:
            deadline = time.monotonic() + sizes.warm_s
            while _epochs_reported(db) < k and time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"packing K={k} stopped:\n{_tail(work)}")
                time.sleep(0.5)
            with GpuSampler() as sampler:
                t0, c0 = time.monotonic(), _epochs_reported(db)
                time.sleep(sizes.window_s)
                t1, c1 = time.monotonic(), _epochs_reported(db)
        per_hour = 3600 * (c1 - c0) / (t1 - t0)
        per_k[str(k)] = {
            "epochs_per_hour": round(per_hour),
            "exp3_trials_per_hour": round(per_hour / EXP3_EPOCHS_PER_TRIAL, 1),
            "epochs_in_window": c1 - c0,
            "window_s": round(t1 - t0, 1),
            **sampler.summary(),
        }
        got = per_k[str(k)]
        log(f"gpu_packing K={k}: {got['exp3_trials_per_hour']} exp3 trials/hour "
            f"({got['epochs_per_hour']} epochs/hour, {c1 - c0} epochs in {t1 - t0:.0f} s), "
            f"GPU util mean {got['gpu_util_mean']} %, peak memory "
            f"{got['gpu_memory_peak_mib']} MiB")  # fmt: skip
    rates = {int(k): v["epochs_per_hour"] for k, v in per_k.items()}
    best = max(rates, key=lambda k: rates[k])
    out: dict[str, Any] = {"per_k": per_k, "best_k": best, "floor": 2.5}
    if 4 in rates and rates[1]:
        out["ratio_4_vs_1"] = round(rates[4] / rates[1], 2)
        out["met"] = out["ratio_4_vs_1"] >= 2.5
        log(f"gpu_packing: K=4 / K=1 = {out['ratio_4_vs_1']} (floor 2.5)"
            f"{'' if out['met'] else ' MISSED'}; best K = {best}")  # fmt: skip
    return out


def grid_step(
    work: Path, npz: Path, k: int, *, gpu: bool, seconds: float, log: Log
) -> dict[str, Any]:
    """The whole exp3 grid with K workers, or as much of it as ``seconds`` allow."""
    argv, db = _launch(work, "grid", "exp3", npz, backend="jax", workers=k, gpu=gpu)
    start = time.monotonic()
    with _running(argv, work) as proc:
        while proc.poll() is None and time.monotonic() - start < seconds:
            time.sleep(0.5)
        wall = time.monotonic() - start
        finished = proc.poll() == 0
    epochs = _epochs_reported(db)
    done = [r for r in _records(db) if r.state == "COMPLETE"]
    best = max((r.val_accuracy for r in done if r.val_accuracy is not None), default=None)
    out: dict[str, Any] = {
        "k": k, "finished": finished, "wall_s": round(wall, 1), "trials_complete": len(done),
        "epochs_done": epochs, "best_val_accuracy": best, "floor_s": 600, "moonshot_s": 300,
    }  # fmt: skip
    if finished:
        out["met"] = wall <= 600
        log(f"grid: exp3's 27 trials, 270 epochs, K={k}: {wall:.0f} s (floor 600, moonshot "
            f"300){'' if out['met'] else ' MISSED'}; best val accuracy {best}")  # fmt: skip
    else:
        out["projected_s"] = round(wall * 270 / epochs) if epochs else None
        log(
            f"grid: stopped at {wall:.0f} s, the run's time being up: {len(done)} of 27 trials, "
            f"{epochs} of 270 epochs; projected {out['projected_s']} s for the grid, K={k}"
        )
    return out


PRECISION_STUDY = """
description = "device run: the same trials in {precision}"
precision = "{precision}"
keep_models = 0
[space]
family = "baseline"
learning_rate = [0.001, 0.0001]
batch_size = 128
epochs = {epochs}
[sampler]
name = "grid"
[baseline]
learning_rate = 0.001
batch_size = 128
epochs = {epochs}
"""


def precision_step(work: Path, npz: Path, sizes: Sizes, *, gpu: bool, log: Log) -> dict[str, Any]:
    """The same two trials (seeds and all) in float32 and in mixed_bfloat16, one worker."""
    out: dict[str, Any] = {}
    for precision in ("float32", "mixed_bfloat16"):
        name = f"precision_{precision}"
        text = PRECISION_STUDY.format(precision=precision, epochs=sizes.precision_epochs)
        (work / f"{name}.toml").write_text(text)
        argv, db = _launch(work, name, f"{name}.toml", npz, backend="jax", workers=1, gpu=gpu)
        with _running(argv, work) as proc:
            if proc.wait() != 0:
                raise RuntimeError(f"{precision} failed:\n{_tail(work)}")
        done = _records(db)
        out[precision] = {
            "train_seconds": [round(r.train_seconds, 2) for r in done],
            "val_accuracy": [r.val_accuracy for r in done],
        }
    f32, bf16 = (sum(out[p]["train_seconds"]) for p in ("float32", "mixed_bfloat16"))
    out["speedup"] = round(f32 / bf16, 2)
    log(f"precision: mixed_bfloat16 {bf16:.1f} s vs float32 {f32:.1f} s of training "
        f"(x{out['speedup']}); val accuracy {out['mixed_bfloat16']['val_accuracy']} vs "
        f"{out['float32']['val_accuracy']}")  # fmt: skip
    return out


OUT_OF_MEMORY_STUDY = """
description = "device run: a batch that cannot fit, between two that do"
n_trials = 3
keep_models = 0
[space]
family = "baseline"
batch_size = [{huge}, 128]
epochs = 1
[sampler]
name = "grid"
[baseline]
batch_size = 64
epochs = 1
"""


def out_of_memory_step(
    work: Path, npz: Path, sizes: Sizes, *, gpu: bool, log: Log
) -> dict[str, Any]:
    """On a 1 GiB ``--gpu-memory`` limit, a batch of 32,768 (4 GiB for the first layer's
    output alone) fails as its trial's failure, and the worker trains the next trial."""
    huge = min(32_768, int(sizes.train * 0.8))
    (work / "oom.toml").write_text(OUT_OF_MEMORY_STUDY.format(huge=huge))
    out: dict[str, Any] = {}
    for backend in sizes.out_of_memory_backends:
        extra = ("--gpu-memory", "1024") if gpu else ()
        argv, db = _launch(work, f"oom_{backend}", "oom.toml", npz, backend=backend,
                           workers=1, gpu=gpu, extra=extra)  # fmt: skip
        with _running(argv, work) as proc:
            code = proc.wait()
        trials = [(r.params.batch_size if r.params else None, r.state, r.failure)
                  for r in _records(db)]  # fmt: skip
        out[backend] = {"exit_code": code, "trials": trials}
        shown = "; ".join(f"batch {b}: {s}{f' ({f})' if f else ''}" for b, s, f in trials)
        log(
            f"out_of_memory, {backend}{', --gpu-memory 1024' if gpu else ''}: {shown}; "
            f"launch exited {code}"
        )
    return out


# --------------------------------------------------------------------------- the whole run


def run(out_dir: Path, *, tiny: bool, minutes: float | None = None) -> dict[str, Any]:
    sizes = TINY if tiny else FULL
    if minutes is not None:
        sizes = dataclasses.replace(sizes, minutes=minutes)
    gpu = _gpu_name()
    if not tiny and gpu is None:
        raise SystemExit("no GPU here (nvidia-smi lists none): run --tiny on a CPU")
    out_dir.mkdir(parents=True, exist_ok=True)
    log = Log()
    started = time.monotonic()
    result: dict[str, Any] = {
        "mode": "tiny" if tiny else "full",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "device": gpu or "CPU",
        "versions": {n: _version(n) for n in ("keras", "optuna", "jax", "jaxlib", "torch")},
    }
    log(f"device run ({result['mode']}) on {result['device']}, {result['date']}: "
        + ", ".join(f"{n} {v}" for n, v in result["versions"].items()))  # fmt: skip
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    with tempfile.TemporaryDirectory(prefix="sweep-device-") as tmp:
        work = Path(tmp)
        t = time.monotonic()
        npz = make_data(work, sizes)
        result["data"] = {"train": sizes.train, "test": sizes.test,
                          "seconds": round(time.monotonic() - t, 1)}  # fmt: skip
        log(f"data: {sizes.train:,} / {sizes.test:,} synthetic images, 32x32x3, 10 classes, "
            f"in {result['data']['seconds']} s")  # fmt: skip
        steps = [
            ("epochs", lambda: epochs_step(work, npz, log)),
            ("gpu_packing", lambda: packing_step(work, npz, sizes, gpu=bool(gpu), log=log)),
        ]
        for name, step in steps:
            result[name] = _guarded(name, step, log)
        best_k = result["gpu_packing"].get("best_k", 1)
        left = sizes.minutes * 60 - (time.monotonic() - started) - AFTER_GRID_S
        seconds = max(left, GRID_LEAST_S)
        result["grid"] = _guarded(
            "grid",
            lambda: grid_step(work, npz, best_k, gpu=bool(gpu), seconds=seconds, log=log),
            log,
        )
        result["precision"] = _guarded(
            "precision", lambda: precision_step(work, npz, sizes, gpu=bool(gpu), log=log), log
        )
        result["out_of_memory"] = _guarded(
            "out_of_memory",
            lambda: out_of_memory_step(work, npz, sizes, gpu=bool(gpu), log=log),
            log,
        )
    result["wall_s"] = round(time.monotonic() - started, 1)
    log(f"device run done in {result['wall_s']:.0f} s")
    (out_dir / "device.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "device.log").write_text("\n".join(log.lines) + "\n")
    return result


def _guarded(name: str, step: Callable[[], dict[str, Any]], log: Log) -> dict[str, Any]:
    """A step's figures, or what stopped it: one step's failure leaves the others' figures."""
    try:
        return step()
    except Exception as exc:  # noqa: BLE001 - the run goes on; the error is in its output
        log(f"{name}: FAILED: {type(exc).__name__}: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"}


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    first = __doc__.split("\n")[0]
    p = argparse.ArgumentParser(prog="python -m benchmarks.device", description=first)
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("wheels", help="download and build the carried wheels (here)")
    w.add_argument("--dest", type=Path, default=REPO / ".whl")
    r = sub.add_parser("run", help="measure (on the GPU machine; --tiny on a CPU)")
    r.add_argument("--out", type=Path, required=True, help="where device.json and device.log go")
    r.add_argument("--tiny", action="store_true", help="a few hundred images, on the CPU")
    r.add_argument(
        "--minutes", type=float, help="the run's time (default 8): the grid gets what is left"
    )
    e = sub.add_parser("epoch", help="one side of the epochs step, in a process of its own")
    e.add_argument("backend")
    e.add_argument("npz", type=Path)
    e.add_argument("batch", type=int)
    args = p.parse_args(argv)
    if args.command == "wheels":
        return _wheels_main(args.dest)
    if args.command == "epoch":
        print(json.dumps(epoch(args.backend, args.npz, args.batch)))
        return 0
    result = run(args.out, tiny=args.tiny, minutes=args.minutes)
    failed = [k for k, v in result.items() if isinstance(v, dict) and "error" in v]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
