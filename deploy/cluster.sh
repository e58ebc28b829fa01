#!/usr/bin/env bash
# A Herald cluster on one machine, every piece its own process:
#   herald dev --engines-only  (kfake :9092, SQLite file, versitygw :9000)
#   2 controllers              gRPC :8091 :8092   admin :9120 :9121
#   2 relays                   WS   :8001 :8002   admin :9110 :9111
#   management                 REST :8080         admin :9102
#   cacher                     API  :8081         admin :9103
#   nginx                      :8000  (clients use only this port)
#
#   deploy/cluster.sh start|stop|status
#
# Data lives in $HERALD_CLUSTER_DIR (default ./data/cluster): engines/ holds
# Kafka, the store and S3; run/ holds pid files, logs and nginx's files.
# Every port can be moved with the variables below (e.g. NGINX_PORT=18000).
# Used by `make cluster` and `make cluster-stop`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DIR=${HERALD_CLUSTER_DIR:-$ROOT/data/cluster}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
RUN=$DIR/run
ENG=$DIR/engines
BIN=${HERALD_BIN:-$ROOT/bin/herald}

NGINX_PORT=${NGINX_PORT:-8000}
RELAY_PORTS=(${RELAY_PORTS:-8001 8002})
RELAY_ADMIN_PORTS=(${RELAY_ADMIN_PORTS:-9110 9111})
CONTROLLER_PORTS=(${CONTROLLER_PORTS:-8091 8092})
CONTROLLER_ADMIN_PORTS=(${CONTROLLER_ADMIN_PORTS:-9120 9121})
MANAGEMENT_PORT=${MANAGEMENT_PORT:-8080}
MANAGEMENT_ADMIN_PORT=${MANAGEMENT_ADMIN_PORT:-9102}
CACHER_PORT=${CACHER_PORT:-8081}
CACHER_ADMIN_PORT=${CACHER_ADMIN_PORT:-9103}
# `herald dev --engines-only` listens on the default engine ports.
KAFKA_ADDR=127.0.0.1:9092
S3_ENDPOINT=http://127.0.0.1:9000
# Seconds a crashed controller keeps its partitions (Kafka session timeout;
# kfake's minimum is 6s).
CONTROLLER_SESSION_TIMEOUT=${CONTROLLER_SESSION_TIMEOUT:-6s}
# The dev secret of `herald dev` (so `herald token --dev` works) unless set.
export HERALD_TOKEN_SECRET=${HERALD_TOKEN_SECRET:-herald-dev-secret-do-not-use-in-production}

# Every process, clients' entry first, engines last.
ORDER=(nginx relay-1 relay-2 management cacher controller-1 controller-2 engines)

log() { printf 'cluster: %s\n' "$*"; }

