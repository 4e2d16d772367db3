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


class OwnPostgres:
    """A PostgreSQL cluster of a test's own, on a free port: one a test may stop for good
    (the shared server on 5432 stays up). Made with Debian's binaries, run as ``postgres``."""

    def __init__(self, root: Path) -> None:
        import shutil
        import socket

        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        assert versions, "PostgreSQL's server binaries are not installed"
        self.bin = versions[-1]
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        shutil.chown(root, "postgres")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._as_postgres("initdb", "-D", str(root / "data"), "-A", "trust", "-U", "postgres")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, tool: str, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bin / tool), *args],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._as_postgres(
            "pg_ctl", "-D", str(self.root / "data"), "-o", options,
            "-l", str(self.root / "log"), "-w", "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._as_postgres("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "stop")


@pytest.fixture
def own_postgres():
    """A started :class:`OwnPostgres`, stopped and removed afterwards. Its folder is outside
    pytest's (which only root may enter), for the server runs as ``postgres``."""
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="sweep-pg-"))
    root.chmod(0o755)
    server = OwnPostgres(root / "cluster")
    try:
        server.start()
        yield server
    finally:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(server.bin / "pg_ctl"), "-D",
             str(server.root / "data"), "-m", "immediate", "stop"],
            capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)
