"""Study files: every shipped study validates; bad files fail naming file, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import BAD_FILES

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
