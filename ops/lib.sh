# Shared paths and helpers for the ops/ scripts. Sourced, never run.
# Everything a run creates lives in .local/ (gitignored) or the user cache,
# so a fresh clone has nothing from an earlier machine.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL="${UTTERSTREAM_LOCAL:-$ROOT/.local}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/utterstream"
CASSANDRA_VERSION="$(sed -n 's:.*<cassandra.version>\(.*\)</cassandra.version>.*:\1:p' "$ROOT/ops/cassandra/pom.xml")"
CASSANDRA_LIB="$CACHE/cassandra-$CASSANDRA_VERSION/lib"
CASSANDRA_PORT="${CASSANDRA_PORT:-9042}"
REDIS_PORT="${REDIS_PORT:-6379}"
API_PORT="${API_PORT:-8000}"
mkdir -p "$LOCAL/run" "$LOCAL/log"
# API workers and dataflows write their Prometheus samples here; the API's
# /metrics serves them all. ops/down empties it.
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-$LOCAL/metrics}"
mkdir -p "$PROMETHEUS_MULTIPROC_DIR"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# no_args USAGE "$@": for a command that takes no arguments: -h/--help
# prints USAGE and exits 0; anything else is refused (exit 1).
no_args() {
  local usage=$1; shift
  case "${1:-}" in
    "") return 0 ;;
    -h|--help) echo "$usage"; exit 0 ;;
    *) die "unknown argument '$1'; $usage" ;;
  esac
}

# pid_alive NAME: the process recorded in .local/run/NAME.pid is running.
pid_alive() {
  local f="$LOCAL/run/$1.pid"
  [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}

# wait_for WHAT DEADLINE_S LOGFILE CMD...: retry CMD until it succeeds or the
# deadline passes, then fail naming the log to read.
wait_for() {
  local what=$1 deadline=$2 logfile=$3; shift 3
  local start=$SECONDS
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS - start > deadline )); then
      die "$what not ready after ${deadline}s; see $logfile"
    fi
    sleep 1
  done
  log "$what ready after $((SECONDS - start))s"
}

# The one place that finds uv. A fresh machine may have none on PATH and a
# system python3 that refuses `pip install --user` (PEP 668), so uv goes into
# a private virtual environment under the cache. Every script sources this
# file, so each of them runs with that pinned uv first on PATH, whatever uv
# the machine may have. uv never downloads a Python (only package registries
# are reachable here): it uses the machine's python3.11.
UV_VERSION=0.13.9
UV_HOME="$CACHE/uv-$UV_VERSION"
export UV_PYTHON_DOWNLOADS=never
ensure_uv() {
  if [ ! -x "$UV_HOME/bin/uv" ]; then
    log "installing uv $UV_VERSION into $UV_HOME"
    local py; py=$(command -v python3.11 || command -v python3) || die "no python3 on PATH"
    rm -rf "$UV_HOME"
    "$py" -m venv "$UV_HOME" && "$UV_HOME/bin/python" -m pip install --quiet "uv==$UV_VERSION" \
      || die "could not install uv into $UV_HOME (is python3-venv installed?)"
  fi
  export PATH="$UV_HOME/bin:$PATH"
}
ensure_uv
