"""One's own data and one's own model, end to end: the digits as PNGs, as an npz and as
arrays, a family of one's own with its own [space] keys against the built-in baseline, every
refusal as one line (exit code 2) that writes nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, run_cli
from own_fixtures import (
    SMALL_CNN,
    SORTED_WORDS,
    confusion_rows,
    digit_arrays,
    refused,
    trial_artifacts,
    trial_note,
    write_digit_folder,
    write_family,
    write_npz,
    write_study,
)
from PIL import Image

import sweep
from sweep import sources

FAST_BASELINE = "epochs = 2"  # the baseline's own epochs default to 10
# A sampler seed whose draws for trials 1-3 (each trial reseeds the sampler from the seed and
# its number) all pick the family of one's own: the tests below read its trials.
OWN_DRAWS = 6


@pytest.fixture(autouse=True)
def _environ_restored() -> Iterator[None]:
    """sweep.run in this process sets variables in os.environ (its placement's, the Keras
    backend's); put them back so that later CLI subprocesses start as a user's would."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def _sweep(*args: str, cwd: Path, env: dict[str, str] | None = None):
    return run_cli("sweep", *args, cwd=cwd, env=env)


def _project(root: Path, **study: object) -> tuple[Path, str]:
    """A digits folder, the small_cnn family and a study file in ``root``; the storage URL."""
    write_digit_folder(root / "digits", per_class=40)
    write_family(root)
    study.setdefault("baseline", FAST_BASELINE)
    write_study(root, **study)  # type: ignore[arg-type]
    (root / "store").mkdir()
    return root / "own.toml", f"sqlite:///{root / 'store' / 'x.db'}"


# --------------------------------------------------------------------------- 1. the CLI


_LOAD_AND_SCORE = """
import json, sys, warnings
import numpy as np
warnings.simplefilter("always")
import keras
from sweep import sources
model = keras.models.load_model(sys.argv[1])
arrays = sources.read_image_folder(sys.argv[2], image_size=(8, 8), color_mode="grayscale")
predicted = model.predict(arrays.x_test, verbose=0).argmax(axis=1)
print(json.dumps({"accuracy": float(np.mean(predicted == arrays.y_test)),
                  "optimizer": type(model.optimizer).__name__}))
"""


def _load_and_score(model: Path, folder: Path) -> tuple[dict[str, object], str]:
    """Load an exported model in a fresh process (every warning shown) and score it on the
    folder's test split as sweep makes it; returns the scores and what it wrote to stderr."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "always"}
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_AND_SCORE, str(model), str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.fixture(scope="module")
def cli_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A study of small_cnn against the baseline on a PNG folder, launched through the CLI:
    its folder, storage URL and the launch's stdout."""
    root = tmp_path_factory.mktemp("cli")
    study_file, url = _project(root, n_trials=4, sampler_seed=OWN_DRAWS)
    done = _sweep("launch", "--study", str(study_file), "--storage", url, "--quiet", cwd=root)
    assert done.returncode == 0, done.stderr
    return root, url, done.stdout


_CLI = pytest.mark.xdist_group(name="own-cli")  # one launch, shared by the tests below


@_CLI
@pytest.mark.slow
def test_a_png_folder_and_an_own_family_through_the_cli(cli_study) -> None:
    root, url, stdout = cli_study
    header = stdout.splitlines()[0].split()
    for column in ("family", "filters", "units", "Δval", "Δtest"):
        assert column in header, stdout

    results = sweep.results("own", storage=url)
    assert len(results.trials) == 4 and results.finished == 4 and len(results.rows) == 4
    assert [t.state for t in results.trials] == ["COMPLETE"] * 4
    assert [t.is_baseline for t in results.trials] == [True, False, False, False]
    artifacts = root / "store" / "x-artifacts"
    for t in results.trials:
        params = t.params.to_dict()
        own = t.params.family == "mymodels:small_cnn"
        assert own == (not t.is_baseline)
        if own:
            assert params["filters"] in (8, 16) and 16 <= params["units"] <= 64
            assert t.params["filters"] == t.params.filters == params["filters"]
        else:
            assert "filters" not in params and "units" not in params
        assert t.delta_vs_baseline is not None and t.delta_test_vs_baseline is not None
        assert t.test_accuracy is not None
        (figure,) = trial_artifacts(url, "own", t.number)
        assert figure.mimetype == "image/svg+xml" and figure.filename == "learning_curves.svg"
        assert "<svg" in (artifacts / figure.artifact_id).read_text()
        note = trial_note(url, "own", t.number)
        assert confusion_rows(note) == list(SORTED_WORDS), note
        assert "| true \\ predicted | " + " | ".join(SORTED_WORDS) + " |" in note

    # The cache holds what the folder decodes to: the split sweep made.
    arrays = sources.read_image_folder(root / "digits", image_size=(8, 8), color_mode="grayscale")
    (cached,) = (artifacts / "datasets").iterdir()
    assert cached.name == f"{sources.content_hash(arrays)}.npz"
    assert np.array_equal(sources.read_npz(cached).x_test, arrays.x_test)


def _export(root: Path, url: str, name: str, trial: int | None) -> tuple[Path, dict]:
    extra = () if trial is None else ("--trial", str(trial))
    out = root / name
    done = _sweep("export", "--study", "own", "--out", str(out), "--storage", url, *extra,
                  cwd=root)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out, json.loads(out.with_suffix(".json").read_text())


def _best_own(results: sweep.Results) -> int:
    """The best trial of the own family: among the kept models (keep_models = 3 of 4)."""
    own = [t for t in results.trials if not t.is_baseline]
    return max(own, key=lambda t: (t.value, -t.number)).number


@_CLI
@pytest.mark.slow
@pytest.mark.parametrize("which", ["best", "own"])
def test_an_exported_model_scores_what_its_trial_recorded(cli_study, which: str) -> None:
    root, url, _ = cli_study
    results = sweep.results("own", storage=url)
    trial = None if which == "best" else _best_own(results)
    out, about = _export(root, url, f"{which}.keras", trial)
    assert about["class_names"] == list(SORTED_WORDS) and about["input_shape"] == [8, 8, 1]
    record = results.trials[about["trial"]]
    assert about["params"] == record.params.to_dict()
    assert about["test_accuracy"] == record.test_accuracy
    scores, _ = _load_and_score(out, root / "digits")
    assert scores["optimizer"] == "Adam"
    assert scores["accuracy"] == pytest.approx(record.test_accuracy, abs=1e-6)


@_CLI
@pytest.mark.slow
def test_an_exported_model_loads_without_an_optimizer_warning(cli_study) -> None:
    root, url, _ = cli_study
    out, _ = _export(root, url, "quiet.keras", _best_own(sweep.results("own", storage=url)))
    _, stderr = _load_and_score(out, root / "digits")
    assert "Skipping variable loading for optimizer" not in stderr, stderr


@_CLI
@pytest.mark.slow
def test_report_and_verify_of_an_own_family(cli_study) -> None:
    root, url, _ = cli_study
    report = _sweep("report", "--study", "own", "--out", str(root / "report"),
                    "--storage", url, cwd=root)  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert any((root / "report").iterdir())
    verify = _sweep("verify", "--study", "own", "--top", "1", "--repeats", "2",
                    "--storage", url, cwd=root)  # fmt: skip
    assert verify.returncode == 0, verify.stderr
    assert "baseline" in verify.stdout


# --------------------------------------------------------------------------- 2. the Python API


@pytest.mark.slow
def test_an_npz_dataset_through_the_python_api(tmp_path: Path) -> None:
    write_npz(tmp_path / "digits.npz", **digit_arrays())
    write_family(tmp_path)
    study_file = write_study(
        tmp_path, dataset="digits.npz", baseline=FAST_BASELINE, sampler_seed=OWN_DRAWS
    )
    url = f"sqlite:///{tmp_path / 'x.db'}"
    results = sweep.run(study_file, storage=url, progress=False)
    assert isinstance(results, sweep.Results)
    assert results.budget == 3 and results.finished == 3 and results.complete
    assert [t.state for t in results.trials] == ["COMPLETE"] * 3
    assert results.baseline is results.trials[0] and results.baseline.is_baseline
    assert results.best is not None and results.best.value == max(t.value for t in results.trials)
    own = [t for t in results.trials if not t.is_baseline]
    assert all(t.params.family == "mymodels:small_cnn" and "filters" in t.params.to_dict()
               for t in own)  # fmt: skip
    table = str(results)
    assert "filters" in table.splitlines()[0] and "units" in table.splitlines()[0]
    html = results._repr_html_()
    assert "<table" in html and "filters" in html
    frame = results.to_pandas()  # one row per trial, the baseline marked, Δs in pp
    assert frame["number"].tolist() == [0, 1, 2]
    assert frame["is_baseline"].tolist() == [True, False, False]
    assert {"param_filters", "param_units", "delta_val_pp"} <= set(frame.columns)
    assert frame["val_accuracy"].tolist() == [t.value for t in results.trials]
    note = trial_note(url, "own", own[0].number)
    assert confusion_rows(note) == list(SORTED_WORDS)


@pytest.mark.slow
def test_arrays_through_the_python_api_resume_and_reach_two_workers(tmp_path: Path) -> None:
    given = digit_arrays()
    names = tuple(str(n) for n in given.pop("class_names"))
    data = (given["x_train"], given["y_train"], given["x_test"], given["y_test"])
    write_family(tmp_path)
    # The study file's dataset (a valid one: it is checked) is replaced by the arrays.
    study_file = write_study(tmp_path, dataset="synthetic", baseline=FAST_BASELINE, top="")
    url = f"sqlite:///{tmp_path / 'x.db'}"
    artifacts = tmp_path / "x-artifacts"

    first = sweep.run(study_file, storage=url, data=data, class_names=names, progress=False)
    assert first.finished == 3 and [t.state for t in first.trials] == ["COMPLETE"] * 3
    digest = sources.content_hash(sources.check_arrays(*data, names, source="test"))
    cached = artifacts / "datasets" / f"{digest}.npz"
    assert cached.is_file()
    assert sources.read_npz(cached).class_names == names
    assert confusion_rows(trial_note(url, "own", 1)) == list(names)

    # The same study again, one more trial: it resumes, no second baseline.
    again = sweep.run(study_file, storage=url, data=data, class_names=names, n_trials=4,
                      progress=False)  # fmt: skip
    assert len(again.trials) == 4 and again.finished == 4
    assert sum(t.is_baseline for t in again.trials) == 1
    assert [t.number for t in again.trials[:3]] == [0, 1, 2]
    assert again.trials[0].value == first.trials[0].value

    # Two worker processes read the arrays from the artifact folder; the budget is exact.
    two = sweep.run(study_file, storage=url, data=data, class_names=names, workers=2,
                    n_trials=6, study_name="two", progress=False)  # fmt: skip
    assert two.failed_workers == () and not two.interrupted
    stored = sweep.results("two", storage=url)  # read afresh
    assert stored.finished == 6 and len(stored.trials) == 6
    assert [t.state for t in stored.trials] == ["COMPLETE"] * 6
    workers = {t.worker for t in stored.trials if t.reused_from is None}
    assert all(w and not w.endswith(f":{os.getpid()}") for w in workers)  # not this process
    assert len(workers) == 2, workers  # both workers trained on the arrays
    # What sweep.run returned must be the same (observed: stale after an in-process run in
    # this process: finished 0, one WAITING trial; see the report).
    assert two.finished == 6 and [t.state for t in two.trials] == ["COMPLETE"] * 6, two.trials


# --------------------------------------------------------------------------- 3. data that differs


@pytest.mark.slow
def test_a_worker_whose_images_differ_is_refused_unless_the_cache_serves(tmp_path: Path) -> None:
    study_file, url = _project(tmp_path, n_trials=2)
    done = _sweep("launch", "--study", str(study_file), "--storage", url, "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    cache = tmp_path / "store" / "x-artifacts" / "datasets"
    (cached,) = cache.iterdir()
    kept = cached.read_bytes()

    # One image changes: a worker that must decode the folder finds other data.
    image = next(iter(sorted((tmp_path / "digits" / "three").iterdir())))
    pixels = np.asarray(Image.open(image)).copy()
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(image)
    cached.unlink()
    cache.rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    worker = ("worker", "--study", "own", "--storage", url, "--n-trials", "3")
    line = refused(_sweep(*worker, cwd=elsewhere), "differs")
    assert "digits" in line
    assert len(sweep.results("own", storage=url).trials) == 2

    # With the study's copy back in the artifact folder the worker does not decode the
    # folder (which would differ) and runs the trial the larger budget leaves.
    cache.mkdir()
    cached.write_bytes(kept)
    ran = _sweep(*worker, cwd=elsewhere)
    assert ran.returncode == 0, ran.stderr
    after = sweep.results("own", storage=url)
    assert [t.state for t in after.trials] == ["COMPLETE"] * 3


# --------------------------------------------------------------------------- 4. bad input


def _one_class(root: Path) -> None:
    write_digit_folder(root / "full", per_class=3)
    (root / "digits" / "zero").mkdir(parents=True)
    for f in (root / "full" / "zero").iterdir():
        f.rename(root / "digits" / "zero" / f.name)


def _empty_class(root: Path) -> None:
    write_digit_folder(root / "digits", per_class=3)
    (root / "digits" / "empty").mkdir()


def _not_an_image(root: Path) -> None:
    write_digit_folder(root / "digits", per_class=3)
    (root / "digits" / "two" / "x.png").write_text("not a picture")


def _colour_images(root: Path) -> None:
    write_digit_folder(root / "digits", per_class=3)
    pixels = np.zeros((8, 8, 3), dtype=np.uint8)
    pixels[..., 0] = 200
    Image.fromarray(pixels).save(root / "digits" / "one" / "red.png")


def _npz(**changes: object) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        arrays = digit_arrays(per_class=3, test_per_class=1)
        arrays.update(changes)
        write_npz(root / "digits.npz", **{k: v for k, v in arrays.items() if v is not None})

    return make


def _builder(source: str) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        write_digit_folder(root / "digits", per_class=8)
        (root / "mymodels.py").write_text(textwrap.dedent(source))

    return make


_GOOD = _builder(SMALL_CNN)
_RAISES = """
def small_cnn(params, input_shape, num_classes):
    raise RuntimeError("my builder is broken")
"""
_DICT = """
def small_cnn(params, input_shape, num_classes):
    params["filters"], params.get("units")
    return {"not": "a model"}
"""
_NARROW = SMALL_CNN.replace("Dense(num_classes", "Dense(5")
_NO_ACCURACY = SMALL_CNN.replace(
    "    return keras.Model(inputs, outputs)\n",
    "    model = keras.Model(inputs, outputs)\n"
    '    model.compile("adam", "sparse_categorical_crossentropy",\n'
    '                  metrics=["sparse_categorical_accuracy"])\n'
    "    return model\n",
)

# (id, set up the project, study overrides, what the one line names)
BAD = [
    ("one-class", _one_class, {}, ("1 class folder", "at least 2")),
    ("empty-class", _empty_class, {}, ("empty", "holds no images", "add images")),
    ("not-an-image", _not_an_image, {}, ("x.png", "not an image")),
    ("colour-as-grayscale", _colour_images, {}, ("red.png", "in colour", "color_mode")),
    ("npz-no-y_test", _npz(y_test=None), {"dataset": "digits.npz"}, ("lacks y_test",)),
    (
        "npz-label-out-of-range",
        _npz(class_names=np.array(SORTED_WORDS[:9]), y_train=np.arange(30) % 10),
        {"dataset": "digits.npz"},
        ("y_train", "label 9", "9 class names"),
    ),
    (
        "npz-lengths-differ",
        _npz(y_train=np.arange(29) % 10),
        {"dataset": "digits.npz"},
        ("30 images", "29 labels"),
    ),
    (
        "npz-wrong-rank",
        _npz(x_train=np.zeros((30, 8), np.uint8)),
        {"dataset": "digits.npz"},
        ("x_train has shape (30, 8)",),
    ),
    (
        "module-not-importable",
        _GOOD,
        {"families": ("baseline", "nomodule:small_cnn")},
        ("nomodule", "cannot import"),
    ),
    ("not-callable", _builder("small_cnn = 3\n"), {}, ("small_cnn", "not callable")),
    ("builder-raises", _builder(_RAISES), {}, ("mymodels:small_cnn", "my builder is broken")),
    ("builder-returns-dict", _builder(_DICT), {}, ("dict", "keras.Model")),
    ("wrong-width", _builder(_NARROW), {}, ("5 values", "10 classes")),
    ("compiled-without-accuracy", _builder(_NO_ACCURACY), {}, ("metrics=['accuracy']",)),
    (
        "own-key-named-as-a-method",
        _GOOD,
        {"space": "filters = [8, 16]\nunits = 32\nget = [1, 2]"},
        ("space.get", "rename it"),
    ),
    (
        "key-no-family-reads",
        _GOOD,
        {"space": "filters = [8, 16]\nunits = 32\nunused = [1, 2]"},
        ("space.unused", "no family reads it"),
    ),
    (
        "own-key-all-builtin",
        _GOOD,
        {"families": ("baseline", "dropout")},
        ("filters", "family of your own"),
    ),
]


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "launch"])
@pytest.mark.parametrize(
    ("setup", "study", "needles"),
    [pytest.param(*b[1:], id=b[0]) for b in BAD],
)
def test_bad_own_input_is_one_line_and_writes_nothing(
    tmp_path: Path, setup, study: dict, needles: tuple[str, ...], dry_run: bool, cli
) -> None:
    setup(tmp_path)
    write_study(tmp_path, **study)
    store = tmp_path / "store"
    store.mkdir()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    args = ["launch", "--study", "own.toml", "--storage", f"sqlite:///{store / 'x.db'}"]
    refused(
        cli("sweep", *args, *(["--dry-run"] if dry_run else ["--quiet"]), cwd=tmp_path), *needles
    )
    assert not any(store.iterdir())  # no database, no lock, no artifact folder
    after = sorted(
        p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "__pycache__" not in p.parts
    )
    assert after == [p for p in before if "__pycache__" not in p.parts]


