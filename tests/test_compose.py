"""docker-compose.yml and the Dockerfile: Docker has no engine here, so the file is parsed and
checked for what a GPU cluster needs, and the worker's command line from it is run for real."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from conftest import REPO, run_cli

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
_VAR = re.compile(r"\$\{(\w+)(?:(:-|:\?)([^${}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, innermost first."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.groups()
        if env.get(name):
            return env[name]
        if op == ":?":
            raise KeyError(f"{name}: {arg}")
        return arg or ""

    while _VAR.search(text):
        text = _VAR.sub(one, text)
    return text


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _strings(node: Any, key: str = "") -> list[tuple[str, str]]:
    """Every string in the compose file, with the key it sits under."""
    if isinstance(node, dict):
        return [pair for k, v in node.items() for pair in _strings(v, str(k))]
    if isinstance(node, list):
        return [pair for v in node for pair in _strings(v, key)]
    return [(key, node)] if isinstance(node, str) else []


def test_postgres_has_a_volume_a_health_check_and_only_loopback(compose) -> None:
    pg = compose["services"]["postgres"]
    assert any(v.endswith(":/var/lib/postgresql/data") for v in pg["volumes"])
    assert pg["volumes"][0].split(":")[0] in compose["volumes"]  # a named volume
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    for port in pg["ports"]:
        assert interpolate(port, {}).startswith("127.0.0.1:"), port


def test_workers_reserve_nvidia_gpus_the_compose_way(compose) -> None:
    worker = compose["services"]["worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert [interpolate(d, {}) for d in device["device_ids"]] == ["0"]  # one GPU per worker
    assert [interpolate(d, {"SWEEP_GPU": "3"}) for d in device["device_ids"]] == ["3"]
    assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert worker["command"][:2] == ["sweep", "worker"]
    assert worker["environment"]["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"


def test_the_dashboard_listens_on_loopback(compose) -> None:
    from sweep.cli import command_parser

    dash = compose["services"]["dashboard"]
    assert all(p.startswith("127.0.0.1:") for p in dash["ports"])
    assert dash["command"][:2] == ["sweep", "dashboard"]
    args = command_parser("dashboard").parse_args(dash["command"][2:])
    assert (args.port, args.storage) == (8080, None)  # the URL comes from $SWEEP_STORAGE
    assert dash["environment"]["SWEEP_STORAGE"] == compose["x-storage"]["SWEEP_STORAGE"]


def test_workers_and_the_dashboard_share_the_artifact_folder(compose) -> None:
    services = compose["services"]
    for name in ("worker", "dashboard"):
        assert services[name]["environment"]["SWEEP_ARTIFACTS"] == "/artifacts"
        (mount,) = [v for v in services[name]["volumes"] if v.endswith(":/artifacts")]
        assert interpolate(mount, {}) == "artifacts:/artifacts"  # the named volume
        # Several hosts: one shared folder, mounted on each.
        assert interpolate(mount, {"SWEEP_ARTIFACTS_DIR": "/nfs/a"}) == "/nfs/a:/artifacts"
    assert "artifacts" in compose["volumes"]
    # A new named volume takes the image folder's owner: the unprivileged user must own it.
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "chown sweep /artifacts" in dockerfile and "USER sweep" in dockerfile


def test_no_credentials_are_committed(compose) -> None:
    env = {"POSTGRES_PASSWORD": "from-the-env"}
    storage = compose["services"]["worker"]["environment"]["SWEEP_STORAGE"]
    assert ":from-the-env@postgres" in interpolate(storage, env)
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        interpolate(compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"], {})
    for service in compose["services"].values():  # `ps` shows command lines to every user
        assert "://" not in " ".join(service.get("command", [])), service["command"]
    for key, value in _strings(compose):
        if "PASSWORD" in key:
            assert value.startswith("${"), key  # from the environment, never literal
        for secret in re.findall(r"://[^:/@]+:(.*?)@", value):
            assert secret.startswith("${"), value
    assert ".env" in (REPO / ".gitignore").read_text().split()
    assert ".env" in (REPO / ".dockerignore").read_text().split()


def test_the_dockerfile_installs_the_package_with_gpu_support() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"pip install '\.\[gpu\]'", text)
    assert "USER sweep" in text  # not root


def test_the_workers_command_line_runs_outside_docker(compose, tmp_path: Path) -> None:
    """The compose worker's own command, interpolated as compose would, against the real
    PostgreSQL here: it takes trials until the study's budget is spent, then exits 0."""
    (tmp_path / "tiny.toml").write_text(
        'dataset = "synthetic"\nn_trials = 2\n\n[space]\nepochs = 1\n'
        "learning_rate = [0.001, 0.002]\n\n[baseline]\nepochs = 1\n"
    )
    name = f"compose-{uuid.uuid4().hex[:8]}"
    command = [
        interpolate(c, {"SWEEP_STUDY": "tiny.toml"})
        for c in compose["services"]["worker"]["command"]
    ]
    assert command[:2] == ["sweep", "worker"]
    result = run_cli(
        "sweep", *command[1:], "--study-name", name, "--subset", "200", cwd=tmp_path,
        env={"SWEEP_STORAGE": POSTGRES},
    )  # fmt: skip
    try:
        assert result.returncode == 0, result.stderr
        trials = optuna.load_study(study_name=name, storage=POSTGRES).get_trials()
        assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    finally:
        optuna.delete_study(study_name=name, storage=POSTGRES)
