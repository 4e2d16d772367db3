"""Every bad input, through the CLI: exit code 2, one line naming what is wrong and the fix,
no traceback, and the storage exactly as it was. The CLI runs in this process (the ``cli``
fixture: the entry ``python -m sweep.X`` runs, a tenth of a subprocess's time); a few tests
run it as a real process, to show that the process itself prints that one line and exits 2."""

from __future__ import annotations

import hashlib
import http.server
import os
import pickle
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from functools import partial
from pathlib import Path

import numpy as np
import optuna
import pytest
from helpers import (
    BAD_FILES,
    REPO,
    RunsCode,
    make_cifar_archive,
    make_cifar_dir,
    run_cli,
    study_toml,
)

STUDY = "existing"


@pytest.fixture(scope="session")
def _finished_study(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a SQLite storage holding a finished study: made once (Optuna's schema takes
    half a second to create), copied for each test."""
    db = tmp_path_factory.mktemp("finished") / "sweep.db"
    url = f"sqlite:///{db}"
    study = optuna.create_study(study_name=STUDY, storage=url, direction="maximize")
    study.tell(study.ask(), 0.5)
    optuna.storages.RDBStorage(url).engine.dispose()
    return db.read_bytes()


@pytest.fixture
def storage(tmp_path: Path, _finished_study: bytes) -> Iterator[tuple[str, Callable[[], object]]]:
    """A storage holding a finished study, and a snapshot of every byte around it."""
    db = tmp_path / "store" / "sweep.db"
    db.parent.mkdir()
    db.write_bytes(_finished_study)
    url = f"sqlite:///{db}"

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


def _launch(run, cwd: Path, url: str, *args: str, env: dict[str, str] | None = None):
    return run("sweep.launch", *args, "--storage", url, "--study-name", STUDY, cwd=cwd, env=env)


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_bad_study_files(tmp_path: Path, storage, text: str, message: str, cli) -> None:
    import re

    url, _ = storage
    (tmp_path / "study.toml").write_text(text)
    line = _refused(_launch(cli, tmp_path, url, "--study", "study.toml"))
    assert re.search(message, line), line


def test_unknown_missing_and_unreadable_study_files(tmp_path: Path, storage, cli) -> None:
    url, _ = storage
    _refused(_launch(cli, tmp_path, url, "--study", "exp9"), "unknown study 'exp9'", "exp3, exp4")
    _refused(_launch(cli, tmp_path, url, "--study", "gone.toml"), "gone.toml does not exist")
    _refused(_launch(cli, tmp_path, url, "--study", f"{tmp_path}/"), "is a folder")
    (tmp_path / "latin.toml").write_bytes(b"description = '\xe9t\xe9'\n")
    _refused(_launch(cli, tmp_path, url, "--study", "latin.toml"), "cannot read study file")


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
def test_bad_storage_urls(tmp_path: Path, url: str, needles: tuple[str, ...], cli) -> None:
    result = cli("sweep.launch", "--study", "quickstart", "--storage", url, cwd=tmp_path)
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


def _linked(target: str):
    """An archive whose data_batch_1 is a link (to a missing member, or to itself)."""

    def make(d: Path) -> None:
        import io
        import tarfile

        d.mkdir(parents=True)
        with tarfile.open(d / "cifar-10-python.tar.gz", "w:gz") as tar:
            link = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
            link.type, link.linkname = tarfile.SYMTYPE, target
            tar.addfile(link)
            batch = tarfile.TarInfo("cifar-10-batches-py/batches.meta")
            tar.addfile(batch, io.BytesIO(b""))

    return make


def _fifo(d: Path) -> None:
    import os

    d.mkdir(parents=True)
    os.mkfifo(d / "cifar-10-python.tar.gz")  # read without end, once


@pytest.mark.parametrize(
    ("make", "needles"),
    [
        (_linked("missing"), ("data_batch_1 is not a regular file", "download it again")),
        (_linked("data_batch_1"), ("data_batch_1 is not a regular file",)),
        (_fifo, ("cifar-10-python.tar.gz is not a regular file",)),
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
def test_bad_cifar10_files(tmp_path: Path, storage, make, needles: tuple[str, ...], cli) -> None:
    url, _ = storage
    data = tmp_path / "data"
    make(data)
    args = ("--study", "exp1", "--data-dir", str(data))
    _refused(_launch(cli, tmp_path, url, *args), *needles)


def test_a_pickle_that_runs_code_is_refused_unrun(tmp_path: Path, storage, cli) -> None:
    url, _ = storage
    folder = make_cifar_dir(tmp_path / "data")
    marker = tmp_path / "pwned"
    (folder / "data_batch_3").write_bytes(pickle.dumps(RunsCode(marker), protocol=2))
    args = ("--study", "exp1", "--data-dir", str(tmp_path / "data"))
    _refused(_launch(cli, tmp_path, url, *args), "data_batch_3", "refused global")
    assert not marker.exists()


def test_a_missing_archive_that_cannot_be_downloaded(tmp_path: Path, storage, cli) -> None:
    url, _ = storage
    (tmp_path / "data").mkdir()
    env = {"SWEEP_CIFAR10_URL": "http://127.0.0.1:9/cifar-10-python.tar.gz"}
    args = ("--study", "exp1", "--data-dir", str(tmp_path / "data"))
    _refused(_launch(cli, tmp_path, url, *args, env=env), "download from", "put cifar-10-python")
    assert list((tmp_path / "data").iterdir()) == []  # no partial file left


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files without logging each request to stderr, which the command's is here."""

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_download_that_fails_its_md5_is_refused_and_removed(tmp_path: Path, storage, cli) -> None:
    url, _ = storage
    served = tmp_path / "mirror"
    make_cifar_archive(served)  # a valid archive, but not the official one
    handler = partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        mirror = f"http://127.0.0.1:{server.server_port}/cifar-10-python.tar.gz"
        (tmp_path / "data").mkdir()
        args = ("--study", "exp1", "--data-dir", str(tmp_path / "data"))
        result = _launch(cli, tmp_path, url, *args, env={"SWEEP_CIFAR10_URL": mirror})
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
        (("--workers", str(10**11), "--oversubscribe"), ("at most 1024 workers", "sweep worker")),
        (
            ("--gpus", "0", "--trials-per-gpu", "5000", "--oversubscribe"),
            ("--trials-per-gpu 5000",),
        ),
        (("--gpus", "0", "--gpu-memory", str(10**20)), ("--gpu-memory", "at most 1048576 MB")),
        (("--n-trials", "x"), ("--n-trials", "'x' is not an integer")),
        (("--subset", "-5"), ("--subset", "must be 1 or more")),
        (("--dataset", "mnist"), ("--dataset mnist: no such folder or file", "cifar100")),
        (("--colour", "red"), ("unrecognized arguments: --colour red",)),
        (("--seed", "-1"), ("--seed -1 is out of range", "[0, 40000]")),
        (("--sampler-seed", "40001"), ("--sampler-seed 40001 is out of range", "[0, 40000]")),
    ],
)
def test_bad_options(tmp_path: Path, storage, args: tuple[str, ...], needles, cli) -> None:
    url, _ = storage
    _refused(_launch(cli, tmp_path, url, "--study", "quickstart", *args), *needles)