# --------------------------------------------------------------------------- 5. one trial fails


_FAILS_ABOVE_8 = SMALL_CNN.replace(
    "    inputs = keras.Input(input_shape)\n",
    '    if params["filters"] > 8:\n'
    '        raise ValueError("more than eight filters are not allowed here")\n'
    "    inputs = keras.Input(input_shape)\n",
)


@pytest.mark.slow
def test_a_builder_that_fails_in_one_trial_fails_only_that_trial(tmp_path: Path) -> None:
    study_file, url = _project(tmp_path, n_trials=5, space="filters = [8, 16, 32]\nunits = 32")
    write_family(tmp_path, source=_FAILS_ABOVE_8)
    done = _sweep("launch", "--study", str(study_file), "--storage", url, "--quiet", cwd=tmp_path)
    trials = sweep.results("own", storage=url).trials
    # Observed: a builder's failure is a TrialFailure, recorded and told to Optuna as PRUNED.
    failed = [t for t in trials if t.state in ("FAIL", "PRUNED")]
    complete = [t for t in trials if t.state == "COMPLETE"]
    assert failed, [(t.number, t.params.to_dict()) for t in trials]
    for t in failed:
        assert t.params["filters"] > 8
        assert "more than eight filters are not allowed here" in (t.failure or ""), t.failure
    assert all(t.params.family == "baseline" or t.params["filters"] == 8 for t in complete)
    assert complete and complete[0].is_baseline
    assert done.returncode == 0, done.stderr  # observed: failed trials are recorded, exit 0
    assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------- 6. entry points


