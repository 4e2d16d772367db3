"""The dashboard, its artifacts and notes, the report, verify and export, on one real study.

One small grid study is trained once for the module (real TensorFlow, a real SQLite file, the
real CLI in subprocesses); every test reads what that run left in the storage and the artifact
folder, and the dashboard test drives optuna-dashboard in headless Chromium.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import optuna
import pytest
from helpers import REPO, run_cli, study_toml

# A 4-point grid of the baseline, 2 epochs each.
STUDY = study_toml(
    description="dashboard test grid",
    n_trials=None,
    seed=3,
    keep_models=2,
    space={"learning_rate": [0.001, 0.003], "batch_size": [32, 64], "epochs": 2},
    sampler={"name": "grid"},
    baseline={"family": "baseline", "learning_rate": 0.001, "batch_size": 32, "epochs": 2},
)

# One process runs this module, so the study below is trained once.
pytestmark = pytest.mark.xdist_group("dashboard")

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 4-trial grid study in ``<dir>/sweep.db``, artifacts in ``sweep-artifacts``."""
    work = tmp_path_factory.mktemp("dash")
    (work / "grid.toml").write_text(STUDY)
    done = run_cli("sweep.launch", "--study", "grid.toml", "--subset", "300", "--quiet", cwd=work)
    assert done.returncode == 0, done.stderr
    return work


def _study(work: Path, name: str = "grid") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{work / 'sweep.db'}")


def _notes(study: optuna.Study) -> dict[int | None, str]:
    from optuna_dashboard._note import get_note_from_system_attrs

    attrs = study._storage.get_study_system_attrs(study._study_id)
    notes = {None: get_note_from_system_attrs(attrs, None)["body"]}
    for t in study.trials:
        notes[t.number] = get_note_from_system_attrs(attrs, t._trial_id)["body"]
    return notes


@pytest.mark.slow
def test_every_trial_has_curves_and_a_note_against_the_baseline_with_its_confusion(finished: Path):
    study = _study(finished)
    store = finished / "sweep-artifacts"
    notes = _notes(study)
    trials = study.trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    base = next(t for t in trials if t.user_attrs["is_baseline"])
    for t in trials:
        metas = optuna.artifacts.get_all_artifact_meta(t, storage=study._storage)
        assert [m.filename for m in metas] == ["learning_curves.svg"]
        for m in metas:
            assert m.mimetype == "image/svg+xml"
            curves = ElementTree.fromstring((store / m.artifact_id).read_bytes())
            assert curves.tag == "{http://www.w3.org/2000/svg}svg"
            text = " ".join(curves.itertext())
            for title in ("accuracy", "loss"):  # a chart of each, train and validation
                assert f"trial {t.number}" in text and f": {title}" in text
            assert "train" in text and "validation" in text
            assert ("baseline validation" in text) != (t.number == base.number)
        note = notes[t.number]
        assert f"## Trial {t.number}" in note
        assert f"{100 * t.value:.2f}%" in note  # this trial's validation accuracy
        # The test-set confusion matrix, a row per true class: its diagonal is the test
        # accuracy the trial recorded.
        rows = [line for line in note.splitlines() if line.startswith("| class ")]
        matrix = [[int(c) for c in r.strip("| ").split(" | ")[1:]] for r in rows]
        assert len(matrix) == 10 and all(len(r) == 10 for r in matrix)
        right = sum(matrix[i][i] for i in range(10))
        assert right / sum(map(sum, matrix)) == pytest.approx(t.user_attrs["test_accuracy"])
        if t.number != base.number:
            assert f"{100 * base.value:.2f}%" in note  # the baseline's, beside it
            delta = 100 * (t.value - base.value)
            assert f"{delta:+.2f} pp" in note
            assert t.user_attrs["delta_vs_baseline"] == pytest.approx(t.value - base.value)
    assert base.user_attrs["delta_vs_baseline"] == 0.0