def test_the_worker_refuses_bad_input_the_same_way(tmp_path: Path, storage) -> None:
    url, _ = storage
    (tmp_path / "study.toml").write_text("[space]\nbatch_size = 0")
    worker = ("sweep.worker", "--storage", url, "--study-name", STUDY)
    _refused(run_cli(*worker, "--study", "study.toml", cwd=tmp_path), "space.batch_size")
    _refused(run_cli(*worker, "--study", "exp9", cwd=tmp_path), "unknown study 'exp9'")


def test_a_study_run_on_other_data_is_refused_before_anything_is_written(
    tmp_path: Path, cli
) -> None:
    db = tmp_path / "store" / "sweep.db"
    db.parent.mkdir()
    url = f"sqlite:///{db}"
    study = optuna.create_study(study_name=STUDY, storage=url)
    study.set_user_attr("fingerprint", {"dataset": "cifar10", "seed": 0})
    optuna.storages.RDBStorage(url).engine.dispose()
    before = {p.name: p.read_bytes() for p in db.parent.iterdir()}
    result = _launch(cli, tmp_path, url, "--study", "quickstart", "--subset", "50")
    _refused(result, "was run with {'dataset': 'cifar10'", "pass --study-name NEW")
    assert {p.name: p.read_bytes() for p in db.parent.iterdir()} == before


