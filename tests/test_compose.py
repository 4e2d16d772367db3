"""docker-compose.yml and the Dockerfile, read and run for real.

The file's own checks need nothing. The rest drive a real Docker engine with the Compose found
here (Debian's docker-compose 1.29 or Compose v2; SWEEP_TEST_COMPOSE picks one, for example
"docker compose"): the CPU image is built, then PostgreSQL, the dashboard and CPU workers run
small grid studies (the Exp 3 grid on 200 synthetic images, one epoch: ~2 s a trial) under
project names and host ports of their own, so they never meet a user's stack or the host's
PostgreSQL. A second project stands in for a second host. CI starts the engine with
.ci/docker-engine.sh; where no engine answers, these tests fail and say so.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import optuna
import pytest
import sqlalchemy
import yaml
from helpers import REPO, run_cli

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
_VAR = re.compile(r"\$\{(\w+)(?:(:-|:\?)([^${}]*))?\}")
IMAGE = "sweep:compose-test"  # kept between runs: a rebuild after a code change takes seconds
POOLER_IMAGE = "sweep-pgbouncer:compose-test"
NO_ENGINE = (
    "no Docker engine answers (`docker info` fails): start one, as root with "
    ".ci/docker-engine.sh (CI does), or deselect with -k 'not stack'"
)
NO_COMPOSE = "no Compose found: install docker-compose (1.28 or later) or Compose v2"
# Server-side TCP keepalives each worker asks PostgreSQL for (sweep/storage.py): a vanished
# host's sessions are dropped after 20 s of silence and 3 unanswered probes 10 s apart.
KEEPALIVE_S = 20 + 3 * 10

# One xdist process runs this module: its stack is built once, and its workers and the rest
# of the suite share the 2 cores instead of two stacks fighting over them.
pytestmark = pytest.mark.xdist_group("compose")

T = TypeVar("T")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} (not nested: Compose 1.29 cannot)."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.groups()
        if env.get(name):
            return env[name]
        if op == ":?":
            raise KeyError(f"{name}: {arg}")
        return arg or ""

    return _VAR.sub(one, text)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def gpu() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.override.yml").read_text())


def _strings(node: Any, key: str = "") -> list[tuple[str, str]]:
    """Every string in a compose file, with the key it sits under."""
    if isinstance(node, dict):
        return [pair for k, v in node.items() for pair in _strings(v, str(k))]
    if isinstance(node, list):
        return [pair for v in node for pair in _strings(v, key)]
    return [(key, node)] if isinstance(node, str) else []


def _worker_argv(compose: dict[str, Any], env: dict[str, str]) -> list[str]:
    return shlex.split(interpolate(compose["services"]["worker"]["command"], env))


# --- The files ------------------------------------------------------------------------------


def test_postgres_has_a_volume_a_health_check_and_only_loopback(compose) -> None:
    pg = compose["services"]["postgres"]
    assert any(v.endswith(":/var/lib/postgresql/data") for v in pg["volumes"])
    assert pg["volumes"][0].split(":")[0] in compose["volumes"]  # a named volume
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    (port,) = pg["ports"]
    assert interpolate(port, {}) == "127.0.0.1:5432:5432"
    # Another host port where the host runs a PostgreSQL of its own; a private address for
    # workers on other hosts.
    moved = {"POSTGRES_PORT": "15432", "POSTGRES_BIND": "10.0.0.5"}
    assert interpolate(port, moved) == "10.0.0.5:15432:5432"


def test_workers_reach_postgres_through_pgbouncer_in_transaction_pooling(compose) -> None:
    services = compose["services"]
    pooler = services["pgbouncer"]
    assert pooler["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert "pg_isready" in " ".join(pooler["healthcheck"]["test"])
    (port,) = pooler["ports"]
    assert interpolate(port, {}) == "127.0.0.1:6432:6432"  # loopback, as PostgreSQL's
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        interpolate(pooler["environment"]["POSTGRES_PASSWORD"], {})
    entrypoint = (REPO / pooler["build"] / "entrypoint.sh").read_text()
    assert "pool_mode = transaction" in entrypoint
    assert "ignore_startup_parameters = options" in entrypoint  # sweep's keepalive options
    # The dashboard, one client, reads PostgreSQL directly.
    dashboard = services["dashboard"]["environment"]["SWEEP_STORAGE"]
    assert dashboard == "postgresql+psycopg://sweep@postgres:5432/sweep"


def test_the_worker_runs_anywhere_and_the_override_makes_it_a_gpu_worker(compose, gpu) -> None:
    worker = compose["services"]["worker"]
    assert "deploy" not in worker  # no device reservation: starts on a host without GPUs
    assert interpolate(worker["build"]["args"]["EXTRAS"], {}) == ""  # CPU TensorFlow, no CUDA
    assert worker["depends_on"] == {"pgbouncer": {"condition": "service_healthy"}}

    (device,) = gpu["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert device["count"] == "all" and "device_ids" not in device  # every GPU of the host
    extras = gpu["services"]["worker"]["build"]["args"]["EXTRAS"]
    assert interpolate(extras, {}) == "gpu"  # TensorFlow with its CUDA libraries
    assert interpolate(extras, {"SWEEP_EXTRAS": "jax-gpu"}) == "jax-gpu"  # or another backend
    assert gpu["services"]["worker"]["environment"]["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert gpu["services"]["worker"]["environment"]["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    # nvidia-smi in the container, where the launcher lists the GPUs.
    assert "utility" in gpu["services"]["worker"]["environment"]["NVIDIA_DRIVER_CAPABILITIES"]
    assert set(gpu["services"]) == {"worker"}  # it only makes the worker a GPU host's


def _workers_per_gpu(command: str | list[str], gpus: list[str]) -> list[str | None]:
    """The GPU of each worker the GPU worker's command starts on a host with ``gpus``."""
    from sweep import devices
    from sweep.cli import command_parser

    argv = shlex.split(command) if isinstance(command, str) else command
    assert argv[:2] == ["sweep", "launch"]
    args = command_parser("launch").parse_args(argv[2:])
    chosen = devices.parse_gpus(args.gpus, gpus)
    placements = devices.plan(workers=1, gpus=chosen, per_gpu=args.trials_per_gpu)
    return [p.gpu for p in placements]


