"""Where each worker runs: its GPU (or the CPU) and its share of the CPU's threads.

Placement is decided by the launcher and handed to each worker process as environment
variables, because TensorFlow reads them once, when it first starts, and never again:

* ``CUDA_VISIBLE_DEVICES``: the one GPU a worker sees (``--gpus``), or none.
* ``TF_FORCE_GPU_ALLOW_GROWTH=true``: workers that share a GPU take memory as they need it
  instead of all of it at start.
* ``SWEEP_GPU_MEMORY_MB``: a hard per-process memory limit instead (``--gpu-memory``), set by
  :func:`configure_tensorflow` before the GPU is first touched.
* ``TF_NUM_INTRAOP_THREADS``, ``TF_NUM_INTEROP_THREADS``, ``OMP_NUM_THREADS``: CPU workers
  split the cores instead of each starting one thread per core and fighting over them.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass

from sweep.errors import UserError

__all__ = ["Placement", "configure_tensorflow", "parse_gpus", "plan", "visible_gpus"]

log = logging.getLogger(__name__)

GPU_MEMORY_ENV = "SWEEP_GPU_MEMORY_MB"


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
        shared = {"TF_FORCE_GPU_ALLOW_GROWTH": "true"}
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


def configure_tensorflow() -> None:
    """Apply ``SWEEP_GPU_MEMORY_MB`` before TensorFlow first touches the GPU."""
    limit = os.environ.get(GPU_MEMORY_ENV)
    if not limit:
        return
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.set_logical_device_configuration(
            gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=int(limit))]
        )
    log.info("GPU memory limited to %s MB per process", limit)