def test_a_worker_with_no_budget_anywhere_writes_nothing(tmp_path: Path, cli) -> None:
    (tmp_path / "open.toml").write_text("[space]\nlearning_rate = { low = 1e-4, high = 1e-2 }\n")
    url = f"sqlite:///{tmp_path / 'new.db'}"
    result = cli("sweep.worker", "--study", "open.toml", "--storage", url, cwd=tmp_path)
    _refused(result, "n_trials is missing", "--n-trials N")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["open.toml"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SWEEP_HEARTBEAT_GRACE", "soon"),
        ("SWEEP_HEARTBEAT_INTERVAL", "0"),
        ("SWEEP_HEARTBEAT_INTERVAL", str(10**20)),
        ("SWEEP_HEARTBEAT_GRACE", str(10**20)),
        ("SWEEP_STORAGE_RETRY", str(10**20)),
        ("OMP_NUM_THREADS", "many"),
        ("TF_NUM_INTRAOP_THREADS", "0"),
        ("SWEEP_WORKER_LOG_LEVEL", "chatty"),
        ("SWEEP_GPU_MEMORY_MB", "lots"),
        ("SWEEP_LOG_LEVEL", "chatty"),
    ],
)
def test_bad_environment_variables(tmp_path: Path, storage, name: str, value: str, cli) -> None:
    url, _ = storage
    for module in ("sweep.launch", "sweep.worker"):
        result = cli(
            module, "--study", "quickstart", "--storage", url, "--study-name", STUDY,
            cwd=tmp_path, env={name: value},
        )  # fmt: skip
        _refused(result, f"${name}={value!r}")


# --------------------------------------------------------------------------- the study tools


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("sweep.report", "--study", "nope", "--out", "rep"), ("no study 'nope'", "--storage")),
        (("sweep.report", "--study", STUDY, "--out", "rep"), ("not created by sweep launch",)),
        (("sweep.verify", "--study", STUDY), ("not created by sweep launch",)),
        (("sweep.verify", "--study", STUDY, "--repeats", "1"), ("--repeats", "at least 2")),
        (("sweep.verify", "--study", STUDY, "--alpha", "2"), ("--alpha", "probability")),
        (("sweep.export", "--study", STUDY, "--out", "m.h5"), ("must end in .keras",)),
        (("sweep.export", "--study", "nope", "--out", "m.keras"), ("no study 'nope'",)),
        (("sweep.export", "--study", STUDY, "--out", "no/m.keras"), ("does not exist",)),
        (("sweep.dashboard", "--port", "70000"), ("--port 70000", "1-65535")),
        (("sweep.dashboard", "--artifacts", "missing"), ("artifact folder missing",)),
        (("sweep.dashboard", "--host", "no.such.host.invalid"), ("cannot listen on no.such",)),
    ],
)
def test_the_study_tools_refuse_bad_input(tmp_path: Path, storage, args, needles, cli) -> None:
    url, _ = storage
    result = cli(*args, "--storage", url, cwd=tmp_path)
    _refused(result, *needles)
    assert not (tmp_path / "rep").exists() and not (tmp_path / "m.keras").exists()


def test_the_study_tools_refuse_a_storage_that_does_not_exist(tmp_path: Path, cli) -> None:
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    for args in (
        ("sweep.dashboard",),
        ("sweep.report", "--study", STUDY, "--out", "rep"),
        ("sweep.export", "--study", STUDY, "--out", "m.keras"),
    ):
        _refused(cli(*args, "--storage", missing, cwd=tmp_path), "none.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_dashboard_warns_when_it_listens_on_every_address(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

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


# --------------------------------------------------------------------------- the second battery


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every file's bytes and every folder (None) under ``root``: what "nothing written" means."""
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in root.rglob("*")
    }  # a folder or a FIFO (whose read would wait for a writer) by its name alone


