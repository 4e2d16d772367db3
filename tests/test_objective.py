"""Real training: the synthetic data is learnable but not trivial; scores are right."""

from __future__ import annotations

import numpy as np
import pytest

from sweep import data
from sweep.config import Params, load_study
from sweep.training import scores, train


def test_scores_match_a_hand_computed_confusion_matrix() -> None:
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 1, 1])
    got = scores(probabilities, labels)
    assert got["accuracy"] == 0.75
    # class 0: precision 1/2, recall 1/1; class 1: precision 2/2, recall 2/3
    assert got["precision"] == pytest.approx((0.5 + 1.0) / 2)
    assert got["recall"] == pytest.approx((1.0 + 2 / 3) / 2)
    expected_loss = -np.mean(np.log([0.9, 0.8, 0.4, 0.7]))
    assert got["loss"] == pytest.approx(expected_loss)
    assert got["confusion"] == [[1, 0], [1, 2]]  # true class by predicted class


@pytest.mark.slow
def test_synthetic_is_learnable_but_not_trivial_and_families_differ() -> None:
    splits = data.load("synthetic")  # the default size, as the quick start uses
    spec = load_study("quickstart")
    accuracy = {}
    for family in ("baseline", "twoconv"):
        params = Params(family=family, epochs=5)
        _, result = train(params, splits, spec=spec, seed=0)
        accuracy[family] = result.test_accuracy
        assert result.epochs_run == 5 and len(result.history["val_accuracy"]) == 5
    assert 0.35 <= accuracy["baseline"] <= 0.90, accuracy
    assert accuracy["baseline"] != accuracy["twoconv"]


def test_training_is_reproducible_with_the_same_seed() -> None:
    splits = data.load("synthetic", subset=200)
    spec = load_study("quickstart")
    params = Params(epochs=1, augment=0.5)
    runs = [train(params, splits, spec=spec, seed=7)[1] for _ in range(2)]
    assert runs[0].val_accuracy == runs[1].val_accuracy
    assert runs[0].test_loss == pytest.approx(runs[1].test_loss)


def test_a_trial_whose_artifacts_cannot_be_written_still_completes(tmp_path) -> None:
    import shutil

    import optuna

    from sweep.artifacts import Publisher, open_store
    from sweep.config import loads_study
    from sweep.storage import open_storage
    from sweep.trial import Objective

    spec = loads_study("[space]\nfamily = 'twoconv'\nepochs = 1\n", name="tiny", source="test")
    rdb = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(study_name="tiny", storage=rdb, direction="maximize")
    store = open_store(tmp_path / "artifacts")
    shutil.rmtree(tmp_path / "artifacts")  # the folder vanished (an unmounted share, say)
    publish = Publisher(store, rdb, keep=spec.keep_models)
    objective = Objective(spec, data.load("synthetic", subset=100), on_complete=publish)
    study.optimize(objective, n_trials=1)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert "artifacts" in trial.user_attrs["artifacts_error"]
    assert trial.user_attrs["test_accuracy"] >= 0


def test_a_stop_whose_interrupt_was_swallowed_still_ends_the_trial_at_the_next_batch(
    tmp_path,
) -> None:
    """The signal handler's KeyboardInterrupt can die in a ``__del__`` or a catch-all; the
    stop event alone must end training, and the trial is requeued, not run to its end."""
    import optuna

    from sweep.config import loads_study
    from sweep.errors import Interrupted
    from sweep.loop import run_trials
    from sweep.stop import StopEvent
    from sweep.storage import open_storage
    from sweep.trial import Objective

    spec = loads_study("[space]\nepochs = 40\nbatch_size = 32\n", name="s", source="test")
    rdb = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(study_name="s", storage=rdb, direction="maximize")
    stop = StopEvent()

    class SetStopAfterTwoEpochs(Objective):
        def __call__(self, trial: optuna.Trial) -> float:
            real_report = trial.report

            def report(value: float, step: int) -> None:
                real_report(value, step)
                if step == 2:
                    stop.set()  # the event only: no KeyboardInterrupt is raised here

            trial.report = report  # type: ignore[method-assign]
            return super().__call__(trial)

    objective = SetStopAfterTwoEpochs(spec, data.load("synthetic", subset=300), stop=stop)
    with pytest.raises(Interrupted):
        run_trials(study, objective, storage=rdb, budget=1, stop=stop)
    first, again = study.get_trials()
    assert first.state.name == "FAIL" and len(first.intermediate_values) == 2
    assert again.state.name == "WAITING" and again.params == first.params


ONE_RUN = """
import json, sys
from sweep import data
from sweep.config import Params, load_study
from sweep.training import train

_, result = train(Params(epochs=2, augment=0.5), data.load("synthetic", subset=600),
                  spec=load_study("quickstart"), seed=7)
print(json.dumps([result.val_accuracy, result.test_accuracy, result.test_loss]))
"""


