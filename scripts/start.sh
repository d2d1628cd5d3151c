#!/usr/bin/env bash
# One command from a fresh clone to a running sidecar: installs and builds
# what is missing, then runs `memory-sync start`. Without DATABASE_URL it
# runs on the embedded PostgreSQL in ./.memory-sync (MEMORY_SYNC_DATA_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."

# Install when node_modules is missing or older than the lockfile.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "memory-sync: installing dependencies (npm ci)…" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
fi
# Build when dist is missing or any source is newer.
if [ ! -f dist/src/cli/index.js ] || [ -n "$(find src prisma -newer dist/src/cli/index.js -type f -print -quit)" ]; then
  echo "memory-sync: building (npm run build)…" >&2
  npm run --silent build >&2
fi
exec node bin/memory-sync.js start "$@"