@pytest.mark.slow
def test_the_study_note_is_the_leaderboard_and_the_figure_draws_the_baseline(finished: Path):
    study = _study(finished)
    note = _notes(study)[None]
    ranked = sorted(study.trials, key=lambda t: -t.value)
    table = [line for line in note.splitlines() if line.startswith("| ")][1:]
    # Best first, the baseline marked; each row shows its accuracy.
    assert [row.split("|")[1].strip().rstrip("*") for row in table] == [
        str(t.number) for t in ranked
    ]
    for row, t in zip(table, ranked, strict=True):
        assert f"{100 * t.value:.2f}%" in row
        assert ("*" in row.split("|")[1]) == t.user_attrs["is_baseline"]

    attrs = study._storage.get_study_system_attrs(study._study_id)
    chunks = sorted(
        (k for k in attrs if k.startswith("dashboard:plot_data:history-vs-baseline:")),
        key=lambda k: int(k.rsplit(":", 1)[1]),
    )
    figure = json.loads("".join(attrs[k] for k in chunks))
    base = next(t for t in study.trials if t.user_attrs["is_baseline"])
    lines = [s for s in figure["layout"]["shapes"] if s["type"] == "line"]
    assert [s["y0"] for s in lines] == [pytest.approx(base.value)]


@pytest.mark.slow
def test_only_the_best_models_are_kept_and_the_others_deleted(finished: Path):
    study = _study(finished)
    kept = study._storage.get_study_system_attrs(study._study_id)["sweep:kept_models"]
    best_two = sorted(study.trials, key=lambda t: (-t.value, t.number))[:2]
    assert [k["trial"] for k in kept] == [t.number for t in best_two]
    metas = optuna.artifacts.get_all_artifact_meta
    listed = {
        json.loads(v)["filename"]
        for k, v in study._storage.get_study_system_attrs(study._study_id).items()
        if k.startswith("artifacts:") and json.loads(v) is not None
    }
    assert listed == {f"trial-{t.number}.keras" for t in best_two}
    # On disk: each trial's learning curves and the two kept models, nothing else.
    files = {p.name for p in (finished / "sweep-artifacts").iterdir()}
    curves = {m.artifact_id for t in study.trials for m in metas(t, storage=study._storage)}
    assert files == curves | {k["artifact_id"] for k in kept}


@pytest.mark.slow
def test_export_writes_a_model_that_scores_what_its_trial_recorded(finished: Path, tmp_path):
    import keras

    from sweep import data

    out = tmp_path / "best.keras"
    done = run_cli("sweep.export", "--study", "grid", "--out", str(out), cwd=finished)
    assert done.returncode == 0, done.stderr
    study = _study(finished)
    best = study.best_trial
    assert f"trial {best.number} " in done.stdout

    splits = data.load("synthetic", seed=3, validation_split=0.2, subset=300)
    model = keras.models.load_model(out)
    predicted = model.predict(splits.x_test, verbose=0).argmax(axis=1)
    assert float(np.mean(predicted == splits.y_test)) == pytest.approx(
        best.user_attrs["test_accuracy"], abs=1e-9
    )

    kept = {k["trial"] for k in study._storage.get_study_system_attrs(study._study_id)[
        "sweep:kept_models"
    ]}  # fmt: skip
    dropped = next(t.number for t in study.trials if t.number not in kept)
    refused = run_cli(
        "sweep.export", "--study", "grid", "--trial", str(dropped), "--out",
        str(tmp_path / "other.keras"), cwd=finished,
    )  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and f"no model of trial {dropped}" in refused.stderr
    assert not (tmp_path / "other.keras").exists()


@pytest.mark.slow
def test_export_into_a_folder_that_cannot_be_written_is_one_line(finished: Path):
    done = run_cli("sweep.export", "--study", "grid", "--out", "/proc/m.keras", cwd=finished)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "--out /proc/m.keras: cannot write it" in line


