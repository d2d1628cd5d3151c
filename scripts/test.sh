#!/usr/bin/env bash
# One command from a fresh clone to a passing test suite: pgvector for the
# local PostgreSQL, the servers the tests use, npm packages, then `npm test`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-pgvector.sh
bash scripts/ensure-services.sh
bash scripts/ensure-logical-cluster.sh # wal_level=logical on 5441, for the replication tests
npm ci --no-audit --no-fund --loglevel=error
npm test
