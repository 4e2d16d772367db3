"""A user's own data through the real readers: scikit-learn's handwritten digits written as PNG
files in both of Keras's folder layouts and as an npz, and every refusal as one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO
from PIL import Image

from sweep import sources
from sweep.errors import UserError

# Folder names whose sorted order is not the digits' order, so label = sorted position is tested.
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SORTED_WORDS = tuple(sorted(WORDS))


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 real 8x8 digits as uint8 images (0..16 scaled to 0..255) and their labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return np.rint(data.images * (255 / 16)).astype(np.uint8), data.target.astype(np.int64)


def _write_pngs(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        target = folder / WORDS[label] / f"{i:04d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(target)


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory: pytest.TempPathFactory, digits) -> Path:
    """All the digits in ``<folder>/<word>/<n>.png``: the layout without a test/ folder."""
    folder = tmp_path_factory.mktemp("flat") / "digits"
    _write_pngs(folder, *digits)
    return folder


def _subset(labels: np.ndarray, per_class: int, skip: int = 0) -> np.ndarray:
    """Indices of ``per_class`` images of each digit, after skipping ``skip`` of each."""
    return np.concatenate([np.flatnonzero(labels == c)[skip : skip + per_class] for c in range(10)])


@pytest.fixture(scope="module")
def split_folder(tmp_path_factory: pytest.TempPathFactory, digits) -> Path:
    """30 digits of each class in ``train/<word>/``, 10 others in ``test/<word>/``."""
    images, labels = digits
    folder = tmp_path_factory.mktemp("split") / "digits"
    train, test = _subset(labels, 30), _subset(labels, 10, skip=30)
    _write_pngs(folder / "train", images[train], labels[train])
    _write_pngs(folder / "test", images[test], labels[test])
    return folder


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory: pytest.TempPathFactory, digits) -> Path:
    """30 digits of each class, no test/ folder."""
    images, labels = digits
    folder = tmp_path_factory.mktemp("small") / "digits"
    keep = _subset(labels, 30)
    _write_pngs(folder, images[keep], labels[keep])
    return folder


def _expected(folder: Path) -> np.ndarray:
    """What the reader must return for a split folder: the PNGs' pixels, class folders in
    sorted order and files sorted in each, read back independently of the reader."""
    files = [f for word in SORTED_WORDS for f in sorted((folder / word).iterdir())]
    return np.stack([np.asarray(Image.open(f)) for f in files])[..., np.newaxis]


def _refused(call: Callable[[], object], *named: str) -> str:
    """The call raises a UserError of one line that names each of ``named``."""
    with pytest.raises(UserError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message and message.strip() == message
    for text in named:
        assert text in message, (text, message)
    return message


def _png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _gray(size: tuple[int, int] = (8, 8), value: int = 100) -> np.ndarray:
    return np.full(size, value, dtype=np.uint8)


def _colour(size: tuple[int, int] = (8, 8)) -> np.ndarray:
    pixels = np.zeros((*size, 3), dtype=np.uint8)
    pixels[..., 0] = 200  # red: the channels differ
    return pixels


def _two_classes(root: Path, a: np.ndarray, b: np.ndarray) -> tuple[str, str]:
    """A folder of two classes, two images each; returns each class folder as a message
    names one of its files (``<folder>/``): which file is named depends on the split."""
    for name, pixels in (("a", a), ("b", b)):
        _png(root / name / "1.png", pixels)
        _png(root / name / "2.png", pixels)
    return f"{root / 'a'}{os.sep}", f"{root / 'b'}{os.sep}"


# --------------------------------------------------------------------------- image folders


def test_a_folder_of_digits_is_split_per_class(digit_folder: Path, digits) -> None:
    arrays = sources.read_image_folder(digit_folder)
    _images, labels = digits
    assert arrays.class_names == SORTED_WORDS and arrays.num_classes == 10
    assert arrays.input_shape == (8, 8, 1)
    assert arrays.x_train.dtype == np.uint8 and arrays.x_train.flags.c_contiguous
    assert arrays.y_train.dtype == np.int32 and arrays.y_test.dtype == np.int32
    assert len(arrays.x_train) + len(arrays.x_test) == 1797
    for label, word in enumerate(arrays.class_names):
        n = int((labels == WORDS.index(word)).sum())
        assert (arrays.y_test == label).sum() == round(n * 0.2)
        assert (arrays.y_train == label).sum() == n - round(n * 0.2)


def test_the_split_is_fixed_by_the_seed(small_folder: Path) -> None:
    a = sources.read_image_folder(small_folder, seed=1)
    b = sources.read_image_folder(small_folder, seed=1)
    c = sources.read_image_folder(small_folder, seed=2)
    assert np.array_equal(a.x_test, b.x_test) and np.array_equal(a.y_train, b.y_train)
    assert sources.content_hash(a) == sources.content_hash(b)
    assert not np.array_equal(a.x_test, c.x_test)
    half = sources.read_image_folder(small_folder, test_split=0.5)
    assert np.bincount(half.y_test).tolist() == [15] * 10
    assert np.bincount(half.y_train).tolist() == [15] * 10


def test_a_small_class_still_has_a_test_image_and_a_training_image(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "1.png", _gray(value=1))
    _png(tmp_path / "a" / "2.png", _gray(value=2))
    for i in range(10):
        _png(tmp_path / "b" / f"{i}.png", _gray(value=50))
    arrays = sources.read_image_folder(tmp_path, test_split=0.1)
    assert np.bincount(arrays.y_test).tolist() == [1, 1]  # round(0.2) would be 0
    assert np.bincount(arrays.y_train).tolist() == [1, 9]


def test_train_and_test_folders_are_kept_and_pixels_match_the_pngs(
    split_folder: Path, digits
) -> None:
    arrays = sources.read_image_folder(split_folder, test_split=0.9)  # ignored: test/ exists
    images, labels = digits
    assert arrays.class_names == SORTED_WORDS
    assert len(arrays.x_train) == 300 and len(arrays.x_test) == 100
    assert np.array_equal(arrays.x_train, _expected(split_folder / "train"))
    assert np.array_equal(arrays.x_test, _expected(split_folder / "test"))
    # The PNGs are lossless: the pixels are the digits themselves, labelled by sorted word.
    train = _subset(labels, 30)
    order = np.argsort([SORTED_WORDS.index(WORDS[d]) for d in labels[train]], kind="stable")
    assert np.array_equal(arrays.x_train[..., 0], images[train][order])
    assert [arrays.class_names[y] for y in arrays.y_train] == [
        WORDS[d] for d in labels[train][order]
    ]


def test_image_size_resizes_each_image_bilinearly(split_folder: Path) -> None:
    arrays = sources.read_image_folder(split_folder, image_size=(16, 12))
    assert arrays.input_shape == (16, 12, 1)
    first = sorted((split_folder / "train" / SORTED_WORDS[0]).iterdir())[0]
    with Image.open(first) as image:
        resized = image.resize((12, 16), Image.Resampling.BILINEAR)  # Pillow: (width, height)
    assert np.array_equal(arrays.x_train[0, ..., 0], np.asarray(resized))


def test_color_modes_choose_the_channels(split_folder: Path, tmp_path: Path) -> None:
    gray = sources.read_image_folder(split_folder)
    rgb = sources.read_image_folder(split_folder, color_mode="rgb")
    assert gray.input_shape == (8, 8, 1) and rgb.input_shape == (8, 8, 3)
    assert np.array_equal(rgb.x_train, np.repeat(gray.x_train, 3, axis=-1))
    assert sources.read_image_folder(split_folder, color_mode="grayscale").input_shape[2] == 1

    _two_classes(tmp_path / "colour", _colour(), _colour()[::-1])
    assert sources.read_image_folder(tmp_path / "colour").input_shape == (8, 8, 3)
    # Grayscale saved as RGB (all channels equal) is grayscale enough.
    _two_classes(tmp_path / "gray_rgb", np.stack([_gray()] * 3, -1), np.zeros((8, 8, 3), "u1"))
    as_gray = sources.read_image_folder(tmp_path / "gray_rgb", color_mode="grayscale")
    assert as_gray.input_shape == (8, 8, 1) and as_gray.x_train.max() == 100


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    for i, value in enumerate((65535, 257 * 100)):
        (tmp_path / f"c{i}").mkdir()
        for j in range(2):
            Image.fromarray(np.full((4, 4), value, np.uint16)).save(tmp_path / f"c{i}/{j}.png")
    arrays = sources.read_image_folder(tmp_path)
    assert arrays.input_shape == (4, 4, 1)
    assert sorted(np.unique(np.concatenate([arrays.x_train, arrays.x_test])).tolist()) == [100, 255]


def test_hidden_files_and_folders_are_skipped(tmp_path: Path) -> None:
    _two_classes(tmp_path, _gray(), _gray(value=7))
    (tmp_path / ".DS_Store").write_text("finder")
    (tmp_path / "a" / ".thumb.png").write_text("not an image")
    (tmp_path / ".cache").mkdir()
    arrays = sources.read_image_folder(tmp_path)
    assert arrays.class_names == ("a", "b") and len(arrays.x_train) + len(arrays.x_test) == 4


# --------------------------------------------------------------------------- folder refusals


def test_one_class_folder_is_refused(tmp_path: Path) -> None:
    _png(tmp_path / "cats" / "1.png", _gray())
    _refused(lambda: sources.read_image_folder(tmp_path), "1 class folder (cats)", "at least 2")


def test_an_empty_class_folder_is_refused(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "1.png", _gray())
    (tmp_path / "b").mkdir()
    _refused(lambda: sources.read_image_folder(tmp_path), str(tmp_path / "b"), "no images")


def test_a_file_that_is_not_an_image_is_refused(tmp_path: Path) -> None:
    _two_classes(tmp_path, _gray(), _gray())
    (tmp_path / "b" / "x.png").write_text("just text")
    _refused(lambda: sources.read_image_folder(tmp_path), "x.png", "not an image Pillow can read")


def test_a_stray_file_at_the_top_is_refused(tmp_path: Path) -> None:
    _two_classes(tmp_path, _gray(), _gray())
    _png(tmp_path / "loose.png", _gray())
    _refused(lambda: sources.read_image_folder(tmp_path), "loose.png", "not in a class folder")


def test_a_colour_image_under_grayscale_is_refused(tmp_path: Path) -> None:
    _gray_folder, colour = _two_classes(tmp_path, _gray(), _colour())
    _refused(
        lambda: sources.read_image_folder(tmp_path, color_mode="grayscale"),
        colour,
        "in colour but color_mode is grayscale",
    )


def test_mixed_grayscale_and_colour_under_auto_is_refused(tmp_path: Path) -> None:
    gray, colour = _two_classes(tmp_path, _gray(), _colour())
    _refused(lambda: sources.read_image_folder(tmp_path), gray, colour, "set color_mode")
    assert sources.read_image_folder(tmp_path, color_mode="rgb").input_shape == (8, 8, 3)


def test_images_of_different_sizes_need_image_size(tmp_path: Path) -> None:
    small, large = _two_classes(tmp_path, _gray((8, 8)), _gray((10, 6)))
    _refused(lambda: sources.read_image_folder(tmp_path), small, large, "set image_size")
    resized = sources.read_image_folder(tmp_path, image_size=(5, 7))
    assert resized.input_shape == (5, 7, 1)


def test_train_and_test_with_different_classes_are_refused(tmp_path: Path) -> None:
    _two_classes(tmp_path / "train", _gray(), _gray())
    _png(tmp_path / "test" / "a" / "1.png", _gray())
    _png(tmp_path / "test" / "c" / "1.png", _gray())
    _refused(lambda: sources.read_image_folder(tmp_path), "only in train/: b", "only in test/: c")


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"color_mode": "sepia"}, "color_mode 'sepia'"),
        ({"image_size": (0, 8)}, "image_size (0, 8)"),
        ({"image_size": 32}, "image_size 32"),
        ({"test_split": 1.0}, "test_split 1.0"),
    ],
)
def test_bad_options_are_refused(tmp_path: Path, options: dict, named: str) -> None:
    _two_classes(tmp_path, _gray(), _gray())
    _refused(lambda: sources.read_image_folder(tmp_path, **options), named)


# --------------------------------------------------------------------------- digests


def test_folder_digest_follows_every_file(digit_folder: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(digit_folder, copy)
    original = sources.folder_digest(digit_folder)
    assert sources.folder_digest(copy) == original  # where the folder is does not count

    image = sorted((copy / "seven").iterdir())[3]
    raw = bytearray(image.read_bytes())
    raw[-20] ^= 0x01  # one bit of one image
    image.write_bytes(bytes(raw))
    assert sources.folder_digest(copy) != original
    raw[-20] ^= 0x01
    image.write_bytes(bytes(raw))
    assert sources.folder_digest(copy) == original

    (copy / ".DS_Store").write_text("hidden files do not count")
    assert sources.folder_digest(copy) == original
    added = copy / "seven" / "extra.png"
    shutil.copy(image, added)
    assert sources.folder_digest(copy) != original
    added.unlink()
    assert sources.folder_digest(copy) == original
    image.rename(image.with_name("renamed.png"))
    assert sources.folder_digest(copy) != original
    _refused(lambda: sources.folder_digest(tmp_path / "absent"), "absent", "not a folder")


def test_content_hash_is_stable_and_sees_every_part(split_folder: Path) -> None:
    arrays = sources.read_image_folder(split_folder)
    digest = sources.content_hash(arrays)
    assert digest == sources.content_hash(sources.read_image_folder(split_folder))
    assert len(digest) == 64 and int(digest, 16) >= 0

    x_test = arrays.x_test.copy()
    x_test[0, 0, 0, 0] ^= 1
    y_train = arrays.y_train.copy()
    y_train[0] = (y_train[0] + 1) % 10
    names = (*arrays.class_names[:-1], "other")
    for changed in (
        sources.Arrays(arrays.x_train, arrays.y_train, x_test, arrays.y_test, arrays.class_names),
        sources.Arrays(arrays.x_train, y_train, arrays.x_test, arrays.y_test, arrays.class_names),
        sources.Arrays(arrays.x_train, arrays.y_train, arrays.x_test, arrays.y_test, names),
    ):
        assert sources.content_hash(changed) != digest


# --------------------------------------------------------------------------- npz files


def test_write_npz_and_read_npz_round_trip(split_folder: Path, tmp_path: Path) -> None:
    arrays = sources.read_image_folder(split_folder)
    path = tmp_path / "made" / "here" / "digits.npz"
    sources.write_npz(arrays, path)
    sources.write_npz(arrays, path)  # replacing an existing file works too
    assert [p.name for p in path.parent.iterdir()] == ["digits.npz"]  # no temp file left
    back = sources.read_npz(path)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(getattr(back, name), getattr(arrays, name))
        assert getattr(back, name).dtype == getattr(arrays, name).dtype
    assert back.class_names == SORTED_WORDS
    assert sources.content_hash(back) == sources.content_hash(arrays)
    with np.load(path) as npz:
        assert npz["class_names"].dtype.kind == "U"
    assert sources.read_dataset(path).class_names == SORTED_WORDS


def test_an_npz_saved_by_hand_is_read(digits, tmp_path: Path) -> None:
    images, labels = digits
    path = tmp_path / "digits.npz"
    # Floats in [0, 1], (N, 1) labels and no channel axis: the forms users save.
    np.savez(
        path,
        x_train=images[:1500] / 255.0,
        y_train=labels[:1500, None],
        x_test=images[1500:],
        y_test=labels[1500:],
    )
    arrays = sources.read_npz(path)
    assert arrays.input_shape == (8, 8, 1) and arrays.class_names == tuple("0123456789")
    assert np.array_equal(arrays.x_train[..., 0], images[:1500])
    assert np.array_equal(arrays.y_test, labels[1500:])


def _savez(path: Path, **arrays: object) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def _four(n: int = 20, *, classes: int = 2) -> dict[str, np.ndarray]:
    y = np.arange(n) % classes
    x = np.zeros((n, 4, 4), np.uint8)
    return {"x_train": x, "y_train": y, "x_test": x[:4], "y_test": y[:4]}


def test_npz_refusals(tmp_path: Path) -> None:
    four = _four()
    missing = _savez(tmp_path / "missing.npz", x_train=four["x_train"], y_train=four["y_train"])
    _refused(lambda: sources.read_npz(missing), "lacks x_test, y_test", "holds x_train, y_train")
    extra = _savez(tmp_path / "extra.npz", **four, x_val=four["x_test"])
    _refused(lambda: sources.read_npz(extra), "unknown arrays x_val", "class_names")

    text = tmp_path / "text.npz"
    text.write_text("x_train,y_train\n1,2\n")
    npy = tmp_path / "one.npz"
    with npy.open("wb") as f:
        np.save(f, four["x_train"])
    objects = _savez(tmp_path / "objects.npz", **four, class_names=np.array([{}, []], object))
    for bad in (text, npy, objects):
        _refused(lambda bad=bad: sources.read_npz(bad), str(bad), "not an .npz of arrays")
    _refused(lambda: sources.read_npz(tmp_path / "absent.npz"), "absent.npz", "no such file")
    _refused(lambda: sources.read_npz(tmp_path), "is a folder")

    wrong = _savez(tmp_path / "wrong.npz", **four, class_names=np.array(["a", "b"] * 5))
    _refused(lambda: sources.read_npz(wrong), str(wrong), "names 'a' twice")


# --------------------------------------------------------------------------- check_arrays


def test_check_arrays_converts_what_users_hold() -> None:
    rng = np.random.default_rng(0)
    unit = rng.random((10, 5, 5, 3))
    arrays = sources.check_arrays(
        unit, np.arange(10) % 2, unit[:2], np.array([0.0, 1.0]), source="mem"
    )
    assert arrays.input_shape == (5, 5, 3) and arrays.x_train.dtype == np.uint8
    assert np.array_equal(arrays.x_train, np.rint(unit * 255).astype(np.uint8))
    assert np.array_equal(arrays.x_test, arrays.x_train[:2])
    assert arrays.y_test.dtype == np.int32 and arrays.class_names == ("0", "1")
    scaled = sources.check_arrays(unit * 255, [0, 1] * 5, unit[:2] * 255, [1, 0], source="m")
    assert np.array_equal(scaled.x_train, arrays.x_train)  # [0, 255] floats are rounded
    wide = sources.check_arrays(
        np.full((4, 3, 3), 200, np.int64), [0, 1, 0, 1], np.zeros((1, 3, 3, 1)), [1], source="m"
    )
    assert wide.x_train.dtype == np.uint8 and wide.x_train.shape == (4, 3, 3, 1)
    assert wide.x_train.max() == 200
    named = sources.check_arrays(**_four(), class_names=["cat", "dog"], source="m")
    assert named.class_names == ("cat", "dog") and named.num_classes == 2
    _refused(
        lambda: sources.check_arrays(**_four(), class_names=["cat", "dog", "eel"], source="m"),
        "class 'eel' (label 2) has no image in y_train",
    )


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"x_train": np.zeros((20, 4, 4, 4), np.uint8)}, "x_train has shape (20, 4, 4, 4)"),
        ({"x_test": np.zeros((4, 16), np.uint8)}, "x_test has shape (4, 16)"),
        ({"x_test": np.zeros((4, 5, 5), np.uint8)}, "x_train images are 4x4x1"),
        ({"y_train": np.arange(19) % 2}, "x_train has 20 images but y_train 19 labels"),
        ({"y_test": np.zeros(5, int)}, "x_test has 4 images but y_test 5 labels"),
        ({"y_test": np.array([0, 1, 12, 1])}, "y_test holds label 12 but there are 10 class"),
        ({"y_train": np.arange(20).reshape(4, 5)}, "y_train has shape (4, 5)"),
        ({"y_train": np.full(20, 0.5)}, "not whole numbers"),
        ({"y_train": -(np.arange(20) % 2)}, "y_train holds label -1"),
        ({"y_train": np.zeros(20, int), "y_test": np.zeros(4, int)}, "at least 2 classes"),
        ({"y_test": np.array([0, 2, 0, 2])}, "class '2' (label 2) has no image in y_train"),
        ({"y_test": np.array([0, 1, 0, 10**9])}, "(label 2) has no image"),  # and quickly
        ({"x_test": np.zeros((0, 4, 4), np.uint8), "y_test": np.zeros(0, int)}, "no images"),
        ({"x_train": np.full((20, 4, 4), np.nan)}, "NaN"),
        ({"x_train": np.full((20, 4, 4), 300.0)}, "[0, 1] or [0, 255]"),
        ({"x_train": np.full((20, 4, 4), -1, np.int16)}, "integer pixels in 0..255"),
        (
            {"x_train": np.full((20, 4, 4), 0.5), "x_test": np.full((4, 4, 4), 9.0)},
            "x_train looks scaled to [0, 1] but x_test to [0, 255]",
        ),
        ({"x_train": np.array([["a"]] * 20)}, "dtype <U1"),
    ],
)
def test_check_arrays_refusals(change: dict[str, np.ndarray], named: str) -> None:
    given = _four() | change
    names = [str(i) for i in range(10)] if "12" in named else None
    message = _refused(lambda: sources.check_arrays(**given, class_names=names, source="S"), named)
    assert message.startswith("S: ")


@pytest.mark.parametrize(
    ("names", "named"),
    [(["a", ""], "''"), (["a", "a"], "'a' twice"), ("ab", "one string"), ([1, 2], "1")],
)
def test_bad_class_names_are_refused(names: object, named: str) -> None:
    _refused(lambda: sources.check_arrays(**_four(), class_names=names, source="S"), named)


# --------------------------------------------------------------------------- read_dataset


def test_read_dataset_dispatches_on_what_the_path_is(small_folder: Path, tmp_path: Path) -> None:
    from_folder = sources.read_dataset(small_folder, image_size=(4, 4), seed=3)
    assert from_folder.input_shape == (4, 4, 1)
    path = tmp_path / "d.npz"
    sources.write_npz(from_folder, path)
    assert sources.read_dataset(path, image_size=(4, 4)).input_shape == (4, 4, 1)
    _refused(lambda: sources.read_dataset(path, image_size=(8, 8)), "4x4", "image_size")
    _refused(lambda: sources.read_dataset(path, color_mode="rgb"), "color_mode is rgb")
    other = tmp_path / "d.csv"
    other.write_text("1,2\n")
    _refused(
        lambda: sources.read_dataset(other), f"dataset {other} is neither a folder", ".npz file"
    )
    _refused(lambda: sources.read_dataset(tmp_path / "gone"), "gone", "does not exist")


def test_importing_sources_loads_neither_numpy_nor_pillow() -> None:
    code = (
        "import sys, sweep.sources; "
        "print(sorted(m for m in ('numpy', 'PIL', 'tensorflow', 'keras') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
