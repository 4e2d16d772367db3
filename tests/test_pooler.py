"""Workers behind PgBouncer in transaction pooling mode, with fewer server connections than
workers: the exact budget, no trial twice, no worker crashed (Debian's ``pgbouncer``,
installed by ``.ci/run``)."""

from __future__ import annotations

import uuid
from pathlib import Path

import optuna
from helpers import run_cli

from benchmarks import claims
from benchmarks.pooler import pgbouncer


def test_twelve_workers_share_four_server_connections_through_pgbouncer(
    tmp_path: Path, postgres_url: str
) -> None:
    """The claims benchmark's no-op workers (study lock, budget check, claim, heartbeat), 12
    processes, through a pooler that gives them 4 server connections between them."""
    with pgbouncer(postgres_url, pool_size=4) as pooled:
        row = claims._measure("sweep", "pgbouncer", pooled, 12, 40, tmp_path)
    assert (row.finished, row.duplicates, row.run_twice, row.crashed) == (40, 0, 0, {})


def test_a_launch_trains_through_pgbouncer(tmp_path: Path, postgres_url: str, study_file) -> None:
    study_file("tiny", n_trials=5)  # 5 one-epoch trials of the baseline family
    name = f"pooled-{uuid.uuid4().hex[:8]}"
    with pgbouncer(postgres_url, pool_size=3) as pooled:
        result = run_cli(
            "sweep.launch", "--study", "tiny.toml", "--storage", pooled, "--study-name", name,
            "--workers", "2", "--subset", "100", "--quiet", cwd=tmp_path,
        )  # fmt: skip
    try:
        assert result.returncode == 0, result.stderr
        trials = optuna.load_study(study_name=name, storage=postgres_url).get_trials()
        assert len(trials) == 5
        assert {t.state.name for t in trials} == {"COMPLETE"}
        assert len({t.user_attrs["worker"] for t in trials}) == 2
    finally:
        optuna.delete_study(study_name=name, storage=postgres_url)
