"""Shared fixtures: seeding, the CLI in a subprocess, tiny CIFAR-10 archives."""

from __future__ import annotations

import os
import pickle
import random
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    random.seed(0)
    np.random.seed(0)


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600):
    """Run ``python -m <args>`` as a user would, from ``cwd``; returns the CompletedProcess."""
    # As a user's shell has them: not the variables that an in-process run in this pytest
    # process set (TensorFlow's log level would make the CLI show TensorFlow's start-up).
    drop = ("SWEEP_STORAGE", "TF_CPP_MIN_LOG_LEVEL", "SWEEP_VERBOSE")
    full_env = {k: v for k, v in os.environ.items() if k not in drop}
    full_env |= {"PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_cifar_batch(path: Path, images: np.ndarray, labels: list[int], name: bytes) -> None:
    """One batch as the official archive holds it: a protocol-2 pickle with bytes keys."""
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)  # channel-major rows
    batch = {
        b"batch_label": name,
        b"labels": labels,
        b"data": np.ascontiguousarray(rows, dtype=np.uint8),
        b"filenames": [b"img_%d.png" % i for i in range(len(images))],
    }
    path.write_bytes(pickle.dumps(batch, protocol=2))


def make_cifar_dir(root: Path, *, per_batch: int = 20, seed: int = 0) -> Path:
    """A tiny ``cifar-10-batches-py/``: five train batches and a test batch."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        images = rng.integers(0, 256, size=(per_batch, 32, 32, 3), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        write_cifar_batch(folder / name, images, labels, name.encode())
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": []}, protocol=2))
    return folder


def make_cifar_archive(root: Path, **kwargs) -> Path:
    """A tiny ``cifar-10-python.tar.gz`` in the official layout."""
    staging = root / "staging"
    folder = make_cifar_dir(staging, **kwargs)
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return archive


@pytest.fixture
def cifar_archive(tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    return make_cifar_archive(data_dir)