def test_the_gpu_host_runs_k_workers_on_each_of_its_gpus(gpu) -> None:
    command = gpu["services"]["worker"]["command"]
    # The default: one worker on each GPU; SWEEP_TRIALS_PER_GPU packs more onto each.
    assert _workers_per_gpu(interpolate(command, {}), ["0", "1"]) == ["0", "1"]
    packed = interpolate(command, {"SWEEP_TRIALS_PER_GPU": "3", "SWEEP_STUDY": "exp3"})
    assert _workers_per_gpu(packed, ["0", "1"]) == ["0", "0", "0", "1", "1", "1"]
    assert shlex.split(packed)[:4] == ["sweep", "launch", "--study", "exp3"]
    # Some of them only; and the workers' own options, as on the CPU host.
    some = interpolate(command, {"SWEEP_GPUS": "1,3", "SWEEP_WORKER_ARGS": "--subset 500"})
    assert _workers_per_gpu(some, ["0", "1", "2", "3"]) == ["1", "3"]
    assert shlex.split(some)[-2:] == ["--subset", "500"]


def test_the_workers_command_takes_a_study_and_options(compose) -> None:
    from sweep.cli import command_parser

    assert _worker_argv(compose, {}) == ["sweep", "worker", "--study", "search"]
    argv = _worker_argv(compose, {"SWEEP_STUDY": "exp3", "SWEEP_WORKER_ARGS": "--subset 500"})
    assert argv == ["sweep", "worker", "--study", "exp3", "--subset", "500"]
    args = command_parser("worker").parse_args(argv[2:])
    assert (args.study, args.subset, args.storage) == ("exp3", 500, None)


def test_the_dashboard_listens_on_loopback(compose) -> None:
    from sweep.cli import command_parser

    dash = compose["services"]["dashboard"]
    (port,) = dash["ports"]
    assert interpolate(port, {}) == "127.0.0.1:8080:8080"
    assert interpolate(port, {"DASHBOARD_PORT": "18080"}) == "127.0.0.1:18080:8080"
    assert dash["command"][:2] == ["sweep", "dashboard"]
    args = command_parser("dashboard").parse_args(dash["command"][2:])
    assert (args.port, args.storage) == (8080, None)  # the URL comes from $SWEEP_STORAGE
    # Straight to PostgreSQL, where the workers go through PgBouncer; the same password.
    assert dash["environment"]["SWEEP_STORAGE"] == "postgresql+psycopg://sweep@postgres:5432/sweep"
    assert dash["environment"]["PGPASSWORD"] == compose["x-storage"]["PGPASSWORD"]


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


