#!/usr/bin/env bash
# Install and start what the demo and the tests need on a fresh Debian machine:
# system packages, the Docker engine (no bridge: the sandbox is offline), Redis on
# loopback, the virtualenv in .venv/ and the sandbox base image. Every step is
# skipped when its result is already there, so a warm run costs about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'bootstrap: %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_pkgs=()
command -v redis-server >/dev/null || need_pkgs+=(redis-server)
command -v dockerd >/dev/null || need_pkgs+=(docker.io)
command -v git >/dev/null || need_pkgs+=(git)
command -v debootstrap >/dev/null || need_pkgs+=(debootstrap)
command -v docker-compose >/dev/null || need_pkgs+=(docker-compose)  # checks deploy/compose.yaml
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
if ! command -v chromium >/dev/null; then  # the task page's browser test
  log "installing chromium"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
    chromium >/dev/null
fi

wait_for() {  # wait_for SECONDS COMMAND...: poll until COMMAND succeeds or time runs out
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (no bridge, no iptables)"
  mkdir -p /var/log
  as_root bash -c 'setsid nohup dockerd --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
    >/var/log/codexbot-dockerd.log 2>&1 < /dev/null &'
  wait_for 60 docker info || { log "dockerd did not start; see /var/log/codexbot-dockerd.log"; exit 1; }
fi

REDIS_PORT="${CODEX_REDIS_PORT:-6379}"
if ! redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  log "starting redis-server on 127.0.0.1:$REDIS_PORT"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --save '' --appendonly no \
    --logfile /var/log/codexbot-redis.log
  wait_for 10 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping || { log "redis did not start"; exit 1; }
fi

if [ ! -x .venv/bin/codexbot ] || [ pyproject.toml -nt .venv/.installed ] \
  || [ constraints.txt -nt .venv/.installed ]; then
  log "creating .venv and installing the project (versions from constraints.txt)"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]' 2>&1 \
    | grep -v "^WARNING: Location" >&2 || true
  .venv/bin/python -c 'import app, workers, sandbox' || { log "project install failed"; exit 1; }
  touch .venv/.installed
fi

.venv/bin/python -m sandbox.image ensure