alive() { # name
  local f=$RUN/$1.pid
  [[ -f $f ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

nginx_bin() {
  command -v nginx 2>/dev/null || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } || true
}

ensure_nginx() {
  [[ -n $(nginx_bin) ]] && return
  log "nginx missing: installing the Debian package nginx-light"
  local sudo=""
  [[ $(id -u) -ne 0 ]] && sudo=sudo
  DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nginx-light
  # The package enables a system nginx on :80; this cluster runs its own.
  $sudo systemctl disable --now nginx >/dev/null 2>&1 || true
  [[ -n $(nginx_bin) ]] || { log "nginx still missing after apt-get"; exit 1; }
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port what seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  log "$2 not listening on :$1 after $3s (see $RUN/*.log)"
  return 1
}

wait_ready() { # name admin-port seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    alive "$1" || { log "$1 exited; last lines of $RUN/$1.log:"; tail -n 20 "$RUN/$1.log" >&2; return 1; }
    curl -fsS -o /dev/null "http://127.0.0.1:$2/readyz" 2>/dev/null && return 0
    sleep 0.1
  done
  log "$1 not ready after $3s (http://127.0.0.1:$2/readyz)"
  return 1
}

launch() { # name cmd...
  local name=$1
  shift
  nohup "$@" </dev/null >>"$RUN/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
}

start() {
  mkdir -p "$RUN" "$ENG"
  local running=()
  for n in "${ORDER[@]}"; do alive "$n" && running+=("$n"); done
  if ((${#running[@]})); then
    log "already running: ${running[*]} (deploy/cluster.sh stop first)"
    exit 1
  fi
  ensure_nginx
  [[ -x $BIN ]] || { log "$BIN missing: run make build"; exit 1; }
  for p in 9092 9000 "$NGINX_PORT" "${RELAY_PORTS[@]}" "${RELAY_ADMIN_PORTS[@]}" "${CONTROLLER_PORTS[@]}" \
    "${CONTROLLER_ADMIN_PORTS[@]}" "$MANAGEMENT_PORT" "$MANAGEMENT_ADMIN_PORT" "$CACHER_PORT" "$CACHER_ADMIN_PORT"; do
    port_free "$p" || { log "port $p is in use (is 'make run' or another cluster running?)"; exit 1; }
  done

  # Only the listed HERALD_* settings apply: drop others from the caller's env.
  local clean=()
  while IFS='=' read -r k _; do
    [[ $k == HERALD_* && $k != HERALD_TOKEN_SECRET && $k != HERALD_LOG_LEVEL ]] && clean+=(-u "$k")
  done < <(env)

  log "engines (data in $ENG)"
  launch engines env "${clean[@]}" "$BIN" dev --engines-only --data-dir "$ENG"
  wait_port 9092 "Kafka" 30 && wait_port 9000 "S3" 30 || { stop; exit 1; }
  # The engines create the store's schema; wait for its banner.
  for ((i = 0; i < 300; i++)); do grep -q 'Engines only' "$RUN/engines.log" && break; sleep 0.1; done

  local common=(env "${clean[@]}"
    HERALD_KAFKA_BROKERS=$KAFKA_ADDR
    HERALD_STORE_URI=$ENG/herald.db
    HERALD_S3_ENDPOINT=$S3_ENDPOINT HERALD_S3_ACCESS_KEY=herald HERALD_S3_SECRET_KEY=herald-dev-s3-secret)
  local controllers=""
  for i in 0 1; do
    controllers+="${controllers:+,}127.0.0.1:${CONTROLLER_PORTS[$i]}"
    log "controller-$((i + 1)) gRPC :${CONTROLLER_PORTS[$i]} admin :${CONTROLLER_ADMIN_PORTS[$i]}"
    launch "controller-$((i + 1))" "${common[@]}" HERALD_CONTROLLER_ID="controller-$((i + 1))" \
      HERALD_CONTROLLER_SESSION_TIMEOUT=$CONTROLLER_SESSION_TIMEOUT \
      "$BIN" controller -controller-addr "127.0.0.1:${CONTROLLER_PORTS[$i]}" -controller-admin-addr "127.0.0.1:${CONTROLLER_ADMIN_PORTS[$i]}"
  done
  log "management :$MANAGEMENT_PORT admin :$MANAGEMENT_ADMIN_PORT; cacher :$CACHER_PORT admin :$CACHER_ADMIN_PORT"
  launch management "${common[@]}" "$BIN" management \
    -management-addr "127.0.0.1:$MANAGEMENT_PORT" -management-admin-addr "127.0.0.1:$MANAGEMENT_ADMIN_PORT" -management-api=false
  launch cacher "${common[@]}" "$BIN" cacher \
    -cacher-addr "127.0.0.1:$CACHER_PORT" -cacher-admin-addr "127.0.0.1:$CACHER_ADMIN_PORT"
  for i in 0 1; do
    wait_ready "controller-$((i + 1))" "${CONTROLLER_ADMIN_PORTS[$i]}" 60 || { stop; exit 1; }
  done
  local servers=""
  for i in 0 1; do
    servers+="server 127.0.0.1:${RELAY_PORTS[$i]} max_fails=0; "
    log "relay-$((i + 1)) WebSocket :${RELAY_PORTS[$i]} admin :${RELAY_ADMIN_PORTS[$i]}"
    launch "relay-$((i + 1))" "${common[@]}" HERALD_CONTROLLERS="$controllers" HERALD_RELAY_ID="relay-$((i + 1))" \
      HERALD_MANAGEMENT_URL="http://127.0.0.1:$MANAGEMENT_PORT" \
      "$BIN" relay -relay-addr "127.0.0.1:${RELAY_PORTS[$i]}" -relay-admin-addr "127.0.0.1:${RELAY_ADMIN_PORTS[$i]}"
  done
  wait_ready management "$MANAGEMENT_ADMIN_PORT" 30 && wait_ready cacher "$CACHER_ADMIN_PORT" 30 &&
    wait_ready relay-1 "${RELAY_ADMIN_PORTS[0]}" 30 && wait_ready relay-2 "${RELAY_ADMIN_PORTS[1]}" 30 ||
    { stop; exit 1; }

  log "nginx :$NGINX_PORT"
  local ng
  ng=$(nginx_bin)
  mkdir -p "$RUN/nginx"
  sed -e "s#@RUN_DIR@#$RUN/nginx#g" -e "s#@USER@#$(id -un) $(id -gn)#g" \
    -e "s#@LISTEN@#127.0.0.1:$NGINX_PORT#g" -e "s#@RELAY_SERVERS@#$servers#g" \
    -e "s#@MANAGEMENT@#127.0.0.1:$MANAGEMENT_PORT#g" deploy/nginx.conf >"$RUN/nginx/nginx.conf"
  "$ng" -t -q -p "$RUN/nginx" -c "$RUN/nginx/nginx.conf" -e "$RUN/nginx/error.log" || { stop; exit 1; }
  launch nginx "$ng" -p "$RUN/nginx" -c "$RUN/nginx/nginx.conf" -e "$RUN/nginx/error.log"
  wait_port "$NGINX_PORT" nginx 10 || { stop; exit 1; }

  local tok adm
  tok=$("$BIN" token --sub alice --channels chat:lobby,chat:dev 2>/dev/null || true)
  adm=$("$BIN" token --admin --sub ops 2>/dev/null || true)
  cat <<MSG

Herald cluster is running (logs and pids in $RUN).
  WebSocket   ws://127.0.0.1:$NGINX_PORT/connection/websocket   (nginx, least_conn over :${RELAY_PORTS[0]} :${RELAY_PORTS[1]})
  history     http://127.0.0.1:$NGINX_PORT/v1/channels/{channel}/messages
  nginx       http://127.0.0.1:$NGINX_PORT/nginx_status
  archive now curl -X POST -H "Authorization: Bearer $adm" http://127.0.0.1:$CACHER_PORT/v1/archive/run   (admin token, 24h)
  metrics     relays :${RELAY_ADMIN_PORTS[0]} :${RELAY_ADMIN_PORTS[1]}, controllers :${CONTROLLER_ADMIN_PORTS[0]} :${CONTROLLER_ADMIN_PORTS[1]}, management :$MANAGEMENT_ADMIN_PORT, cacher :$CACHER_ADMIN_PORT (/metrics)
  token (alice; chat:lobby, chat:dev): ${tok:-see: $BIN token --dev --sub alice --channels chat:lobby}
  status: deploy/cluster.sh status    stop: make cluster-stop
MSG
}

# stop_tier sends SIGTERM to every process of a tier, then waits for them
# (SIGKILL after 30s).
stop_tier() { # names...
  local n pid i pids=() names=()
  for n in "$@"; do
    [[ -f $RUN/$n.pid ]] || continue
    pid=$(cat "$RUN/$n.pid")
    if kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null; then
      pids+=("$pid")
      names+=("$n")
    fi
    rm -f "$RUN/$n.pid"
  done
  for i in "${!pids[@]}"; do
    for ((t = 0; t < 300; t++)); do kill -0 "${pids[$i]}" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "${pids[$i]}" 2>/dev/null; then
      log "${names[$i]} (pid ${pids[$i]}) still running after 30s: SIGKILL"
      kill -KILL "${pids[$i]}" 2>/dev/null || true
    else
      log "stopped ${names[$i]}"
    fi
  done
}

stop() {
  [[ -d $RUN ]] || return 0
  # Clients' entry first, so relays drain (close 3001) while controllers
  # still stream; controllers flush their batches before the engines stop.
  stop_tier nginx
  stop_tier relay-1 relay-2
  stop_tier management cacher
  stop_tier controller-1 controller-2
  stop_tier engines
}

status() {
  local rc=0 n admin
  declare -A admins=([relay-1]=${RELAY_ADMIN_PORTS[0]} [relay-2]=${RELAY_ADMIN_PORTS[1]}
    [controller-1]=${CONTROLLER_ADMIN_PORTS[0]} [controller-2]=${CONTROLLER_ADMIN_PORTS[1]}
    [management]=$MANAGEMENT_ADMIN_PORT [cacher]=$CACHER_ADMIN_PORT)
  for n in "${ORDER[@]}"; do
    if ! alive "$n"; then
      printf '  %-13s down\n' "$n"
      rc=1
      continue
    fi
    admin=${admins[$n]:-}
    if [[ -n $admin ]]; then
      if curl -fsS -o /dev/null "http://127.0.0.1:$admin/readyz" 2>/dev/null; then
        printf '  %-13s pid %-7s ready\n' "$n" "$(cat "$RUN/$n.pid")"
      else
        printf '  %-13s pid %-7s NOT READY\n' "$n" "$(cat "$RUN/$n.pid")"
        rc=1
      fi
    else
      printf '  %-13s pid %s\n' "$n" "$(cat "$RUN/$n.pid")"
    fi
  done
  if alive nginx; then
    curl -fsS "http://127.0.0.1:$NGINX_PORT/nginx_status" 2>/dev/null | sed 's/^/    /' || true
  fi
  return $rc
}

case ${1:-} in
start) start ;;
stop) stop ;;
status) status ;;
*)
  echo "usage: $0 start|stop|status" >&2
  exit 2
  ;;
esac