@pytest.mark.slow
def test_report_writes_markdown_csv_and_plots(finished: Path, tmp_path):
    out = tmp_path / "report"
    done = run_cli("sweep.report", "--study", "grid", "--out", str(out), cwd=finished)
    assert done.returncode == 0, done.stderr
    names = {"optimization_history", "param_importances", "parallel_coordinates", "grid_heatmap"}
    for name in names:
        assert (out / f"{name}.png").read_bytes().startswith(PNG)
        assert "plotly" in (out / f"{name}.html").read_text()[:5000].lower()
    study = _study(finished)
    with (out / "trials.csv").open() as f:
        records = list(csv.DictReader(f))
    assert [int(r["number"]) for r in records] == [t.number for t in study.trials]
    assert [r["is_baseline"] for r in records].count("True") == 1
    base = next(t for t in study.trials if t.user_attrs["is_baseline"])
    for r, t in zip(records, study.trials, strict=True):
        assert float(r["val_accuracy"]) == pytest.approx(t.value)
        assert float(r["delta_val_pp"]) == pytest.approx(100 * (t.value - base.value))
    report = (out / "report.md").read_text()
    best = study.best_trial
    assert f"Best: trial {best.number}" in report or best.number == base.number
    for name in names:
        assert f"]({name}.png)" in report


