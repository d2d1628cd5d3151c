#!/usr/bin/env bash
# Makes sure the local PostgreSQL cluster answers on 127.0.0.1:5432. Idempotent.
set -euo pipefail
if pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "postgres: running"
  exit 0
fi
PG_MAJOR="${PG_MAJOR:-$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)}"
pg_ctlcluster --skip-systemctl-redirect "$PG_MAJOR" main start
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p 5432 && { echo "postgres: started"; exit 0; }
  sleep 1
done
echo "postgres: did not start" >&2
exit 1