def _optuna_db(path: Path) -> None:
    """A study's database in WAL mode, as sweep keeps it: a read-only connection to it would
    leave -wal and -shm files beside it, which the snapshot would see."""
    import sqlite3

    url = f"sqlite:///{path}"
    study = optuna.create_study(study_name="s", storage=url)
    study.tell(study.ask(), 1.0)
    optuna.storages.RDBStorage(url).engine.dispose()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def _truncated_db(path: Path) -> None:
    _optuna_db(path)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _future_db(path: Path) -> None:
    import sqlite3

    _optuna_db(path)
    with closing(sqlite3.connect(path)) as conn, conn:  # closed: no -wal left open here
        conn.execute("UPDATE alembic_version SET version_num = 'v99.0.0.a'")


def _read_only_db(path: Path) -> None:
    import subprocess

    _optuna_db(path)
    subprocess.run(["chattr", "+i", str(path)], check=True)  # read-only for root too


def _garbage_db(path: Path) -> None:
    path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 20)


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: p.write_text("not a database\n"), "x.db is not a SQLite database"),
        (lambda p: p.mkdir(), "x.db is a folder, not a database file"),
        (lambda p: os.mkfifo(p), "x.db is not a SQLite database"),
        (_garbage_db, "x.db is not a SQLite database"),
        (_truncated_db, "x.db is not a SQLite database"),
        (_future_db, "schema v99.0.0.a, not this Optuna's"),
        (_read_only_db, "x.db cannot be written (read-only)"),
    ],
    ids=["text-file", "folder", "fifo", "garbage", "truncated", "future-schema", "read-only"],
)
def test_a_sqlite_storage_that_is_not_a_database(tmp_path: Path, make, needle: str, cli) -> None:
    import subprocess

    make(tmp_path / "x.db")
    before = _tree(tmp_path)
    try:
        for command in ("sweep.launch", "sweep.worker"):
            result = cli(
                command, "--study", "quickstart", "--storage", f"sqlite:///{tmp_path / 'x.db'}",
                cwd=tmp_path,
            )  # fmt: skip
            _refused(result, needle)
            assert _tree(tmp_path) == before  # no x-artifacts/, no x.db.lock, no -wal
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path / "x.db")], capture_output=True)


def test_dev_null_as_the_storage_is_refused_and_nothing_made_beside_it(tmp_path: Path) -> None:
    result = run_cli(
        "sweep.launch", "--study", "quickstart", "--storage", "sqlite:////dev/null", cwd=tmp_path
    )
    _refused(result, "/dev/null is not a SQLite database")
    assert not any(Path(f"/dev/null{tail}").exists() for tail in ("-journal", ".lock", "-wal"))
    assert not Path("/dev/null-artifacts").exists() and list(tmp_path.iterdir()) == []


def test_a_sqlite_file_in_a_folder_that_cannot_be_written(tmp_path: Path, cli) -> None:
    result = cli(
        "sweep.launch", "--study", "quickstart", "--storage", "sqlite:////proc/x.db",
        "--artifacts", str(tmp_path / "art"), cwd=tmp_path,
    )  # fmt: skip
    _refused(result, "folder /proc cannot be written", "writable folder")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_storage_is_refused_for_a_sweep(tmp_path: Path, url: str, cli) -> None:
    for args in (("sweep.launch", "--study", "quickstart"), ("sweep.worker", "--study", "q")):
        _refused(cli(*args, "--storage", url, cwd=tmp_path), "in-memory database")
    assert list(tmp_path.iterdir()) == []  # no sweep-artifacts/


def test_in_memory_sqlite_works_in_one_process() -> None:
    """What the CLI refuses still works for a notebook: the tables are there."""
    from sweep.storage import open_storage

    study = optuna.create_study(storage=open_storage("sqlite:///:memory:"))
    study.tell(study.ask(), 1.0)
    assert study.best_value == 1.0


