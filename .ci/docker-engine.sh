#!/bin/sh
# Start a Docker engine (where none answers yet) and make sure the two public base images the
# project uses, python:3.11-slim and postgres:17, are there: pulled where a registry answers,
# else built as local stand-ins from Debian packages (CI machines reach Debian's mirror and
# PyPI, but no image registry). Run as root. Idempotent: what is already there is kept.
#
#   .ci/docker-engine.sh          # then `docker-compose` (Debian's 1.29) or `docker compose`
#
# Stop the engine it started with: kill "$(cat /tmp/dockerd/pid)".
#
# How the stand-ins differ from the real images:
# - postgres:17 is Debian's PostgreSQL 15 behind an entrypoint that honours POSTGRES_USER,
#   POSTGRES_PASSWORD and POSTGRES_DB on first start (UTF8, scram-sha-256 over TCP).
# - python:3.11-slim is Debian bookworm's Python 3.11 (pip installs into the system site,
#   PIP_BREAK_SYSTEM_PACKAGES=1), not python.org's build in /usr/local.
# - The storage driver is overlay2, or vfs where overlay2 fails; under vfs every layer and
#   container is a full copy (the worker image takes minutes to build, each container a minute
#   to create: set COMPOSE_HTTP_TIMEOUT=600).
set -eu
log=/tmp/dockerd
mkdir -p $log

if ! command -v dockerd >/dev/null || ! command -v docker-compose >/dev/null \
    || ! command -v debootstrap >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q docker.io docker-compose debootstrap >/dev/null 2>&1 || {
        apt-get update -q >/dev/null
        apt-get install -y -q docker.io docker-compose debootstrap >/dev/null
    }
fi

start() {  # $1: storage driver
    nohup dockerd --storage-driver="$1" --data-root=$log/root-"$1" --exec-root=$log/exec \
        -p $log/pid >$log/log 2>&1 &
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && return 0; sleep 1; done
    kill "$(cat $log/pid 2>/dev/null)" 2>/dev/null || true
    sleep 2
    return 1
}
docker info >/dev/null 2>&1 || start overlay2 || start vfs || {
    echo "dockerd did not start; see $log/log" >&2
    exit 1
}

# A registry that does not answer fails the pull within seconds (no DNS); then build.
have() {
    docker image inspect "$1" >/dev/null 2>&1 && return 0
    timeout 120 docker pull -q "$1" >/dev/null 2>&1
}
mirror=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2; exit}')
[ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian
root=$log/rootfs
base() {  # a minimal Debian bookworm with Python, shared by both stand-ins
    [ -x $root/usr/bin/python3 ] || debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,ca-certificates bookworm $root "$mirror" \
        >$log/debootstrap.log
}

if ! have python:3.11-slim; then
    base
    ln -sf /usr/bin/python3 $root/usr/local/bin/python
    ln -sf /usr/bin/pip3 $root/usr/local/bin/pip
    # This host's CA bundle: PyPI may be reached through a proxy that only it trusts.
    cp /etc/ssl/certs/ca-certificates.crt $root/etc/ssl/certs/ca-certificates.crt
    tar -C $root -c . | docker import --change 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' \
        --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' --change 'CMD ["python3"]' \
        - python:3.11-slim >/dev/null
fi

if ! have postgres:17; then
    base
    pg=$log/pgroot
    [ -d $pg ] || cp -a $root $pg
    chroot $pg sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends postgresql-15 >/dev/null 2>&1'
    cat >$pg/usr/local/bin/docker-entrypoint.sh <<'EOS'
#!/bin/sh
set -e
export PATH=/usr/lib/postgresql/15/bin:$PATH
PGDATA=${PGDATA:-/var/lib/postgresql/data}
mkdir -p "$PGDATA" /var/run/postgresql && chown -R postgres "$PGDATA" /var/run/postgresql
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "$POSTGRES_PASSWORD" > /tmp/pw && chown postgres /tmp/pw
  su postgres -c "initdb -D $PGDATA -U ${POSTGRES_USER:-postgres} --pwfile=/tmp/pw -E UTF8 \
    --locale=C -A scram-sha-256 --auth-local=trust" >/dev/null
  rm /tmp/pw
  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
  su postgres -c "pg_ctl -D $PGDATA -o '-c listen_addresses=' -w start" >/dev/null
  db=${POSTGRES_DB:-${POSTGRES_USER:-postgres}}
  su postgres -c "psql -U ${POSTGRES_USER:-postgres} -d postgres -c 'CREATE DATABASE \"$db\"'" \
    >/dev/null || true
  su postgres -c "pg_ctl -D $PGDATA -m fast -w stop" >/dev/null
fi
[ "${1:-}" = postgres ] && shift
# postgres itself as PID 1, as in the real image, so `docker stop` shuts it down cleanly.
exec setpriv --reuid=postgres --regid=postgres --init-groups \
    postgres -D "$PGDATA" -c 'listen_addresses=*' "$@"
EOS
    chmod +x $pg/usr/local/bin/docker-entrypoint.sh
    ln -sf /usr/lib/postgresql/15/bin/pg_isready $pg/usr/local/bin/pg_isready
    tar -C $pg -c . | docker import \
        --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
        --change 'CMD ["postgres"]' - sweep-ci/postgres-rootfs >/dev/null
    # SIGINT, a fast shutdown, as the real image stops it (`docker import` cannot set it).
    printf 'FROM sweep-ci/postgres-rootfs\nSTOPSIGNAL SIGINT\n' \
        | docker build -q -t postgres:17 - >$log/build.log 2>&1
    docker rmi sweep-ci/postgres-rootfs >/dev/null
fi
docker images python:3.11-slim
docker images postgres:17