@pytest.mark.slow
def test_the_same_seed_gives_the_same_numbers_on_a_loaded_machine() -> None:
    """One run alone, then three at once on two cores (each slowed by the others, with its
    threads scheduled differently): every number is identical, to the last bit."""
    import json
    import os
    import subprocess
    import sys

    from helpers import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}

    def start() -> subprocess.Popen[str]:
        argv = [sys.executable, "-c", ONE_RUN]
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)

    def numbers(proc: subprocess.Popen[str]) -> list[float]:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0
        return list(json.loads(out.splitlines()[-1]))

    alone = numbers(start())
    together = [start() for _ in range(3)]
    assert [numbers(p) for p in together] == [alone] * 3


def test_hyperband_rungs_fall_after_epochs_1_3_and_9(tmp_path) -> None:
    """Steps are epochs counted from 1, so min resource 1 and factor 3 give rungs after
    epochs 1, 3 and 9 (Keras's 0-based epoch index put each one epoch late)."""
    import optuna

    from sweep.config import loads_study
    from sweep.trial import Objective

    spec = loads_study(
        "[space]\nepochs = 9\n[pruner]\nname = 'hyperband'\n", name="rungs", source="test"
    )
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    objective = Objective(spec, data.load("synthetic", subset=100))
    study.optimize(objective, n_trials=1)  # alone at each rung, so it is always promoted
    (trial,) = study.trials
    assert sorted(trial.intermediate_values) == list(range(1, 10))
    # The pruner records each rung a trial completes, at the step it completes it.
    rungs = {k: v for k, v in trial.system_attrs.items() if k.startswith("completed_rung_")}
    assert sorted(rungs) == ["completed_rung_0", "completed_rung_1", "completed_rung_2"]
    for rung, epoch in (("completed_rung_0", 1), ("completed_rung_1", 3), ("completed_rung_2", 9)):
        assert rungs[rung] == trial.intermediate_values[epoch]


@pytest.mark.parametrize("score", ["last_epoch", "best_epoch"])
def test_a_study_scores_the_last_or_the_best_epoch_and_keeps_that_model(
    tmp_path, score: str
) -> None:
    """Both are recorded; the objective, the deltas, the test scores and the kept model are
    the chosen epoch's. A high learning rate makes the last epoch fall back from the best."""
    import optuna

    from sweep.artifacts import Publisher, open_store
    from sweep.config import loads_study
    from sweep.storage import open_storage
    from sweep.trial import Objective

    text = f"score = '{score}'\nkeep_models = 1\n[space]\nepochs = 6\nlearning_rate = 0.02\n"
    spec = loads_study(text, name="s", source="test")
    rdb = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(study_name="s", storage=rdb, direction="maximize")
    kept: list[object] = []
    publish = Publisher(open_store(tmp_path / "artifacts"), rdb, keep=1)

    def keep_and_publish(trial: optuna.Trial, done: object) -> None:
        kept.append(done)
        publish(trial, done)  # type: ignore[arg-type]

    splits = data.load("synthetic", subset=400)
    study.optimize(Objective(spec, splits, on_complete=keep_and_publish), n_trials=1)
    (trial,) = study.trials
    history = trial.user_attrs["history"]["val_accuracy"]
    best = max(range(len(history)), key=history.__getitem__)
    assert trial.user_attrs["best_epoch"] == best + 1
    assert trial.user_attrs["best_val_accuracy"] == history[best]
    assert trial.user_attrs["val_accuracy"] == history[-1]
    assert history[best] > history[-1], "the run should fall back from its best epoch"
    assert trial.value == (history[best] if score == "best_epoch" else history[-1])
    # The model handed on (kept, exported) is the one that earned the score.
    (done,) = kept
    model_val = done.model.evaluate(  # type: ignore[attr-defined]
        data.eval_dataset(splits.x_val, splits.y_val), verbose=0, return_dict=True
    )["accuracy"]
    assert model_val == pytest.approx(trial.value, abs=1e-6)


def test_a_trial_that_trained_all_its_epochs_completes_even_if_the_pruner_says_stop() -> None:
    """It paid for every epoch: it shows its scores, not 'pruned after epoch 2' of 2. The same
    pruner still stops a trial that has epochs left."""
    import optuna

    from sweep.config import loads_study
    from sweep.trial import Objective

    splits = data.load("synthetic", subset=100)
    # Below any accuracy: prunes at every step it is asked from the second epoch on.
    pruner = optuna.pruners.ThresholdPruner(lower=1.1, n_warmup_steps=2)
    for epochs, state in (
        (2, optuna.trial.TrialState.COMPLETE),
        (3, optuna.trial.TrialState.PRUNED),
    ):
        spec = loads_study(f"[space]\nepochs = {epochs}\n", name="last", source="test")
        study = optuna.create_study(direction="maximize", pruner=pruner)
        study.optimize(Objective(spec, splits), n_trials=1, catch=())
        (trial,) = study.trials
        assert trial.state == state, (epochs, trial.user_attrs.get("failure"))
        assert sorted(trial.intermediate_values) == [1, 2]
    assert study.trials[0].user_attrs["epochs_run"] == 2
