"""A user's own image data, read into the arrays a sweep trains on.

Two forms are read, both checked once by :func:`check_arrays` so every later step can trust
the arrays (uint8 NHWC images with 1 or 3 channels, int32 labels, every class in training):

* an ``.npz`` of arrays (:func:`read_npz`): ``x_train``, ``y_train``, ``x_test``, ``y_test``
  and optionally ``class_names``, as ``numpy.savez`` writes them (Keras's ``mnist.npz`` is one);
* a folder of images in Keras's ``image_dataset_from_directory`` layout
  (:func:`read_image_folder`): ``<folder>/<class>/<image>``, or ``<folder>/train/<class>/...``
  beside ``<folder>/test/<class>/...``. Class names are the sorted subfolder names.

Every refusal is a :class:`~sweep.errors.UserError` of one line that names the file or array
and says how to fix it. numpy and Pillow are imported inside the functions, so importing this
module (for ``--help`` or validating a study) costs nothing.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = [
    "COLOR_MODES",
    "Arrays",
    "check_arrays",
    "content_hash",
    "folder_digest",
    "read_dataset",
    "read_image_folder",
    "read_npz",
    "write_npz",
]

ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")
NPZ_KEYS = (*ARRAY_KEYS, "class_names")
COLOR_MODES = ("auto", "rgb", "grayscale")
# Pillow modes that hold one intensity per pixel; "auto" gives these images one channel.
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N"})
# 16-bit grayscale (PNGs of depth 16 open as one of these); scaled to 8 bits, not clipped.
SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
_CHUNK = 1 << 20  # bytes read at a time when hashing files
_SAVEZ_HINT = "save it with numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"


@dataclass(frozen=True, eq=False)
class Arrays:
    """A checked dataset, as :func:`check_arrays` returns it.

    Attributes:
        x_train: Training images, uint8, shape (N, H, W, C) with C 1 or 3, C-contiguous.
        y_train: Training labels, int32, shape (N,), each in ``range(num_classes)``.
        x_test: Test images, same H, W and C as ``x_train``.
        y_test: Test labels, int32.
        class_names: One name per label, in label order.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of one image."""
        _n, height, width, channels = self.x_train.shape
        return int(height), int(width), int(channels)

    @property
    def num_classes(self) -> int:
        """How many classes the labels index."""
        return len(self.class_names)

    def __repr__(self) -> str:  # the arrays themselves would flood a log line
        return (
            f"Arrays(train={len(self.x_train)}, test={len(self.x_test)}, "
            f"input_shape={self.input_shape}, class_names={self.class_names!r})"
        )


# --------------------------------------------------------------------------- checking arrays


def check_arrays(
    x_train: Any,
    y_train: Any,
    x_test: Any,
    y_test: Any,
    class_names: Sequence[str] | np.ndarray | None = None,
    *,
    source: str,
) -> Arrays:
    """Validate a dataset given as arrays and convert it to the form a sweep trains on.

    Args:
        x_train: Training images, (N, H, W) or (N, H, W, C) with C 1 or 3; uint8, other
            integers in 0..255, or floats in [0, 1] (scaled by 255) or [0, 255].
        y_train: Training labels, (N,) or (N, 1), whole numbers >= 0.
        x_test: Test images, the same H, W and C as ``x_train``; at least one.
        y_test: Test labels.
        class_names: One distinct, non-empty name per label; ``None`` names the labels
            ``"0"`` to ``"n-1"`` where n is the largest label plus one.
        source: What the arrays came from (a path), named in every error.

    Returns:
        The checked :class:`Arrays`.

    Raises:
        UserError: One line naming ``source``, what is wrong and how to fix it.
    """
    import numpy as np

    def fail(message: str) -> UserError:
        return UserError(f"{source}: {message}")

    images = {"x_train": _as_array(x_train, "x_train", fail)}
    images["x_test"] = _as_array(x_test, "x_test", fail)
    for name, x in images.items():
        if x.ndim == 3:  # (N, H, W): grayscale without a channel axis
            images[name] = x = x[..., np.newaxis]
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise fail(
                f"{name} has shape {tuple(x.shape)}; give images as (N, H, W) or (N, H, W, C) "
                "with C 1 or 3"
            )
    if len(images["x_train"]) == 0:
        raise fail("x_train holds no images; give at least one image per class")
    if len(images["x_test"]) == 0:
        raise fail("x_test holds no images; give at least one test image")
    train_shape, test_shape = images["x_train"].shape[1:], images["x_test"].shape[1:]
    if train_shape != test_shape:
        raise fail(
            f"x_train images are {_hwc(train_shape)} but x_test images are {_hwc(test_shape)} "
            "(height x width x channels); give both the same size and channels"
        )
    # [0, 1] or [0, 255] is read from the values; both splits must agree, or a dim test set
    # (or one saved the other way) would be silently mis-scaled.
    maxima = {name: _float_max(x, name, fail) for name, x in images.items() if x.dtype.kind == "f"}
    unit_floats = bool(maxima) and max(maxima.values()) <= 1.0
    if len(maxima) == 2 and (maxima["x_train"] <= 1.0) != (maxima["x_test"] <= 1.0):
        unit, wide = ("x_train", "x_test") if maxima["x_train"] <= 1.0 else ("x_test", "x_train")
        raise fail(
            f"{unit} looks scaled to [0, 1] but {wide} to [0, 255] (largest pixels "
            f"{maxima[unit]:g} and {maxima[wide]:g}); give both on one scale"
        )
    x_tr, x_te = (_to_uint8(images[name], name, unit_floats, fail) for name in images)

    y_tr = _labels(y_train, "y_train", fail)
    y_te = _labels(y_test, "y_test", fail)
    for x_name, x, y_name, y in (
        ("x_train", x_tr, "y_train", y_tr),
        ("x_test", x_te, "y_test", y_te),
    ):
        if len(x) != len(y):
            raise fail(
                f"{x_name} has {len(x)} images but {y_name} {len(y)} labels; "
                "give one label per image"
            )

    given = None if class_names is None else _class_names(class_names, fail)
    if given is not None:
        for y_name, y in (("y_train", y_tr), ("y_test", y_te)):
            if int(y.max()) >= len(given):
                raise fail(
                    f"{y_name} holds label {int(y.max())} but there are {len(given)} class "
                    f"names; labels index class_names, so they must be 0 to {len(given) - 1}"
                )
    n_classes = len(given) if given is not None else int(max(y_tr.max(), y_te.max())) + 1
    if n_classes < 2:
        raise fail("the labels name only 1 class; a classifier needs at least 2 classes")
    # Found from the labels present, not range(n_classes): a stray label of 10**9 must not
    # build a billion names before it is refused.
    present = np.unique(y_tr)
    if len(present) < n_classes:
        gaps = np.flatnonzero(present != np.arange(len(present)))
        missing = int(gaps[0]) if gaps.size else len(present)
        name = given[missing] if given is not None else str(missing)
        raise fail(
            f"class {name!r} (label {missing}) has no image in y_train; "
            "give every class at least one training image, or drop it from class_names"
        )
    names = given if given is not None else tuple(str(i) for i in range(n_classes))
    return Arrays(
        x_train=np.ascontiguousarray(x_tr),
        y_train=y_tr,
        x_test=np.ascontiguousarray(x_te),
        y_test=y_te,
        class_names=names,
    )


def _hwc(shape: tuple[int, ...]) -> str:
    return "x".join(str(int(d)) for d in shape)


def _as_array(value: Any, name: str, fail: Any) -> np.ndarray:
    import numpy as np

    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:  # ragged lists
        raise fail(f"{name} is not an array ({_one_line(exc)}); give a numpy array") from None
    if array.dtype.kind not in "iuf":
        raise fail(f"{name} has dtype {array.dtype}; give integer or float numbers")
    return array


def _float_max(x: np.ndarray, name: str, fail: Any) -> float:
    import numpy as np

    if x.size == 0:
        return 0.0
    if not np.isfinite(x).all():
        raise fail(f"{name} holds NaN or infinite pixels; replace them with numbers")
    return float(x.max())


def _to_uint8(x: np.ndarray, name: str, unit_floats: bool, fail: Any) -> np.ndarray:
    """Pixels as uint8: integers kept, floats in [0, 1] scaled by 255, floats rounded."""
    import numpy as np

    if x.dtype == np.uint8:
        return x
    low, high = (x.min(), x.max()) if x.size else (0, 0)
    if x.dtype.kind in "iu":
        if low < 0 or high > 255:
            raise fail(f"{name} holds pixels from {low} to {high}; give integer pixels in 0..255")
        return x.astype(np.uint8)
    if low < 0 or high > 255:
        raise fail(
            f"{name} holds pixels from {float(low):g} to {float(high):g}; give float pixels in "
            "[0, 1] or [0, 255]"
        )
    scaled = x.astype(np.float64) * 255.0 if unit_floats else x
    return np.rint(scaled).clip(0, 255).astype(np.uint8)


def _labels(value: Any, name: str, fail: Any) -> np.ndarray:
    import numpy as np

    y = _as_array(value, name, fail)
    if y.ndim == 2 and y.shape[1] == 1:  # Keras's CIFAR-10 labels are (N, 1)
        y = y[:, 0]
    if y.ndim != 1:
        raise fail(f"{name} has shape {tuple(y.shape)}; give labels as (N,) or (N, 1)")
    if y.size == 0:
        return y.astype(np.int32)
    if y.dtype.kind == "f" and not (np.isfinite(y).all() and (y == np.round(y)).all()):
        raise fail(f"{name} holds labels that are not whole numbers; give class indices")
    if y.min() < 0:
        raise fail(f"{name} holds label {y.min()}; labels are class indices, 0 or more")
    if y.max() > np.iinfo(np.int32).max:
        raise fail(f"{name} holds label {y.max()}; labels are class indices, give 0 to n-1")
    return y.astype(np.int32)


def _class_names(value: Any, fail: Any) -> tuple[str, ...]:
    import numpy as np

    if isinstance(value, str):
        raise fail("class_names is one string; give a list of names, one per label")
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or value.dtype.kind != "U":
            raise fail(
                f"class_names has dtype {value.dtype} and shape {tuple(value.shape)}; "
                "give a 1-D array of strings, one per label"
            )
        value = value.tolist()
    names = tuple(value)
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise fail(f"class_names holds {bad[0]!r}; give non-empty strings, one per label")
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise fail(f"class_names names {n!r} twice; give each class one distinct name")
        seen.add(n)
    return names


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# --------------------------------------------------------------------------- .npz files


def read_npz(path: Path) -> Arrays:
    """Read an ``.npz`` of ``x_train``, ``y_train``, ``x_test``, ``y_test`` (and
    ``class_names``, a string array) without unpickling anything.

    Args:
        path: The file, as ``numpy.savez`` wrote it.

    Returns:
        The checked :class:`Arrays`.

    Raises:
        UserError: The file is missing, not an npz of plain arrays, has missing or unknown
            keys, or its arrays fail :func:`check_arrays`.
    """
    import zipfile

    import numpy as np

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file; give the path of an .npz file")
    if path.is_dir():
        raise UserError(f"{path} is a folder, not an .npz file; give the .npz file's path")
    not_npz = f"{path} is not an .npz of arrays; {_SAVEZ_HINT}"
    try:
        # allow_pickle=False: a dataset is data; an object array would run code on load.
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile):  # ValueError: needs pickle
        raise UserError(not_npz) from None
    if not isinstance(npz, np.lib.npyio.NpzFile):  # an .npy: one array, no names
        raise UserError(not_npz)
    with npz:
        keys = sorted(npz.files)
        missing = [k for k in ARRAY_KEYS if k not in keys]
        if missing:
            raise UserError(
                f"{path} lacks {', '.join(missing)} (it holds {', '.join(keys) or 'nothing'}); "
                f"{_SAVEZ_HINT}"
            )
        unknown = [k for k in keys if k not in NPZ_KEYS]
        if unknown:
            raise UserError(
                f"{path} holds unknown arrays {', '.join(unknown)}; allowed: {', '.join(NPZ_KEYS)}"
            )
        try:
            loaded = {k: npz[k] for k in keys}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile):
            raise UserError(not_npz) from None
    return check_arrays(
        loaded["x_train"],
        loaded["y_train"],
        loaded["x_test"],
        loaded["y_test"],
        loaded.get("class_names"),
        source=str(path),
    )


def write_npz(arrays: Arrays, path: Path) -> None:
    """Write ``arrays`` as an uncompressed ``.npz`` that :func:`read_npz` reads back.

    The file is written beside its destination and renamed into place, so a reader never
    sees half a file and a crash leaves the old one intact.

    Args:
        arrays: The dataset.
        path: Destination; its folder is created if missing.
    """
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            # Uncompressed: images barely compress and a compressed npz is slower to read.
            np.savez(
                f,
                x_train=arrays.x_train,
                y_train=arrays.y_train,
                x_test=arrays.x_test,
                y_test=arrays.y_test,
                class_names=np.array(arrays.class_names, dtype=str),
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- digests


def content_hash(arrays: Arrays) -> str:
    """SHA-256 (hex) of the dataset's contents: shapes, dtypes and bytes of the four arrays
    and the class names, so two equal datasets hash alike wherever they came from.

    Args:
        arrays: The dataset.

    Returns:
        64 hex digits.
    """
    import numpy as np

    digest = hashlib.sha256()
    for name in ARRAY_KEYS:
        array = np.ascontiguousarray(getattr(arrays, name))
        # The header frames the bytes, so moving a byte between arrays changes the hash.
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|{array.nbytes}\n".encode())
        digest.update(array.data.cast("B"))
    for class_name in arrays.class_names:
        encoded = class_name.encode()
        digest.update(f"class|{len(encoded)}|".encode() + encoded)
    return digest.hexdigest()


def folder_digest(path: Path) -> str:
    """SHA-256 (hex) of every file under a folder: its relative POSIX path and bytes, in
    sorted order, hidden files and folders skipped. A changed, added, removed or renamed
    image changes it; the files' times and the folder's location do not.

    Args:
        path: The folder.

    Returns:
        64 hex digits.

    Raises:
        UserError: ``path`` is not a folder.
    """
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path} is not a folder; give the folder of images")
    digest = hashlib.sha256()
    for file in _visible_files(path):
        relative = file.relative_to(path).as_posix().encode()
        size = file.stat().st_size
        digest.update(b"file|%d|" % len(relative) + relative + b"|%d\n" % size)
        with file.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _visible_files(root: Path) -> list[Path]:
    """Every file under ``root`` not hidden and not under a hidden folder, sorted by path."""
    found: list[Path] = []
    for folder, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(folder, f) for f in filenames if not f.startswith("."))
    return sorted(found, key=lambda f: f.relative_to(root).as_posix())


# --------------------------------------------------------------------------- image folders


@dataclass(frozen=True)
class _Decoded:
    """One decoded image: pixels (H, W, C) and whether the file was grayscale."""

    pixels: np.ndarray
    grayscale: bool


def read_image_folder(
    path: Path,
    *,
    image_size: tuple[int, int] | None = None,
    color_mode: str = "auto",
    test_split: float = 0.2,
    seed: int = 0,
) -> Arrays:
    """Read a folder of images laid out as Keras's ``image_dataset_from_directory`` reads it.

    ``path/<class>/<image>`` is split into train and test here, per class: a shuffle seeded
    by ``seed`` sends ``round(n * test_split)`` images (at least one when the class has two)
    to test. ``path/train/<class>/...`` beside ``path/test/<class>/...`` is used as it is.
    Hidden files and folders are skipped; images in subfolders of a class folder count.

    Args:
        path: The folder.
        image_size: (height, width) every image is resized to (bilinear); ``None`` requires
            all images to share one size.
        color_mode: ``"rgb"`` (3 channels), ``"grayscale"`` (1 channel; colour images are
            refused) or ``"auto"`` (1 channel when every image is grayscale, 3 when every one
            is in colour).
        test_split: Fraction of each class held out for test when there is no ``test/``.
        seed: Seeds the split.

    Returns:
        The checked :class:`Arrays`, class names the sorted class folder names.

    Raises:
        UserError: The layout is wrong, a file is not an image, the images' sizes or colour
            modes disagree, or the options are invalid.
    """
    import numpy as np

    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path} is not a folder; give a folder with one subfolder per class")
    if color_mode not in COLOR_MODES:
        raise UserError(
            f"color_mode {color_mode!r} is unknown; use one of {', '.join(COLOR_MODES)}"
        )
    size = _image_size(image_size)
    split_given = (path / "train").is_dir() and (path / "test").is_dir()
    if split_given:
        extra = [e.name for e in _visible_entries(path) if e.name not in ("train", "test")]
        if extra:
            raise UserError(
                f"{path} holds train/ and test/ and also {extra[0]!r}; "
                "move it into a class folder under train/ or test/, or remove it"
            )
        train_classes = _class_folders(path / "train")
        test_classes = _class_folders(path / "test")
        if list(train_classes) != list(test_classes):
            only_train = sorted(set(train_classes) - set(test_classes))
            only_test = sorted(set(test_classes) - set(train_classes))
            raise UserError(
                f"{path}: train/ and test/ have different class folders (only in train/: "
                f"{', '.join(only_train) or 'none'}; only in test/: "
                f"{', '.join(only_test) or 'none'}); give both the same class folders"
            )
        classes = list(train_classes)
        train_files = [(f, i) for i, c in enumerate(classes) for f in train_classes[c]]
        test_files = [(f, i) for i, c in enumerate(classes) for f in test_classes[c]]
    else:
        if not 0.0 < test_split < 1.0:
            raise UserError(f"test_split {test_split} must be between 0 and 1 (e.g. 0.2)")
        by_class = _class_folders(path)
        classes = list(by_class)
        rng = np.random.default_rng(seed)
        train_files, test_files = [], []
        for i, name in enumerate(classes):  # sorted class order, so the draws are fixed
            files = by_class[name]
            n_test = _test_count(len(files), test_split)
            order = rng.permutation(len(files))
            test_set = set(order[:n_test].tolist())
            for j, f in enumerate(files):  # file order within each split, not shuffled order
                (test_files if j in test_set else train_files).append((f, i))

    all_files = [f for f, _ in train_files] + [f for f, _ in test_files]
    decoded = _decode_all(all_files, color_mode, size)
    if color_mode == "auto":
        gray = [f for f, d in zip(all_files, decoded, strict=True) if d.grayscale]
        colour = [f for f, d in zip(all_files, decoded, strict=True) if not d.grayscale]
        if gray and colour:
            raise UserError(
                f"{path} mixes grayscale and colour images ({gray[0]} is grayscale, "
                f"{colour[0]} is in colour); set color_mode to rgb or grayscale"
            )
    first = decoded[0].pixels.shape
    for f, d in zip(all_files, decoded, strict=True):
        if d.pixels.shape[:2] != first[:2]:
            raise UserError(
                f"{path} holds images of different sizes ({all_files[0]} is "
                f"{first[0]}x{first[1]}, {f} is {d.pixels.shape[0]}x{d.pixels.shape[1]}, "
                "height x width); set image_size to resize them all to one size"
            )
    pixels = np.stack([d.pixels for d in decoded])
    n_train = len(train_files)
    return check_arrays(
        pixels[:n_train],
        np.array([label for _, label in train_files], dtype=np.int32),
        pixels[n_train:],
        np.array([label for _, label in test_files], dtype=np.int32),
        tuple(classes),
        source=str(path),
    )


def _image_size(image_size: Any) -> tuple[int, int] | None:
    if image_size is None:
        return None
    try:
        height, width = image_size
        ok = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in image_size)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise UserError(
            f"image_size {image_size!r} is not (height, width) in pixels; give two positive "
            "integers, e.g. (32, 32)"
        )
    return int(height), int(width)


def _test_count(n: int, test_split: float) -> int:
    """How many of a class's ``n`` images go to test: at least one when there are two, and
    never all, since every class needs a training image."""
    if n < 2:
        return 0
    return min(max(1, round(n * test_split)), n - 1)


def _visible_entries(folder: Path) -> list[Path]:
    return sorted(e for e in folder.iterdir() if not e.name.startswith("."))


def _class_folders(root: Path) -> dict[str, list[Path]]:
    """Class name -> its image files (sorted), for ``root/<class>/...``; refuses stray files,
    fewer than two classes and empty class folders."""
    entries = _visible_entries(root)
    stray = [e for e in entries if not e.is_dir()]
    if stray:
        raise UserError(
            f"{stray[0]} is not in a class folder; an image folder holds one subfolder per "
            f"class ({root}/<class>/<image>); move it into one or remove it"
        )
    classes = {e.name: _visible_files(e) for e in entries}
    if len(classes) < 2:
        listed = f" ({', '.join(classes)})" if classes else ""
        raise UserError(
            f"{root} has {len(classes)} class folder{'' if len(classes) == 1 else 's'}{listed}; "
            "an image folder needs one subfolder per class, at least 2"
        )
    for name, files in classes.items():
        if not files:
            raise UserError(
                f"class folder {root / name} holds no images; add images to it or remove it"
            )
    return classes


def _decode_all(files: list[Path], color_mode: str, size: tuple[int, int] | None) -> list[_Decoded]:
    """Decode every file on a thread pool (Pillow's decoders release the GIL); results come
    back in ``files`` order, and the first failure in that order is the one raised."""
    pool = ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) + 4))
    try:
        return list(pool.map(lambda f: _decode(f, color_mode, size), files))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _decode(file: Path, color_mode: str, size: tuple[int, int] | None) -> _Decoded:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as opened:
            opened.load()
            image, grayscale = _convert(opened, color_mode, file)
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        Image.DecompressionBombError,
    ):
        raise UserError(
            f"{file} is not an image Pillow can read; remove it or convert it"
        ) from None
    if size is not None and image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)  # (width, height)
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[..., np.newaxis]
    return _Decoded(pixels=pixels, grayscale=grayscale)


def _convert(image: Image.Image, color_mode: str, file: Path) -> tuple[Image.Image, bool]:
    """The image as 8-bit ``L`` or ``RGB`` for ``color_mode``, and whether it was grayscale."""
    import numpy as np
    from PIL import Image

    grayscale = image.mode in GRAYSCALE_MODES
    if image.mode in SIXTEEN_BIT_MODES:
        # convert("L") would clip 16-bit values at 255; scale them down instead.
        wide = np.asarray(image, dtype=np.float64)
        gray = Image.fromarray(np.rint(wide / 257.0).clip(0, 255).astype(np.uint8), "L")
    elif grayscale:
        gray = image.convert("L")
    if color_mode == "rgb":
        return (gray.convert("RGB") if grayscale else image.convert("RGB")), grayscale
    if grayscale:
        return gray, grayscale
    rgb = image.convert("RGB")
    if color_mode == "grayscale":
        channels = np.asarray(rgb)
        if not (channels == channels[..., :1]).all():  # gray saved as RGB is still gray
            raise UserError(
                f"{file} is in colour but color_mode is grayscale; set color_mode to rgb, or "
                "convert the image to grayscale"
            )
        return Image.fromarray(np.ascontiguousarray(channels[..., 0]), "L"), grayscale
    return rgb, grayscale


# --------------------------------------------------------------------------- dispatch


def read_dataset(
    path: Path,
    *,
    image_size: tuple[int, int] | None = None,
    color_mode: str = "auto",
    seed: int = 0,
) -> Arrays:
    """Read a user's dataset: a folder of images or an ``.npz`` of arrays.

    Args:
        path: A folder (see :func:`read_image_folder`) or an ``.npz`` file.
        image_size: (height, width). For a folder, every image is resized to it; an npz is
            not resized, so its images must already be this size.
        color_mode: ``"auto"``, ``"rgb"`` or ``"grayscale"``. For a folder, see
            :func:`read_image_folder`; an npz must already have the matching channels.
        seed: Seeds a folder's train/test split.

    Returns:
        The checked :class:`Arrays`.

    Raises:
        UserError: The path is neither, or reading it fails.
    """
    path = Path(path)
    if path.is_dir():
        return read_image_folder(path, image_size=image_size, color_mode=color_mode, seed=seed)
    if not path.exists():
        raise UserError(f"dataset {path} does not exist; give a folder of images or an .npz file")
    if path.suffix.lower() != ".npz":
        raise UserError(
            f"dataset {path} is neither a folder of images nor an .npz file; give a folder "
            "with one subfolder per class, or arrays saved with numpy.savez"
        )
    if color_mode not in COLOR_MODES:
        raise UserError(
            f"color_mode {color_mode!r} is unknown; use one of {', '.join(COLOR_MODES)}"
        )
    size = _image_size(image_size)
    arrays = read_npz(path)
    height, width, channels = arrays.input_shape
    # An npz is taken as it is: refusing a mismatch beats silently ignoring the option.
    if size is not None and size != (height, width):
        raise UserError(
            f"dataset {path} holds {height}x{width} images but image_size is "
            f"{size[0]}x{size[1]}; an .npz is not resized, so resize its arrays or drop "
            "image_size"
        )
    wanted = {"rgb": 3, "grayscale": 1}.get(color_mode, channels)
    if wanted != channels:
        raise UserError(
            f"dataset {path} holds images of {channels} channel(s) but color_mode is "
            f"{color_mode}; an .npz is not converted, so convert its arrays or use "
            "color_mode auto"
        )
    return arrays
