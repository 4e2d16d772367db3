"""The sampler and pruner a study file gets (``sweep.study``), on the shipped ``search`` study."""

from __future__ import annotations

import logging
import warnings
from dataclasses import replace
from pathlib import Path

import optuna
import pytest

from sweep import study as studies
from sweep.config import PrunerSpec, load_study
from sweep.run import RunOptions
from sweep.space import suggest
from sweep.storage import open_storage

BASELINE_GROUP = {"family", "learning_rate", "batch_size", "epochs", "augment"}


def _open(tmp_path: Path, spec_name: str = "search", name: str = "s") -> optuna.Study:
    spec = replace(load_study(spec_name), dataset="synthetic")
    url = f"sqlite:///{tmp_path / 'search.db'}"
    run = RunOptions(name, url, spec, budget=60, subset=200)
    return studies.open_study(run, storage=open_storage(url))


@pytest.fixture(autouse=True)
def _quiet_ask() -> None:
    warnings.simplefilter("ignore", UserWarning)  # ask() outside optimize(): on purpose


def test_tpe_models_from_the_trial_after_the_baseline(tmp_path: Path) -> None:
    """The baseline is TPE's one start-up trial: a trial drawn while it runs is random, the
    next one after it finishes comes from TPE's joint model of the baseline's parameters."""
    study = _open(tmp_path)
    spec = replace(load_study("search"), dataset="synthetic")
    assert isinstance(study.sampler.sampler, optuna.samplers.TPESampler)  # reseeded per trial

    baseline = study.ask()
    assert suggest(baseline, spec) == spec.baseline
    meanwhile = study.ask()  # a second worker, while the baseline trains
    suggest(meanwhile, spec)
    assert meanwhile.relative_params == {}  # nothing finished yet: a random draw
    study.tell(baseline, 0.3)
    study.tell(meanwhile, state=optuna.trial.TrialState.PRUNED)

    after = study.ask()
    drawn = suggest(after, spec)
    modelled = after.relative_params
    # One model of the family with its learning rate, batch size, epochs and augmentation.
    assert set(modelled) >= BASELINE_GROUP
    assert {k: after.params[k] for k in BASELINE_GROUP} == {k: modelled[k] for k in BASELINE_GROUP}
    assert drawn.family == modelled["family"]
    # A running trial counts as a bad one for other workers' draws (no public getter).
    assert study.sampler.sampler._constant_liar


def test_hyperband_rungs_are_where_optuna_prunes(tmp_path: Path) -> None:
    """The rungs sweep reasons about are the steps at which Optuna's Hyperband records a
    decision: every trial here is the best so far, so it is promoted through all of its
    bracket's rungs, and the union over brackets is every rung."""
    study = _open(tmp_path)
    spec = load_study("search")
    top = int(spec.dimension("epochs").high)
    decided: set[int] = set()
    for value in range(30):
        trial = study.ask()
        for step in range(1, top + 1):
            before = len(study.get_trials(deepcopy=False)[-1].system_attrs)
            trial.report(float(value), step)
            assert not trial.should_prune()
            if len(study.get_trials(deepcopy=False)[-1].system_attrs) > before:
                decided.add(step)
        study.tell(trial, float(value))
    assert sorted(decided) == studies._hyperband_rungs(spec.pruner, top) == [3, 9]


@pytest.mark.parametrize(
    ("min_resource", "factor", "top", "rungs"),
    [(1, 3, 15, [1, 3, 9]), (3, 3, 15, [3, 9]), (1, 3, 9, [1, 3, 9]), (2, 2, 15, [2, 4, 8])],
)
def test_hyperband_rungs(min_resource: int, factor: int, top: int, rungs: list[int]) -> None:
    pruner = PrunerSpec("hyperband", min_resource=min_resource, reduction_factor=factor)
    assert studies._hyperband_rungs(pruner, top) == rungs


def test_every_trial_of_the_search_faces_every_rung(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The shipped search trains every trial past the last rung; a study file that lets a
    trial stop before it is warned about, with the epoch to start from."""
    spec = load_study("search")
    rungs = studies._hyperband_rungs(spec.pruner, int(spec.dimension("epochs").high))
    assert spec.dimension("epochs").low >= rungs[-1]
    with caplog.at_level(logging.WARNING, logger="sweep.study"):
        _open(tmp_path)
    assert "last rung" not in caplog.text

    text = Path(spec.source or "").read_text()
    short = text.replace("epochs = { low = 10, high = 15 }", "epochs = { low = 5, high = 15 }")
    short = short.replace("min_resource = 3", "min_resource = 1")
    assert short.count("low = 5, high = 15") == 1 and "min_resource = 1" in short
    path = tmp_path / "short.toml"
    path.write_text(short)
    with caplog.at_level(logging.WARNING, logger="sweep.study"):
        _open(tmp_path, str(path), name="short")
    assert (
        "space.epochs lets a trial stop after 5 epochs, before Hyperband's last rung at epoch "
        "9" in caplog.text
    )
    assert "start space.epochs at 9" in caplog.text
