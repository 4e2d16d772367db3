"""Datasets and the input pipeline.

Images are held once per process as ``uint8`` arrays (a quarter of the memory of float32) and
cast, scaled to [0, 1] and augmented batch by batch: on TensorFlow by a tf.data pipeline that
prefetches in parallel, so the model is never waiting on Python; on JAX and PyTorch by a Keras
``PyDataset`` (:mod:`sweep._batches`) whose warp is ``keras.ops``, run on the backend's device,
so those backends never import TensorFlow.

* ``synthetic``: a deterministic, CIFAR-shaped dataset generated from a seed, no download.
* ``cifar10``: the official python archive, read from ``--data-dir`` / ``$SWEEP_DATA_DIR``
  (``cifar-10-python.tar.gz`` or its extracted ``cifar-10-batches-py/``), else downloaded the
  way Keras does and cached. Its pickles are read with :class:`RestrictedUnpickler`, which
  admits only what the official format holds.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import math
import os
import pickle
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep.config import Augmentation
from sweep.errors import UserError
from sweep.settings import current

if TYPE_CHECKING:
    import numpy as np
    import tensorflow as tf

    from sweep.sources import Arrays

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_URL",
    "DATA_INFO",
    "Splits",
    "augmenter",
    "eval_dataset",
    "load",
    "load_cifar10",
    "load_cifar100",
    "synthetic",
    "train_dataset",
]

log = logging.getLogger(__name__)

IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10
SYNTHETIC_TRAIN = 5000
SYNTHETIC_TEST = 1000
# Chosen so the baseline reaches about 60% test accuracy in 5 epochs, as on CIFAR-10.
SYNTHETIC_NOISE = 3.5
SYNTHETIC_CLASSES = tuple(f"class {i}" for i in range(NUM_CLASSES))
SYNTHETIC_BLEND = (0.5, 1.0)
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
_CIFAR_DIR = "cifar-10-batches-py"
_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST_BATCH = "test_batch"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
# name -> (archive, its folder, URL, MD5, the setting naming a mirror: $SWEEP_CIFAR10_URL ...)
_ARCHIVES = {
    "CIFAR-10": (
        "cifar-10-python.tar.gz", _CIFAR_DIR, CIFAR10_URL, CIFAR10_MD5, "cifar10_url"
    ),
    "CIFAR-100": (
        "cifar-100-python.tar.gz", "cifar-100-python", CIFAR100_URL, CIFAR100_MD5,
        "cifar100_url",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Splits:
    """Train, validation and test images (uint8, NHWC) and labels (int32)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...] = SYNTHETIC_CLASSES

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of one image: what the models take."""
        h, w, c = self.x_train.shape[1:]
        return int(h), int(w), int(c)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def sizes(self) -> str:
        return f"{len(self.x_train)} train / {len(self.x_val)} val / {len(self.x_test)} test"


# --------------------------------------------------------------------------- synthetic


_Arrays = tuple["np.ndarray", "np.ndarray", "np.ndarray", "np.ndarray"]


def synthetic(
    n_train: int = SYNTHETIC_TRAIN, n_test: int = SYNTHETIC_TEST, *, seed: int = 0
) -> _Arrays:
    """A learnable, not trivial, CIFAR-shaped dataset: ``(x_train, y_train, x_test, y_test)``.

    Each class is a smooth random colour texture. An image is its class's texture, moved by up
    to 6 pixels, perhaps mirrored, with random contrast and brightness, blended with another
    class's texture and covered in noise. Shapes and scale match CIFAR-10 (32x32x3 uint8,
    10 classes), so the reports' networks run on it unchanged.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(NUM_CLASSES, 8, 8, 3))
    # Bilinear-ish upsampling of an 8x8 field gives textures with structure at several scales.
    templates = np.kron(coarse, np.ones((1, 4, 4, 1)))
    for axis in (1, 2):
        templates = (templates + np.roll(templates, 1, axis) + np.roll(templates, -1, axis)) / 3
    templates /= templates.std(axis=(1, 2, 3), keepdims=True)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, NUM_CLASSES, size=n)
        images = np.empty((n, *IMAGE_SHAPE), dtype=np.float32)
        shifts = rng.integers(-6, 7, size=(n, 2))
        flips = rng.random(n) < 0.5
        others = rng.integers(0, NUM_CLASSES, size=n)
        blend = rng.uniform(*SYNTHETIC_BLEND, size=n)
        for i in range(n):
            img = np.roll(templates[labels[i]], tuple(shifts[i]), axis=(0, 1))
            if flips[i]:
                img = img[:, ::-1]
            images[i] = img + blend[i] * templates[others[i]]
        contrast = rng.uniform(0.5, 1.5, size=(n, 1, 1, 1))
        brightness = rng.normal(0, 0.5, size=(n, 1, 1, 3))
        noise = rng.normal(0, SYNTHETIC_NOISE, size=images.shape)
        mixed = images * contrast + brightness + noise
        pixels = np.clip(128 + 40 * mixed, 0, 255).astype(np.uint8)
        return pixels, labels.astype(np.int32)

    x_train, y_train = make(n_train)
    x_test, y_test = make(n_test)
    return x_train, y_train, x_test, y_test


