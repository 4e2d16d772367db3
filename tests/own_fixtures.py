"""Helpers for the tests of one's own data and model (tests/test_own.py): the handwritten
digits as a PNG folder or an npz, a family module of one's own, a study file, and readers of
what a trial left in the storage (its note, its figure)."""

from __future__ import annotations

import functools
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# Folder names whose sorted order is not the digits' order (as in test_sources.py).
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SORTED_WORDS = tuple(sorted(WORDS))

# A learnable family of one's own that reads two own hyperparameters in two of the three ways.
SMALL_CNN = '''
import keras
from keras import layers


def small_cnn(params, input_shape, num_classes):
    """Conv2D(filters) -> Flatten -> Dense(units) -> softmax."""
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(params["filters"], 3, activation="relu")(inputs)
    x = layers.Flatten()(x)
    x = layers.Dense(params.get("units", 32), activation="relu")(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)
'''


@functools.cache
def digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 real 8x8 digits as uint8 images (0..16 scaled to 0..255) and their labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return np.rint(data.images * (255 / 16)).astype(np.uint8), data.target.astype(np.int64)


def some_digits(per_class: int, skip: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` digits of each class (after skipping ``skip`` of each), in class order."""
    images, labels = digits()
    keep = np.concatenate([np.flatnonzero(labels == c)[skip : skip + per_class] for c in range(10)])
    return images[keep], labels[keep]


def write_digit_folder(folder: Path, *, per_class: int = 40) -> Path:
    """``folder/<word>/<n>.png``: ``per_class`` 8x8 grayscale digits of each class."""
    images, labels = some_digits(per_class)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        target = folder / WORDS[label] / f"{i:04d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(target)
    return folder


def digit_arrays(*, per_class: int = 40, test_per_class: int = 10) -> dict[str, Any]:
    """The digits as the four arrays and class names (labels index the sorted words)."""
    x_train, train_digit = some_digits(per_class)
    x_test, test_digit = some_digits(test_per_class, skip=per_class)

    def relabel(digit: np.ndarray) -> np.ndarray:
        return np.array([SORTED_WORDS.index(WORDS[d]) for d in digit], dtype=np.int32)

    return {
        "x_train": x_train,
        "y_train": relabel(train_digit),
        "x_test": x_test,
        "y_test": relabel(test_digit),
        "class_names": np.array(SORTED_WORDS),
    }


def write_npz(path: Path, **arrays: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def write_family(folder: Path, module: str = "mymodels", source: str = SMALL_CNN) -> Path:
    """``folder/<module>.py`` holding ``source``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{module}.py"
    path.write_text(textwrap.dedent(source))
    return path


def write_study(
    folder: Path,
    name: str = "own",
    *,
    dataset: str = "digits",
    families: tuple[str, ...] = ("baseline", "mymodels:small_cnn"),
    space: str = "filters = [8, 16]\nunits = { low = 16, high = 64 }",
    baseline: str = "",
    n_trials: int = 3,
    epochs: int = 2,
    top: str = 'image_size = [8, 8]\ncolor_mode = "grayscale"',
    sampler_seed: int | None = None,
) -> Path:
    """``folder/<name>.toml``: a random-sampler study of ``families`` on ``dataset``."""
    family = ", ".join(f'"{f}"' for f in families)
    if sampler_seed is not None:
        top += f"\nsampler_seed = {sampler_seed}"
    text = (
        f'description = "test study {name}"\n'
        f'dataset = "{dataset}"\n'
        f"{top}\n"
        f"n_trials = {n_trials}\n"
        "keep_models = 3\n\n"
        "[space]\n"
        f"family = [{family}]\n"
        "learning_rate = { low = 0.003, high = 0.01, log = true }\n"
        f"epochs = {epochs}\n"
        f"{space}\n\n"
        '[sampler]\nname = "random"\n'
    )
    if baseline:
        text += f"\n[baseline]\n{baseline}\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def refused(result: Any, *needles: str) -> str:
    """The CLI exited 2 with one line on stderr (INFO notes aside) naming each of ``needles``."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [x for x in result.stderr.strip().splitlines() if not x.startswith("INFO ")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def trial_note(url: str, study_name: str, number: int) -> str:
    """The markdown note the dashboard shows for trial ``number``."""
    import optuna
    from optuna_dashboard._note import get_note_from_system_attrs

    study = optuna.load_study(study_name=study_name, storage=url)
    trial = study.trials[number]
    attrs = study._storage.get_study_system_attrs(study._study_id)
    return get_note_from_system_attrs(attrs, trial._trial_id)["body"]


def trial_artifacts(url: str, study_name: str, number: int) -> list[Any]:
    """The artifacts (ArtifactMeta) uploaded to trial ``number``."""
    import optuna

    study = optuna.load_study(study_name=study_name, storage=url)
    storage = study._storage
    return optuna.artifacts.get_all_artifact_meta(study.trials[number], storage=storage)


def confusion_rows(note: str) -> list[str]:
    """The row names of the confusion table in a trial's note."""
    lines = note.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| true \\ predicted"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("| "):
            break
        rows.append(line.split("|")[1].strip())
    return rows
