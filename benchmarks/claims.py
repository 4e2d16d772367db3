"""The claim path under load, for :func:`claims`: N worker processes share one study's budget
of trials that cost nothing, so all that is timed is how workers take trials.

Each configuration (a backend, a number of workers) runs twice, side by side:

* **sweep**: the study created and its planned points (the budget's first grid points)
  enqueued by :func:`sweep.study.open_study`, as ``sweep launch`` does; each worker opens its
  storage with :func:`sweep.storage.open_storage`, reads the run back from the study and runs
  :func:`sweep.loop.run_trials` (study lock, stale check, budget check, heartbeat), as
  ``sweep worker`` does.
* **stock**: the same points enqueued with ``study.enqueue_trial``; each worker runs
  ``study.optimize(objective, n_trials=budget, callbacks=[MaxTrialsCallback(budget)])`` on a
  plain ``optuna.storages.RDBStorage``, Optuna's documented way for processes to share a
  budget. It stops only after the budget is complete, so several processes overshoot it.

The objective draws the trial's params (``sweep.space.suggest``) and returns a function of
them at once. Every worker is a fresh process that imports, opens its storage and loads the
study, says it is ready, and waits; all are released together, so start-up is outside the
timed window on both sides. Workers time their own claims: from asking for a trial (released,
or the previous trial told and its callbacks run) to the objective starting.

``python -m benchmarks.claims SIDE URL STUDY BUDGET INDEX`` is one worker.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.pooler import pgbouncer
from benchmarks.suite import REPO, Result, _env

POSTGRES_ENV = "SWEEP_BENCH_POSTGRES"  # the PostgreSQL database the benchmark may write
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/claims"
MIN_RATE = 20.0  # trials/s sweep must reach on PostgreSQL with the most workers
POOLED = (32, 100, 200)  # workers through PgBouncer, to a server of max_connections = 100
POOL_SIZE = 40  # PgBouncer's server connections to it
SIDES = ("sweep", "stock")

# A grid larger than any budget here: each trial is one planned point, enqueued.
_STUDY = """
description = "benchmark: trials that cost nothing"
dataset = "synthetic"

[space]
family = "baseline"
learning_rate = [1e-4, 2e-4, 3e-4, 5e-4, 7e-4, 1e-3, 2e-3, 3e-3, 5e-3, 7e-3]
batch_size = [16, 32, 64, 128, 256]
epochs = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]

[sampler]
name = "grid"
"""


# --------------------------------------------------------------------------- one worker


class _Claims:
    """A worker's claim times: from asking for a trial to its objective starting."""

    def __init__(self) -> None:
        self.asked = time.monotonic()
        self.cpu = time.process_time()  # this process's CPU time, its heartbeat thread's too
        self.seconds: list[float] = []
        self.numbers: list[int] = []  # the trials whose objective ran here
        self.error = ""  # the exception the worker stopped on, if it did

    def objective_started(self, number: int) -> None:
        self.seconds.append(time.monotonic() - self.asked)
        self.numbers.append(number)

    def trial_ended(self, *_: object) -> None:
        self.asked = time.monotonic()


# The long study's: the same space, drawn at random (no grid point, nothing enqueued but the
# baseline), so that a study of any length holds no WAITING trials for Optuna to read again.
_RANDOM_STUDY = _STUDY.replace('name = "grid"', 'name = "random"')


def _spec(text: str = _STUDY) -> Any:
    from sweep.config import loads_study

    return loads_study(text, name="claims", source="benchmarks/claims.py")


def _objective(spec: Any, claims: _Claims) -> Callable[[Any], float]:
    from sweep.space import suggest

    def objective(trial: Any) -> float:
        claims.objective_started(trial.number)
        p = suggest(trial, spec)
        return math.log10(p.learning_rate) + p.batch_size / 256 + p.epochs / 20

    return objective


def _released() -> None:
    print("ready", flush=True)
    sys.stdin.readline()


def _sweep_worker(url: str, name: str, index: int) -> _Claims:
    import optuna

    from sweep import loop
    from sweep import study as studies
    from sweep.stop import StopEvent
    from sweep.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # as sweep's workers do
    run = studies.stored_run(url, name, data_dir=None, artifacts=Path(tempfile.gettempdir()))
    storage = open_storage(url, check=False)
    study = studies.open_study(run, storage=storage, create=False)
    _released()
    claims = _Claims()
    loop.run_trials(
        study,
        _objective(run.spec, claims),
        storage=storage,
        budget=run.budget,
        stop=StopEvent(),
        on_trial_end=[claims.trial_ended],
    )
    return claims