# --------------------------------------------------------------------------- CIFAR-10


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles the official CIFAR-10 batches and nothing else.

    The batches are dicts of bytes, ints, lists and one uint8 numpy array. Only the globals
    that rebuild such an array are admitted; any other global (``os.system``, ``eval``, ...)
    is refused before it can run.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            # Python 3 writes bytes in protocol 2 as _codecs.encode(text, "latin1").
            return _latin1_encode
        import numpy as np

        if name == "_reconstruct" and module in (
            "numpy.core.multiarray",
            "numpy._core.multiarray",
        ):
            # The function numpy pickles arrays with, whatever numpy's module layout is.
            return np.zeros(0).__reduce__()[0]
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        raise pickle.UnpicklingError(
            f"refused global {module}.{name}: not part of the CIFAR-10 format"
        )


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _unpickle(raw: bytes, name: str, what: str = "CIFAR-10") -> Any:
    try:
        return RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - a corrupt pickle fails in many ways; all are one
        archive = _ARCHIVES[what][0]
        raise UserError(
            f"{what} batch {name} is corrupt or not in the official format ({exc}); "
            f"replace it with a fresh copy of {archive}"
        ) from None


def _unpickle_batch(
    raw: bytes, name: str, *, what: str = "CIFAR-10", key: bytes = b"labels", classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    batch = _unpickle(raw, name, what)
    archive = _ARCHIVES[what][0]
    if not isinstance(batch, dict) or b"data" not in batch or key not in batch:
        raise UserError(
            f"{what} batch {name} lacks b'data' or {key!r}; "
            f"replace it with a fresh copy of {archive}"
        )
    data = batch[b"data"]
    try:
        labels = np.asarray(batch[key])
    except (TypeError, ValueError):
        labels = np.zeros((0, 0))
    top = classes - 1
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise UserError(f"{what} batch {name}: labels must be a list of integers 0-{top}")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise UserError(f"{what} batch {name}: data must be a 2-D uint8 array")
    if data.shape[1] != 3072 or len(labels) != len(data):
        raise UserError(
            f"{what} batch {name}: expected rows of 3072 bytes and one label each, "
            f"got data {data.shape} and {len(labels)} labels"
        )
    if labels.size and (labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() > top):
        raise UserError(f"{what} batch {name}: labels must be integers 0-{top}")
    # The official rows are channel-major (1024 R, 1024 G, 1024 B); models want NHWC.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int32)


def _iter_batches(
    source: Path, names: tuple[str, ...] = (*_TRAIN_BATCHES, _TEST_BATCH), what: str = "CIFAR-10"
) -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, raw bytes)`` of the named files from a directory or the tar.gz."""
    archive, folder = _ARCHIVES[what][0], _ARCHIVES[what][1]
    if source.is_dir():
        for name in names:
            path = source / name
            if not path.is_file():
                raise UserError(f"{what} batch {path} is missing; extract the full archive")
            try:
                yield name, path.read_bytes()
            except OSError as exc:
                raise UserError(f"{what} batch {path} cannot be read ({exc.strerror})") from None
        return
    if not source.is_file():  # a FIFO or a device would be read without end
        raise UserError(f"{source} is not a regular file; put the official {archive} there")
    try:
        with tarfile.open(source, "r:gz") as tar:
            for name in names:
                try:
                    member = tar.getmember(f"{folder}/{name}")
                except KeyError:
                    raise UserError(
                        f"{source} has no {folder}/{name}: it is not the official "
                        f"{archive}, or it is damaged; download it again"
                    ) from None
                # A link is followed inside the archive, to a member that may be missing or
                # the link itself: the official archive holds regular files only.
                handle = tar.extractfile(member) if member.isfile() else None
                if handle is None:
                    raise UserError(
                        f"{source}: {folder}/{name} is not a regular file (a link or a "
                        f"folder); it is not the official {archive}, download it again"
                    )
                yield name, handle.read()
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as exc:
        raise UserError(
            f"{source} is truncated or not a gzip tar archive ({exc}); download it again"
        ) from None


def _find_cifar10(data_dir: Path | None, what: str = "CIFAR-10") -> Path | None:
    archive, folder = _ARCHIVES[what][0], _ARCHIVES[what][1]
    for d in (data_dir, _env_dir(), _keras_cache()):
        if d is None:
            continue
        for candidate in (d / folder, d / archive):
            if candidate.exists():
                return candidate
    return None


def _env_dir() -> Path | None:
    return current().data_dir


def _keras_cache() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"


def _download_cifar10(data_dir: Path | None, what: str = "CIFAR-10") -> Path:
    """Fetch the official archive (MD5-checked) into ``data_dir`` or Keras's cache.

    Plain urllib, not ``keras.utils.get_file``: a failed download must not cost a TensorFlow
    start. The file appears under its final name only once complete and checked.
    """
    import hashlib
    import tempfile
    import urllib.request

    archive, _, url, official_md5, env = _ARCHIVES[what]
    target = data_dir or _env_dir() or _keras_cache()
    url = getattr(current(), env) or url  # a mirror, where offline
    log.info("%s not found locally; downloading %s to %s", what, url, target)
    final = target / archive
    partial: Path | None = None
    # The folders this download makes, deepest first: removed again if it fails, so that a
    # refused run leaves nothing behind (not even ~/.keras/datasets under a missing home).
    made = list(itertools.takewhile(lambda d: not d.exists(), [target, *target.parents]))
    try:
        target.mkdir(parents=True, exist_ok=True)
        md5 = hashlib.md5(usedforsecurity=False)
        with (
            urllib.request.urlopen(url, timeout=60) as response,
            tempfile.NamedTemporaryFile(dir=target, suffix=".part", delete=False) as part,
        ):
            partial = Path(part.name)
            while chunk := response.read(1 << 20):
                md5.update(chunk)
                part.write(chunk)
        if md5.hexdigest() != official_md5:
            raise ValueError(f"MD5 {md5.hexdigest()} is not the official {official_md5}")
        partial.replace(final)
    except (OSError, ValueError) as exc:
        if partial is not None:
            partial.unlink(missing_ok=True)
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: never what was there before
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(
            f"{what} is not under --data-dir or $SWEEP_DATA_DIR and the download from {url} "
            f"failed ({reason}); put {archive} there by hand"
        ) from None
    finally:
        if partial is not None:
            partial.unlink(missing_ok=True)  # gone already when it became the final file
    return final


def load_cifar10(data_dir: Path | None = None, *, download: bool = True) -> _Arrays:
    """Load CIFAR-10 as ``(x_train, y_train, x_test, y_test)`` uint8 NHWC arrays."""
    import numpy as np

    source = _find_cifar10(data_dir)
    if source is None:
        if not download:
            raise UserError("CIFAR-10 not found; put cifar-10-python.tar.gz under --data-dir")
        source = _download_cifar10(data_dir)
    parts = dict(_iter_batches(source))
    train = [_unpickle_batch(parts[n], n) for n in _TRAIN_BATCHES]
    x_test, y_test = _unpickle_batch(parts[_TEST_BATCH], _TEST_BATCH)
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    log.info("CIFAR-10 loaded from %s", source)
    return x_train, y_train, x_test, y_test


def load_cifar100(data_dir: Path | None = None) -> tuple[_Arrays, tuple[str, ...]]:
    """Load CIFAR-100 (its 100 fine labels) from the official python archive, as
    ``((x_train, y_train, x_test, y_test), class_names)``; found and fetched as CIFAR-10 is."""
    what = "CIFAR-100"
    source = _find_cifar10(data_dir, what) or _download_cifar10(data_dir, what)
    parts = dict(_iter_batches(source, ("train", "test", "meta"), what))
    x_train, y_train = _unpickle_batch(parts["train"], "train", what=what, key=b"fine_labels",
                                       classes=100)  # fmt: skip
    x_test, y_test = _unpickle_batch(parts["test"], "test", what=what, key=b"fine_labels",
                                     classes=100)  # fmt: skip
    meta = _unpickle(parts["meta"], "meta", what)
    names = meta.get(b"fine_label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != 100:
        raise UserError(
            f"{source}: meta has no list of 100 fine_label_names; replace it with a fresh copy "
            "of cifar-100-python.tar.gz"
        )
    log.info("CIFAR-100 loaded from %s", source)
    decoded = tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names)
    return (x_train, y_train, x_test, y_test), decoded


# --------------------------------------------------------------------------- splits


TRAIN_IMAGES = {"synthetic": SYNTHETIC_TRAIN, "cifar10": 50_000, "cifar100": 50_000}
"""How many training images each dataset has: the most ``--subset`` can take."""
MIN_PER_SPLIT = 10
"""The fewest training, validation and test images a run may have: one per class."""


def split_sizes(subset: int, validation_split: float) -> tuple[int, int, int]:
    """(train, validation, test) image counts of ``--subset``, as :func:`load` splits it."""
    n_val = max(1, round(subset * validation_split))
    return subset - n_val, n_val, max(subset // 5, 1)


def check_subset(
    dataset: str, subset: int | None, validation_split: float, *, most: int | None = None
) -> None:
    """Refuse a ``--subset`` the dataset cannot give, or too small to train and score on.

    Args:
        most: The dataset's training images (default: a built-in's, :data:`TRAIN_IMAGES`).

    Raises:
        UserError: naming the sizes it would give and the bounds.
    """
    if most is None:
        most = TRAIN_IMAGES[dataset]
    if subset is None:
        n_val = max(1, round(most * validation_split))
        if min(most - n_val, n_val) < MIN_PER_SPLIT:
            raise UserError(
                f"validation_split {validation_split:g} leaves {most - n_val} training and "
                f"{n_val} validation images of {dataset}'s {most:,}; keep at least "
                f"{MIN_PER_SPLIT} of each"
            )
        return
    if subset > most:
        raise UserError(
            f"--subset {subset} is more than the {most:,} training images of {dataset}; "
            f"use at most {most}, or drop --subset to use them all"
        )
    if min(split_sizes(subset, validation_split)) < MIN_PER_SPLIT:
        least = next(
            n
            for n in range(subset, most + 1)
            if min(split_sizes(n, validation_split)) >= MIN_PER_SPLIT
        )
        train, val, test = split_sizes(subset, validation_split)
        raise UserError(
            f"--subset {subset} is too small: it gives {train} training, {val} validation and "
            f"{test} test images; use at least {least} (10 of each, one per class)"
        )


CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
DATA_INFO: dict[str, tuple[tuple[int, int, int], int]] = {
    "synthetic": (IMAGE_SHAPE, NUM_CLASSES),
    "cifar10": (IMAGE_SHAPE, 10),
    "cifar100": (IMAGE_SHAPE, 100),
}
"""A built-in dataset's image shape and number of classes, known without loading it."""


