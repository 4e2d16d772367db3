"""The CLI as a user runs it: real processes, real training on tiny data, real storages."""

from __future__ import annotations

import uuid
import warnings
from pathlib import Path

import optuna
import pytest
from helpers import make_cifar_archive, run_cli, study_toml

from sweep.config import Params
from sweep.models import build


def _tiny(n_trials: int = 3) -> str:
    """Two families, two epochs, a learning-rate range."""
    return study_toml(
        description="tiny end-to-end study",
        n_trials=n_trials,
        space={"family": ["baseline", "twoconv"], "batch_size": 32, "epochs": 2},
        baseline={"family": "baseline", "learning_rate": 0.001, "batch_size": 32, "epochs": 2},
    )


RECORDED = {
    "family", "test_accuracy", "test_loss", "precision", "recall", "n_params",
    "epochs_run", "train_seconds", "is_baseline", "delta_vs_baseline",
}  # fmt: skip


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials()


def _one_line_error(result, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    ("study", "counts"),
    [
        ("exp1", ["baseline: 923,914 parameters"]),
        ("exp2", ["baseline: 923,914 parameters", "dropout: 629,130 parameters"]),
        ("exp4", ["baseline: 923,914 parameters", "batchnorm: 924,554 parameters"]),
        ("unam", ["baseline: 923,914 parameters", "twoconv: 315,722 parameters"]),
    ],
)
@pytest.mark.slow
def test_dry_run_prints_the_reports_parameter_counts(
    tmp_path: Path, study: str, counts: list[str]
) -> None:
    result = run_cli("sweep.launch", "--study", study, "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for line in counts:
        assert line in result.stdout
    assert "Total params" in result.stdout  # Keras's own model.summary()
    assert list(tmp_path.iterdir()) == []  # wrote nothing


@pytest.mark.slow
def test_sweep_end_to_end_then_resume(tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text(_tiny())
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    args = ("sweep.launch", "--study", "tiny.toml", "--storage", url, "--subset", "300")
    first = run_cli(*args, "--quiet", cwd=tmp_path)
    assert first.returncode == 0, first.stderr

    trials = _trials(url, "tiny")
    assert len(trials) == 3 and all(t.state.is_finished() for t in trials)
    baseline = trials[0]
    assert baseline.user_attrs["is_baseline"] and baseline.state.name == "COMPLETE"
    assert baseline.user_attrs["params"]["family"] == "baseline"
    for t in trials:  # the recorded params rebuild each trial's model without Optuna
        model = build(Params(**t.user_attrs["params"]))
        assert model.count_params() == t.user_attrs.get("n_params", model.count_params())
        assert model.name == t.user_attrs["family"]
    for t in trials:
        if t.state.name == "COMPLETE":
            assert set(t.user_attrs) >= RECORDED
            assert t.value == pytest.approx(t.user_attrs["val_accuracy"])
            expected = t.value - baseline.value
            assert t.user_attrs["delta_vs_baseline"] == pytest.approx(expected)
            assert 0.0 <= t.user_attrs["test_accuracy"] <= 1.0
            assert t.user_attrs["epochs_run"] == 2
    assert "baseline" in first.stdout and "Δtest pp" in first.stdout

    again = run_cli(*args, "--quiet", cwd=tmp_path)  # the budget is spent: nothing runs
    assert again.returncode == 0, again.stderr
    assert len(_trials(url, "tiny")) == 3

    before = _trials(url, "tiny")
    more = run_cli(*args, "--quiet", "--n-trials", "4", cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    trials = _trials(url, "tiny")
    assert len(trials) == 4
    assert [t.number for t in trials if t.user_attrs.get("is_baseline")] == [0]
    assert trials[:3] == before  # completed trials untouched


@pytest.mark.slow
def test_exp3_runs_each_grid_point_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'grid.db'}"
    result = run_cli(
        "sweep.launch", "--study", "exp3", "--dataset", "synthetic", "--subset", "60",
        "--max-epochs", "1", "--storage", url, "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    trials = _trials(url, "exp3")
    points = {tuple(sorted(t.params.items())) for t in trials}
    assert len(trials) == 27 and len(points) == 27
    assert sum(bool(t.user_attrs.get("is_baseline")) for t in trials) == 1


@pytest.mark.slow
def test_cifar10_archive_end_to_end(tmp_path: Path) -> None:
    make_cifar_archive(tmp_path / "data")
    url = f"sqlite:///{tmp_path / 'c.db'}"
    result = run_cli(
        "sweep.launch", "--study", "exp1", "--data-dir", str(tmp_path / "data"),
        "--max-epochs", "1", "--storage", url, "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (trial,) = _trials(url, "exp1")
    assert trial.state.name == "COMPLETE" and trial.user_attrs["is_baseline"]


def test_postgresql_storage(tmp_path: Path, postgres_url: str) -> None:
    (tmp_path / "tiny.toml").write_text(_tiny(n_trials=2))
    name = f"tiny-{uuid.uuid4().hex[:8]}"
    result = run_cli(
        "sweep.launch", "--study", "tiny.toml", "--storage", postgres_url, "--study-name", name,
        "--subset", "200", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    try:
        assert result.returncode == 0, result.stderr
        trials = _trials(postgres_url, name)
        assert [t.state.name for t in trials][:1] == ["COMPLETE"] and len(trials) == 2
    finally:
        optuna.delete_study(study_name=name, storage=postgres_url)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("--study", "exp9"), ("unknown study 'exp9'", "quickstart")),
        (("--study", "quickstart", "--storage", "nonsense"), ("malformed storage URL",)),
        (("--study", "quickstart", "--storage", "mysql+foo://x@h/db"), ("storage driver",)),
        (
            ("--study", "quickstart", "--storage", "postgresql://u:s3cret@127.0.0.1:1/db"),
            ("cannot connect to PostgreSQL at 127.0.0.1:1",),
        ),
        (("--study", "quickstart", "--n-trials", "0"), ("--n-trials", "must be 1 or more")),
        (
            ("--study", "quickstart", "--dataset", "mnist"),
            ("--dataset mnist: no such folder or file", "cifar100"),
        ),
        (("--study", "quickstart", "--workers", "0"), ("--workers", "must be 1 or more")),
        (("--study", "quickstart", "--gpus", "99"), ("--gpus 99:",)),
        (("--study", "quickstart", "--trials-per-gpu", "2"), ("--trials-per-gpu needs --gpus",)),
        (("--study", "quickstart", "--gpu-memory", "4000"), ("--gpu-memory needs --gpus",)),
        (("--study", "quickstart", "--gpus", "0", "--workers", "2"), ("--workers conflicts",)),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, args: tuple[str, ...], needles: tuple[str, ...], cli
) -> None:
    result = cli("sweep.launch", *args, cwd=tmp_path)
    _one_line_error(result, *needles)
    assert "s3cret" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_bad_cifar_archive_is_refused_before_the_storage_is_touched(tmp_path: Path, cli) -> None:
    archive = make_cifar_archive(tmp_path / "data")
    archive.write_bytes(archive.read_bytes()[:500])
    result = cli("sweep.launch", "--study", "exp1", "--data-dir", str(archive.parent), cwd=tmp_path)
    _one_line_error(result, "truncated or not a gzip tar archive")
    assert not (tmp_path / "sweep.db").exists()


def test_a_sampler_seed_changes_the_sampled_params_and_nothing_else(tmp_path: Path) -> None:
    """``--sampler-seed`` repeats a search on identical data: the same split, the same
    training seeds, other params; without it the sampler takes ``seed`` as before."""
    import argparse
    from dataclasses import replace

    import numpy as np

    from sweep.commands import _options
    from sweep.run import RunOptions
    from sweep.space import suggest
    from sweep.storage import open_storage
    from sweep.study import open_study
    from sweep.training import trial_seed

    parser = argparse.ArgumentParser()
    _options.add_run_options(parser, study_help="")
    url = f"sqlite:///{tmp_path / 's.db'}"

    def sampled(*flags: str) -> tuple[RunOptions, list[Params]]:
        args = parser.parse_args(
            ["--study", "search", "--dataset", "synthetic", "--subset", "200", *flags]
        )
        run = _options.run_from_file(args, url)
        name = "s" + "".join(flags).replace("-", "")
        run = replace(run, study_name=name)
        the_study = open_study(run, storage=open_storage(url), create=True)
        return run, [suggest(the_study.ask(), run.spec) for _ in range(4)]

    warnings.simplefilter("ignore", UserWarning)  # ask() outside optimize(): on purpose
    run_a, a = sampled("--sampler-seed", "1")
    run_b, b = sampled("--sampler-seed", "2")
    run_0, zero = sampled()
    _, zero_again = sampled("--sampler-seed", "0")  # the seed, said explicitly
    assert a != b and zero == zero_again
    assert run_a.fingerprint() | {"sampler_seed": 2} == run_b.fingerprint()
    assert "sampler_seed" not in run_0.fingerprint()
    data_a, data_b = run_a.load_data(), run_b.load_data()
    assert np.array_equal(data_a.x_train, data_b.x_train)
    assert np.array_equal(data_a.y_val, data_b.y_val)
    assert trial_seed(run_a.spec.seed, 5) == trial_seed(run_b.spec.seed, 5)


@pytest.mark.slow
def test_a_baseline_already_trained_on_the_same_data_is_reused_not_retrained(
    tmp_path: Path,
) -> None:
    """Another study in the same storage, with another space but the same baseline and data:
    its baseline is copied (to the last digit, since training is deterministic on one
    platform), and the record says from where. Other data (another seed) trains its own, and
    so does the same data on another platform (one thread, not every core)."""
    (tmp_path / "a.toml").write_text(study_toml(space={"learning_rate": [0.002, 0.003]}))
    (tmp_path / "b.toml").write_text(
        study_toml(space={"learning_rate": {"low": 5e-4, "high": 3e-3, "log": None}})
    )
    url = f"sqlite:///{tmp_path / 'r.db'}"
    common = ("--storage", url, "--subset", "200", "--quiet")
    one_thread = {"TF_NUM_INTRAOP_THREADS": "1"}
    runs = (
        ("a", "a.toml", (), {}),
        ("b", "b.toml", (), {}),
        ("c", "b.toml", ("--seed", "1"), {}),
        ("d", "b.toml", (), one_thread),
    )
    for name, file, extra, env in runs:
        argv = ("sweep", "launch", "--study", file, "--study-name", name, *common, *extra)
        done = run_cli(*argv, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
    first, again, other, elsewhere = (
        optuna.load_study(study_name=n, storage=url).trials[0] for n in "abcd"
    )
    assert first.user_attrs["platform"].startswith("keras ")
    assert elsewhere.user_attrs["platform"].endswith(", 1 threads")
    assert elsewhere.user_attrs["platform"] != first.user_attrs["platform"]
    assert "reused_from" not in elsewhere.user_attrs
    assert elsewhere.user_attrs["train_seconds"] > 0
    assert again.user_attrs["reused_from"] == "study 'a', trial 0"
    assert again.value == first.value
    for key in ("test_accuracy", "test_loss", "history", "best_epoch"):
        assert again.user_attrs[key] == first.user_attrs[key]
    assert again.user_attrs["train_seconds"] == 0.0 < first.user_attrs["train_seconds"]
    assert "reused_from" not in other.user_attrs and other.user_attrs["train_seconds"] > 0
