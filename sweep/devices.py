"""Where each worker runs: its GPU (or the CPU) and its share of the CPU's threads.

Placement is decided by the launcher and handed to each worker process as environment
variables, because the Keras backends read them once, when they first start, and never again:

* ``CUDA_VISIBLE_DEVICES``: the one GPU a worker sees (``--gpus``), or none.
* ``TF_FORCE_GPU_ALLOW_GROWTH=true`` and ``XLA_PYTHON_CLIENT_PREALLOCATE=false``: workers that
  share a GPU take memory as they need it instead of all of it at start (TensorFlow's default,
  and JAX's, is to take most of it; PyTorch's caching allocator grows as it needs).
* ``SWEEP_GPU_MEMORY_MB``: a hard per-process memory limit instead (``--gpu-memory``), applied
  by :func:`configure` before the GPU is first touched: a logical device of that size on
  TensorFlow, that share of the GPU's memory on JAX (``XLA_PYTHON_CLIENT_MEM_FRACTION``) and
  PyTorch (``torch.cuda.set_per_process_memory_fraction``).
* ``SWEEP_BACKEND``: the Keras backend the launcher chose for its workers (``--backend``).
* ``TF_NUM_INTRAOP_THREADS``, ``TF_NUM_INTEROP_THREADS``, ``OMP_NUM_THREADS``: CPU workers
  split the cores instead of each starting one thread per core and fighting over them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from sweep.config import BACKENDS
from sweep.errors import UserError
from sweep.settings import ENV, current

__all__ = [
    "Placement",
    "backend",
    "configure",
    "configure_tensorflow",
    "import_tensorflow",
    "parse_gpus",
    "plan",
    "visible_gpus",
]

log = logging.getLogger(__name__)

GPU_MEMORY_ENV = ENV["gpu_memory_mb"].name  # set per worker by the launcher (its placement)


def backend(flag: str | None, study_file: str | None) -> str:
    """The Keras backend a process trains on: ``--backend``, else the launcher's choice for
    its workers (``$SWEEP_BACKEND``), else the study file's ``backend``, else
    ``$KERAS_BACKEND``, else TensorFlow.

    Raises:
        UserError: it is not one sweep trains on, or it is not installed.
    """
    env = current().backend
    keras_env = os.environ.get("KERAS_BACKEND") or None
    name = flag or env or study_file or keras_env or "tensorflow"
    if name not in BACKENDS:
        where = "$SWEEP_BACKEND" if name == env else "$KERAS_BACKEND"
        raise UserError(
            f"{where} is {name!r}, which sweep does not train on; use one of "
            + ", ".join(BACKENDS)
            + " (--backend NAME), or unset it"
        )
    import importlib.util

    if importlib.util.find_spec(name) is None:  # each backend's module bears its name
        extra = "" if name == "tensorflow" else f"[{name}]"
        raise UserError(
            f"the {name} backend is not installed here: pip install -e '.{extra}' (from the "
            "repository), or pick another with --backend"
        )
    return name


def configure(name: str) -> None:
    """Make ``name`` Keras's backend in this process and apply this worker's device settings
    (``$SWEEP_GPU_MEMORY_MB``) before the GPU is first touched. Call before anything imports
    Keras; TensorFlow is imported only on its own backend."""
    loaded = sys.modules.get("keras")
    if loaded is not None and loaded.backend.backend() != name:
        raise RuntimeError(f"Keras was imported with the {loaded.backend.backend()} backend")
    os.environ["KERAS_BACKEND"] = name
    if name == "tensorflow":
        configure_tensorflow()
        return
    # Keras imports TensorFlow wherever it is installed (to seed it, to take tf.data input);
    # on the other backends it is kept out of the process, which needs nothing of it and
    # would pay its import in seconds and memory (``python -m benchmarks --only startup``).
    sys.modules.setdefault("tensorflow", None)  # type: ignore[arg-type]
    limit = current().gpu_memory_mb
    if name == "jax":
        # JAX says at INFO that it found no TPU, on every machine without one.
        logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        total = _gpu_memory_mb() if limit else None
        if limit and total:
            share = min(1.0, limit / total)
            os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{share:.4f}"
            log.info("GPU memory limited to %s MB per process (%.1f%%)", limit, 100 * share)
        import keras

        return
    import keras  # noqa: F401 - the backend first, then torch's own settings
    import torch

    threads = os.environ.get("OMP_NUM_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    if limit and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory / 2**20
        torch.cuda.set_per_process_memory_fraction(min(1.0, int(limit) / total))
        log.info("GPU memory limited to %s MB per process", limit)


def _gpu_memory_mb() -> float | None:
    """The memory of this worker's GPU (the first it sees), from ``nvidia-smi``."""
    smi = shutil.which("nvidia-smi")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
    if smi is None or not visible:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", visible],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        return float(out.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class Placement:
    """One worker's device: a GPU index, or None for the CPU, and its environment."""

    index: int
    gpu: str | None
    env: dict[str, str]

    def describe(self) -> str:
        return f"GPU {self.gpu}" if self.gpu is not None else "CPU"