_TINY = """
import keras
from keras import layers


def build(params, input_shape, num_classes):
    inputs = keras.Input(input_shape)
    x = layers.Flatten()(inputs)
    x = layers.Dense(params["width"], activation="relu")(x)
    return keras.Model(inputs, layers.Dense(num_classes, activation="softmax")(x))
"""


@pytest.mark.slow
def test_a_family_registered_as_an_entry_point(tmp_path: Path, monkeypatch) -> None:
    site = tmp_path / "site"
    write_family(site, "myfam", _TINY)
    info = site / "myfam-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: myfam\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[sweep.families]\ntiny = myfam:build\n")
    project = tmp_path / "project"
    write_digit_folder(project / "digits", per_class=10)
    write_study(project, families=("tiny",), space="width = [8, 16]",
                baseline='family = "tiny"\nwidth = 8\nepochs = 1', epochs=1)  # fmt: skip
    url = f"sqlite:///{project / 'x.db'}"
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), str(site)])}
    done = _sweep("launch", "--study", "own.toml", "--storage", url, "--quiet", cwd=project,
                  env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    monkeypatch.syspath_prepend(str(site))  # reading the study back checks the family's name
    trials = sweep.results("own", storage=url).trials  # needs the entry point here too
    assert [t.state for t in trials] == ["COMPLETE"] * 3
    assert {t.params.family for t in trials} == {"tiny"}
    assert all(t.params["width"] in (8, 16) for t in trials)
    assert "width" in done.stdout.splitlines()[0]

    without = _sweep("launch", "--study", "own.toml", "--storage", url, "--dry-run", cwd=project)
    refused(without, "tiny")


@pytest.mark.slow
def test_a_worker_that_cannot_import_the_family_is_refused_not_failed(tmp_path: Path) -> None:
    """The study's family lives beside its study file; a worker on a host without that file
    stops in one line before it takes a trial, instead of failing the budget away."""
    study_file, url = _project(tmp_path, n_trials=2)
    done = _sweep("launch", "--study", str(study_file), "--storage", url, "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (tmp_path / "mymodels.py").rename(tmp_path / "moved.py")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    worker = ("worker", "--study", "own", "--storage", url, "--n-trials", "4")
    refused(_sweep(*worker, cwd=elsewhere), "mymodels:small_cnn", "cannot import mymodels")
    assert [t.state for t in sweep.results("own", storage=url).trials] == ["COMPLETE"] * 2


@pytest.mark.slow
def test_an_own_familys_baseline_is_never_taken_from_another_study(tmp_path: Path) -> None:
    """Two studies whose baseline is a family of one's own of the same name: the second
    trains its own, since the code behind the name may differ."""
    study_file, url = _project(
        tmp_path,
        n_trials=1,
        baseline='family = "mymodels:small_cnn"\nepochs = 2\nfilters = 8\nunits = 32',
    )
    for name in ("first", "second"):
        args = ("launch", "--study", str(study_file), "--study-name", name, "--storage", url)
        done = _sweep(*args, "--quiet", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    (second,) = sweep.results("second", storage=url).trials
    assert second.is_baseline and second.reused_from is None and second.train_seconds > 0


@pytest.mark.slow
def test_the_same_images_at_another_path_resume_the_study(tmp_path: Path) -> None:
    """Another checkout, another mount: the study's data is its content, not its path. A
    launch from a copy of the project resumes the study, and a worker given the copy's folder
    with --dataset decodes it (no cached copy to read) and runs."""
    first = tmp_path / "first"
    study_file, url = _project(first, n_trials=2)
    done = _sweep("launch", "--study", str(study_file), "--storage", url, "--quiet", cwd=first)
    assert done.returncode == 0, done.stderr
    second = tmp_path / "second"
    second.mkdir()
    for name in ("digits", "mymodels.py", "own.toml"):
        (shutil.copytree if name == "digits" else shutil.copy)(first / name, second / name)
    cache = first / "store" / "x-artifacts" / "datasets"
    shutil.rmtree(cache)
    again = ("launch", "--study", str(second / "own.toml"), "--storage", url, "--n-trials", "3")
    done = _sweep(*again, "--quiet", cwd=second)
    assert done.returncode == 0, done.stderr
    shutil.rmtree(cache)
    worker = ("worker", "--study", "own", "--storage", url, "--n-trials", "4")
    done = _sweep(*worker, "--dataset", str(second / "digits"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    trials = sweep.results("own", storage=url).trials
    assert [t.state for t in trials] == ["COMPLETE"] * 4
    assert sum(t.is_baseline for t in trials) == 1