@pytest.mark.slow
def test_verify_retrains_with_fresh_seeds_and_attaches_the_result(finished: Path):
    argv = ("sweep.verify", "--study", "grid", "--top", "1", "--repeats", "2")
    done = run_cli(*argv, cwd=finished)
    assert done.returncode == 0, done.stderr
    study = _study(finished)
    base = next(t for t in study.trials if t.user_attrs["is_baseline"])
    best = max((t for t in study.trials if t.number != base.number), key=lambda t: t.value)
    runs = _study(finished, "grid.verify").trials
    assert sorted((t.user_attrs["source_trial"], t.user_attrs["repeat"]) for t in runs) == [
        (n, r) for n in sorted({base.number, best.number}) for r in range(2)
    ]
    seeds = [t.user_attrs["seed"] for t in runs]
    assert len(set(seeds)) == 4
    assert not {base.user_attrs["seed"], best.user_attrs["seed"]} & set(seeds)
    for t in runs:
        assert t.state.name == "COMPLETE" and t.params == study.trials[
            t.user_attrs["source_trial"]
        ].params  # fmt: skip
    lines = done.stdout.splitlines()
    base_row = next(line for line in lines if line.split()[:1] == [f"{base.number}*"])
    best_row = next(line for line in lines if line.split()[:1] == [str(best.number)])
    assert "baseline" in base_row and "±" in base_row
    assert any(word in best_row for word in ("significant", "too few runs"))
    assert "## Verification" in _notes(study)[None]

    # Again: every repeat is on record, so nothing trains and the table is the same.
    start = time.monotonic()
    again = run_cli(*argv, cwd=finished, env={"SWEEP_LOG_LEVEL": "WARNING"})
    assert again.returncode == 0, again.stderr
    assert len(_study(finished, "grid.verify").trials) == 4
    assert again.stdout == done.stdout
    assert time.monotonic() - start < 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_in_chromium_shows_deltas_and_serves_the_curves(
    finished: Path, tmp_path, chromium: str
):
    from playwright.sync_api import sync_playwright

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "SWEEP_STORAGE"}
    server = subprocess.Popen(
        [sys.executable, "-m", "sweep.dashboard", "--port", str(port)],
        cwd=finished,
        env={**env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert server.poll() is None, server.stdout.read()
            assert time.monotonic() < deadline, "the dashboard did not start"
            time.sleep(0.2)
        study = _study(finished)
        base = next(t for t in study.trials if t.user_attrs["is_baseline"])
        (curves,) = [
            m.artifact_id
            for m in optuna.artifacts.get_all_artifact_meta(base, storage=study._storage)
            if m.filename == "learning_curves.svg"
        ]
        url = f"http://127.0.0.1:{port}/dashboard/studies/{study._study_id}"
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=chromium,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                ],
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)  # the study page, with the history against the baseline
            page.get_by_text("Validation accuracy of every trial against the baseline").wait_for()
            page.get_by_text(f"baseline {100 * base.value:.2f}%").first.wait_for()

            page.goto(f"{url}/smartSelection")  # the trial table
            header = page.get_by_text("UserAttribute delta_vs_baseline")
            header.wait_for(timeout=30_000)
            page.screenshot(path=tmp_path / "trial-table.png", full_page=True)

            page.goto(f"{url}/trials?numbers={base.number}")
            page.get_by_text(f"Trial {base.number} — the baseline").wait_for()
            image = page.locator(f"img[src$='/{curves}']")  # the learning curves' artifact
            image.wait_for()
            page.wait_for_function(  # the browser fetched and decoded it
                "el => el.complete && el.naturalWidth > 0", arg=image.element_handle()
            )
            served = page.request.get(image.evaluate("el => el.src"))
            status, kind, body = served.status, served.headers["content-type"], served.body()
            page.screenshot(path=tmp_path / "trial.png", full_page=True)
            browser.close()
        assert status == 200
        assert kind == "image/svg+xml"
        assert body.startswith(b"<svg")
        for shot in ("trial-table.png", "trial.png"):
            assert (tmp_path / shot).read_bytes().startswith(PNG)
        if keep := os.environ.get("SWEEP_SCREENSHOTS"):
            for shot in ("trial-table.png", "trial.png"):
                shutil.copy(tmp_path / shot, Path(keep) / shot)
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_confidence_intervals_and_welch_match_the_textbook() -> None:
    from sweep.verification import compare, estimate, repeat_seed

    # n = 4, mean 0.5, s = sqrt(0.02 / 3) = 0.08165, t(0.975, 3) = 3.1824: half-width 0.1299.
    est = estimate([0.4, 0.5, 0.6, 0.5])
    assert (est.n, est.mean) == (4, pytest.approx(0.5))
    assert est.half_width == pytest.approx(3.182446 * 0.0816497 / 2, rel=1e-5)
    assert estimate([0.7]).show() == "70.00%"  # one run: no interval
    # Equal variances 0.01, n = 3 each: t = 0.2 / sqrt(2 * 0.01 / 3) = 2.449, Welch's df = 4,
    # two-sided p = 0.0705.
    assert compare([0.6, 0.7, 0.8], [0.5, 0.6, 0.4]) == pytest.approx(0.070484, rel=1e-4)
    assert compare([0.9, 0.9], [0.5, 0.5]) == 0.0  # no spread, different means
    assert compare([0.6], [0.5, 0.5]) != compare([0.6], [0.5, 0.5])  # NaN: too few runs
    seeds = {repeat_seed(0, n, r) for n in range(5) for r in range(5)}
    assert len(seeds) == 25 and all(0 <= s < 2**32 for s in seeds)


def test_holms_adjusted_p_values_match_the_hand_computed_ones() -> None:
    from sweep.verification import holm

    # Sorted: 0.005 (x4) = 0.02, 0.01 (x3) = 0.03, 0.03 (x2) = 0.06, 0.04 (x1) = 0.04 -> 0.06,
    # each at least the one before it.
    got = holm([0.01, 0.04, 0.03, 0.005])
    assert got == pytest.approx([0.03, 0.06, 0.06, 0.02])
    nan_too = holm([0.02, math.nan, 0.4])  # m = 2: NaN is not a test
    assert nan_too[0] == pytest.approx(0.04) and nan_too[2] == pytest.approx(0.4)
    assert math.isnan(nan_too[1])
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1


