"""Every bad input, through the real CLI: exit code 2, one line naming what is wrong and the
fix, no traceback, and the storage exactly as it was."""

from __future__ import annotations

import hashlib
import http.server
import pickle
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import make_cifar_archive, make_cifar_dir, run_cli
from test_config import BAD_FILES
from test_data import _RunsCode

STUDY = "existing"


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[tuple[str, Callable[[], object]]]:
    """A storage holding a finished study, and a snapshot of every byte around it."""
    db = tmp_path / "store" / "sweep.db"
    db.parent.mkdir()
    url = f"sqlite:///{db}"
    study = optuna.create_study(study_name=STUDY, storage=url, direction="maximize")
    study.tell(study.ask(), 0.5)
    optuna.storages.RDBStorage(url).engine.dispose()

    def snapshot() -> object:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in db.parent.iterdir()}

    before = snapshot()
    yield url, snapshot
    assert snapshot() == before  # nothing written, not even a lock or journal file


def _refused(result, *needles: str) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    # Progress notes (INFO) may come first; the error itself is one line.
    lines = [x for x in result.stderr.strip().splitlines() if not x.startswith("INFO ")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _launch(cwd: Path, url: str, *args: str, env: dict[str, str] | None = None):
    return run_cli("sweep.launch", *args, "--storage", url, "--study-name", STUDY, cwd=cwd, env=env)


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_bad_study_files(tmp_path: Path, storage, text: str, message: str) -> None:
    import re

    url, _ = storage
    (tmp_path / "study.toml").write_text(text)
    line = _refused(_launch(tmp_path, url, "--study", "study.toml"))
    assert re.search(message, line), line


def test_unknown_missing_and_unreadable_study_files(tmp_path: Path, storage) -> None:
    url, _ = storage
    _refused(_launch(tmp_path, url, "--study", "exp9"), "unknown study 'exp9'", "exp3, exp4")
    _refused(_launch(tmp_path, url, "--study", "gone.toml"), "gone.toml does not exist")
    (tmp_path / "latin.toml").write_bytes(b"description = '\xe9t\xe9'\n")
    _refused(_launch(tmp_path, url, "--study", "latin.toml"), "cannot read study file")


@pytest.mark.parametrize(
    ("url", "needles"),
    [
        ("nonsense", ("malformed storage URL", "sqlite:///")),
        ("mysql+foo://u@h/db", ("storage driver 'mysql+foo'",)),
        ("oracle://u@h/db", ("unknown storage driver 'oracle'",)),
        ("postgresql+psycopg2://u@h/db", ("unsupported storage driver 'postgresql+psycopg2'",)),
        ("sqlite+pysqlcipher:///x.db", ("unsupported storage driver",)),
        ("postgresql+psycopg://sweep:s3cret", ("malformed storage URL",)),  # host forgotten
        (
            "postgresql+psycopg://postgres:s3cret@127.0.0.1:5432/test?colour=red",
            (
                "cannot connect to PostgreSQL at 127.0.0.1:5432",
                'invalid connection option "colour"',
            ),
        ),
        (
            "postgresql+psycopg://sweep:s3cret@127.0.0.1:1/db",
            ("cannot connect to PostgreSQL at 127.0.0.1:1", "start the server or fix the URL"),
        ),
    ],
)
def test_bad_storage_urls(tmp_path: Path, url: str, needles: tuple[str, ...]) -> None:
    result = run_cli("sweep.launch", "--study", "quickstart", "--storage", url, cwd=tmp_path)
    _refused(result, *needles)
    assert "s3cret" not in result.stderr + result.stdout
    assert list(tmp_path.iterdir()) == []


def _batch(folder: Path, name: str, **fields: object) -> None:
    rows = np.zeros((2, 3072), dtype=np.uint8)
    batch = {b"data": rows, b"labels": [0, 1], b"batch_label": b"x"} | {
        k.encode(): v for k, v in fields.items()
    }
    (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


def _truncated(d: Path) -> None:
    archive = make_cifar_archive(d)
    archive.write_bytes(archive.read_bytes()[:400])


def _garbage(d: Path) -> None:
    (make_cifar_dir(d) / "data_batch_2").write_bytes(b"\x80\x02not a pickle")


def _wrong_shape(d: Path) -> None:
    _batch(make_cifar_dir(d), "data_batch_1", data=np.zeros((2, 1024), dtype=np.uint8))


def _wrong_dtype(d: Path) -> None:
    _batch(make_cifar_dir(d), "data_batch_1", data=np.zeros((2, 3072), dtype=np.float32))


def _bad_labels(d: Path) -> None:
    _batch(make_cifar_dir(d), "test_batch", labels=[3, 10])


def _missing_batch(d: Path) -> None:
    (make_cifar_dir(d) / "data_batch_4").unlink()


def _nested_labels(d: Path) -> None:
    _batch(make_cifar_dir(d), "data_batch_5", labels=[[1], [2]])


def _corrupt_gzip(d: Path) -> None:
    archive = make_cifar_archive(d)
    raw = bytearray(archive.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 64] = bytes(64)  # a damaged download
    archive.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    ("make", "needles"),
    [
        (_truncated, ("truncated or not a gzip tar archive", "download it again")),
        (_garbage, ("data_batch_2 is corrupt", "fresh copy")),
        (_wrong_shape, ("data_batch_1", "rows of 3072 bytes")),
        (_wrong_dtype, ("data_batch_1: data must be a 2-D uint8 array",)),
        (_bad_labels, ("test_batch: labels must be integers 0-9",)),
        (_missing_batch, ("data_batch_4 is missing", "extract the full archive")),
        (_nested_labels, ("data_batch_5: labels must be a list of integers 0-9",)),
        (_corrupt_gzip, ("cifar-10-python.tar.gz", "download it again")),
    ],
)
def test_bad_cifar10_files(tmp_path: Path, storage, make, needles: tuple[str, ...]) -> None:
    url, _ = storage
    data = tmp_path / "data"
    make(data)
    args = ("--study", "exp1", "--data-dir", str(data))
    _refused(_launch(tmp_path, url, *args), *needles)


def test_a_pickle_that_runs_code_is_refused_unrun(tmp_path: Path, storage) -> None:
    url, _ = storage
    folder = make_cifar_dir(tmp_path / "data")
    marker = tmp_path / "pwned"
    (folder / "data_batch_3").write_bytes(pickle.dumps(_RunsCode(marker), protocol=2))
    args = ("--study", "exp1", "--data-dir", str(tmp_path / "data"))
    _refused(_launch(tmp_path, url, *args), "data_batch_3", "refused global")
    assert not marker.exists()


def test_a_missing_archive_that_cannot_be_downloaded(tmp_path: Path, storage) -> None:
    url, _ = storage
    (tmp_path / "data").mkdir()
    env = {"SWEEP_CIFAR10_URL": "http://127.0.0.1:9/cifar-10-python.tar.gz"}
    args = ("--study", "exp1", "--data-dir", str(tmp_path / "data"))
    _refused(_launch(tmp_path, url, *args, env=env), "download from", "put cifar-10-python")
    assert list((tmp_path / "data").iterdir()) == []  # no partial file left


def test_a_download_that_fails_its_md5_is_refused_and_removed(tmp_path: Path, storage) -> None:
    url, _ = storage
    served = tmp_path / "mirror"
    make_cifar_archive(served)  # a valid archive, but not the official one
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        mirror = f"http://127.0.0.1:{server.server_port}/cifar-10-python.tar.gz"
        (tmp_path / "data").mkdir()
        args = ("--study", "exp1", "--data-dir", str(tmp_path / "data"))
        result = _launch(tmp_path, url, *args, env={"SWEEP_CIFAR10_URL": mirror})
    finally:
        server.shutdown()
    _refused(result, "is not the official c58f30108f718f92721af3b95e74349a")
    assert list((tmp_path / "data").iterdir()) == []


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("--gpus", "99"), ("--gpus 99:",)),
        (("--trials-per-gpu", "2"), ("--trials-per-gpu needs --gpus",)),
        (("--gpu-memory", "4000"), ("--gpu-memory needs --gpus",)),
        (("--gpus", "0", "--workers", "2"), ("--workers conflicts with --gpus",)),
        (("--workers", "0"), ("--workers", "must be 1 or more")),
        (("--n-trials", "x"), ("--n-trials", "'x' is not an integer")),
        (("--subset", "-5"), ("--subset", "must be 1 or more")),
        (("--dataset", "mnist"), ("--dataset", "invalid choice")),
        (("--colour", "red"), ("unrecognized arguments: --colour red",)),
        (("--seed", "-1"), ("--seed -1 is out of range", "[0, 40000]")),
    ],
)
def test_bad_options(tmp_path: Path, storage, args: tuple[str, ...], needles) -> None:
    url, _ = storage
    _refused(_launch(tmp_path, url, "--study", "quickstart", *args), *needles)


