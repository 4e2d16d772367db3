"""Every ``SWEEP_*`` environment variable, declared once, parsed and checked once, into one
frozen :class:`Settings`.

:func:`current` reads the environment (again only when a ``SWEEP_*`` variable or a thread
count changed) and refuses a bad value in one line naming the variable; every command checks
it before anything runs. The launcher hands its workers their settings, with the run's own
(the storage, the folders, the backend), as their environment (:meth:`Settings.to_env`), and
a worker reads them back through :func:`current`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sweep.errors import UserError

__all__ = ["ENV", "Settings", "current", "environment_markdown"]

_DAY = 86_400


@dataclass(frozen=True)
class _Var:
    """One variable: its name, what it means, and for a number its range."""

    name: str
    meaning: str
    least: int | None = None
    most: int | None = None


# Field -> its variable. The order is the documentation's.
ENV = {
    "storage": _Var("SWEEP_STORAGE", "the storage URL when --storage is not given"),
    "artifacts": _Var("SWEEP_ARTIFACTS", "the artifact folder when --artifacts is not given"),
    "data_dir": _Var("SWEEP_DATA_DIR", "where CIFAR is when --data-dir is not given"),
    "cifar10_url": _Var("SWEEP_CIFAR10_URL", "a mirror of the CIFAR-10 archive"),
    "cifar100_url": _Var("SWEEP_CIFAR100_URL", "a mirror of the CIFAR-100 archive"),
    "backend": _Var("SWEEP_BACKEND", "the Keras backend the launcher chose for its workers"),
    "gpu_memory_mb": _Var("SWEEP_GPU_MEMORY_MB", "GPU memory limit per worker, in MB", 1, 2**20),
    "heartbeat_interval_s": _Var(
        "SWEEP_HEARTBEAT_INTERVAL", "seconds between a trial's heartbeats", 1, _DAY
    ),
    "heartbeat_grace_s": _Var(
        "SWEEP_HEARTBEAT_GRACE", "seconds without a heartbeat before a trial is stale", 1, _DAY
    ),
    "storage_retry_s": _Var(
        "SWEEP_STORAGE_RETRY", "seconds a lost storage connection is retried", 0, _DAY
    ),
    "recycle_trials": _Var(
        "SWEEP_RECYCLE_TRIALS", "trials before a worker replaces its process; 0: never", 0, 10**6
    ),
    "log_level": _Var("SWEEP_LOG_LEVEL", "the log level: DEBUG, INFO, WARNING or ERROR"),
    "worker_log_level": _Var("SWEEP_WORKER_LOG_LEVEL", "the launcher's workers' log level"),
    "verbose": _Var("SWEEP_VERBOSE", "1: debug logging and TensorFlow's start-up lines"),
    "worker_label": _Var("SWEEP_WORKER_LABEL", "how a worker's log lines name it"),
}

# The libraries' own thread counts, read by the backend in each worker, where a word would
# fail every trial (PyTorch) or be ignored (TensorFlow): checked with the rest.
_THREADS = {
    "OMP_NUM_THREADS": "threads per worker, for PyTorch and OpenMP",
    "TF_NUM_INTRAOP_THREADS": "TensorFlow's threads within an operation",
    "TF_NUM_INTEROP_THREADS": "TensorFlow's threads across operations",
}


@dataclass(frozen=True)
class Settings:
    """What the environment says, checked. None: not set (the caller's default applies)."""

    storage: str | None = None
    artifacts: Path | None = None
    data_dir: Path | None = None
    cifar10_url: str | None = None
    cifar100_url: str | None = None
    backend: str | None = None
    gpu_memory_mb: int | None = None
    heartbeat_interval_s: int = 10
    heartbeat_grace_s: int = 60
    storage_retry_s: int = 120
    recycle_trials: int = 25
    log_level: str = "INFO"
    worker_log_level: str = "WARNING"
    verbose: bool = False
    worker_label: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """The settings ``env`` gives (an empty value is unset).

        Raises:
            UserError: a value out of range or of the wrong kind, in one line naming it.
        """
        values: dict[str, Any] = {}
        for f in fields(cls):
            var = ENV[f.name]
            text = env.get(var.name, "")
            if text:
                values[f.name] = _parse(var, text, f.type)
        for name, meaning in _THREADS.items():
            if text := env.get(name, ""):
                _parse(_Var(name, meaning, 1, 4096), text, "int")
        settings = cls(**values)
        if settings.heartbeat_grace_s <= settings.heartbeat_interval_s:
            raise UserError(
                f"$SWEEP_HEARTBEAT_GRACE={settings.heartbeat_grace_s} is not longer than "
                f"$SWEEP_HEARTBEAT_INTERVAL={settings.heartbeat_interval_s}: every running "
                "trial would look dead; make the grace longer"
            )
        return settings

    def to_env(self) -> dict[str, str]:
        """These settings as environment variables, defaults included (those not set are
        left out), for a process whose own environment they then override."""
        env = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                env[ENV[f.name].name] = str(value) if not isinstance(value, bool) else "1" * value
        return env


def _parse(var: _Var, text: str, kind: object) -> Any:
    if var.least is not None and var.most is not None:
        try:
            number = int(text)
        except ValueError:
            number = None
        if number is None or not var.least <= number <= var.most:
            raise UserError(
                f"${var.name}={text!r}: expected a whole number from {var.least} to {var.most} "
                f"({var.meaning}); fix or unset it"
            )
        return number
    if var.name.endswith("LOG_LEVEL"):
        if not isinstance(logging.getLevelName(text.upper()), int):
            raise UserError(f"${var.name}={text!r}: use DEBUG, INFO, WARNING or ERROR")
        return text.upper()
    if var.name == "SWEEP_VERBOSE":
        return text == "1"
    if "Path" in str(kind):
        return Path(text).expanduser()
    return text


_read: tuple[tuple[tuple[str, str], ...], Settings] | None = None


def current() -> Settings:
    """The settings of this process's environment: parsed once, and again only when one of
    its variables changed.

    Raises:
        UserError: see :meth:`Settings.from_env`.
    """
    global _read
    key = tuple(
        (k, v) for k, v in sorted(os.environ.items()) if k.startswith("SWEEP_") or k in _THREADS
    )
    if _read is None or _read[0] != key:
        _read = (key, Settings.from_env(dict(key)))
    return _read[1]


def environment_markdown() -> str:
    """The variables as a Markdown table, for ``docs/cli.md``."""
    defaults = Settings()
    rows = ["| variable | what it sets | allowed | default |", "|---|---|---|---|"]
    for field, var in ENV.items():
        allowed = f"{var.least} to {var.most}" if var.least is not None else ""
        default = getattr(defaults, field)
        shown = "" if default in (None, "", False) else f"`{default}`"
        rows.append(f"| `{var.name}` | {var.meaning} | {allowed} | {shown} |")
    return "\n".join(rows)
