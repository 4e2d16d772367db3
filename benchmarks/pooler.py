"""A PgBouncer of one's own in transaction pooling mode, in front of a PostgreSQL server, for
the claims benchmark and the tests: :func:`pgbouncer` starts it on a free port and gives the
storage URL that goes through it.

It runs Debian's ``pgbouncer`` (``apt-get install pgbouncer``) as the ``postgres`` user when
started as root (PgBouncer refuses to run as root), with ``auth_type = any``: the server's own
authentication still applies to the pooler's server connections, all made as the URL's user.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["pgbouncer"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def pgbouncer(server_url: str, *, pool_size: int, max_clients: int = 1000) -> Iterator[str]:
    """Start PgBouncer (transaction pooling, at most ``pool_size`` server connections) in front
    of the server of ``server_url``; yield the same URL through it; stop it afterwards."""
    import sqlalchemy

    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(binary).exists():
        raise RuntimeError("PgBouncer is not installed: apt-get install pgbouncer")
    server = sqlalchemy.engine.make_url(server_url)
    port = _free_port()
    root = Path(tempfile.mkdtemp(prefix="sweep-pgbouncer-"))
    root.chmod(0o755)
    ini = root / "pgbouncer.ini"
    ini.write_text(
        f"[databases]\n"
        f"* = host={server.host or '127.0.0.1'} port={server.port or 5432} "
        f"user={server.username or 'postgres'}\n"
        f"[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        f"unix_socket_dir =\n"
        f"auth_type = any\n"
        f"pool_mode = transaction\n"
        f"default_pool_size = {pool_size}\n"
        f"max_client_conn = {max_clients}\n"
        f"max_db_connections = {pool_size}\n"
        # sweep sends the server its keepalive settings as startup options
        f"ignore_startup_parameters = options\n"
        f"logfile = {root / 'pgbouncer.log'}\n"
        f"pidfile = {root / 'pgbouncer.pid'}\n"
    )
    command = [binary, "-q", str(ini)]
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        command = ["runuser", "-u", "postgres", "--", *command]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (
                    (root / "pgbouncer.log").read_text()
                    if (root / "pgbouncer.log").exists()
                    else ""
                )
                raise RuntimeError(
                    f"PgBouncer did not start:\n{proc.stderr.read() if proc.stderr else ''}{log}"
                )
            time.sleep(0.05)
        yield server.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)