def test_the_worker_refuses_bad_input_the_same_way(tmp_path: Path, storage) -> None:
    url, _ = storage
    (tmp_path / "study.toml").write_text("[space]\nbatch_size = 0")
    worker = ("sweep.worker", "--storage", url, "--study-name", STUDY)
    _refused(run_cli(*worker, "--study", "study.toml", cwd=tmp_path), "space.batch_size")
    _refused(run_cli(*worker, "--study", "exp9", cwd=tmp_path), "unknown study 'exp9'")


def test_a_study_run_on_other_data_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    db = tmp_path / "store" / "sweep.db"
    db.parent.mkdir()
    url = f"sqlite:///{db}"
    study = optuna.create_study(study_name=STUDY, storage=url)
    study.set_user_attr("fingerprint", {"dataset": "cifar10", "seed": 0})
    optuna.storages.RDBStorage(url).engine.dispose()
    before = {p.name: p.read_bytes() for p in db.parent.iterdir()}
    result = _launch(tmp_path, url, "--study", "quickstart", "--subset", "50")
    _refused(result, "was run with {'dataset': 'cifar10'", "pass --study-name NEW")
    assert {p.name: p.read_bytes() for p in db.parent.iterdir()} == before


def test_a_worker_with_no_budget_anywhere_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "open.toml").write_text("[space]\nlearning_rate = { low = 1e-4, high = 1e-2 }\n")
    url = f"sqlite:///{tmp_path / 'new.db'}"
    result = run_cli("sweep.worker", "--study", "open.toml", "--storage", url, cwd=tmp_path)
    _refused(result, "n_trials is missing", "--n-trials N")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["open.toml"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SWEEP_HEARTBEAT_GRACE", "soon"),
        ("SWEEP_HEARTBEAT_INTERVAL", "0"),
        ("SWEEP_WORKER_INDEX", "x"),
        ("SWEEP_GPU_MEMORY_MB", "lots"),
        ("SWEEP_LOG_LEVEL", "chatty"),
    ],
)
def test_bad_environment_variables(tmp_path: Path, storage, name: str, value: str) -> None:
    url, _ = storage
    for module in ("sweep.launch", "sweep.worker"):
        result = run_cli(
            module, "--study", "quickstart", "--storage", url, "--study-name", STUDY,
            cwd=tmp_path, env={name: value},
        )  # fmt: skip
        _refused(result, f"${name}={value!r}")


