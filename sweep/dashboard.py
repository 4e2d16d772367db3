"""``python -m sweep.dashboard``: optuna-dashboard over a sweep's storage and artifacts.

The dashboard has no authentication and can delete studies, so it listens on 127.0.0.1
unless told otherwise, and warns when told to listen on every address.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys

from sweep import cli
from sweep.errors import UserError

__all__ = ["main", "parser"]

log = logging.getLogger("sweep")


def parser() -> argparse.ArgumentParser:
    p = cli.Parser(
        prog="python -m sweep.dashboard",
        description="Serve optuna-dashboard over the study storage and its artifact folder: "
        "every trial against the baseline, with its learning curves, confusion matrix and note.",
    )
    cli.add_storage_option(p)
    cli.add_artifacts_option(p)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only); 0.0.0.0 "
        "exposes a dashboard that anyone who reaches it can use to delete studies",
    )
    p.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    return p


def listens_everywhere(host: str) -> bool:
    """Whether ``host`` is a wildcard address, reachable from every network of the machine."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return host in ("", "*")


def _main(args: argparse.Namespace) -> int:
    from optuna_dashboard import run_server

    from sweep.artifacts import default_dir, open_store
    from sweep.storage import check_url, default_url, open_storage, redact, storage_exists

    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port} is not a port number; use 1-65535")
    url = args.storage or default_url()
    check_url(url)
    if not storage_exists(url):
        raise UserError(
            f"no storage at {redact(url)}; run python -m sweep.launch first, or pass --storage URL"
        )
    folder = args.artifacts or default_dir(url)
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
        run_server(open_storage(url), host=args.host, port=args.port, artifact_store=store)
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how a dashboard is meant to stop
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.run_main(parser(), _main, argv)


if __name__ == "__main__":
    sys.exit(main())