def test_a_lead_significant_only_before_correction_is_called_so() -> None:
    """Two trials against one baseline: a raw p of 0.041 is below 0.05, but tested twice it
    is not: the table says so, and shows both p-values."""
    from sweep.records import TrialRecord
    from sweep.verification import _results

    runs = {0: [0.50, 0.52, 0.48, 0.50], 1: [0.53, 0.55, 0.51, 0.53], 2: [0.52, 0.55, 0.51, 0.53]}
    targets = [TrialRecord(n, "COMPLETE", value=v[0]) for n, v in runs.items()]
    repeats = [
        TrialRecord(-1, "COMPLETE", value=v, val_accuracy=v, test_accuracy=v, source_trial=n,
                    repeat=r)
        for n, values in runs.items()
        for r, v in enumerate(values)
    ]  # fmt: skip
    header, body = _results(repeats, targets, repeats=4, alpha=0.05)
    rows = {row[0]: dict(zip(header, row, strict=True)) for row in body}
    assert rows["1"]["p (Welch)"] == "0.0408" and rows["1"]["p (Holm)"] == "0.0815"
    assert rows["1"]["lead"] == "not significant after correction"
    assert rows["2"]["p (Welch)"] == "0.0589" and rows["2"]["p (Holm)"] == "0.0815"
    assert rows["2"]["lead"] == "not significant"


@pytest.mark.slow
def test_a_report_that_cannot_be_finished_leaves_nothing(finished: Path, tmp_path):
    """A disk that fills while the report is written (here: a process file-size limit, which
    fails a write as a full disk does) or a folder it may not write: one line, exit 2, and
    no report, no folder and no half-written file left."""
    import resource
    import subprocess
    import sys

    from helpers import REPO

    warm = run_cli("sweep.report", "--study", "grid", "--out", str(tmp_path / "ok"), cwd=finished)
    assert warm.returncode == 0, warm.stderr  # font caches and the like are made by now

    def small_files() -> None:
        # Room for SQLite's 32 KiB shared-memory file, not for the report (plotly.js alone
        # is 3.5 MB).
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

    full = tmp_path / "full" / "report"
    # As a user's shell has it: not what an in-process test of this worker set.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWEEP_")}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-m", "sweep.report", "--study", "grid", "--out", str(full)],
        cwd=finished, env=env, preexec_fn=small_files,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.strip().splitlines() if not x.startswith("INFO ")]
    assert f"--out {full}: cannot write the report (File too large)" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok"]

    under_a_file = run_cli(
        "sweep.report", "--study", "grid", "--out", "/etc/passwd/report", cwd=finished
    )
    assert under_a_file.returncode == 2 and "Traceback" not in under_a_file.stderr
    assert "--out /etc/passwd/report: cannot make the folder" in under_a_file.stderr


@pytest.mark.slow
def test_readers_that_refuse_leave_the_storages_folder_as_it_was(finished: Path, tmp_path):
    """export and the dashboard, refused after the storage was found: no lock file, no
    artifact folder, no tables made inside an empty file, no server banner."""
    import socket

    shutil.copy(finished / "sweep.db", tmp_path / "sweep.db")
    (tmp_path / "empty.db").touch()
    before = sorted(p.name for p in tmp_path.iterdir())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        refusals = [
            (("sweep.export", "--study", "grid", "--trial", "99", "--out", "m.keras"),
             "kept no model of trial 99"),
            (("sweep.dashboard", "--port", port), "Address already in use"),
            (("sweep.dashboard", "--host", "192.0.2.1", "--port", "8099"),
             "cannot listen on 192.0.2.1:8099"),
            (("sweep.dashboard", "--storage", "sqlite:///empty.db"), "no study storage at"),
        ]  # fmt: skip
        for args, needle in refusals:
            done = run_cli(*args, cwd=tmp_path)
            assert done.returncode == 2, done.stderr
            assert "Traceback" not in done.stderr and "Bottle" not in done.stderr
            assert needle in done.stderr.strip().splitlines()[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "empty.db").stat().st_size == 0
