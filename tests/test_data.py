"""Both datasets through the real loading code, the restricted unpickler, the pipeline."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from helpers import RunsCode, make_cifar_archive, make_cifar_dir, write_cifar_batch

from sweep import data
from sweep.config import Augmentation
from sweep.errors import UserError


def test_synthetic_is_cifar_shaped_and_deterministic() -> None:
    a = data.synthetic(200, 50, seed=3)
    b = data.synthetic(200, 50, seed=3)
    c = data.synthetic(200, 50, seed=4)
    x_train, y_train, x_test, _y_test = a
    assert x_train.shape == (200, 32, 32, 3) and x_train.dtype == np.uint8
    assert x_test.shape == (50, 32, 32, 3)
    assert set(np.unique(y_train)) == set(range(10))
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


def test_load_splits_validation_from_training_data() -> None:
    splits = data.load("synthetic", seed=0, validation_split=0.2, subset=500)
    assert len(splits.x_train) == 400 and len(splits.x_val) == 100
    assert len(splits.x_test) == 100  # N/5
    # The validation images are training images, not test images.
    train_rows = {row.tobytes() for row in splits.x_train}
    assert not any(row.tobytes() in train_rows for row in splits.x_val)


def _check_tiny_cifar(splits: data.Splits) -> None:
    assert splits.x_train.dtype == np.uint8 and splits.x_train.shape[1:] == (32, 32, 3)
    assert len(splits.x_train) + len(splits.x_val) == 100  # five batches of 20
    assert len(splits.x_test) == 20


def test_cifar10_from_the_official_tar_gz(cifar_archive: Path) -> None:
    _check_tiny_cifar(data.load("cifar10", data_dir=cifar_archive.parent))


def test_cifar10_from_the_extracted_folder(tmp_path: Path) -> None:
    make_cifar_dir(tmp_path)
    _check_tiny_cifar(data.load("cifar10", data_dir=tmp_path))


def test_cifar10_found_through_the_environment(
    cifar_archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWEEP_DATA_DIR", str(cifar_archive.parent))
    _check_tiny_cifar(data.load("cifar10"))


def test_cifar10_rows_become_nhwc_pixels(tmp_path: Path) -> None:
    folder = make_cifar_dir(tmp_path)
    image = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    image[0, 0, 1, 2] = 200  # row 0, column 1, blue
    write_cifar_batch(folder / "test_batch", image, [7], b"test")
    _x_train, _y_train, x_test, y_test = data.load_cifar10(tmp_path)
    assert x_test[0, 0, 1, 2] == 200 and x_test.sum() == 200
    assert y_test.tolist() == [7]


def test_a_pickle_that_runs_code_is_refused_and_does_not_run(tmp_path: Path) -> None:
    folder = make_cifar_dir(tmp_path)
    marker = tmp_path / "pwned"
    (folder / "data_batch_3").write_bytes(pickle.dumps(RunsCode(marker), protocol=2))
    with pytest.raises(UserError, match=r"data_batch_3.*refused global"):
        data.load_cifar10(tmp_path)
    assert not marker.exists()


def test_corrupt_batches_and_archives_are_user_errors(tmp_path: Path) -> None:
    folder = make_cifar_dir(tmp_path / "a")
    (folder / "test_batch").write_bytes(b"\x80\x02garbage")
    with pytest.raises(UserError, match="test_batch"):
        data.load_cifar10(tmp_path / "a")

    archive = make_cifar_archive(tmp_path / "b")
    archive.write_bytes(archive.read_bytes()[:300])  # truncated download
    with pytest.raises(UserError, match="truncated or not a gzip tar"):
        data.load_cifar10(tmp_path / "b")

    folder = make_cifar_dir(tmp_path / "c")
    images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    write_cifar_batch(folder / "data_batch_1", images, [1, 12], b"bad")
    with pytest.raises(UserError, match="labels must be integers 0-9"):
        data.load_cifar10(tmp_path / "c")


def test_an_archive_without_the_batches_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("hello")
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "x.txt", arcname="x.txt")
    with pytest.raises(UserError, match="not the official"):
        data.load_cifar10(tmp_path)


def test_pipeline_scales_to_unit_range_and_prefetches() -> None:
    x, y, _, _ = data.synthetic(64, 10, seed=0)
    ds = data.train_dataset(x, y, batch_size=16, seed=0)
    images, _labels = next(iter(ds))
    assert images.dtype.name == "float32" and tuple(images.shape) == (16, 32, 32, 3)
    assert float(images.numpy().min()) >= 0.0 and float(images.numpy().max()) <= 1.0
    assert "Prefetch" in type(ds).__name__


def test_augmentation_strength_scales_the_ranges() -> None:
    assert data.augmenter(Augmentation(), 0.0, seed=0) is None
    half = data.augmenter(Augmentation(rotation=20, shift=0.2, zoom=0.2), 0.5, seed=0)
    assert half is not None
    assert half.rotation == pytest.approx(np.radians(10))
    assert (half.shift, half.zoom, half.shear, half.flip) == pytest.approx((0.1, 0.1, 0, True))

    x, y, _, _ = data.synthetic(32, 10, seed=0)
    plain = next(iter(data.train_dataset(x, y, batch_size=32, seed=1)))[0].numpy()
    moved = next(iter(data.train_dataset(x, y, batch_size=32, seed=1, augment=half)))[0]
    assert not np.allclose(plain, moved.numpy())


def test_exp4_augmentation_has_no_zoom() -> None:
    exp4 = data.augmenter(Augmentation(rotation=15, shift=0.1, zoom=0.0), 1.0, seed=0)
    assert (exp4.zoom, exp4.shear) == (0.0, 0.0)
    assert exp4.rotation == pytest.approx(np.radians(15)) and exp4.shift == 0.1


def test_a_flip_only_augmenter_mirrors_about_half_the_images_exactly() -> None:
    import tensorflow as tf

    x, _, _, _ = data.synthetic(64, 10, seed=0)
    images = tf.constant(x, tf.float32) / 255
    flip = data.Augmenter(rotation=0, shift=0, zoom=0, shear=0, flip=True)
    out = flip(images, tf.constant([1, 2], tf.int64)).numpy()
    same = [np.array_equal(o, i) for o, i in zip(out, images.numpy(), strict=True)]
    mirrored = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images.numpy(), strict=True)]
    assert all(a != b for a, b in zip(same, mirrored, strict=True))  # each one or the other
    assert 16 <= sum(mirrored) <= 48


def test_augmented_batches_are_reproducible_and_new_each_epoch() -> None:
    x, y, _, _ = data.synthetic(64, 10, seed=0)
    aug = data.augmenter(Augmentation(rotation=20, shift=0.2, zoom=0.2), 1.0)

    def epochs(seed: int) -> list[np.ndarray]:
        ds = data.train_dataset(x, y, batch_size=64, seed=seed, augment=aug)
        return [np.sort(next(iter(ds))[0].numpy().reshape(64, -1), axis=0) for _ in range(2)]

    first, again, other = epochs(5), epochs(5), epochs(6)
    np.testing.assert_array_equal(first[0], again[0])  # the same seed, the same batches
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.allclose(first[0], first[1])  # a new epoch, new transforms
    assert not np.allclose(first[0], other[0])


def test_a_workers_arrays_become_tensors_once_and_each_trial_still_gets_its_own_order() -> None:
    x, y, _, _ = data.synthetic(64, 10, seed=0)
    first = data.train_dataset(x, y, batch_size=64, seed=1)
    assert data._slices(x, y) is data._slices(x, y)  # the trials share one copy

    def order(ds: object) -> np.ndarray:
        return np.concatenate([labels.numpy() for _, labels in ds])  # type: ignore[attr-defined]

    # The shared copy changes nothing a trial sees: the same seed, the same batches, as from
    # arrays never seen before; another seed, another order.
    fresh_x, fresh_y = x.copy(), y.copy()
    np.testing.assert_array_equal(
        order(first), order(data.train_dataset(fresh_x, fresh_y, batch_size=64, seed=1))
    )
    assert not np.array_equal(order(first), order(data.train_dataset(x, y, batch_size=64, seed=2)))
    evaluated = data.eval_dataset(x, y, batch_size=16)
    np.testing.assert_array_equal(order(evaluated), y)  # in order, whole
    for _ in range(data._SLICES_KEPT + 1):  # bounded: the oldest arrays are let go
        data.eval_dataset(x.copy(), y.copy())
    assert len(data._SLICES) == data._SLICES_KEPT


def _cifar100_archive(root: Path, *, n_train: int = 120, n_test: int = 40) -> Path:
    """A tiny ``cifar-100-python.tar.gz`` in the official layout: ``train``, ``test`` and
    ``meta`` pickles with bytes keys, fine and coarse labels, channel-major rows."""
    import pickle
    import tarfile

    rng = np.random.default_rng(3)
    folder = root / "staging" / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        fine = [i % 100 for i in range(n)]
        batch = {
            b"filenames": [b"img_%d.png" % i for i in range(n)],
            b"batch_label": name.encode(),
            b"fine_labels": fine,
            b"coarse_labels": [f // 5 for f in fine],
            b"data": np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(n, 3072)),
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {
        b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
    }
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    archive = root / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-100-python")
    return archive


def test_cifar100_loads_from_its_official_archive_with_its_fine_labels(tmp_path: Path) -> None:
    archive = _cifar100_archive(tmp_path)
    splits = data.load("cifar100", data_dir=archive.parent, validation_split=0.25)
    assert splits.num_classes == 100
    assert splits.class_names[:3] == ("fine0", "fine1", "fine2")
    assert splits.input_shape == (32, 32, 3)
    assert len(splits.x_train) + len(splits.x_val) == 120 and len(splits.x_test) == 40
    # The fine labels, not the coarse ones: test image i is labelled i % 100.
    assert splits.y_test.tolist() == [i % 100 for i in range(40)]
    assert int(max(splits.y_train.max(), splits.y_val.max())) == 99


def test_a_cifar100_archive_without_its_meta_is_refused_in_one_line(tmp_path: Path) -> None:
    import tarfile

    archive = _cifar100_archive(tmp_path)
    broken = tmp_path / "broken" / "cifar-100-python.tar.gz"
    broken.parent.mkdir()
    with tarfile.open(archive) as src, tarfile.open(broken, "w:gz") as dst:
        for member in src.getmembers():
            if not member.name.endswith("/meta"):
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    with pytest.raises(UserError) as err:
        data.load("cifar100", data_dir=broken.parent)
    assert "cifar-100-python/meta" in str(err.value) and "\n" not in str(err.value)
