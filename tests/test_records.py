"""The trial record round-trips through Optuna's user attrs of a real SQLite storage."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import optuna
import pytest

from sweep import records
from sweep.config import Params
from sweep.records import Scores, TrialRecord
from sweep.storage import open_storage

SCORES = Scores(
    val_accuracy=0.61,
    best_val_accuracy=0.61,
    best_epoch=3,
    score=0.61,
    test_accuracy=0.58,
    test_loss=1.2,
    precision=0.57,
    recall=0.56,
    epochs_run=3,
    train_seconds=4.5678,
    n_params=923_914,
    history={"loss": [2.0, 1.5, 1.2], "val_accuracy": [0.4, 0.5, 0.61]},
    confusion=[[1, 0], [0, 1]],
)


def _study(tmp_path: Path) -> optuna.Study:
    rdb = open_storage(f"sqlite:///{tmp_path / 'r.db'}")
    return optuna.create_study(study_name="r", storage=rdb, direction="maximize")


def test_every_field_round_trips_through_user_attrs(tmp_path: Path) -> None:
    full = TrialRecord(
        number=0,
        state="COMPLETE",
        value=0.61,
        params=Params(family="dropout", learning_rate=0.003, batch_size=64, epochs=3),
        is_baseline=True,
        point='{"x": 1}',
        seed=17,
        worker="host:1",
        backend="jax",
        platform="keras 3.15, jax 0.11, x86_64, CPU, 2 threads",
        val_accuracy=0.61,
        best_val_accuracy=0.63,
        best_epoch=2,
        test_accuracy=0.58,
        test_loss=1.2,
        precision=0.57,
        recall=0.56,
        n_params=923_914,
        epochs_run=3,
        train_seconds=4.568,
        history={"loss": [1.0]},
        delta_vs_baseline=0.02,
        delta_test_vs_baseline=0.01,
        failure="why",
        artifacts_error="disk full",
        reused_from="study 'x', trial 0",
        source_trial=4,
        repeat=1,
    )
    unset = [f.name for f in fields(TrialRecord) if getattr(full, f.name) in (None, {}, "")]
    assert unset == []  # every field is exercised
    study = _study(tmp_path)
    study.enqueue_trial({}, user_attrs=full.to_attrs())
    trial = study.ask()
    study.tell(trial, 0.61)
    (frozen,) = study.get_trials()
    assert records.read(frozen) == full
    assert frozen.user_attrs["family"] == "dropout"  # a column of its own in the dashboard


def test_a_trial_written_as_it_runs_reads_back_with_its_deltas(tmp_path: Path) -> None:
    study = _study(tmp_path)
    base_params, params = Params(), Params(family="twoconv", learning_rate=0.002)
    study.enqueue_trial({}, user_attrs=records.planned_attrs(base_params, is_baseline=True))

    baseline_trial = study.ask()
    assert records.planned_params(baseline_trial) == base_params
    records.write_start(baseline_trial, base_params, seed=5, backend="tensorflow", platform="test")
    records.write_worker(baseline_trial, "host:1")
    records.write_scores(
        baseline_trial, replace(SCORES, val_accuracy=0.5, test_accuracy=0.45), None
    )
    study.tell(baseline_trial, 0.5)

    trial = study.ask()
    assert records.planned_params(trial) is None and not records.is_baseline(trial)
    records.write_start(trial, params, seed=6, backend="tensorflow", platform="test")
    base = records.baseline(records.read_all(study))
    assert base is not None and base.number == 0 and base.value == 0.5
    records.write_scores(trial, SCORES, base)
    study.tell(trial, SCORES.val_accuracy)

    pruned = study.ask()
    records.write_start(pruned, params, seed=7, backend="tensorflow", platform="test")
    records.write_partial(pruned, epochs_run=1, history={"loss": [2.0]})
    records.write_failure(pruned, "diverged: training loss became nan in epoch 1")
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)

    first, second, third = records.read_all(study)
    assert first.is_baseline and first.delta_vs_baseline == 0.0 and first.seed == 5
    assert first.worker == "host:1" and first.params == base_params
    assert second.params == params and second.seed == 6 and not second.is_baseline
    assert second.delta_vs_baseline == pytest.approx(0.61 - 0.5)
    assert second.delta_test_vs_baseline == pytest.approx(0.58 - 0.45)
    assert second.train_seconds == 4.568 and second.history == SCORES.history
    assert third.state == "PRUNED" and third.value is None and third.epochs_run == 1
    assert third.failure.startswith("diverged")


def test_the_baseline_is_the_latest_completed_one_and_never_a_verify_repeat() -> None:
    def rec(n: int, state: str = "COMPLETE", **kw: object) -> TrialRecord:
        return TrialRecord(n, state, value=0.1 * n if state == "COMPLETE" else None, **kw)  # type: ignore[arg-type]

    assert records.baseline([rec(0), rec(1)]) is None
    trials = [
        rec(0, is_baseline=True),
        rec(1),
        rec(2, "FAIL", is_baseline=True),
        rec(3, is_baseline=True),
        rec(4, is_baseline=True, source_trial=0, repeat=0),
    ]
    found = records.baseline(trials)
    assert found is not None and found.number == 3
    assert records.delta(0.7, 0.5) == pytest.approx(0.2)
    assert records.delta(None, 0.5) is None and records.delta(0.5, None) is None
