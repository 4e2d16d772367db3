"""Study files: every shipped study validates; bad files fail naming file, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep.config import (
    AUGMENT_KEYS,
    PRUNER_KEYS,
    SAMPLER_KEYS,
    SETTINGS,
    SPACE_KEYS,
    Params,
    available_studies,
    load_study,
    settings_markdown,
)
from sweep.errors import UserError

SHIPPED = ["quickstart", "exp1", "exp2", "exp3", "exp4", "unam", "search"]


def test_every_shipped_study_is_found_and_valid() -> None:
    assert set(SHIPPED) <= set(available_studies())
    for name in SHIPPED:
        spec = load_study(name)
        assert spec.name == name and spec.source is not None


def test_report_studies_hold_the_reports_settings() -> None:
    exp1 = Params(family="baseline", learning_rate=0.001, batch_size=32, epochs=10)
    assert load_study("exp1").baseline == exp1
    exp4 = load_study("exp4")
    assert exp4.dimension("family").choices == ("batchnorm",)
    assert exp4.dimension("batch_size").choices == (64,)
    assert (exp4.augmentation.rotation, exp4.augmentation.shift) == (15.0, 0.1)
    assert exp4.augmentation.flip and exp4.augmentation.zoom == 0.0
    exp3 = load_study("exp3")
    assert exp3.sampler.name == "grid"
    assert exp3.dimension("learning_rate").choices == (0.01, 0.001, 0.0001)
    search = load_study("search")
    assert search.pruner.name == "hyperband" and search.sampler.name == "tpe"
    assert {d.name for d in search.varying} == set(SPACE_KEYS)
    assert search.dimension("learning_rate").log


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return str(path)


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


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_bad_study_files_name_the_key_and_the_fix(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(UserError, match=message) as info:
        load_study(path)
    assert path in str(info.value) and "\n" not in str(info.value)


def test_unknown_study_lists_the_known_ones() -> None:
    with pytest.raises(UserError, match=r"unknown study 'exp9'; the studies are: .*exp3"):
        load_study("exp9")


def test_missing_study_file() -> None:
    with pytest.raises(UserError, match=r"nope\.toml does not exist"):
        load_study("nope.toml")


def test_ranges_and_lists_become_dimensions(tmp_path: Path) -> None:
    spec = load_study(
        _write(
            tmp_path,
            "[space]\nlearning_rate = { low = 1e-4, high = 1e-2, log = true }\n"
            "batch_size = [32, 64]\nepochs = 3\n",
        )
    )
    lr, batch, epochs = (spec.dimension(n) for n in ("learning_rate", "batch_size", "epochs"))
    assert (lr.kind, lr.low, lr.high, lr.log) == ("range", 1e-4, 1e-2, True)
    assert (batch.kind, batch.choices) == ("choice", (32, 64))
    assert (epochs.kind, epochs.choices) == ("fixed", (3,))


def test_every_declared_setting_is_in_the_generated_table() -> None:
    for keys in (SETTINGS, SPACE_KEYS, SAMPLER_KEYS, PRUNER_KEYS, AUGMENT_KEYS):
        for key in keys:
            assert f"{key}` |" in settings_markdown()
