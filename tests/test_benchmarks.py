"""The benchmark runner, run for real on its cheapest benchmarks."""

from __future__ import annotations

import json
import re

import pytest
from helpers import REPO, run_cli


@pytest.mark.slow
def test_the_runner_prints_one_line_each_and_writes_the_json(tmp_path) -> None:
    out = tmp_path / "results.json"
    argv = ("benchmarks", "--quick", "--only", "startup", "gpu_packing", "--out", str(out))
    done = run_cli(*argv, cwd=REPO)
    assert done.returncode == 0, done.stderr
    startup, packing = done.stdout.splitlines()
    pattern = r"startup: ratio (\d+\.\d{3}) \(floor <= 0\.25\)( MISSED)? launch --help "
    pattern += r"(\d+\.\d\d) s, import tensorflow (\d+\.\d\d) s "
    pattern += r"\(CPU (\d+\.\d\d) s vs (\d+\.\d\d) s\)"
    match = re.fullmatch(pattern, startup)
    assert match, startup
    assert packing == "gpu_packing: skipped (no GPU)"  # the tests run with no GPU visible

    results = {r["name"]: r for r in json.loads(out.read_text())["results"]}
    measured = results["startup"]
    assert measured["ratio"] == measured["data"]["launch_help_s"] / measured["data"][
        "import_tensorflow_s"
    ]  # fmt: skip
    assert measured["met"] == (measured["ratio"] <= 0.25)
    # CPU beside wall: importing TensorFlow is mostly CPU, and takes more than --help does.
    data = measured["data"]
    assert 0 < data["launch_help_cpu_s"] < data["import_tensorflow_cpu_s"]
    assert results["gpu_packing"]["ratio"] is None and results["gpu_packing"]["met"] is None


def test_the_runner_refuses_an_unknown_benchmark(tmp_path) -> None:
    done = run_cli("benchmarks", "--only", "nope", cwd=REPO)
    assert done.returncode == 2 and "invalid choice: 'nope'" in done.stderr


def test_claims_spends_sweeps_budget_exactly_once_per_point(tmp_path, postgres_url: str) -> None:
    """The claim-path benchmark, --quick: real worker processes on both backends, sweep and
    stock Optuna side by side; what it measures is checked, not how fast it was."""
    out = tmp_path / "results.json"
    argv = ("benchmarks", "--quick", "--only", "claims", "--out", str(out))
    done = run_cli(*argv, cwd=REPO, env={"SWEEP_BENCH_POSTGRES": postgres_url})
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()
    assert re.fullmatch(
        r"claims: ratio \d+\.\d{3} \(floor >= 0\.5\)( MISSED)? PostgreSQL, .*", line
    )

    [result] = json.loads(out.read_text())["results"]
    rows = {(r["backend"], r["workers"], r["side"]): r for r in result["data"]["rows"]}
    assert set(rows) == {
        (backend, n, side)
        for backend in ("postgresql", "sqlite")
        for n in (1, 4)
        for side in ("sweep", "stock")
    } | {("pgbouncer", 8, "sweep"), ("postgresql", 8, "stock")}  # 8 through the pooler
    assert result["data"]["not_started"] == []  # 8 stock workers fit in the server
    for (backend, n, side), row in rows.items():
        assert row["budget"] == result["data"]["budget"] == 40
        assert row["trials_per_s"] == row["budget"] / row["seconds"] > 0
        assert row["slowest_claim_s"] > 0
        if side == "sweep":  # exactly the budget, each planned point once, no worker lost
            counted = (row["finished"], row["duplicates"], row["run_twice"], row["crashed"])
            assert counted == (40, 0, 0, {}), row
        else:  # MaxTrialsCallback stops a worker only once the budget is complete
            assert row["finished"] >= 40, row
        table_row = f"{backend:<10} {n:>7} {side:<5} {row['trials_per_s']:>8.1f} "
        assert table_row in done.stderr  # the table, one line per row

    sweep, stock = rows["postgresql", 4, "sweep"], rows["postgresql", 4, "stock"]
    assert result["ratio"] == sweep["trials_per_s"] / stock["trials_per_s"]
    pooled = rows["pgbouncer", 8, "sweep"]
    assert "PgBouncer: 8 workers" in line and f"{pooled['finished']} finished" in line
    assert result["met"] == (result["ratio"] >= 0.5 and sweep["trials_per_s"] >= 20)


def test_the_long_study_and_a_workers_memory_print_their_figures(
    tmp_path, postgres_url: str
) -> None:
    """Their --quick forms: the claim rate on a study of 1,000 finished trials (added in bulk)
    beside an empty one's, with the report and the dashboard's study API timed on it; and one
    real TensorFlow worker's memory over 30 trials, which it spends in two processes (it
    replaces its own after 25)."""
    out = tmp_path / "results.json"
    argv = ("benchmarks", "--quick", "--only", "long_study", "memory", "--out", str(out))
    done = run_cli(*argv, cwd=REPO, env={"SWEEP_BENCH_POSTGRES": postgres_url}, timeout=1200)
    assert done.returncode == 0, done.stderr
    long_line, memory_line = done.stdout.splitlines()
    assert re.match(r"long_study: ratio \d+\.\d{3} \(floor >= 0\.5\)", long_line)
    assert "on a study of 1,000 finished trials" in long_line

    long, memory = json.loads(out.read_text())["results"]
    assert long["data"]["filled"] == 1000
    assert long["ratio"] == long["data"]["long_rate"] / long["data"]["empty_rate"]
    assert 0 < long["data"]["report_s"] < 600 and 0 < long["data"]["dashboard_api_s"] < 600
    assert long["data"]["report_met"] == (long["data"]["report_s"] <= 30)

    assert re.match(r"memory: ratio -?\d+\.\d{3} \(floor <= 1\.0\)", memory_line)
    tf = memory["data"]["tensorflow"]
    assert (tf["warm_trial"], tf["last_trial"]) == (10, 30) or tf["warm_trial"] > 10
    assert tf["last_trial"] == 30  # the worker ran the whole study, across its replacement
    # A real TensorFlow worker's readings (the least may be one taken mid-exec, near 0).
    assert 200 < tf["rss_warm_mb"] <= tf["rss_max_mb"] and tf["rss_last_mb"] > 200
    assert memory["ratio"] == tf["mb_per_trial"]
