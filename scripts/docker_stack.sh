#!/usr/bin/env bash
# Run the two `stream` images as containers, the gateway pointed at the generator, and
# serve the page as `make local-up` does; or stop all of it. What `make docker-up` and
# `make docker-down` call.
#
#   scripts/docker_stack.sh up | down
#
# Environment (defaults in brackets):
#   CONTAINER_ENGINE [docker]   docker or podman
#   ENGINE_FLAGS     []         global engine flags (podman here: --runtime runc ...)
#   RUN_FLAGS        []         extra `run` flags (podman here: --ulimit ...)
#   GENERATOR_IMAGE [textgen-generator:latest]  GATEWAY_IMAGE [textgen-gateway:latest]
#   STACK_NAME [textgen]        prefix of the network and container names
#   GENERATOR_PORT [8001]  GATEWAY_PORT [8000]  FRONTEND_PORT [8080]  (host ports)
#   SERVE_PAGE [1]              0 = containers only
#   WAIT_READY [1]              0 = return without waiting for the model to load
#   READY_TIMEOUT_S [300]
# Any other generator or gateway setting: pass it with GENERATOR_ENV / GATEWAY_ENV,
# e.g. GATEWAY_ENV="-e START_SECRET=s3cret -e LOG_LEVEL=debug".
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ENGINE_CMD=("${CONTAINER_ENGINE:-docker}")
read -r -a extra <<<"${ENGINE_FLAGS:-}" && ENGINE_CMD+=("${extra[@]}")
read -r -a RUN_EXTRA <<<"${RUN_FLAGS:-}"
read -r -a GENERATOR_EXTRA <<<"${GENERATOR_ENV:-}"
read -r -a GATEWAY_EXTRA <<<"${GATEWAY_ENV:-}"
NAME="${STACK_NAME:-textgen}"
GENERATOR_IMAGE="${GENERATOR_IMAGE:-textgen-generator:latest}"
GATEWAY_IMAGE="${GATEWAY_IMAGE:-textgen-gateway:latest}"
GENERATOR_PORT="${GENERATOR_PORT:-8001}"
GATEWAY_PORT="${GATEWAY_PORT:-8000}"
FRONTEND_PORT="${FRONTEND_PORT:-8080}"
PAGE_PID="$ROOT/.run/$NAME-page.pid"
PAGE_LOG="$ROOT/.run/$NAME-page.log"

engine() { "${ENGINE_CMD[@]}" "$@"; }
say() { echo "[docker-up] $*"; }

wait_for() {  # url what
    local deadline=$((SECONDS + ${READY_TIMEOUT_S:-300}))
    until curl -fsS -o /dev/null --max-time 2 "$1"; do
        if ((SECONDS > deadline)); then
            say "$2 not ready at $1 after ${READY_TIMEOUT_S:-300}s; its log:"
            engine logs --tail 40 "$3" >&2 || true
            exit 1
        fi
        sleep 0.5
    done
}

up() {
    down quiet
    # A user-defined network: the gateway reaches the generator by container name.
    engine network create "$NAME" >/dev/null
    say "generator: $GENERATOR_IMAGE on :$GENERATOR_PORT"
    engine run -d --name "$NAME-generator" --network "$NAME" -p "127.0.0.1:$GENERATOR_PORT:8080" \
        "${RUN_EXTRA[@]}" "${GENERATOR_EXTRA[@]}" "$GENERATOR_IMAGE" >/dev/null
    say "gateway:   $GATEWAY_IMAGE on :$GATEWAY_PORT"
    engine run -d --name "$NAME-gateway" --network "$NAME" -p "127.0.0.1:$GATEWAY_PORT:8080" \
        -e "GENERATOR_URL=http://$NAME-generator:8080" \
        -e "ALLOWED_ORIGINS=http://localhost:$FRONTEND_PORT,http://127.0.0.1:$FRONTEND_PORT" \
        "${RUN_EXTRA[@]}" "${GATEWAY_EXTRA[@]}" "$GATEWAY_IMAGE" >/dev/null
    wait_for "http://127.0.0.1:$GATEWAY_PORT/healthz" gateway "$NAME-gateway"
    if [[ "${SERVE_PAGE:-1}" == 1 ]]; then
        mkdir -p "$ROOT/.run"
        # The page server of `make local-up`, with /config.js naming this gateway.
        nohup python3 - "$FRONTEND_PORT" "http://127.0.0.1:$GATEWAY_PORT" >"$PAGE_LOG" 2>&1 <<'PY' &
import sys
sys.path.insert(0, "scripts")
from local_up import make_frontend_server

port, gateway = int(sys.argv[1]), sys.argv[2]
make_frontend_server("127.0.0.1", port, gateway_url=gateway, gateway_port=0).serve_forever()
PY
        echo $! >"$PAGE_PID"
        wait_for "http://127.0.0.1:$FRONTEND_PORT/config.js" page "$NAME-gateway"
    fi
    if [[ "${WAIT_READY:-1}" == 1 ]]; then
        say "waiting for the generator to load its model (readiness: /readyz)"
        wait_for "http://127.0.0.1:$GENERATOR_PORT/readyz" generator "$NAME-generator"
    fi
    say "gateway:   http://127.0.0.1:$GATEWAY_PORT   (try: curl -N 'http://127.0.0.1:$GATEWAY_PORT/generate?prompt=Hello')"
    [[ "${SERVE_PAGE:-1}" == 1 ]] && say "page:      http://localhost:$FRONTEND_PORT/"
    say "stop with: make docker-down"
}

down() {
    if [[ -f "$PAGE_PID" ]]; then
        kill "$(cat "$PAGE_PID")" 2>/dev/null || true
        rm -f "$PAGE_PID"
    fi
    engine rm -f "$NAME-gateway" "$NAME-generator" >/dev/null 2>&1 || true
    engine network rm "$NAME" >/dev/null 2>&1 || true
    [[ "${1:-}" == quiet ]] || say "stopped $NAME-gateway, $NAME-generator and the page"
}

cd "$ROOT"
case "${1:-}" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
