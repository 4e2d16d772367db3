"""``sweep dashboard``: optuna-dashboard over a sweep's storage and artifacts.

The dashboard has no authentication and can delete studies, so it listens on 127.0.0.1
unless told otherwise, and warns when told to listen on every address.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket

from sweep.artifacts import open_store
from sweep.commands import _options
from sweep.errors import UserError
from sweep.run import default_artifacts
from sweep.stop import StopEvent
from sweep.storage import open_storage, read_only, redact

__all__ = ["DESCRIPTION", "HELP", "add_arguments", "listens_everywhere", "run"]

log = logging.getLogger("sweep")

HELP = "serve optuna-dashboard: every trial against the baseline, with its figures"
DESCRIPTION = (
    "Serve optuna-dashboard over the study storage and its artifact folder: every trial "
    "against the baseline, with its learning curves, confusion matrix and note."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    _options.add_storage_option(p)
    _options.add_artifacts_option(p)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only); 0.0.0.0 "
        "exposes a dashboard that anyone who reaches it can use to delete studies",
    )
    p.add_argument("--port", type=int, default=8080, help="port (default: 8080)")


def listens_everywhere(host: str) -> bool:
    """Whether ``host`` is a wildcard address, reachable from every network of the machine."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return host in ("", "*")


def _check_listen(host: str, port: int) -> None:
    """Refuse, in one line, an address this machine cannot listen on: a name that does not
    resolve, an address not its own, a port in use."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
            probe.bind(address)
    except OSError as exc:
        raise UserError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port, or "
            "a --host of this machine"
        ) from None


def run(args: argparse.Namespace, stop: StopEvent) -> int:
    from optuna_dashboard import run_server

    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port} is not a port number; use 1-65535")
    url = _options.storage_url(args, write=False)
    # A SQLite file must exist and hold Optuna's tables: the dashboard would make them in any
    # file it is given. A PostgreSQL database may still be empty: its first worker makes them.
    sqlite = url.startswith("sqlite")
    if sqlite:
        with read_only(url) as found:
            if found is None:
                raise UserError(
                    f"no study storage at {redact(url)}; run sweep launch first, or pass "
                    "--storage URL"
                )
    _check_listen(args.host, args.port)  # before anything is made, and before the banner
    folder = args.artifacts or default_artifacts(url)
    # A folder named on the command line must exist: a typo would show no artifacts at all.
    store = open_store(folder, create=args.artifacts is None)
    if listens_everywhere(args.host):
        log.warning(
            "listening on every address (%s): the dashboard has no login and can delete "
            "studies; anyone who reaches port %d can. Prefer --host 127.0.0.1 and an SSH tunnel",
            args.host,
            args.port,
        )
    log.info(
        "dashboard of %s at http://%s:%d/ (artifacts: %s); Ctrl-C to stop",
        redact(url),
        args.host if not listens_everywhere(args.host) else "localhost",
        args.port,
        folder,
    )
    try:
        storage = open_storage(url, check=False, create=not sqlite)
        run_server(storage, host=args.host, port=args.port, artifact_store=store)
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how a dashboard is meant to stop
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    return 0
