#!/usr/bin/env bash
# Redis commands an idle production worker sends: starts its own redis-server (port $1, default
# 18301, no persistence) and a `livt worker` against a fresh schema of the PostgreSQL at
# $LIVT_BENCH_POSTGRES (default: the local test database), resets Redis' command statistics
# after 15 s and prints them after 30 more. Everything it starts is stopped by pid.
#   bash bench/redis_idle.sh [port]
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${1:-18301}
PG=${LIVT_BENCH_POSTGRES:-postgresql+psycopg://postgres@127.0.0.1:5432/test}
PY=${PYTHON:-/work/venv/bin/python}
SCHEMA=livt_bench_redis_$$
DATA=$(mktemp -d)
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$DATA" >"$DATA/redis.log" 2>&1 &
RPID=$!
cleanup() {
  kill "${WPID:-0}" 2>/dev/null || true; wait "${WPID:-0}" 2>/dev/null || true
  kill "$RPID" 2>/dev/null || true; wait "$RPID" 2>/dev/null || true
  PYTHONPATH=$PWD "$PY" -c "import sqlalchemy as s; e=s.create_engine('$PG', isolation_level='AUTOCOMMIT'); e.connect().execute(s.text('DROP SCHEMA IF EXISTS $SCHEMA CASCADE'))"
  rm -rf "$DATA"
}
trap cleanup EXIT
PYTHONPATH=$PWD "$PY" -c "import sqlalchemy as s; e=s.create_engine('$PG', isolation_level='AUTOCOMMIT'); e.connect().execute(s.text('CREATE SCHEMA $SCHEMA'))"
export LIVT_MODE=production LIVT_BROKER_URL="redis://127.0.0.1:$PORT/0" LIVT_DATA_DIR="$DATA/livt"
export LIVT_DATABASE_URL="$PG?options=-csearch_path%3D$SCHEMA"
PYTHONPATH=$PWD "$PY" -c "from livt_service.db import upgrade_database; upgrade_database()"
PYTHONPATH=$PWD "$PY" -m livt.cli worker --name redis-bench --gpus 0 >"$DATA/worker.log" 2>&1 &
WPID=$!
sleep 15
redis-cli -p "$PORT" CONFIG RESETSTAT >/dev/null
sleep 30
redis-cli -p "$PORT" INFO commandstats | grep cmdstat | grep -v config
