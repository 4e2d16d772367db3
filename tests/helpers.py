"""What several test modules share and a fixture cannot hand them: the repository's path, the
CLI in a subprocess, tiny CIFAR-10 files, study files rendered from keys, the bad study files.

Test modules import from here, never from each other or from ``conftest``."""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent

# The shared PostgreSQL database (.ci/run makes it). Tests reach it through the
# ``postgres_url`` fixture, which marks them ``postgres``.
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600):
    """Run ``python -m <args>`` as a user would, from ``cwd``; returns the CompletedProcess."""
    # As a user's shell has them: not the variables that an in-process run in this pytest
    # process set (TensorFlow's log level would make the CLI show TensorFlow's start-up).
    full_env = {k: v for k, v in os.environ.items() if k not in CLI_ENV_DROPPED}
    full_env |= {"PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


CLI_ENV_DROPPED = ("SWEEP_STORAGE", "TF_CPP_MIN_LOG_LEVEL", "SWEEP_VERBOSE")


# --------------------------------------------------------------------------- study files

# The study most tests start from: two one-epoch trials of the baseline on synthetic data.
TINY: dict[str, Any] = {
    "dataset": "synthetic",
    "n_trials": 2,
    "space": {
        "family": "baseline",
        "learning_rate": {"low": 5e-4, "high": 3e-3, "log": True},
        "epochs": 1,
    },
    "sampler": {"name": "random"},
    "baseline": {"epochs": 1},
}


def study_toml(base: Mapping[str, Any] = TINY, **keys: Any) -> str:
    """A study file's text: ``base`` with ``keys`` over it. A table given as a dict is merged
    into the base's table of that name; ``None`` removes a key (or a table's key)."""
    study = _merged(base, keys)
    scalars = [f"{k} = {_value(v)}" for k, v in study.items() if not isinstance(v, Mapping)]
    tables = [
        f"\n[{name}]\n" + "".join(f"{k} = {_value(v)}\n" for k, v in table.items())
        for name, table in study.items()
        if isinstance(table, Mapping)
    ]
    return "\n".join(scalars) + "\n" + "".join(tables)


def _merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"no TOML for {v!r}")


# Bad study files, and the message each must produce (config parsing and the CLI check both).
BAD_FILES = [
    ("colour = 1", r"study\.toml: colour: unknown key; known keys are .*dataset"),
    ("[space]\nlearning_rat = 0.1", r"space\.learning_rat: unknown key"),
    ("seed = 'zero'", r"seed: expected an integer, got 'zero'"),
    ("[space]\nbatch_size = []", r"space\.batch_size: the list is empty"),
    ("[space]\nlearning_rate = 0", r"space\.learning_rate: 0\.0 is not allowed; use a number > 0"),
    ("[space]\nbatch_size = 0", r"space\.batch_size: 0 is not allowed; use an integer from 1 to"),
    (
        "[space]\nbatch_size = 100000000000000000000",
        r"space\.batch_size: 100000000000000000000 is not allowed; use an integer from 1 to 65536",
    ),
    ("[space]\nepochs = [5, 20000]", r"space\.epochs: 20000 is not allowed; .* 1 to 10000"),
    ("n_trials = 10000000", r"n_trials: 10000000 is not allowed; use an integer from 1 to"),
    ("description = " + "[" * 5000 + "]" * 5000, r"a value is nested too deep"),
    ("[space]\nx = " + "{ a = " * 3000 + "1" + " }" * 3000, r"a value is nested too deep"),
    ("[space]\nepochs = [5, 0]", r"space\.epochs: 0 is not allowed"),
    ("[space]\ndropout_conv = 1.0", r"space\.dropout_conv: 1\.0 is not allowed; use .*\[0, 1\)"),
    ("[space]\naugment = 1.5", r"space\.augment: 1\.5 is not allowed; use a number in \[0, 1\]"),
    (
        "[space]\nlearning_rate = { low = 0.1, high = 0.01 }",
        r"space\.learning_rate: low 0\.1 is greater than high 0\.01; swap them",
    ),
    ("[space]\nfamily = 'resnet'", r"space\.family: 'resnet' is not allowed; use one of baseline"),
    ("[sampler]\nname = 'cmaes'", r"sampler\.name: 'cmaes' is not allowed; use one of grid, tpe"),
    ("[pruner]\nname = 'asha'", r"pruner\.name: 'asha' is not allowed; use one of none"),
    ("dataset = ''", r"dataset: '' is not allowed; use a built-in name \(synthetic, cifar10"),
    ("space = 3", r"space: expected a table"),
    ("[space]\nepochs = [5, 5]", r"space\.epochs: the list \[5, 5\] repeats a value"),
    (
        "[sampler]\nname = 'grid'\n[space]\nepochs = { low = 1, high = 3 }",
        r"space\.epochs: the grid sampler needs a list of values, not a range",
    ),
    ("[space]\nlearning_rate = { low = 0.1 }", r"needs both low and high; high is missing"),
    ("[space]\nlearning_rate = { low = 0, high = 1, log = true }", r"is not allowed"),
    ("[baseline]\nepochs = 2.5", r"baseline\.epochs: expected an integer, got 2\.5"),
    ("dataset = \nseed = 1", r"not valid TOML: .*line 1"),
    ("seed = -1", r"seed: -1 is not allowed; use an integer in \[0, 40000\]"),
    ("seed = 99999", r"seed: 99999 is not allowed"),
    (
        "[space]\nepochs = { low = 1, high = 5, step = 0.5 }",
        r"space\.epochs\.step: expected a whole number >= 1, got 0\.5",
    ),
    (
        "[space]\nlearning_rate = { low = 1e-4, high = 1e-2, step = nan }",
        r"space\.learning_rate\.step: expected a finite number > 0, got nan",
    ),
    (
        "[space]\nlearning_rate = { low = 1e-4, high = 1e-2, step = inf }",
        r"space\.learning_rate\.step: expected a finite number > 0, got inf",
    ),
    (
        "[space]\nepochs = { low = 1, high = 5, step = 10 }",
        r"space\.epochs\.step: 10 is wider than the range \[1, 5\].*smaller step",
    ),
]


# --------------------------------------------------------------------------- CIFAR-10 files


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


def make_cifar_archive(root: Path, **kwargs: Any) -> Path:
    """A tiny ``cifar-10-python.tar.gz`` in the official layout."""
    staging = root / "staging"
    folder = make_cifar_dir(staging, **kwargs)
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return archive


class RunsCode:
    """Pickled, it touches ``target`` when loaded: what a malicious pickle does."""

    def __reduce__(self):  # call a global on load
        return (Path.touch, (Path(self.target),))

    def __init__(self, target: Path) -> None:
        self.target = str(target)


# --------------------------------------------------------------------------- PostgreSQL


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