def visible_gpus() -> list[str]:
    """The NVIDIA GPU indices on this machine, from ``nvidia-smi`` (TensorFlow not imported)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def parse_gpus(text: str, available: list[str]) -> list[str]:
    """``--gpus``: ``all`` or a comma-separated list of indices, each present on this machine.

    Raises:
        UserError: no GPU here, or an index that is not one of them.
    """
    if not available:
        raise UserError(
            f"--gpus {text}: no NVIDIA GPU found on this machine (nvidia-smi lists none); "
            "drop --gpus to run on the CPU"
        )
    if text == "all":
        return list(available)
    wanted = [g.strip() for g in text.split(",") if g.strip()]
    if not wanted or len(set(wanted)) != len(wanted):
        raise UserError(f"--gpus {text}: give distinct GPU indices such as 0,1 or all")
    missing = [g for g in wanted if g not in available]
    if missing:
        raise UserError(
            f"--gpus {text}: no GPU {', '.join(missing)} here; this machine has "
            + ", ".join(available)
        )
    return wanted


WORKER_MEMORY_GIB = 1.0
"""Host memory planned per worker: above what a TensorFlow process training these CNNs holds
(``python -m benchmarks.memory`` prints a worker's RSS)."""


def available_memory_gib() -> float:
    """Memory the kernel says new processes can have (``MemAvailable``), in GiB."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30


MOST_WORKERS = 1024
"""What one launch starts on one machine, --oversubscribe or not: more is a typo, and each
would be a process. More workers come from ``sweep worker`` on other hosts."""

WORKERS_PER_CORE = 4
"""Past this, workers only queue for the cores (each already gets one TensorFlow thread)."""


def check_capacity(workers: int, *, flag: str, cores: int | None = None) -> None:
    """Refuse more worker processes than this machine holds: :data:`WORKERS_PER_CORE` per
    core, and :data:`WORKER_MEMORY_GIB` of free memory each.

    Raises:
        UserError: naming the limit and the override (``--oversubscribe``).
    """
    cores = cores or os.cpu_count() or 1
    memory = available_memory_gib()
    limit = max(1, min(WORKERS_PER_CORE * cores, int(memory // WORKER_MEMORY_GIB)))
    if workers > limit:
        raise UserError(
            f"{flag}: {workers} workers is more than this machine holds ({cores} cores, "
            f"{memory:.1f} GiB free; at most {WORKERS_PER_CORE} per core, about "
            f"{WORKER_MEMORY_GIB:g} GiB each): use at most {limit}, or add --oversubscribe to "
            f"start {workers} anyway"
        )


def plan(
    *,
    workers: int,
    gpus: list[str] | None,
    per_gpu: int = 1,
    gpu_memory_mb: int | None = None,
    cpus: int | None = None,
) -> list[Placement]:
    """Each worker's placement: ``per_gpu`` workers on each GPU, or ``workers`` on the CPU."""
    if gpus:
        shared = {"TF_FORCE_GPU_ALLOW_GROWTH": "true", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
        if gpu_memory_mb is not None:
            shared = {GPU_MEMORY_ENV: str(gpu_memory_mb)}
        order = [g for g in gpus for _ in range(per_gpu)]
        return [Placement(i, g, {"CUDA_VISIBLE_DEVICES": g, **shared}) for i, g in enumerate(order)]
    cores = cpus or os.cpu_count() or 1
    threads = str(max(1, cores // workers))
    env = {"TF_FORCE_GPU_ALLOW_GROWTH": "true"}
    if workers > 1:
        env |= {
            "TF_NUM_INTRAOP_THREADS": threads,
            "TF_NUM_INTEROP_THREADS": threads,
            "OMP_NUM_THREADS": threads,
        }
    return [Placement(i, None, dict(env)) for i in range(workers)]


# What TensorFlow's C++ side prints at start-up on every machine, before its log level is
# read: absl's preamble, and info or warning lines (I/W, never E/F) from the sources that
# announce oneDNN, the CPU's instruction sets and a machine without CUDA.
_STARTUP_NOISE = re.compile(
    r"^(?:WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} .*\b(?:port|cudart_stub|cuda_dnn|cuda_fft|cuda_blas|cpu_feature_guard"
    r"|computation_placer|cuda_executor|cuda_diagnostics)\.cc:\d+\]"
    r"|To enable the following instructions: .* rebuild TensorFlow)"
)


@contextlib.contextmanager
def _start_up_lines_dropped() -> Iterator[None]:
    """Pass file descriptor 2 through a filter while TensorFlow loads: every line that is not
    start-up noise goes on to the console at once, so an error (or a crash) still shows."""
    sys.stderr.flush()
    console = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward() -> None:
        with os.fdopen(read_end, "rb") as lines:
            for line in lines:
                if not _STARTUP_NOISE.search(line.decode(errors="replace")):
                    os.write(console, line)

    reader = threading.Thread(target=forward, name="tensorflow-start-up-filter", daemon=True)
    reader.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(console, 2)  # the pipe's last writer closes: the reader reaches its end
        reader.join(timeout=10)
        os.close(console)


def import_tensorflow() -> None:
    """Import TensorFlow and Keras once per process, dropping the lines TensorFlow prints as
    it starts unless ``$SWEEP_VERBOSE`` is 1 (``--verbose``). Call before anything else
    imports them; later imports are free."""
    if "tensorflow" in sys.modules:
        return
    if current().verbose:
        import keras
        import tensorflow

        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _start_up_lines_dropped():
        import keras  # noqa: F401
        import tensorflow  # noqa: F401


def configure_tensorflow() -> None:
    """Import TensorFlow quietly, and apply ``SWEEP_GPU_MEMORY_MB`` before it first touches
    the GPU."""
    import_tensorflow()
    limit = current().gpu_memory_mb
    if not limit:
        return
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.set_logical_device_configuration(
            gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=limit)]
        )
    log.info("GPU memory limited to %s MB per process", limit)
