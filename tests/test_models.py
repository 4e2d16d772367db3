"""The families are the reports' networks, layer for layer."""

from __future__ import annotations

import numpy as np
import pytest

from sweep.config import FAMILIES, Params
from sweep.models import build

# Counted by hand from the reports' code (Conv2D: 3*3*in*out + out; Dense: in*out + out;
# BatchNorm: 4 per channel); twoconv is the UNAM report's own model.summary().
REPORT_PARAMETER_COUNTS = {
    "baseline": 896 + (15 * 15 * 32 * 128 + 128) + 1290,
    "dropout": 896 + (3 * 3 * 32 * 128 + 128) + (6 * 6 * 128 * 128 + 128) + 1290,
    "batchnorm": 896 + 4 * 32 + (15 * 15 * 32 * 128 + 128) + 4 * 128 + 1290,
    "twoconv": 315_722,
}


@pytest.mark.parametrize("family", FAMILIES)
def test_parameter_counts_match_the_reports(family: str) -> None:
    model = build(Params(family=family))
    assert model.count_params() == REPORT_PARAMETER_COUNTS[family]


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_outputs_ten_class_probabilities(family: str) -> None:
    model = build(Params(family=family))
    out = model.predict(np.random.rand(4, 32, 32, 3).astype("float32"), verbose=0)
    assert out.shape == (4, 10)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_layer_sequence_of_exp2_follows_its_code() -> None:
    model = build(Params(family="dropout", dropout_conv=0.1, dropout_dense=0.3))
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "Conv2D", "MaxPooling2D", "Dropout", "Conv2D", "MaxPooling2D",
        "Flatten", "Dense", "Dropout", "Dense",
    ]  # fmt: skip
    rates = [layer.rate for layer in model.layers if type(layer).__name__ == "Dropout"]
    assert rates == [0.1, 0.3]


def test_learning_rate_reaches_the_optimizer() -> None:
    model = build(Params(learning_rate=0.0042))
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0042)