@pytest.mark.postgres
def test_a_study_name_longer_than_the_storage_holds(tmp_path: Path, cli) -> None:
    import subprocess
    import uuid

    name = f"empty_{uuid.uuid4().hex[:8]}"

    def psql(sql: str, db: str = "postgres") -> str:
        done = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-tAc", sql],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        return done.stdout.strip()

    psql(f"CREATE DATABASE {name}")
    try:
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        result = cli(
            "sweep.launch", "--study", "quickstart", "--storage", url, "--study-name", "a" * 600,
            cwd=tmp_path,
        )  # fmt: skip
        _refused(result, "600 characters long", "at most 512", "use 1 to 505")
        tables = psql(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'", name
        )
        assert tables == "0"  # Optuna's schema was not created
    finally:
        psql(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.mark.parametrize(
    ("subset", "needles"),
    [
        ("1", ("--subset 1 is too small", "0 training, 1 validation and 1 test", "at least 50")),
        ("4", ("--subset 4 is too small", "3 training, 1 validation and 1 test")),
        ("49", ("--subset 49 is too small", "test images; use at least 50")),
        ("1000000", ("--subset 1000000 is more than the 5,000 training images of synthetic",)),
    ],
)
def test_a_subset_the_data_cannot_give(tmp_path: Path, storage, subset: str, needles, cli) -> None:
    url, _ = storage
    _refused(_launch(cli, tmp_path, url, "--study", "quickstart", "--subset", subset), *needles)


# The study a resume starts from: three one-epoch trials over a learning-rate range.
_FIRST = {
    "dataset": "synthetic",
    "n_trials": 3,
    "space": {"learning_rate": {"low": 1e-3, "high": 1e-2, "log": True}, "epochs": 1},
    "baseline": {"epochs": 1},
}


def _study_from(tmp_path: Path, text: str) -> str:
    """A study created from ``text`` (nothing trained), as the launcher creates one."""
    from sweep import study
    from sweep.config import loads_study
    from sweep.run import RunOptions
    from sweep.storage import open_storage

    url = f"sqlite:///{tmp_path / 'r.db'}"
    spec = loads_study(text, name="r", source="r.toml")
    study.open_study(RunOptions("r", url, spec, budget=3, subset=100), storage=open_storage(url))
    return url


def _dump(url: str) -> list[str]:
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
        return list(conn.iterdump())


@pytest.mark.parametrize(
    ("change", "flag", "needles"),
    [
        (
            {"space": {"learning_rate": {"low": 1e-4}}},
            (),
            ("created from another study file", "space differ"),
        ),
        (
            {"baseline": {"batch_size": 64}},
            ("--replace-study-file",),
            ("has another baseline",),
        ),
        (
            {"space": {"learning_rate": [0.001, 0.01]}},
            ("--replace-study-file",),
            ("space.learning_rate changed in a way one Optuna study cannot hold",),
        ),
    ],
    ids=["space", "baseline", "range-to-list"],
)
def test_resuming_with_another_study_file(tmp_path: Path, change, flag, needles, cli) -> None:
    url = _study_from(tmp_path, study_toml(_FIRST))
    (tmp_path / "r.toml").write_text(study_toml(_FIRST, **change))
    before = _dump(url)
    result = cli(
        "sweep.launch", "--study", "r.toml", "--storage", url, "--subset", "100", *flag,
        cwd=tmp_path,
    )  # fmt: skip
    _refused(result, *needles)
    assert _dump(url) == before


def test_replacing_the_study_file_on_purpose_is_recorded(tmp_path: Path) -> None:
    from sweep import study
    from sweep.config import loads_study
    from sweep.run import RunOptions
    from sweep.storage import open_storage

    url = _study_from(tmp_path, study_toml(_FIRST))
    wider = study_toml(_FIRST, space={"learning_rate": {"low": 1e-4}})
    spec = loads_study(wider, name="r", source="r.toml")
    run = RunOptions("r", url, spec, budget=3, subset=100, replace_file=True)
    study.check_resumable(run)  # allowed: a float range may widen
    opened = study.open_study(run, storage=open_storage(url))
    system = open_storage(url).get_study_system_attrs(opened._study_id)
    assert system[study.SPEC_ATTR]["text"] == wider
    assert [f["text"] for f in system[study.HISTORY_ATTR]] == [study_toml(_FIRST)]
    baselines = [t for t in opened.get_trials() if t.user_attrs.get("is_baseline")]
    assert len(baselines) == 1  # the same baseline: not enqueued twice


def test_more_workers_than_the_machine_holds(tmp_path: Path, storage, cli) -> None:
    url, _ = storage
    result = _launch(cli, tmp_path, url, "--study", "quickstart", "--workers", "1000")
    _refused(
        result, "--workers 1000: 1000 workers is more than this machine holds", "--oversubscribe"
    )
    allowed = _launch(
        cli,
        tmp_path,
        url,
        "--study",
        "quickstart",
        "--workers",
        "1000",
        "--oversubscribe",
        "--dry-run",
    )
    assert allowed.returncode == 0, allowed.stderr
    assert "workers    1000: CPU" in allowed.stdout


@pytest.mark.parametrize(
    ("args", "env", "needles"),
    [
        (
            ("--data-dir", "/etc/passwd", "--dataset", "cifar10"),
            {},
            ("is a file; give the folder",),
        ),
        (
            (),
            {"SWEEP_HEARTBEAT_INTERVAL": "10", "SWEEP_HEARTBEAT_GRACE": "5"},
            ("$SWEEP_HEARTBEAT_GRACE=5 is not longer than $SWEEP_HEARTBEAT_INTERVAL=10",),
        ),
    ],
    ids=["data-dir-is-a-file", "grace-shorter-than-interval"],
)
def test_more_launch_options_found_the_same_way(tmp_path: Path, storage, args, env, needles, cli):
    url, _ = storage
    _refused(_launch(cli, tmp_path, url, "--study", "quickstart", *args, env=env), *needles)


def test_an_empty_study_name(tmp_path: Path, storage) -> None:
    url, _ = storage
    result = run_cli(
        "sweep.launch", "--study", "quickstart", "--storage", url, "--study-name", " ", cwd=tmp_path
    )
    _refused(result, "--study-name is empty")


def test_a_storage_path_through_a_file(tmp_path: Path, cli) -> None:
    (tmp_path / "plain.txt").write_text("x")
    url = f"sqlite:///{tmp_path / 'plain.txt' / 'x.db'}"
    result = cli("sweep.launch", "--study", "quickstart", "--storage", url, cwd=tmp_path)
    _refused(result, "plain.txt is a file, not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.txt"]


def test_a_report_into_a_folder_that_cannot_be_written(tmp_path: Path, cli) -> None:
    """On a study sweep created (nothing trained); export's case is in test_dashboard."""
    url = _study_from(tmp_path, study_toml(_FIRST))
    _refused(
        cli("sweep.report", "--study", "r", "--storage", url, "--out", "/proc/r", cwd=tmp_path),
        "--out /proc/r: cannot make the folder",
    )


def test_a_validation_split_that_leaves_too_few_training_images(
    tmp_path: Path, storage, cli
) -> None:
    url, _ = storage
    (tmp_path / "vs.toml").write_text("validation_split = 0.999\n")
    _refused(
        _launch(cli, tmp_path, url, "--study", "vs.toml"),
        "validation_split 0.999 leaves 5 training and 4995 validation images",
    )


def test_a_grid_too_large_to_run_is_refused_at_once_dry_run_or_not(
    tmp_path: Path, storage, cli
) -> None:
    """A million points: refused from their count, before any is made or enqueued (its dry
    run once took two minutes)."""
    import time

    url, _ = storage
    hundred = ", ".join(str(i) for i in range(1, 101))
    (tmp_path / "huge.toml").write_text(
        "[sampler]\nname = 'grid'\n[space]\n"
        f"batch_size = [{hundred}]\nepochs = [{hundred}]\n"
        f"learning_rate = [{', '.join(f'{i}e-5' for i in range(1, 101))}]\n"
    )
    for extra in ((), ("--dry-run",)):
        start = time.monotonic()
        result = _launch(cli, tmp_path, url, "--study", "huge.toml", *extra)
        _refused(result, "the grid has 1000000 points", "sampler")
        assert time.monotonic() - start < 30


LONG = "x" * 300  # longer than any file system's name limit (255)


@pytest.mark.parametrize(
    ("args", "env", "needles"),
    [
        (("sweep.launch", "--study", f"{LONG}.toml"), {}, ("File name too long", "a path")),
        (
            ("sweep.launch", "--study", "quickstart", "--storage", f"sqlite:///{LONG}.db"),
            {},
            ("File name too long",),
        ),
        (("sweep.launch", "--study", "exp1"), {"SWEEP_DATA_DIR": LONG}, ("File name too long",)),
        (
            (
                "sweep.export",
                "--study",
                "q",
                "--storage",
                f"sqlite:///{LONG}.db",
                "--out",
                "m.keras",
            ),
            {},
            ("File name too long",),
        ),
        (("sweep.dashboard",), {"SWEEP_STORAGE": f"sqlite:///{LONG}.db"}, ("File name too long",)),
        (
            ("sweep.launch", "--study", "quickstart", "--artifacts", "/etc/passwd/art"),
            {},
            ("/etc/passwd/art",),
        ),
        (
            ("sweep.launch", "--study", "exp1", "--subset", "50"),
            {"HOME": "no-home", "SWEEP_CIFAR10_URL": "http://127.0.0.1:1/cifar-10-python.tar.gz"},
            ("CIFAR-10 is not under --data-dir", "by hand"),
        ),
    ],
    ids=["study", "storage", "data-dir", "export", "dashboard", "artifacts", "missing-home"],
)
def test_paths_the_system_refuses_are_one_line_and_leave_nothing(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], needles: tuple[str, ...], cli
) -> None:
    """A name too long, a folder under a file, a home that does not exist: one line naming
    the path, exit 2, and no file or folder left behind (not even ~/.keras/datasets)."""
    (tmp_path / "run").mkdir()
    if "HOME" in env:
        env = env | {"HOME": str(tmp_path / "run" / env["HOME"])}
    _refused(cli(*args, cwd=tmp_path / "run", env=env), *needles)
    assert list((tmp_path / "run").iterdir()) == []