def _stock_worker(url: str, name: str, budget: int, index: int) -> _Claims:
    import optuna
    from optuna.study import MaxTrialsCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per trial on either side
    storage = optuna.storages.RDBStorage(url)
    sampler = optuna.samplers.RandomSampler(seed=index)
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    spec = _spec()
    _released()
    claims = _Claims()
    # The claim's end is marked first: the budget check that follows is part of the next one.
    callbacks: list[Callable[[Any, Any], None]] = [claims.trial_ended, MaxTrialsCallback(budget)]
    try:
        study.optimize(_objective(spec, claims), n_trials=budget, callbacks=callbacks)
    except Exception as exc:  # noqa: BLE001 - counted, not fatal: the other workers go on
        # Two processes can claim one enqueued trial (Optuna reads it WAITING outside the
        # transaction that sets it RUNNING, on SQLite); the slower one's tell then fails.
        traceback.print_exc()
        claims.error = type(exc).__name__
    return claims


def _worker(argv: list[str]) -> int:
    side, url, name, budget, index = argv
    if side == "sweep":
        claims = _sweep_worker(url, name, int(index))
    else:
        claims = _stock_worker(url, name, int(budget), int(index))
    done = {
        "finished_at": time.monotonic(),
        "cpu_s": time.process_time() - claims.cpu,
        "ran": len(claims.seconds),
        "error": claims.error,
        "slowest_claim_s": max(claims.seconds, default=0.0),
        "numbers": claims.numbers,
    }
    print(json.dumps(done), flush=True)
    return 0


# --------------------------------------------------------------------------- one configuration


@dataclass(frozen=True)
class Row:
    """One side of one configuration, as measured."""

    backend: str
    workers: int
    side: str
    budget: int
    seconds: float  # from the release of all workers until the last one's loop returned
    slowest_claim_s: float
    cpu_s: float  # the workers' CPU time in all, from the release (the server's not included)
    finished: int  # trials complete, pruned or failed
    duplicates: int  # completed trials whose params another completed trial had
    run_twice: int  # trials whose objective ran in two workers (both claimed it)
    crashed: dict[str, int]  # workers that stopped on an exception, by its type
    load: float  # the machine's 1-minute load average when the workers were done

    @property
    def rate(self) -> float:
        return self.budget / self.seconds


def _create(
    side: str, url: str, name: str, budget: int, text: str = _STUDY, filled: int = 0
) -> None:
    """Create the study of ``text`` and enqueue the budget's planned points, on one side's
    way; with ``filled`` (sweep's side only), it holds that many finished trials first, its
    budget past them."""
    import optuna

    from sweep import records
    from sweep import study as studies
    from sweep.run import RunOptions
    from sweep.space import optuna_params, planned
    from sweep.storage import open_storage

    spec = _spec(text)
    if side == "sweep":
        storage = open_storage(url)
        run = RunOptions(study_name=name, url=url, spec=spec, budget=budget + filled)
        studies.open_study(run, storage=storage)
        if filled:
            _fill(url, name, filled, spec)
    else:
        storage = optuna.storages.RDBStorage(url)
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        for params in planned(spec)[:budget]:
            study.enqueue_trial(
                optuna_params(spec, params),
                user_attrs=records.planned_attrs(params, is_baseline=params == spec.baseline),
            )
    storage.engine.dispose()  # no connection held while the workers run


FILLED = "claims_filled"  # the user attr of a trial added in bulk: not one the workers ran