# --------------------------------------------------------------------------- the study tools


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("sweep.report", "--study", "nope", "--out", "rep"), ("no study 'nope'", "--storage")),
        (("sweep.report", "--study", STUDY, "--out", "rep"), ("not created by sweep.launch",)),
        (("sweep.verify", "--study", STUDY), ("not created by sweep.launch",)),
        (("sweep.verify", "--study", STUDY, "--repeats", "1"), ("--repeats", "at least 2")),
        (("sweep.verify", "--study", STUDY, "--alpha", "2"), ("--alpha", "probability")),
        (("sweep.export", "--study", STUDY, "--out", "m.h5"), ("must end in .keras",)),
        (("sweep.export", "--study", "nope", "--out", "m.keras"), ("no study 'nope'",)),
        (("sweep.export", "--study", STUDY, "--out", "no/m.keras"), ("does not exist",)),
        (("sweep.dashboard", "--port", "70000"), ("--port 70000", "1-65535")),
        (("sweep.dashboard", "--artifacts", "missing"), ("artifact folder missing",)),
    ],
)
def test_the_study_tools_refuse_bad_input(tmp_path: Path, storage, args, needles) -> None:
    url, _ = storage
    result = run_cli(*args, "--storage", url, cwd=tmp_path)
    _refused(result, *needles)
    assert not (tmp_path / "rep").exists() and not (tmp_path / "m.keras").exists()


def test_the_study_tools_refuse_a_storage_that_does_not_exist(tmp_path: Path) -> None:
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    for args in (
        ("sweep.dashboard",),
        ("sweep.report", "--study", STUDY, "--out", "rep"),
        ("sweep.export", "--study", STUDY, "--out", "m.keras"),
    ):
        _refused(run_cli(*args, "--storage", missing, cwd=tmp_path), "none.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_dashboard_warns_when_it_listens_on_every_address(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    from conftest import REPO

    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    optuna.create_study(study_name=STUDY, storage=url)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep.dashboard", "--storage", url, "--host", "0.0.0.0",
         "--port", str(port), "--artifacts", str(tmp_path)],
        cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        warning = proc.stderr.readline()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert warning.startswith("WARNING") and "every address (0.0.0.0)" in warning
    assert "can delete studies" in warning