def test_no_credentials_are_committed_and_none_on_a_url(compose) -> None:
    env = {"POSTGRES_PASSWORD": "from-the-env"}
    worker = compose["services"]["worker"]["environment"]
    # The URL carries no password: libpq reads PGPASSWORD, set beside it.
    assert interpolate(worker["SWEEP_STORAGE"], env) == (
        "postgresql+psycopg://sweep@pgbouncer:6432/sweep"
    )
    assert interpolate(worker["PGPASSWORD"], env) == "from-the-env"
    for text in (
        worker["PGPASSWORD"],
        compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"],
    ):
        with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
            interpolate(text, {})
    for service in compose["services"].values():  # `ps` shows command lines to every user
        assert "://" not in str(service.get("command", "")), service["command"]
    for key, value in _strings(compose):
        if "PASSWORD" in key:
            assert value.startswith("${"), key  # from the environment, never literal
        for secret in re.findall(r"://[^:/@]+:(.*?)@", value):
            assert secret.startswith("${"), value
    # What a run or compose leaves in the checkout: .env, the data folder, the artifacts.
    assert {".env", "/data/", "sweep-artifacts/"} <= set((REPO / ".gitignore").read_text().split())
    assert ".env" in (REPO / ".dockerignore").read_text().split()


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.override.yml"])
def test_compose_1_29_can_read_it(name: str) -> None:
    """What Debian's docker-compose 1.29 refuses or misreads, and Compose v2 accepts."""
    text = (REPO / name).read_text()
    body = "\n".join(line.split(" #")[0] for line in text.splitlines() if not line.startswith("#"))
    assert not re.search(r"\$\{[^}]*\$\{", body), "a nested ${...}: Compose 1.29 cannot expand it"
    assert "required:" not in body, "depends_on.required: Compose 1.29 refuses it"


def test_the_workers_command_line_runs_outside_docker(compose, tmp_path: Path) -> None:
    """The compose worker's own command, interpolated as compose would, against the real
    PostgreSQL here: it takes trials until the study's budget is spent, then exits 0."""
    (tmp_path / "tiny.toml").write_text(
        'dataset = "synthetic"\nn_trials = 2\n\n[space]\nepochs = 1\n'
        "learning_rate = [0.001, 0.002]\n\n[baseline]\nepochs = 1\n"
    )
    name = f"compose-{uuid.uuid4().hex[:8]}"
    extra = f"--study-name {name} --subset 200"
    command = _worker_argv(compose, {"SWEEP_STUDY": "tiny.toml", "SWEEP_WORKER_ARGS": extra})
    assert command[:2] == ["sweep", "worker"]
    result = run_cli("sweep", *command[1:], cwd=tmp_path, env={"SWEEP_STORAGE": POSTGRES})
    try:
        assert result.returncode == 0, result.stderr
        trials = optuna.load_study(study_name=name, storage=POSTGRES).get_trials()
        assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    finally:
        optuna.delete_study(study_name=name, storage=POSTGRES)


# --- Compose itself: which one, and what it makes of the files ------------------------------

MIN_V1 = (1, 28)  # Compose spec files without `version:` and GPU reservations (1.28.0)


