#!/usr/bin/env bash
# A PostgreSQL 15 cluster of the tests' own for logical replication (the
# shared one on 5432 runs wal_level=replica and is never restarted):
# cluster "msrepl" on 127.0.0.1:5441, wal_level=logical, 10+ slots and WAL
# senders, trust auth on 127.0.0.1. pgvector comes from the main install
# (same binaries). Idempotent: creates it when missing, starts it when down,
# and exits at once when it already runs with these settings.
set -euo pipefail

PG_MAJOR="${PG_MAJOR:-15}"
NAME="${MS_REPL_CLUSTER:-msrepl}"
PORT="${MS_REPL_PORT:-5441}"
CONF="/etc/postgresql/$PG_MAJOR/$NAME/conf.d/memory-sync.conf"

ready() { pg_isready -q -h 127.0.0.1 -p "$PORT"; }
logical() { [ "$(psql -XAtq -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -c 'SHOW wal_level' 2>/dev/null)" = logical ]; }

# A run killed inside test/sources/replication/visibility.alone.test.ts leaves a
# synchronous standby that does not exist: every commit would wait for it.
reset_sync() {
  psql -XAtq -h 127.0.0.1 -p "$PORT" -U postgres -d postgres \
    -c 'ALTER SYSTEM RESET synchronous_standby_names' -c 'ALTER SYSTEM RESET synchronous_commit' -c 'SELECT pg_reload_conf()' >/dev/null
}

if ready && logical; then
  reset_sync
  echo "postgres ($NAME, $PORT): running, wal_level=logical"
  exit 0
fi

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -qx "$PG_MAJOR $NAME"; then
  # --start-conf=manual: it starts when a test run needs it, not at boot.
  $SUDO pg_createcluster "$PG_MAJOR" "$NAME" --port "$PORT" --start-conf=manual >/dev/null
  echo "postgres ($NAME, $PORT): created"
fi

$SUDO mkdir -p "$(dirname "$CONF")"
$SUDO tee "$CONF" >/dev/null <<EOF
# memory-sync's replication tests (scripts/ensure-logical-cluster.sh)
listen_addresses = '127.0.0.1'
port = $PORT
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
max_connections = 200
# Small segments and a short checkpoint interval, so the retained-WAL tests
# see WAL go away once a slot lets it.
min_wal_size = 32MB
max_wal_size = 256MB
EOF
HBA="/etc/postgresql/$PG_MAJOR/$NAME/pg_hba.conf"
if ! grep -q '^# memory-sync trust' "$HBA"; then
  # First match wins: trust on loopback for ordinary and replication connections, before Debian's defaults.
  $SUDO sed -i '1i # memory-sync trust\nhost all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust' "$HBA"
fi

if ready; then
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$PG_MAJOR" "$NAME" restart
else
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$PG_MAJOR" "$NAME" start
fi
for _ in $(seq 1 30); do
  if ready && logical; then
    reset_sync
    echo "postgres ($NAME, $PORT): started, wal_level=logical"
    exit 0
  fi
  sleep 0.5
done
echo "postgres ($NAME, $PORT): did not start; see /var/log/postgresql/postgresql-$PG_MAJOR-$NAME.log" >&2
exit 1
