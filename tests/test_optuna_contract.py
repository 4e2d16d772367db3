"""What sweep relies on in Optuna, checked against the installed release, and the contract a
stock Optuna storage keeps that sweep's storage must keep too."""

from __future__ import annotations

import importlib
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.testing.pytest_storages import StorageTestCase

from sweep import _optuna
from sweep.storage import open_storage

POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def live(tmp_path: Path) -> dict[str, object]:
    """A real study, a running trial and a finished one, to look up instance attributes."""
    study = optuna.create_study(
        study_name="c", storage=open_storage(f"sqlite:///{tmp_path / 'c.db'}")
    )
    study.tell(study.ask(), 1.0)
    live = {"Study": study, "Trial": study.ask(), "FrozenTrial": study.trials[0]}
    return live | {"_CachedStorage": study._storage}


@pytest.mark.parametrize(("module", "path"), _optuna.PRIVATE_NAMES)
def test_every_private_name_sweep_relies_on_still_exists(
    live: dict[str, object], module: str, path: str
) -> None:
    """Fails loudly on an Optuna release that drops one: see sweep/_optuna.py."""
    found: object = importlib.import_module(module)
    head, *rest = path.split(".")
    found = getattr(found, head)
    for name in rest:
        if not hasattr(found, name) and head in live:  # set in __init__: ask an instance
            found = live[head]
        found = getattr(found, name)


def test_the_private_accessors_give_the_storages_ids(live: dict[str, object]) -> None:
    study = live["Study"]
    assert isinstance(study, optuna.Study)
    storage = open_storage(study._storage._backend.url)  # type: ignore[attr-defined]
    assert _optuna.study_id(study) == storage.get_study_id_from_name("c")
    frozen = live["FrozenTrial"]
    assert isinstance(frozen, optuna.trial.FrozenTrial)
    assert _optuna.trial_id(frozen) == storage.get_trial_id_from_study_id_trial_number(
        _optuna.study_id(study), frozen.number
    )


UNPICKLE = """
import pickle, sys
import sqlalchemy
study = pickle.loads(open(sys.argv[1], "rb").read())
backend = study._storage._backend
seen = []
sqlalchemy.event.listen(backend.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
study.tell(study.ask(), 0.5)
print(type(backend).__module__, type(backend).__qualname__, study.best_value)
print("BEGIN IMMEDIATE" in seen)
"""


def test_a_study_on_sweeps_storage_pickles_like_a_stock_one(tmp_path: Path) -> None:
    """Handed to another process (spawn, ProcessPoolExecutor, joblib), it must arrive whole:
    the same class, and SQLite transactions that still begin IMMEDIATE."""
    import subprocess
    import sys

    from helpers import REPO

    study = optuna.create_study(
        study_name="p", storage=open_storage(f"sqlite:///{tmp_path / 'p.db'}"), direction="maximize"
    )
    study.tell(study.ask(), 0.25)
    (tmp_path / "study.pickle").write_bytes(pickle.dumps(study))
    done = subprocess.run(
        [sys.executable, "-c", UNPICKLE, str(tmp_path / "study.pickle")],
        capture_output=True, text=True, env={"PYTHONPATH": str(REPO)}, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["sweep.rdb", "SweepStorage", "0.5", "True"]


@pytest.fixture(scope="session")
def empty_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file holding Optuna's empty schema, made once: a copy opens in a tenth of the
    time it takes to create the tables (making them is tested in test_storage)."""
    path = tmp_path_factory.mktemp("template") / "empty.db"
    open_storage(f"sqlite:///{path}").engine.dispose()
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """A new, empty storage of sweep's for each of Optuna's storage tests."""
    if request.param == "sqlite":
        import shutil

        copy = shutil.copyfile(request.getfixturevalue("empty_sqlite"), tmp_path / "contract.db")
        yield open_storage(f"sqlite:///{copy}")
        return
    import sqlalchemy

    name = f"contract_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    rdb = open_storage(POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{name}")
    try:
        yield rdb
    finally:
        rdb.engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
        admin.dispose()


class TestOptunasOwnStorageTests(StorageTestCase):
    """Optuna ships the tests every storage must pass (``optuna.testing``): sweep's storage
    runs all of them, on SQLite and on PostgreSQL."""


@pytest.mark.parametrize("make", ["tpe", "random", "gp"])
def test_a_trial_seeded_sampler_draws_by_the_seed_and_trial_number(make: str) -> None:
    """sweep.sampling reseeds each trial through _optuna.reseed: two samplers of one seed,
    each in its own study, draw the same point for the same trial number, and the next
    trial number draws another; a sampler with no random state found would fail here."""
    from sweep.sampling import TrialSeeded

    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=3),
        "random": lambda: optuna.samplers.RandomSampler(seed=3),
        "gp": lambda: optuna.samplers.GPSampler(seed=3),
    }
    assert _optuna.reseed(samplers[make](), 1) >= 1

    def draws(numbers: int) -> list[float]:
        study = optuna.create_study(sampler=TrialSeeded(samplers[make](), 5))
        return [study.ask().suggest_float("x", 0, 1) for _ in range(numbers)]

    first, again = draws(3), draws(3)
    assert first == again and len(set(first)) == 3
    other = optuna.create_study(sampler=TrialSeeded(samplers[make](), 6))
    assert other.ask().suggest_float("x", 0, 1) != first[0]