def _version(argv: list[str]) -> tuple[int, ...] | None:
    try:
        done = subprocess.run(
            [*argv, "version", "--short"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.match(r"v?(\d+)\.(\d+)\.(\d+)", done.stdout.strip())
    return tuple(int(n) for n in found.groups()) if done.returncode == 0 and found else None


def _composes() -> list[tuple[list[str], tuple[int, ...]]]:
    """The Compose commands here and their versions: $SWEEP_TEST_COMPOSE alone if set, else
    `docker compose` (v2) and `docker-compose` (1.x, or v2 under that name), each once."""
    if chosen := os.environ.get("SWEEP_TEST_COMPOSE"):
        candidates = [shlex.split(chosen)]
    else:
        candidates = [["docker", "compose"], ["docker-compose"]]
    found: dict[tuple[int, ...], list[str]] = {}
    for argv in candidates:
        if shutil.which(argv[0]) and (version := _version(argv)) and version not in found:
            found[version] = argv
    return [(argv, version) for version, argv in found.items()]


COMPOSES = _composes()


def _clean_env(**settings: str) -> dict[str, str]:
    """What Compose sees: Docker's own variables from here and ``settings``, nothing else (no
    SWEEP_* or COMPOSE_FILE of the developer's shell)."""
    keep = ("PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_CONTEXT", "DOCKER_CERT_PATH")
    env = {k: os.environ[k] for k in (*keep, "DOCKER_TLS_VERIFY") if k in os.environ}
    return {**env, "COMPOSE_HTTP_TIMEOUT": "600", **settings}


def _published(port: Any) -> tuple[str, str]:
    """(host address, host port) of one `ports` entry as `config` prints it: 1.29 a string,
    v2 a mapping."""
    if isinstance(port, str):
        address, published, _ = port.split(":")
        return address, published
    return port.get("host_ip", ""), str(port["published"])


@pytest.mark.parametrize(
    "argv,version", COMPOSES or [(None, None)], ids=[".".join(map(str, v)) for _, v in COMPOSES]
)
def test_compose_reads_both_variants_as_meant(argv, version, tmp_path: Path) -> None:
    assert argv, NO_COMPOSE
    assert version >= MIN_V1, f"Compose {version}: docs/operations.md asks for 1.28 or later"
    env_file = tmp_path / "empty.env"  # not the checkout's .env, if a developer has one
    env_file.write_text("")
    settings = {
        "POSTGRES_PASSWORD": "pw",
        "POSTGRES_PORT": "15432",
        "DASHBOARD_PORT": "18080",
        "SWEEP_STUDY": "quickstart",
        "SWEEP_WORKER_ARGS": "--subset 500 --n-trials 3",
    }

    def config(*files: str) -> subprocess.CompletedProcess[str]:
        named = [a for f in files for a in ("-f", f)]
        return subprocess.run(
            [*argv, "--env-file", str(env_file), *named, "config"],
            cwd=REPO, env=_clean_env(**settings), capture_output=True, text=True,
        )  # fmt: skip

    cpu_run = config("docker-compose.yml")
    assert cpu_run.returncode == 0, cpu_run.stderr
    cpu = yaml.safe_load(cpu_run.stdout)["services"]
    for name, storage in (("worker", "pgbouncer:6432"), ("dashboard", "postgres:5432")):
        environment = cpu[name]["environment"]
        assert environment["SWEEP_STORAGE"] == f"postgresql+psycopg://sweep@{storage}/sweep"
        assert environment["PGPASSWORD"] == "pw"
    assert cpu["pgbouncer"]["environment"]["POSTGRES_PASSWORD"] == "pw"
    command = cpu["worker"]["command"]
    command = shlex.split(command) if isinstance(command, str) else command  # 1.29: a string
    assert command == shlex.split("sweep worker --study quickstart --subset 500 --n-trials 3")
    assert "deploy" not in cpu["worker"] and cpu["worker"]["build"]["args"]["EXTRAS"] == ""
    assert [_published(p) for p in cpu["postgres"]["ports"]] == [("127.0.0.1", "15432")]
    assert [_published(p) for p in cpu["dashboard"]["ports"]] == [("127.0.0.1", "18080")]
    assert [_published(p) for p in cpu["pgbouncer"]["ports"]] == [("127.0.0.1", "6432")]

    settings["SWEEP_TRIALS_PER_GPU"] = "4"
    gpu_run = config()  # no -f: docker-compose.yml and docker-compose.override.yml
    assert gpu_run.returncode == 0, gpu_run.stderr
    worker = yaml.safe_load(gpu_run.stdout)["services"]["worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert (device["driver"], str(device["count"])) == ("nvidia", "all")
    assert worker["build"]["args"]["EXTRAS"] == "gpu"
    # One container per host: 4 workers on each of its GPUs (2 here), the study's options.
    assert _workers_per_gpu(worker["command"], ["0", "1"]) == ["0"] * 4 + ["1"] * 4
    command = worker["command"]
    command = shlex.split(command) if isinstance(command, str) else command
    assert command[-4:] == ["--subset", "500", "--n-trials", "3"]
    env_file.write_text("COMPOSE_FILE=docker-compose.yml\n")  # how .env picks the CPU variant
    assert "deploy" not in yaml.safe_load(config().stdout)["services"]["worker"]

    settings.pop("POSTGRES_PASSWORD")
    refused = config("docker-compose.yml")
    assert refused.returncode != 0 and "set POSTGRES_PASSWORD in .env" in refused.stderr


# --- The stack, for real --------------------------------------------------------------------


def _run(argv: list[str], *, env: dict[str, str] | None = None, check: bool = True) -> str:
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 or not check, (
        f"{shlex.join(argv)} exited {done.returncode}:\n{done.stderr[-4000:]}"
    )
    return done.stdout


def _docker(*args: str) -> str:
    return _run(["docker", *args]).strip()


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def _wait(what: str, check: Callable[[], T], timeout: float, why: Callable[[], str]) -> T:
    """Poll ``check`` until it returns something true; fail naming ``what`` and ``why()``."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout:.0f} s\n{why()}")
        time.sleep(0.2)
    return value


class Stack:
    """One compose project, standing for one host: ``stack("up", "-d")`` runs Compose on the
    CPU variant (docker-compose.yml alone) with this project's name and settings."""

    def __init__(self, argv: list[str], project: str, env_file: Path, **settings: str):
        self.argv, self.project, self.env_file, self.settings = argv, project, env_file, settings

    def _command(self, *args: str) -> list[str]:
        files = ["-f", str(REPO / "docker-compose.yml")]
        return [*self.argv, "--env-file", str(self.env_file), "-p", self.project, *files, *args]

    def __call__(self, *args: str, check: bool = True, **more: str) -> str:
        return _run(self._command(*args), env=_clean_env(**self.settings, **more), check=check)

    def logs(self) -> str:
        logs = self("logs", "--no-color", "--tail", "40", check=False)
        return logs[-8000:]

    def containers(self, service: str) -> list[str]:
        """Its containers of ``service``, running or not. A container's hostname is the start
        of its id, and a trial's record names the worker that ran it as host:pid."""
        labels = [f"com.docker.compose.project={self.project}"]
        labels.append(f"com.docker.compose.service={service}")
        return _docker("ps", "-aq", "--no-trunc", *_filters(labels)).split()

    def leftovers(self) -> list[str]:
        filters = _filters([f"com.docker.compose.project={self.project}"])
        found = _docker("ps", "-aq", *filters).split()
        for kind in ("volume", "network"):
            found += _docker(kind, "ls", "-q", *filters).split()
        return found


def _filters(labels: list[str]) -> list[str]:
    return [arg for label in labels for arg in ("--filter", f"label={label}")]


def _host(container: str) -> str:
    return container[:12]  # Docker's default hostname for a container


def _state(container: str) -> tuple[str, int]:
    """(status, exit code) of a container."""
    status, code = _docker(
        "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", container
    ).split()
    return status, int(code)


@pytest.fixture(scope="module")
def compose_argv() -> list[str]:
    """The Compose command the stack tests use, once a Docker engine answers."""
    assert shutil.which("docker"), NO_ENGINE
    engine = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    assert engine.returncode == 0, f"{NO_ENGINE}\n{engine.stderr.strip()}"
    assert COMPOSES, NO_COMPOSE
    return COMPOSES[0][0]


@pytest.fixture(scope="module")
def lan() -> Iterator[str]:
    """The private network between the hosts: a Docker network of its own, whose gateway is
    this machine's address on it. Project a publishes PostgreSQL and PgBouncer there and
    project b reaches them there, as workers on other hosts reach the database host's
    private address."""
    name = f"sweeptest-lan-{uuid.uuid4().hex[:8]}"
    _docker("network", "create", name)
    try:
        yield _docker("network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", name)
    finally:
        _docker("network", "rm", name)


@pytest.fixture(scope="module")
def stacks(
    compose_argv: list[str], lan: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, Stack]]:
    """Projects a (PostgreSQL, PgBouncer, dashboard, workers) and b (workers only, through
    a's PgBouncer), the images built; both taken down with their volumes afterwards, whatever
    happened."""
    work = tmp_path_factory.mktemp("compose")
    (work / "data").mkdir()  # the data folder the workers mount (synthetic data needs none)
    (work / "empty.env").write_text("")  # not the checkout's .env, if a developer has one
    run = uuid.uuid4().hex[:8]
    settings = {
        "POSTGRES_PASSWORD": uuid.uuid4().hex,
        "POSTGRES_BIND": lan,
        "POSTGRES_PORT": str(_free_port(lan)),
        "PGBOUNCER_PORT": str(_free_port(lan)),
        "SWEEP_PGBOUNCER_IMAGE": POOLER_IMAGE,
        "DASHBOARD_PORT": str(_free_port("127.0.0.1")),
        "SWEEP_IMAGE": IMAGE,
        "SWEEP_DATA_DIR": str(work / "data"),
        # A dead worker's trial goes stale 20 s after its last beat (by default 60 s).
        "SWEEP_HEARTBEAT_INTERVAL": "2",
        "SWEEP_HEARTBEAT_GRACE": "20",
        "SWEEP_LOG_LEVEL": "INFO",
    }
    remote = f"postgresql+psycopg://sweep@{lan}:{settings['PGBOUNCER_PORT']}/sweep"
    a = Stack(compose_argv, f"sweeptest-{run}-a", work / "empty.env", **settings)
    b = Stack(compose_argv, f"sweeptest-{run}-b", a.env_file, **settings, SWEEP_STORAGE=remote)
    try:
        started = time.monotonic()
        a("build", "worker", "pgbouncer")
        print(f"images {IMAGE} and {POOLER_IMAGE} built in {time.monotonic() - started:.0f} s")
        yield a, b
    finally:
        try:
            b("down", "-v", "--remove-orphans")
        finally:
            a("down", "-v", "--remove-orphans")
        assert not a.leftovers() + b.leftovers(), "`down -v` left containers, volumes or networks"


def _storage(a: Stack) -> optuna.storages.RDBStorage:
    """Project a's PostgreSQL, read from here through its published port, once the workers
    have made Optuna's tables (under their lock: this process creates none)."""
    s = a.settings
    password, address, port = s["POSTGRES_PASSWORD"], s["POSTGRES_BIND"], s["POSTGRES_PORT"]
    url = f"postgresql+psycopg://sweep:{password}@{address}:{port}/sweep"

    def opened() -> optuna.storages.RDBStorage | None:
        # Opening an RDBStorage stamps Alembic's version table if it is still empty, which
        # would race the worker creating the tables: open it only once they are all made.
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as conn:
                if conn.exec_driver_sql("SELECT version_num FROM alembic_version").first() is None:
                    return None
        except sqlalchemy.exc.SQLAlchemyError:
            return None  # no tables yet
        finally:
            engine.dispose()
        try:
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs={"pool_pre_ping": True},  # PostgreSQL restarts with `down`, `up`
                skip_compatibility_check=True,
                skip_table_creation=True,
            )
        except optuna.exceptions.StorageInternalError:
            return None  # no tables yet

    return _wait("Optuna's tables", opened, 180, a.logs)


def _trials(storage: optuna.storages.RDBStorage, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    except KeyError:
        return []  # no such study yet


def _study(name: str, budget: int, subset: int = 200) -> dict[str, str]:
    """The settings that make the workers run study ``name``: Exp 3's grid, on the CPU in
    ~2 s a trial (of 200 images). The first worker creates it; the others pass the same
    options."""
    options = f"--dataset synthetic --subset {subset} --max-epochs 1 --n-trials {budget}"
    return {"SWEEP_STUDY": "exp3", "SWEEP_WORKER_ARGS": f"--study-name {name} {options}"}


class _Starts:
    """Trials of a study seen starting: running now and not at the last look. (One already
    running at the first look may be near its end: never that one.)"""

    def __init__(self, storage: optuna.storages.RDBStorage, name: str):
        self.storage, self.name = storage, name
        self.seen: set[int] | None = None

    def __call__(self, on: str | None = None) -> list[optuna.trial.FrozenTrial]:
        """The trials started since the last look (on host ``on`` only, if given)."""
        running = [
            t
            for t in _trials(self.storage, self.name)
            if t.state.name == "RUNNING" and on in (None, _ran_on(t))
        ]
        fresh = [t for t in running if self.seen is not None and t.number not in self.seen]
        self.seen = (self.seen or set()) | {t.number for t in running}
        return fresh


def _point(trial: optuna.trial.FrozenTrial) -> str:
    """The grid point a trial was enqueued with (Optuna's ``fixed_params``): its params once it
    has run, even when it was cut off before it had recorded them all."""
    return json.dumps(trial.system_attrs["fixed_params"], sort_keys=True)


def _ran_on(trial: optuna.trial.FrozenTrial) -> str:
    """The hostname of the container that ran ``trial`` (its record's ``worker``, host:pid)."""
    return str(trial.user_attrs.get("worker", "")).split(":")[0]


def _check_the_budget_was_spent_once(trials: list[optuna.trial.FrozenTrial], budget: int) -> None:
    """Exactly ``budget`` trials completed, no grid point twice; every failed trial (stopped
    or lost) was run again with the same params, so it spent no budget."""
    states = [t.state.name for t in trials]
    assert set(states) <= {"COMPLETE", "FAIL"}, states
    completed = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(completed) == budget, states
    for t in completed:
        assert json.dumps(t.params, sort_keys=True) == _point(t)
    points = [_point(t) for t in completed]
    assert len(set(points)) == budget, "a grid point ran twice"
    for t in trials:
        if t.state.name == "FAIL":
            assert _point(t) in points, f"failed trial {t.number} was not run again"


def _wait_for_the_end(stack: Stack, workers: list[str]) -> None:
    """Until ``workers`` have exited; each must have exited 0 (the budget spent)."""

    def ended() -> bool:
        return all(_state(w)[0] == "exited" for w in workers)

    _wait("end of the workers", ended, 300, stack.logs)
    assert [_state(w) for w in workers] == [("exited", 0)] * len(workers), stack.logs()


@pytest.mark.slow
def test_stack_image_has_no_cuda_wheels(stacks) -> None:
    code = "import importlib.metadata as m; print([d.metadata['Name'] for d in m.distributions()])"
    names = _docker("run", "--rm", IMAGE, "python", "-c", code).lower()
    assert "'tensorflow'" in names and "'sweep'" in names
    assert "nvidia" not in names, names  # tensorflow[and-cuda] pulls nvidia-* wheels


@pytest.mark.slow
def test_stack_spends_the_budget_across_stop_down_and_up_and_serves_the_dashboard(
    stacks, record_property
) -> None:
    a, _ = stacks
    name, budget = f"one-{uuid.uuid4().hex[:6]}", 10
    started = time.monotonic()
    a("up", "-d", "--scale", "worker=2", **_study(name, budget))  # PostgreSQL healthy first
    storage = _storage(a)

    # `docker compose stop` just after a trial started: SIGTERM fails it and enqueues it again.
    starts = _Starts(storage, name)

    def two_done() -> bool:
        return sum(t.state.name == "COMPLETE" for t in _trials(storage, name)) >= 2

    _wait("trial starting after two completed", lambda: starts() and two_done(), 240, a.logs)
    a("stop", "worker")
    workers = a.containers("worker")
    assert [_state(w) for w in workers] == [("exited", 130)] * 2, a.logs()  # interrupted
    trials = _trials(storage, name)
    stopped = [t.number for t in trials if t.state.name == "FAIL"]
    assert stopped, "no trial was running when the workers were stopped"
    waiting = [(_point(t), t.params) for t in trials if t.state.name == "WAITING"]
    for number in stopped:  # a copy with the same params (those recorded before the stop)
        copy = (_point(trials[number]), trials[number].params)
        assert copy in waiting, f"stopped trial {number} was not enqueued again"
    assert "RUNNING" not in {t.state.name for t in trials}
    completed = {t.number: (t.params, t.value) for t in trials if t.state.name == "COMPLETE"}
    assert len(completed) < budget
    hosts = {_host(w) for w in workers}

    # `down` keeps the volumes, and `up` resumes the study where it stopped.
    a("down")
    volumes = _docker("volume", "ls", "-q", *_filters([f"com.docker.compose.project={a.project}"]))
    assert f"{a.project}_pgdata" in volumes.split()
    a("up", "-d", "--scale", "worker=2", **_study(name, budget))
    workers = a.containers("worker")
    _wait_for_the_end(a, workers)
    took = (
        f"budget of {budget} spent across stop, down and up in {time.monotonic() - started:.0f} s"
    )
    print(took)
    record_property("stack", took)

    trials = _trials(storage, name)
    _check_the_budget_was_spent_once(trials, budget)
    assert [t.number for t in trials if t.state.name == "FAIL"] == stopped
    for number, (params, value) in completed.items():  # intact across `down` and `up`
        assert (trials[number].params, trials[number].value) == (params, value)
    assert {_ran_on(t) for t in trials} <= hosts | {_host(w) for w in workers}
    _check_the_dashboard_serves(a, name, trials)


def _check_the_dashboard_serves(a: Stack, name: str, trials: list[optuna.trial.FrozenTrial]):
    """optuna-dashboard's HTTP API, served by the dashboard container: the study, its trials,
    and the figures the worker containers wrote into the shared artifact volume."""
    base = f"http://127.0.0.1:{a.settings['DASHBOARD_PORT']}"

    def get(path: str) -> tuple[str, bytes]:
        with urllib.request.urlopen(base + path, timeout=30) as reply:
            return reply.headers.get_content_type(), reply.read()

    def studies() -> list[dict[str, Any]] | None:
        try:
            return json.loads(get("/api/studies")[1])["study_summaries"]
        except OSError:
            return None  # not serving yet

    (study,) = [s for s in _wait("dashboard", studies, 120, a.logs) if s["study_name"] == name]
    detail = json.loads(get(f"/api/studies/{study['study_id']}")[1])
    served = {t["number"]: t for t in detail["trials"]}
    assert sorted(served) == [t.number for t in trials]
    for t in trials:
        assert served[t.number]["state"] == t.state.name.capitalize()
        if t.state.name != "COMPLETE":
            continue
        artifacts = {x["filename"]: x["artifact_id"] for x in served[t.number]["artifacts"]}
        assert "learning_curves.svg" in artifacts, t.number
        path = f"/artifacts/{study['study_id']}/{served[t.number]['trial_id']}"
        kind, body = get(f"{path}/{artifacts['learning_curves.svg']}")
        assert kind == "image/svg+xml" and body.startswith(b"<svg")


# Run inside a worker's container: takes the study lock, as a worker does while it claims a
# trial, when told to, and keeps it.
HOLD_THE_LOCK = """
import os, sys, time
from sweep.storage import open_storage, study_lock
storage = open_storage(os.environ["SWEEP_STORAGE"])
print("ready", flush=True)
sys.stdin.readline()
with study_lock(storage, sys.argv[1]):
    print("locked", flush=True)
    time.sleep(3600)
"""


def _lock_holders(a: Stack, study: str) -> set[int]:
    """The server sessions (PgBouncer's, for workers) holding the study lock of ``study``
    on project a's PostgreSQL."""
    import psycopg

    from sweep.storage import _lock_key

    s = a.settings
    with psycopg.connect(
        host=s["POSTGRES_BIND"], port=int(s["POSTGRES_PORT"]), user="sweep", dbname="sweep",
        password=s["POSTGRES_PASSWORD"], connect_timeout=5,
    ) as conn:  # fmt: skip
        rows = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = %s",
            (_lock_key(study) & 0xFFFFFFFF,),  # pg_locks shows the key's low 32 bits
        ).fetchall()
    return {int(pid) for (pid,) in rows}


@pytest.mark.slow
def test_stacks_on_two_hosts_share_one_postgres_and_let_a_vanished_host_go(
    stacks, record_property
) -> None:
    """Project b's worker (a second host, `up --no-deps`) joins project a's two on a's
    PostgreSQL through a's PgBouncer's published port. Mid-trial, one of a's workers, holding
    the study lock, loses its network: PgBouncer drops its client connection and with it the
    server session holding the lock, its trial fails and runs again elsewhere, and the budget
    is spent exactly once across both hosts."""
    a, b = stacks
    name, budget = f"two-{uuid.uuid4().hex[:6]}", 12
    # Trials of 600 images: one still runs when the lock is taken and the network cut, on a
    # loaded machine too.
    study = _study(name, budget, subset=600)
    a("up", "-d", "--scale", "worker=2", **study)
    storage = _storage(a)
    b("up", "-d", "--no-deps", "--scale", "worker=1", "worker", **study)
    victim, survivor = a.containers("worker")
    networks = json.loads(_docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", victim))
    ((network, _),) = networks.items()

    holder = subprocess.Popen(
        ["docker", "exec", "-i", victim, "python", "-c", HOLD_THE_LOCK, name],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert holder.stdin and holder.stdout
    try:
        assert holder.stdout.readline().strip() == "ready"
        starts = _Starts(storage, name)
        lost = _wait("trial starting on the victim", lambda: starts(_host(victim)), 240, a.logs)[0]
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "locked"
        (holder_session,) = _lock_holders(a, name)  # the study lock, held from that host
        _docker("network", "disconnect", "--force", network, victim)
        cut = time.monotonic()
        trials = _trials(storage, name)
        assert trials[lost.number].state.name == "RUNNING", "the trial ended before the cut"
        kept = {t.number: t.value for t in trials if t.state.name == "COMPLETE"}

        def since_cut(what: str, done: Callable[[], bool]) -> float:
            _wait(what, done, 240, a.logs)
            return time.monotonic() - cut

        released = since_cut("release", lambda: holder_session not in _lock_holders(a, name))
        failed = since_cut(
            "failure", lambda: _trials(storage, name)[lost.number].state.name == "FAIL"
        )
        reran = since_cut(
            "rerun",
            lambda: any(
                t.number > lost.number and t.state.name == "COMPLETE" and _point(t) == _point(lost)
                for t in _trials(storage, name)
            ),
        )
    finally:
        holder.kill()
        holder.wait()
    report = (
        f"vanished host: its study lock released after {released:.0f} s, "
        f"its trial failed after {failed:.0f} s and completed elsewhere after {reran:.0f} s"
    )
    print(report)
    record_property("vanished_host", report)

    _wait_for_the_end(a, [survivor, *b.containers("worker")])
    _docker("rm", "--force", victim)  # gone for good: `down` need not wait for it to stop
    trials = _trials(storage, name)
    _check_the_budget_was_spent_once(trials, budget)
    assert [t.number for t in trials if t.state.name == "FAIL"] == [lost.number]
    for number, value in kept.items():  # nothing completed was lost
        assert (trials[number].state.name, trials[number].value) == ("COMPLETE", value)
    hosts = {_ran_on(t) for t in trials if t.state.name == "COMPLETE"}
    assert hosts & {_host(w) for w in b.containers("worker")}, "project b ran no trial"
    assert hosts & {_host(w) for w in a.containers("worker")}, "project a ran no trial"
    assert _host(victim) not in {_ran_on(t) for t in trials[lost.number + 1 :]}
    # The bound: the keepalives (or tcp_user_timeout, the same 50 s), plus a margin for a
    # busy machine; the trial fails at the next claim once the lock is free.
    assert released <= KEEPALIVE_S + 30, report
    assert failed <= released + 15, report
