"""Worker placement: which GPU each worker sees, and how CPU workers share the cores."""

from __future__ import annotations

import pytest

from sweep.devices import GPU_MEMORY_ENV, parse_gpus, plan
from sweep.errors import UserError


def test_k_workers_are_packed_onto_each_gpu_with_memory_growth() -> None:
    placements = plan(workers=4, gpus=["0", "2"], per_gpu=2)
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in placements] == ["0", "0", "2", "2"]
    # Memory as they need it, on TensorFlow and on JAX (PyTorch's allocator grows by itself).
    assert all(p.env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true" for p in placements)
    assert all(p.env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false" for p in placements)
    assert [p.index for p in placements] == [0, 1, 2, 3]
    assert placements[2].describe() == "GPU 2"


def test_a_memory_limit_replaces_growth() -> None:
    (p,) = plan(workers=1, gpus=["1"], gpu_memory_mb=6000)
    assert p.env == {"CUDA_VISIBLE_DEVICES": "1", GPU_MEMORY_ENV: "6000"}


def test_cpu_workers_split_the_cores() -> None:
    placements = plan(workers=3, gpus=None, cpus=8)
    assert len(placements) == 3 and all(p.gpu is None for p in placements)
    assert {p.env["TF_NUM_INTRAOP_THREADS"] for p in placements} == {"2"}
    assert {p.env["OMP_NUM_THREADS"] for p in placements} == {"2"}
    (alone,) = plan(workers=1, gpus=None, cpus=8)
    assert "TF_NUM_INTRAOP_THREADS" not in alone.env  # one worker keeps every core
    assert plan(workers=4, gpus=None, cpus=2)[0].env["TF_NUM_INTRAOP_THREADS"] == "1"


@pytest.mark.parametrize(
    ("text", "available", "expected"),
    [("all", ["0", "1"], ["0", "1"]), ("1", ["0", "1"], ["1"]), ("1,0", ["0", "1"], ["1", "0"])],
)
def test_parse_gpus(text: str, available: list[str], expected: list[str]) -> None:
    assert parse_gpus(text, available) == expected


@pytest.mark.parametrize(
    ("text", "available", "message"),
    [
        ("0", [], "no NVIDIA GPU found"),
        ("all", [], "drop --gpus to run on the CPU"),
        ("2", ["0", "1"], "no GPU 2 here; this machine has 0, 1"),
        ("0,0", ["0", "1"], "distinct GPU indices"),
    ],
)
def test_parse_gpus_refuses(text: str, available: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_gpus(text, available)


def test_tensorflows_start_up_noise_is_dropped_and_everything_else_kept() -> None:
    import subprocess
    import sys

    from helpers import REPO

    probe = (
        "import os\n"
        "from sweep.devices import _start_up_lines_dropped\n"
        "with _start_up_lines_dropped():\n"
        "    os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called "
        "are written to STDERR\\n')\n"
        "    os.write(2, b'I0000 00:00:1.2 1 cudart_stub.cc:31] Could not find cuda drivers\\n')\n"
        "    os.write(2, b'F0000 00:00:1.2 1 cpu_feature_guard.cc:9] needs AVX: aborting\\n')\n"
        "    os.write(2, b'a real error\\n')\n"
        "os.write(2, b'after\\n')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env={"PYTHONPATH": str(REPO)}
    )
    assert done.returncode == 0
    assert done.stderr.splitlines() == [
        "F0000 00:00:1.2 1 cpu_feature_guard.cc:9] needs AVX: aborting",
        "a real error",
        "after",
    ]


def test_a_memory_limit_is_that_share_of_the_gpu_on_jax(tmp_path) -> None:
    """``--gpu-memory 8192`` on a GPU of 81,920 MB: JAX may take a tenth of it. No GPU here:
    ``nvidia-smi`` is a script that answers the GPU's size, as the real one does."""
    import os
    import subprocess
    import sys

    from helpers import REPO

    smi = tmp_path / "nvidia-smi"
    smi.write_text('#!/bin/sh\n[ "$3 $4" = "-i 3" ] && echo 81920\n')
    smi.chmod(0o755)
    probe = (
        "import os; from sweep import devices; devices.configure('jax'); "
        "print(os.environ['XLA_PYTHON_CLIENT_MEM_FRACTION'])"
    )
    env = {
        **os.environ,
        "PATH": f"{tmp_path}:{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "CUDA_VISIBLE_DEVICES": "3",
        "JAX_PLATFORMS": "cpu",
        GPU_MEMORY_ENV: "8192",
    }
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0.1000"]
