"""The benchmark runner, run for real on its cheapest benchmarks."""

from __future__ import annotations

import json
import re

from conftest import REPO, run_cli


def test_the_runner_prints_one_line_each_and_writes_the_json(tmp_path) -> None:
    out = tmp_path / "results.json"
    argv = ("benchmarks", "--quick", "--only", "startup", "gpu_packing", "--out", str(out))
    done = run_cli(*argv, cwd=REPO)
    assert done.returncode == 0, done.stderr
    startup, packing = done.stdout.splitlines()
    pattern = r"startup: ratio (\d+\.\d{3}) \(floor <= 0\.25\)( MISSED)? launch --help "
    pattern += r"(\d+\.\d\d) s, import tensorflow (\d+\.\d\d) s"
    match = re.fullmatch(pattern, startup)
    assert match, startup
    assert packing == "gpu_packing: skipped (no GPU)"  # the tests run with no GPU visible

    results = {r["name"]: r for r in json.loads(out.read_text())["results"]}
    measured = results["startup"]
    assert measured["ratio"] == measured["data"]["launch_help_s"] / measured["data"][
        "import_tensorflow_s"
    ]  # fmt: skip
    assert measured["met"] == (measured["ratio"] <= 0.25)
    assert results["gpu_packing"]["ratio"] is None and results["gpu_packing"]["met"] is None


def test_the_runner_refuses_an_unknown_benchmark(tmp_path) -> None:
    done = run_cli("benchmarks", "--only", "nope", cwd=REPO)
    assert done.returncode == 2 and "invalid choice: 'nope'" in done.stderr