@pytest.fixture
def pg_database(postgres_url: str) -> Iterator[Callable[..., str]]:
    """Makes PostgreSQL databases (and roles) of its own, dropped afterwards."""
    import uuid

    import sqlalchemy

    admin = sqlalchemy.create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT"
    )
    made: list[str] = []

    def make(*setup: str, role: str = "postgres", tables: bool = False) -> str:
        name = f"sweep_{uuid.uuid4().hex[:10]}"
        made.append(name)
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
            if role != "postgres":
                conn.execute(sqlalchemy.text(f"CREATE ROLE {name} LOGIN"))
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        if tables:
            optuna.storages.RDBStorage(url).engine.dispose()
        inside = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
        with inside.connect() as conn:
            for statement in setup:
                conn.execute(sqlalchemy.text(statement.format(db=name)))
        inside.dispose()
        user = name if role != "postgres" else "postgres"
        return f"postgresql+psycopg://{user}@127.0.0.1:5432/{name}"

    yield make
    with admin.connect() as conn:
        for name in made:
            conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            conn.execute(sqlalchemy.text(f"DROP ROLE IF EXISTS {name}"))
    admin.dispose()


@pytest.mark.parametrize(
    ("setup", "role", "tables", "needle"),
    [
        (("ALTER DATABASE {db} SET default_transaction_read_only = on",), "postgres", False,
         "the database is read-only"),
        (("REVOKE CREATE ON SCHEMA public FROM PUBLIC",), "own", False,
         "may not create tables in schema public"),
        ((), "own", True, "may not write Optuna's tables"),
    ],
    ids=["read-only", "no-create", "no-write"],
)  # fmt: skip
def test_a_postgresql_the_service_may_not_write(
    tmp_path: Path, pg_database, setup, role: str, tables: bool, needle: str, cli
) -> None:
    """The connection works, the writes would not: refused in one line before the tables,
    the study or the artifact folder are made."""
    import sqlalchemy

    url = pg_database(*setup, role=role, tables=tables)
    for command in ("sweep.launch", "sweep.worker"):
        _refused(cli(command, "--study", "quickstart", "--storage", url, cwd=tmp_path), needle)
    assert list(tmp_path.iterdir()) == []
    database = url.rsplit("/", 1)[1]
    engine = sqlalchemy.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}")
    with engine.connect() as conn:
        made = conn.execute(
            sqlalchemy.text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        )
        assert (made.scalar() > 0) == tables  # none made where there were none
    engine.dispose()
