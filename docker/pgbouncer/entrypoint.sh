#!/bin/sh
# Writes PgBouncer's settings from the environment, then runs it (as postgres: PgBouncer
# refuses to run as root).
#
#   POSTGRES_PASSWORD   the server's password for POSTGRES_USER (required); clients log in to
#                       PgBouncer with the same user and password (SCRAM)
#   POSTGRES_USER       default sweep
#   SERVER_HOST         default postgres (the compose service), SERVER_PORT default 5432
#   PGBOUNCER_POOL_SIZE server connections PgBouncer opens, at most (default 80)
#   PGBOUNCER_MAX_CLIENTS  client connections it accepts (default 2000; a worker holds up to 3)
set -eu
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
user=${POSTGRES_USER:-sweep}
pool=${PGBOUNCER_POOL_SIZE:-80}
conf=/tmp/pgbouncer
mkdir -p "$conf"
umask 077
# The auth file's format: "user" "password", a double quote inside doubled.
printf '"%s" "%s"\n' "$(printf %s "$user" | sed 's/"/""/g')" \
    "$(printf %s "$POSTGRES_PASSWORD" | sed 's/"/""/g')" > "$conf/userlist.txt"
cat > "$conf/pgbouncer.ini" <<INI
[databases]
* = host=${SERVER_HOST:-postgres} port=${SERVER_PORT:-5432}

[pgbouncer]
listen_addr = 0.0.0.0
listen_port = 6432
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $conf/userlist.txt
; A server connection serves a client for one transaction, then the next client: sweep's
; study lock lives in one transaction and takes no server connection while it waits.
pool_mode = transaction
default_pool_size = $pool
max_db_connections = $pool
max_client_conn = ${PGBOUNCER_MAX_CLIENTS:-2000}
; sweep's workers send the server their keepalive settings as startup options; the pooler
; keeps its own to the clients, below.
ignore_startup_parameters = options
; A worker's host that vanishes: its client connection is dropped after 20 s of silence and
; 3 unanswered probes 10 s apart (or 50 s of unacknowledged retransmissions), and with it
; the server connection of any transaction it had open, and the study lock one may hold.
tcp_keepalive = 1
tcp_keepidle = 20
tcp_keepintvl = 10
tcp_keepcnt = 3
tcp_user_timeout = 50000
INI
exec pgbouncer "$conf/pgbouncer.ini"
