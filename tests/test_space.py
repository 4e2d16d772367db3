"""Planning and suggesting: the grid, the baseline, fixed and conditional parameters."""

from __future__ import annotations

from pathlib import Path

import optuna

from sweep.config import Params, load_study
from sweep.space import grid, optuna_params, planned, point_key, suggest


def test_exp3_grid_has_27_distinct_points_and_the_baseline_is_one() -> None:
    spec = load_study("exp3")
    points = grid(spec)
    assert len(points) == 27 and len({point_key(p) for p in points}) == 27
    assert spec.baseline in points
    assert len(planned(spec)) == 27 and planned(spec)[0] == spec.baseline


def test_single_experiments_plan_the_baseline_and_the_experiment() -> None:
    exp2 = load_study("exp2")
    assert [p.family for p in planned(exp2)] == ["baseline", "dropout"]
    assert [p.family for p in planned(load_study("exp1"))] == ["baseline"]


def test_dropout_rates_are_only_searched_for_the_dropout_family(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        "[space]\nfamily = ['baseline', 'dropout']\ndropout_conv = [0.1, 0.2]\n"
        "[sampler]\nname = 'grid'\n"
    )
    spec = load_study(str(path))
    families = [p.family for p in grid(spec)]
    assert families == ["baseline", "dropout", "dropout"]


def test_suggest_draws_inside_the_space_and_fills_fixed_values() -> None:
    spec = load_study("search")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        trial = study.ask()
        p = suggest(trial, spec)
        assert 1e-4 <= p.learning_rate <= 1e-2 and p.batch_size in (32, 64, 128)
        assert 5 <= p.epochs <= 15 and 0 <= p.augment <= 1
        assert ("dropout_conv" in trial.params) == (p.family == "dropout")
        study.tell(trial, 0.5)


def test_a_planned_trial_runs_exactly_its_point() -> None:
    spec = load_study("exp2")  # the baseline's family lies outside this study's space
    study = optuna.create_study()
    for p in planned(spec):
        study.enqueue_trial(optuna_params(spec, p), user_attrs={"point": point_key(p)})
    got = [suggest(study.ask(), spec) for _ in planned(spec)]
    assert got == planned(spec)
    assert got[0] == Params(family="baseline", learning_rate=0.001, batch_size=32, epochs=10)
