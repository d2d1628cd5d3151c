#!/usr/bin/env bash
# Starts what the test suite talks to, when it is not already running:
# PostgreSQL on 5432, Redis on 6379, NATS with JetStream on 4222. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-postgres.sh

up() { timeout 1 bash -c "</dev/tcp/127.0.0.1/$1" 2>/dev/null; }

wait_for() { # port name
  for _ in $(seq 1 30); do up "$1" && { echo "$2: started"; return 0; }; sleep 0.5; done
  echo "$2: did not start on port $1" >&2
  return 1
}

if up 6379; then
  echo "redis: running"
else
  command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  wait_for 6379 redis
fi

if up 4222; then
  echo "nats: running"
else
  command -v nats-server >/dev/null || { apt-get update -qq && apt-get install -y -qq nats-server >/dev/null; }
  mkdir -p /var/lib/nats-server
  start-stop-daemon --start --oknodo --background --exec "$(command -v nats-server)" -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server
  wait_for 4222 nats
fi