def _fill(url: str, name: str, n: int, spec: Any) -> None:
    """Add ``n`` finished trials to the study in bulk: a few multi-row INSERTs into Optuna's
    own tables (``study.add_trials`` writes one trial at a time: minutes for thousands), each
    trial a point of its space with the scores, curves and record a finished sweep trial has,
    as a long study holds them."""
    import datetime

    import optuna
    import sqlalchemy
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models

    from sweep.space import distribution, grid, optuna_params

    points = grid(spec)
    dists = {d.name: distribution(d) for d in spec.varying}
    storage = optuna.storages.RDBStorage(url)
    study_id = storage.get_study_id_from_name(name)
    first = len(storage.get_all_trials(study_id, deepcopy=False))
    now = datetime.datetime.now()
    finite = models.TrialValueModel.TrialValueType.FINITE
    step_finite = models.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE
    trial_rows, params, values, attrs, steps = [], [], [], [], []
    for i in range(n):
        trial_rows.append(
            {
                "number": first + i,
                "study_id": study_id,
                "datetime_start": now,
                "state": optuna.trial.TrialState.COMPLETE,
                "datetime_complete": now,
            }
        )
    with storage.engine.begin() as conn:
        ids = (
            conn.execute(
                sqlalchemy.insert(models.TrialModel).returning(
                    models.TrialModel.trial_id, sort_by_parameter_order=True
                ),
                trial_rows,
            )
            .scalars()
            .all()
        )
        for i, trial_id in enumerate(ids):
            point = optuna_params(spec, points[i % len(points)])
            val = 0.3 + 0.4 * ((i * 7919) % 1000) / 1000
            for key, value in point.items():
                if key in dists:
                    params.append(
                        {
                            "trial_id": trial_id,
                            "param_name": key,
                            "param_value": dists[key].to_internal_repr(value),
                            "distribution_json": distribution_to_json(dists[key]),
                        }
                    )
            values.append(
                {"trial_id": trial_id, "objective": 0, "value": val, "value_type": finite}
            )
            record = {
                FILLED: True,
                "family": "baseline",
                "is_baseline": False,
                "val_accuracy": val,
                "best_val_accuracy": val,
                "best_epoch": 3,
                "test_accuracy": val - 0.01,
                "test_loss": 1.2,
                "precision": val,
                "recall": val,
                "n_params": 923914,
                "epochs_run": 3,
                "train_seconds": 12.5,
                "delta_vs_baseline": val - 0.5,
                "delta_test_vs_baseline": val - 0.51,
                "history": {"loss": [2.0, 1.6, 1.3], "val_accuracy": [val - 0.1, val - 0.05, val]},
            }
            attrs += [
                {"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
                for k, v in record.items()
            ]
            steps += [
                {
                    "trial_id": trial_id,
                    "step": step,
                    "intermediate_value": val - d,
                    "intermediate_value_type": step_finite,
                }
                for step, d in ((1, 0.1), (2, 0.05), (3, 0.0))
            ]
        for model, rows in (
            (models.TrialParamModel, params),
            (models.TrialValueModel, values),
            (models.TrialUserAttributeModel, attrs),
            (models.TrialIntermediateValueModel, steps),
        ):
            conn.execute(sqlalchemy.insert(model), rows)
    storage.engine.dispose()


def _outcome(url: str, name: str) -> tuple[int, int]:
    """(finished, duplicates) among the study's trials that its workers ran (not the ones
    added in bulk); the study is deleted after."""
    import optuna
    from optuna.trial import TrialState

    from sweep.budget import counts

    storage = optuna.storages.RDBStorage(url)
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    trials = [t for t in trials if not t.user_attrs.get(FILLED)]
    complete = [
        json.dumps(t.params, sort_keys=True) for t in trials if t.state == TrialState.COMPLETE
    ]
    finished = counts(trials).done
    storage.engine.dispose()
    _drop(url, name)
    return finished, len(complete) - len(set(complete))


def _drop(url: str, name: str) -> None:
    """Delete the study: the PostgreSQL database keeps no run's trials."""
    import optuna

    storage = optuna.storages.RDBStorage(url)
    try:
        optuna.delete_study(study_name=name, storage=storage)
    except KeyError:
        pass  # it was never made
    finally:
        storage.engine.dispose()


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def _measure(
    side: str, backend: str, url: str, workers: int, budget: int, logs: Path,
    *, text: str = _STUDY, filled: int = 0, inspect: Callable[[str], None] | None = None,
) -> Row:  # fmt: skip
    """Run one side of one configuration: create, start the workers, release them together.
    With ``filled``, the study holds that many finished trials first; ``inspect`` is called
    with the study's name once the workers are done, before it is deleted."""
    name = f"claims-{side}-{workers}-{uuid.uuid4().hex[:8]}"
    _create(side, url, name, budget, text, filled)
    argv = [sys.executable, "-m", "benchmarks.claims", side, url, name, str(budget)]
    procs: list[subprocess.Popen[str]] = []
    try:
        for i in range(workers):
            with (logs / f"{name}-{i}.log").open("w") as err:
                procs.append(
                    subprocess.Popen(
                        [*argv, str(i)],
                        cwd=REPO,
                        env=_env(),
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=err,
                        text=True,
                    )
                )
        unready = []
        for i, p in enumerate(procs):  # every worker imported, opened and loaded
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                unready.append(i)
        if unready:
            raise NotStarted(side, len(unready), workers, _tail(logs, name, unready[0]))
        released = time.monotonic()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        reports = []
        for i, p in enumerate(procs):
            out, _ = p.communicate()
            if p.returncode != 0:
                raise RuntimeError(f"{side} worker {i} failed:\n{_tail(logs, name, i)}")
            reports.append(json.loads(out.splitlines()[-1]))
    except BaseException:
        _stop(procs)  # first: past max_connections, the drop needs the connections they hold
        _drop(url, name)
        raise
    finally:
        _stop(procs)
    if inspect is not None:
        try:
            inspect(name)
        except BaseException:
            _drop(url, name)
            raise
    finished, duplicates = _outcome(url, name)
    return Row(
        backend=backend,
        workers=workers,
        side=side,
        budget=budget,
        seconds=max(r["finished_at"] for r in reports) - released,
        slowest_claim_s=max(r["slowest_claim_s"] for r in reports),
        cpu_s=sum(r["cpu_s"] for r in reports),
        finished=finished,
        duplicates=duplicates,
        run_twice=sum(k > 1 for k in Counter(n for r in reports for n in r["numbers"]).values()),
        crashed=dict(Counter(r["error"] for r in reports if r["error"])),
        load=os.getloadavg()[0],
    )


class NotStarted(RuntimeError):
    """Some of a configuration's workers failed before they were ready (stock Optuna's, past
    the server's connection limit)."""

    def __init__(self, side: str, failed: int, workers: int, log: str) -> None:
        lines = [line.strip() for line in log.splitlines() if line.strip()]
        # The server's refusal, where there is one, not the exception Optuna wrapped it in.
        fatal = [line[line.index("FATAL:") :] for line in lines if "FATAL:" in line]
        self.failed, self.reason = failed, (fatal or lines[-1:] or ["(no output)"])[0]
        super().__init__(f"{failed} of {workers} {side} workers did not start:\n{log}")


def _tail(logs: Path, name: str, i: int) -> str:
    text = (logs / f"{name}-{i}.log").read_text()
    return text if len(text) <= 6000 else f"{text[:3000]}\n...\n{text[-3000:]}"


# --------------------------------------------------------------------------- the benchmark


@dataclass
class ClaimsResult(Result):
    """A ratio floor and a rate floor: sweep must keep up with stock Optuna and reach
    ``min_rate`` trials/s."""

    rate: float | None = None
    min_rate: float = MIN_RATE
    pooled_exact: bool = True  # the most workers through PgBouncer spent the budget exactly

    @property
    def met(self) -> bool | None:
        ratio_met = super().met
        if ratio_met is None or self.rate is None:
            return ratio_met
        return ratio_met and self.rate >= self.min_rate and self.pooled_exact


_HEADER = (
    f"{'backend':<10} {'workers':>7} {'side':<5} {'trials/s':>8} {'slowest claim':>13} "
    f"{'duplicates':>10} {'run twice':>9} {'finished':>8} {'budget':>6} {'crashed':>7} "
    f"{'sweep/stock':>11} {'CPU/trial':>9} {'load':>5}"
)


def _table_line(row: Row, ratio: float | None) -> str:
    shown = "" if ratio is None else f"{ratio:.2f}"
    crashed, cpu_ms = sum(row.crashed.values()), 1000 * row.cpu_s / row.finished
    return (
        f"{row.backend:<10} {row.workers:>7} {row.side:<5} {row.rate:>8.1f} "
        f"{row.slowest_claim_s:>11.3f} s {row.duplicates:>10} {row.run_twice:>9} {row.finished:>8} "
        f"{row.budget:>6} {crashed:>7} {shown:>11} {cpu_ms:>6.0f} ms {row.load:>5.1f}"
    )


def _postgres() -> str | None:
    from sweep.errors import UserError
    from sweep.storage import check_url

    url = os.environ.get(POSTGRES_ENV) or DEFAULT_POSTGRES
    try:
        check_url(url)
    except UserError as exc:
        print(f"claims: PostgreSQL skipped: {exc}", file=sys.stderr, flush=True)
        return None
    return url


def claims(quick: bool) -> Result:
    """Trials per second of sweep's claim path vs stock Optuna's ``study.optimize`` with
    ``MaxTrialsCallback``, with trials that cost nothing (:mod:`benchmarks.claims`): 300
    enqueued grid points shared by 1, 8 and 32 worker processes (--quick: 40 by 1 and 4), on
    PostgreSQL (``$SWEEP_BENCH_POSTGRES``, else the local ``claims`` database) and on a SQLite
    file; sweep and stock interleaved per configuration. The ratio is sweep's rate over
    stock's on PostgreSQL with the most workers; sweep must also reach 20 trials/s there.
    Every configuration's row (trials/s, slowest claim, duplicate params among completed
    trials, trials run by two workers, finished trials, crashed workers, workers' CPU per
    trial) goes to stderr and ``data``.

    Then sweep's workers through PgBouncer in transaction pooling mode (40 server
    connections; --quick: 4) to the same server: 32, 100 and 200 of them (--quick: 8), each
    beside stock Optuna's at the same count connecting directly, which past the server's
    ``max_connections`` cannot start. The most workers through it must spend the budget
    exactly, with no duplicate and no crashed worker."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per study created
    budget, sizes = (40, (1, 4)) if quick else (300, (1, 8, 32))
    postgres = _postgres()
    rows: list[Row] = []
    print(f"claims: {budget} trials each\n{_HEADER}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        backends: list[tuple[str, str | None]] = [("postgresql", postgres)] if postgres else []
        backends.append(("sqlite", None))
        k = 0
        for backend, server in backends:
            for workers in sizes:
                pair = {}
                for side in SIDES if k % 2 == 0 else SIDES[::-1]:
                    url = server or f"sqlite:///{work / f'{side}-{workers}.db'}"
                    pair[side] = _measure(side, backend, url, workers, budget, work)
                k += 1
                ratio = pair["sweep"].rate / pair["stock"].rate
                for side in SIDES:
                    shown = ratio if side == "sweep" else None
                    print(_table_line(pair[side], shown), file=sys.stderr, flush=True)
                rows += [pair[side] for side in SIDES]
        not_started: dict[int, NotStarted] = {}
        if postgres:
            pooled, pool = ((8,), 4) if quick else (POOLED, POOL_SIZE)
            direct = {r.workers for r in rows if r.backend == "postgresql" and r.side == "stock"}
            print(f"through PgBouncer ({pool} server connections; stock Optuna connects "
                  "directly, as it would have to)", file=sys.stderr, flush=True)  # fmt: skip
            with pgbouncer(postgres, pool_size=pool) as through:
                for workers in pooled:
                    row = _measure("sweep", "pgbouncer", through, workers, budget, work)
                    print(_table_line(row, None), file=sys.stderr, flush=True)
                    rows.append(row)
                    if workers in direct:
                        continue
                    try:
                        row = _measure("stock", "postgresql", postgres, workers, budget, work)
                    except NotStarted as exc:
                        not_started[workers] = exc
                        print(f"{'postgresql':<10} {workers:>7} stock  {exc.failed} of {workers} "
                              f"workers could not start: {exc.reason}", file=sys.stderr,
                              flush=True)  # fmt: skip
                        continue
                    print(_table_line(row, None), file=sys.stderr, flush=True)
                    rows.append(row)
    data: dict[str, Any] = {
        "budget": budget,
        "rows": [vars(r) | {"trials_per_s": r.rate} for r in rows],
        "not_started": [
            {
                "backend": "postgresql",
                "workers": n,
                "side": "stock",
                "failed": e.failed,
                "reason": e.reason,
            }
            for n, e in not_started.items()
        ],
    }
    key = {(r.backend, r.workers, r.side): r for r in rows}
    top = max(sizes)
    if postgres is None:
        return ClaimsResult(
            "claims", None, 0.5, higher_is_better=True, details="no PostgreSQL", data=data
        )
    ours, theirs = key["postgresql", top, "sweep"], key["postgresql", top, "stock"]
    most = max(n for b, n, _ in key if b == "pgbouncer")
    crowd = key["pgbouncer", most, "sweep"]
    if (most, "stock") in {(n, s) for b, n, s in key if b == "postgresql"}:
        beside = f"stock Optuna directly {key['postgresql', most, 'stock'].rate:.1f}"
    else:
        beside = f"stock Optuna directly could not start ({not_started[most].reason})"
    pooled_top = key.get(("pgbouncer", top, "sweep"))
    compared = (
        f"; {top} through it {pooled_top.rate:.1f} vs {ours.rate:.1f} directly"
        if pooled_top is not None
        else ""
    )
    return ClaimsResult(
        "claims",
        ours.rate / theirs.rate,
        0.5,
        higher_is_better=True,
        details=f"PostgreSQL, {top} workers, {budget} trials: sweep {ours.rate:.1f} trials/s "
        f"(floor {MIN_RATE:.0f}), stock Optuna {theirs.rate:.1f}; sweep finished "
        f"{ours.finished} with {ours.duplicates} duplicates, stock {theirs.finished} with "
        f"{theirs.duplicates}. PgBouncer: {most} workers {crowd.rate:.1f} trials/s, "
        f"{crowd.finished} finished, {crowd.duplicates} duplicates, "
        f"{sum(crowd.crashed.values())} crashed ({beside}){compared}",
        data=data,
        rate=ours.rate,
        pooled_exact=crowd.finished == budget and not crowd.duplicates and not crowd.crashed,
    )


# --------------------------------------------------------------------------- a long study


LONG_FILLED = 10_000
REPORT_FLOOR_S = 30.0


def _timed_report(url: str, name: str, out: Path) -> float:
    """Wall seconds of ``sweep report`` on the study; it must succeed."""
    env = {**_env(), "SWEEP_STORAGE": url}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "sweep", "report", "--study", name, "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"sweep report failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def _timed_dashboard_api(url: str, name: str) -> float:
    """Wall seconds of the dashboard's study API (``/api/studies/ID``: every trial) on the
    study, its first request after the server started."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**_env(), "SWEEP_STORAGE": url}
    server = subprocess.Popen(
        [sys.executable, "-m", "sweep", "dashboard", "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/studies", timeout=600) as reply:
                    summaries = json.loads(reply.read())["study_summaries"]
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the dashboard did not start") from None
                time.sleep(0.3)
        (study_id,) = [s["study_id"] for s in summaries if s["study_name"] == name]
        start = time.perf_counter()
        with urllib.request.urlopen(f"{base}/api/studies/{study_id}", timeout=1800) as reply:
            trials = len(json.loads(reply.read())["trials"])
        seconds = time.perf_counter() - start
        if trials < LONG_FILLED // 10:
            raise RuntimeError(f"the study API gave {trials} trials")
        return seconds
    finally:
        server.terminate()
        server.wait()


def long_study(quick: bool) -> Result:
    """sweep's claim rate on a study that already holds 10,000 finished trials (added in
    bulk, each with a sweep record; 1,000 with --quick) over the same on an empty study,
    side by side, both of the claims study's space drawn at random (a grid would enqueue a
    point per trial of the budget, which Optuna reads again on every claim): 300 trials that
    cost nothing by 32 workers (40 by 4 with --quick), on PostgreSQL. Floor: at least half.
    ``sweep report`` and the dashboard's study API on the long study are timed beside it; the
    report's floor is 30 s."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    budget, workers, filled = (40, 4, 1_000) if quick else (300, 32, LONG_FILLED)
    url = _postgres()
    if url is None:
        return Result("long_study", None, 0.5, higher_is_better=True, details="no PostgreSQL")
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)

        def inspect(name: str) -> None:
            timings["report_s"] = _timed_report(url, name, work / "report")
            timings["dashboard_api_s"] = _timed_dashboard_api(url, name)

        start = time.perf_counter()
        long = _measure("sweep", "postgresql", url, workers, budget, work,
                        text=_RANDOM_STUDY, filled=filled, inspect=inspect)  # fmt: skip
        fill_s = time.perf_counter() - start
        empty = _measure("sweep", "postgresql", url, workers, budget, work, text=_RANDOM_STUDY)
    ratio = long.rate / empty.rate
    report_met = timings["report_s"] <= REPORT_FLOOR_S
    return Result(
        "long_study",
        ratio,
        0.5,
        higher_is_better=True,
        details=f"PostgreSQL, {workers} workers, {budget} trials: {long.rate:.1f} trials/s on a "
        f"study of {filled:,} finished trials, {empty.rate:.1f} on an empty one ({long.finished} "
        f"and {empty.finished} finished, {long.duplicates} and {empty.duplicates} duplicates); "
        f"sweep report {timings['report_s']:.1f} s (floor {REPORT_FLOOR_S:.0f})"
        f"{'' if report_met else ' MISSED'}, dashboard study API "
        f"{timings['dashboard_api_s']:.1f} s",
        data={
            **timings,
            "filled": filled,
            "long_rate": long.rate,
            "empty_rate": empty.rate,
            "report_met": report_met,
            "fill_and_run_s": round(fill_s, 1),
        },
    )


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
