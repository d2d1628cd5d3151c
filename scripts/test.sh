#!/usr/bin/env bash
# One command from a fresh clone to a passing test suite: pgvector for the
# local PostgreSQL, the servers the tests use, npm packages, then `npm test`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-pgvector.sh
bash scripts/ensure-services.sh
npm ci --no-audit --no-fund --loglevel=error
npm test