def load(
    dataset: str,
    *,
    seed: int = 0,
    validation_split: float = 0.2,
    subset: int | None = None,
    data_dir: Path | None = None,
    arrays: Arrays | None = None,
) -> Splits:
    """Load a dataset once and split it into train, validation and test.

    Args:
        dataset: ``synthetic``, ``cifar10``, ``cifar100``, or the name of ``arrays``.
        seed: Seeds the synthetic data and the train/validation split.
        validation_split: Fraction of the training images held out for scoring and pruning.
        subset: Use this many training images and a fifth as many test images.
        data_dir: Where the CIFAR archives are, or should be downloaded to.
        arrays: A dataset of one's own, already read (:mod:`sweep.sources`).
    """
    import numpy as np

    names: tuple[str, ...] = SYNTHETIC_CLASSES
    if arrays is not None:
        x_train, y_train, x_test, y_test = (
            arrays.x_train, arrays.y_train, arrays.x_test, arrays.y_test
        )  # fmt: skip
        names = arrays.class_names
        check_subset(dataset, subset, validation_split, most=len(x_train))
        if subset is not None:  # an own dataset may be in class order: subset a shuffle
            rng = np.random.default_rng(seed)
            keep, keep_test = rng.permutation(len(x_train)), rng.permutation(len(x_test))
            x_train, y_train = x_train[keep], y_train[keep]
            x_test, y_test = x_test[keep_test], y_test[keep_test]
    elif dataset == "synthetic":
        x_train, y_train, x_test, y_test = synthetic(
            subset or SYNTHETIC_TRAIN,
            max(subset // 5, 1) if subset else SYNTHETIC_TEST,
            seed=seed,
        )
    elif dataset == "cifar10":
        x_train, y_train, x_test, y_test = load_cifar10(data_dir)
        names = CIFAR10_CLASSES
    elif dataset == "cifar100":
        (x_train, y_train, x_test, y_test), names = load_cifar100(data_dir)
    else:
        raise UserError(f"unknown dataset {dataset!r}; use one of " + ", ".join(DATA_INFO))
    if subset is not None:
        x_train, y_train = x_train[:subset], y_train[:subset]
        x_test, y_test = x_test[: max(subset // 5, 1)], y_test[: max(subset // 5, 1)]
    order = np.random.default_rng(seed).permutation(len(x_train))
    n_val = max(1, round(len(order) * validation_split))
    val, train = order[:n_val], order[n_val:]
    return Splits(x_train[train], y_train[train], x_train[val], y_train[val], x_test, y_test, names)


# --------------------------------------------------------------------------- pipeline


@dataclass(frozen=True)
class Augmenter:
    """Random flips and one affine warp per image (rotation, shift, zoom and shear together),
    drawn with stateless random ops from a per-batch seed.

    The reports' ImageDataGenerator, and Keras's preprocessing layers, warp an image once per
    kind of transform; this warps it once in all, so an augmented epoch costs a fraction of
    theirs. Stateless draws keyed by the batch's own seed make the pipeline parallel and still
    reproducible: the same trial seed gives the same augmented batches.
    """

    rotation: float  # radians, drawn from [-rotation, rotation]
    shift: float  # fraction of the side, drawn from [-shift, shift] on each axis
    zoom: float  # scale drawn from [1 - zoom, 1 + zoom]
    shear: float  # shear factor drawn from [-shear, shear]
    flip: bool  # horizontal flip with probability 1/2

    def __call__(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Augment a float batch ``(n, h, w, c)`` in TensorFlow; ``seed`` is a shape-(2,)
        int tensor."""
        import tensorflow as tf

        n = tf.shape(images)[0]
        height, width = images.shape[1], images.shape[2]
        keys = tf.random.experimental.stateless_split(seed, 6)

        def uniform(i: int, bound: float) -> tf.Tensor:
            return tf.random.stateless_uniform([n], keys[i], -bound, bound)

        if self.flip:
            flipped = tf.random.stateless_uniform([n], keys[0]) < 0.5
            images = tf.where(flipped[:, None, None, None], tf.reverse(images, axis=[2]), images)
        transforms = self._transforms(
            tf, n, [uniform(i, b) for i, b in enumerate(self._bounds, start=1)], width, height
        )
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=images,
            transforms=transforms,
            output_shape=tf.constant([height, width], tf.int32),
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="NEAREST",
        )

    def keras_ops(self, images: Any, rng: np.random.Generator) -> Any:
        """Augment a float batch ``(n, h, w, c)`` with ``keras.ops`` on the backend's device
        (JAX, PyTorch), the draws taken from ``rng``: the same warp as :meth:`__call__`."""
        import numpy as np
        from keras import ops

        n, height, width = images.shape[0], images.shape[1], images.shape[2]
        if self.flip:
            flipped = ops.convert_to_tensor(rng.random(n) < 0.5)
            images = ops.where(flipped[:, None, None, None], ops.flip(images, axis=2), images)
        draws = [rng.uniform(-b, b, n).astype("float32") for b in self._bounds]
        transforms = self._transforms(np, n, draws, width, height).astype("float32")
        return ops.image.affine_transform(
            images,
            ops.convert_to_tensor(transforms),
            interpolation="bilinear",
            fill_mode="nearest",
            data_format="channels_last",
        )

    @property
    def _bounds(self) -> tuple[float, float, float, float, float]:
        """The ranges of the angle, shear, zoom and the two shifts, drawn in that order."""
        return self.rotation, self.shear, self.zoom, self.shift, self.shift

    @staticmethod
    def _transforms(xp: Any, n: Any, draws: list[Any], width: int, height: int) -> Any:
        """The ``(n, 8)`` projective transforms of the draws (``xp`` is TensorFlow or NumPy):
        output pixel p samples input pixel c + M (p - c) - t, where M rotates, shears and
        scales."""
        angle, shear, zoom, shift_x, shift_y = draws
        scale = 1.0 + zoom
        tx, ty = shift_x * width, shift_y * height
        cos, sin = xp.cos(angle) / scale, xp.sin(angle) / scale
        m00, m01 = cos, cos * shear - sin
        m10, m11 = sin, sin * shear + cos
        cx, cy = (width - 1) / 2, (height - 1) / 2
        zeros = xp.zeros([n])
        return xp.stack(
            [
                m00, m01, cx - m00 * cx - m01 * cy - tx,
                m10, m11, cy - m10 * cx - m11 * cy - ty,
                zeros, zeros,
            ],
            axis=1,
        )  # fmt: skip


def augmenter(aug: Augmentation, strength: float, *, seed: int = 0) -> Augmenter | None:
    """The augmentation of ``strength`` in [0, 1] times the study's ranges; None for 0."""
    if strength <= 0:
        return None
    augmenter = Augmenter(
        rotation=math.radians(strength * aug.rotation),
        shift=strength * aug.shift,
        zoom=strength * aug.zoom,
        shear=strength * aug.shear,
        flip=aug.flip,
    )
    nothing = not (augmenter.rotation or augmenter.shift or augmenter.zoom or augmenter.shear)
    return None if nothing and not augmenter.flip else augmenter


def _scale(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    import tensorflow as tf

    return tf.cast(x, tf.float32) / 255.0, y


# A worker's arrays never change: each becomes a tensor once, not once a trial (a copy of
# every training image each time). The arrays are held with
# their dataset, so an id is never reused while its entry lives; the oldest goes first.
_SLICES: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, Any]] = {}
_SLICES_KEPT = 4  # train, validation and test, and one to spare


def _slices(x: np.ndarray, y: np.ndarray) -> Any:
    """``tf.data.Dataset.from_tensor_slices((x, y))``, made once per pair of arrays."""
    import tensorflow as tf

    key = (id(x), id(y))
    if key not in _SLICES:
        while len(_SLICES) >= _SLICES_KEPT:
            del _SLICES[next(iter(_SLICES))]
        _SLICES[key] = (x, y, tf.data.Dataset.from_tensor_slices((x, y)))
    return _SLICES[key][2]


def _on_tensorflow() -> bool:
    import keras

    return bool(keras.backend.backend() == "tensorflow")


def train_dataset(
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int,
    seed: int,
    augment: Augmenter | None = None,
) -> Any:
    """Shuffled, batched, scaled (and augmented) training batches, on the Keras backend's
    own pipeline (a tf.data ``Dataset`` on TensorFlow, else a ``PyDataset``).

    The images stay uint8 until a batch is taken: they are cast, scaled and augmented batch by
    batch, ahead of the model.
    """
    if not _on_tensorflow():
        from sweep._batches import ArrayBatches  # Keras: imported where a model trains

        return ArrayBatches(x, y, batch_size=batch_size, seed=seed, augment=augment)
    import tensorflow as tf

    ds = _slices(x, y).shuffle(len(x), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    if augment is None:
        ds = ds.map(_scale, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        # Each batch draws its own seed pair, new every epoch and the same for the same trial
        # seed: parallel calls cannot change what a batch gets.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda batch, key: (augment(_scale(*batch)[0], key), batch[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(x: np.ndarray, y: np.ndarray, *, batch_size: int = 256) -> Any:
    """Batched, scaled evaluation batches in order, on the Keras backend's own pipeline."""
    if not _on_tensorflow():
        from sweep._batches import ArrayBatches

        return ArrayBatches(x, y, batch_size=batch_size)
    import tensorflow as tf

    ds = _slices(x, y).batch(batch_size)
    return ds.map(_scale, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
