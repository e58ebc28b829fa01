#!/usr/bin/env bash
# make compare: the same `herald loadtest` scenarios against Centrifugo v6.9.1
# (memory engine), Centrifugo (Redis engine) and Herald (engines, controller
# and relay as separate processes), alternating, every server fresh, plus a
# bench/floor pass; then bench/compare writes one table into
# docs/performance.md (between the compare markers) and an HTML page.
#
#   bench/compare/compare.sh            # full: 20 s windows
#   QUICK=1 bench/compare/compare.sh    # short windows, under 5 minutes
#
# Variables: QUICK, RUNS (repetitions of the whole set, default 1; with
# more, bench/compare adds a table of medians),
# SCENARIOS (subset of: idle lone bcast-1 bcast-10 bcast-25 chat-1k chat-5k
# chat-20k, run in the order given; default all but bcast-25 and chat-20k
# (the relay issue's 250,000 deliveries/s; 20,000 msg/s), `lone` second so that
# it meets a machine the saturating scenarios have not just left), SERVERS
# (subset of: cf-mem cf-redis herald), HERALD_BIN (a prebuilt herald, e.g.
# another commit's, for A/B runs), HERALD_RELAY_EVENT_LOOPS (passed on),
# ENGINES_ENV / CONTROLLER_ENV / RELAY_ENV (space-separated VAR=value added
# to that Herald process's environment only, e.g. CONTROLLER_ENV=GOMAXPROCS=1),
# RELAYS (Herald relays, default 1; with more, each channel's subscribers
# are spread over all of them, as behind a load balancer, and each relay's
# CPU is its own process: relay, relay2, …; ports +100 per relay),
# COMPARE_CACHE (default ~/.cache/herald-compare: Centrifugo binary, never in
# git), DURATION (overrides the window), OUT_DIR (default bench/results/compare-<timestamp>), NO_DOC=1 (do
# not touch docs/performance.md), PROFILE=1 (profile the Herald runs: pprof,
# perf, context switches, strace; files in each run's folder). Ports: 1937x (never Herald's defaults).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)

CACHE=${COMPARE_CACHE:-$HOME/.cache/herald-compare}
CF_VERSION=v6.9.1
CF=$CACHE/centrifugo
STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT=${OUT_DIR:-$ROOT/bench/results/compare-$STAMP}
mkdir -p "$CACHE" "$OUT"
SECRET=compare-secret-$RANDOM$RANDOM
RUNS=${RUNS:-1}
RELAYS=${RELAYS:-1}
SCENARIOS=${SCENARIOS:-idle lone bcast-1 bcast-10 chat-1k chat-5k}
SERVERS=${SERVERS:-cf-mem cf-redis herald}

# Ports, away from Herald's defaults and from other engineers' tests.
CF_PORT=19370 REDIS_PORT=19371
RELAY_PORT=19380 RELAY_ADMIN=19381 RELAY_PPROF=19382
CTRL_PORT=19390 CTRL_ADMIN=19391 CTRL_PPROF=19392
KAFKA_PORT=19393 S3_PORT=19394

log() { printf 'compare: %s\n' "$*" >&2; }

# --- install -----------------------------------------------------------
if [[ ! -x $CF ]] || ! go version -m "$CF" 2>/dev/null | grep -q "centrifugo/v6[[:space:]]*$CF_VERSION"; then
  log "installing Centrifugo $CF_VERSION into $CACHE (go install, a few minutes the first time)"
  (cd "$CACHE" && GOBIN=$CACHE go install "github.com/centrifugal/centrifugo/v6@$CF_VERSION")
fi
if ! command -v redis-server >/dev/null; then
  log "redis-server missing: apt-get install redis-server"
  sudo=""; [[ $(id -u) -ne 0 ]] && sudo=sudo
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server
fi
HERALD=${HERALD_BIN:-}
if [[ -z $HERALD ]]; then
  HERALD=$OUT/herald
  go build -o "$HERALD" ./cmd/herald
fi
go build -o "$OUT/floor" ./bench/floor
go build -o "$OUT/compare" ./bench/compare

# --- scenarios ------------------------------------------------------------
if [[ -n ${QUICK:-} ]]; then
  W=(--connect-rate 5000 --warmup 1s --duration 4s --drain 1s); IDLE_D=3s; FLOOR_ROUNDS=4
else
  W=(--connect-rate 3000 --warmup 3s --duration 20s --drain 3s); IDLE_D=10s; FLOOR_ROUNDS=8
fi
# PROFILE=1 needs ~28 s of steady window for all its captures.
[[ -n ${PROFILE:-} && -z ${DURATION:-} ]] && DURATION=30s
[[ -n ${DURATION:-} ]] && W+=(--duration "$DURATION")
args_of() { # scenario → loadtest arguments
  case $1 in
    idle) echo "idle --conns 10000 ${W[*]} --duration $IDLE_D --drain 0s" ;;
    bcast-1) echo "broadcast --conns 10000 --rate 1 ${W[*]}" ;;
    bcast-10) echo "broadcast --conns 10000 --rate 10 ${W[*]}" ;;
    bcast-25) echo "broadcast --conns 10000 --rate 25 ${W[*]}" ;;
    chat-1k) echo "chat --conns 10000 --channels 1000 --rate 1000 ${W[*]}" ;;
    chat-5k) echo "chat --conns 10000 --channels 1000 --rate 5000 ${W[*]}" ;;
    chat-20k) echo "chat --conns 2000 --channels 1000 --rate 20000 ${W[*]}" ;;
    # One message at a time on an otherwise idle server (100 ms apart):
    # the latency a produce window or fetch setting must not add to.
    lone) echo "chat --conns 100 --channels 10 --rate 10 ${W[*]}" ;;
    *) log "unknown scenario $1"; exit 2 ;;
  esac
}

# --- servers ----------------------------------------------------------------
PIDS=()
stop_all() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  PIDS=()
}
trap stop_all EXIT

wait_port() { # port seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  log "nothing listening on :$1 after $2 s (logs in $RUNDIR)"; return 1
}
wait_ready() { # url seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  log "$1 not ready after $2 s (logs in $RUNDIR)"; return 1
}
port_check() {
  local p
  local k extra=()
  for ((k = 1; k < RELAYS; k++)); do extra+=($((RELAY_PORT + k * 100)) $((RELAY_ADMIN + k * 100)) $((RELAY_PPROF + k * 100))); done
  for p in $CF_PORT $REDIS_PORT $RELAY_PORT $RELAY_ADMIN $RELAY_PPROF $CTRL_PORT $CTRL_ADMIN $CTRL_PPROF $KAFKA_PORT $S3_PORT "${extra[@]}"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then log "port $p busy (another compare run?)"; exit 1; fi
  done
}

# start_<server> set MAIN (pid for --server-pid) and PROCS (name=pid,…).
start_cf() { # engine: memory|redis
  local engine=$1 conf=$RUNDIR/centrifugo.json redis=""
  if [[ $engine == redis ]]; then
    redis-server --port $REDIS_PORT --bind 127.0.0.1 --save '' --appendonly no --dir "$RUNDIR" \
      --logfile "$RUNDIR/redis.log" --daemonize no &
    PIDS+=($!); local rpid=$!
    wait_port $REDIS_PORT 10
    redis=",redis=$rpid"
  fi
  cat >"$conf" <<EOF
{
  "log": {"level": "error"},
  "http_server": {"address": "127.0.0.1", "port": $CF_PORT},
  "usage_stats": {"disabled": true},
  "client": {"token": {"hmac_secret_key": "$SECRET"}, "allowed_origins": ["*"]},
  "channel": {"without_namespace": {
    "allow_subscribe_for_client": true, "allow_publish_for_client": true,
    "history_size": 100, "history_ttl": "300s", "force_recovery": true}},
  "engine": {"type": "$engine", "redis": {"address": ["redis://127.0.0.1:$REDIS_PORT"]}}
}
EOF
  (ulimit -n 20000 2>/dev/null || true; exec "$CF" --config "$conf") >"$RUNDIR/centrifugo.log" 2>&1 &
  PIDS+=($!); MAIN=$!
  wait_port $CF_PORT 20
  PROCS="centrifugo=$MAIN$redis"
  URL=ws://127.0.0.1:$CF_PORT/connection/websocket
}

start_herald() {
  local data=$RUNDIR/data
  mkdir -p "$data"
  local eng=(env HERALD_DATA_DIR="$data" HERALD_TOKEN_SECRET="$SECRET" HERALD_LOG_LEVEL=warn
    HERALD_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT HERALD_S3_ENDPOINT=http://127.0.0.1:$S3_PORT)
  # shellcheck disable=SC2206 # word splitting of VAR=value lists is wanted
  local eng_env=(${ENGINES_ENV:-}) ctrl_env=(${CONTROLLER_ENV:-}) relay_env=(${RELAY_ENV:-})
  "${eng[@]}" "${eng_env[@]}" "$HERALD" dev --engines-only --data-dir "$data" >"$RUNDIR/engines.log" 2>&1 &
  PIDS+=($!); local epid=$!
  local i
  for ((i = 0; i < 300; i++)); do grep -q 'Engines only' "$RUNDIR/engines.log" && break; sleep 0.1; done
  wait_port $KAFKA_PORT 30
  local common=(env HERALD_TOKEN_SECRET="$SECRET" HERALD_LOG_LEVEL=warn HERALD_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT
    HERALD_STORE_URI="$data/herald.db" HERALD_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
    HERALD_S3_ACCESS_KEY=herald HERALD_S3_SECRET_KEY=herald-dev-s3-secret)
  "${common[@]}" "${ctrl_env[@]}" HERALD_CONTROLLER_ADDR=127.0.0.1:$CTRL_PORT HERALD_CONTROLLER_ADMIN_ADDR=127.0.0.1:$CTRL_ADMIN \
    HERALD_CONTROLLER_PPROF_ADDR=127.0.0.1:$CTRL_PPROF "$HERALD" controller >"$RUNDIR/controller.log" 2>&1 &
  PIDS+=($!); local cpid=$!
  wait_ready http://127.0.0.1:$CTRL_ADMIN/readyz 60
  local loops=()
  [[ -n ${HERALD_RELAY_EVENT_LOOPS:-} ]] && loops=(HERALD_RELAY_EVENT_LOOPS="$HERALD_RELAY_EVENT_LOOPS")
  local k off name relays="" urls=""
  for ((k = 1; k <= RELAYS; k++)); do
    off=$(((k - 1) * 100)) name=relay
    ((k > 1)) && name=relay$k
    "${common[@]}" "${loops[@]}" "${relay_env[@]}" HERALD_CONTROLLERS=127.0.0.1:$CTRL_PORT HERALD_RELAY_ADDR=127.0.0.1:$((RELAY_PORT + off)) \
      HERALD_RELAY_ADMIN_ADDR=127.0.0.1:$((RELAY_ADMIN + off)) HERALD_RELAY_PPROF_ADDR=127.0.0.1:$((RELAY_PPROF + off)) \
      "$HERALD" relay >"$RUNDIR/$name.log" 2>&1 &
    PIDS+=($!)
    ((k == 1)) && MAIN=$!
    relays+="$name=$!,"
    urls+="${urls:+,}ws://127.0.0.1:$((RELAY_PORT + off))/connection/websocket"
  done
  for ((k = 1; k <= RELAYS; k++)); do wait_ready "http://127.0.0.1:$((RELAY_ADMIN + (k - 1) * 100))/readyz" 60; done
  PROCS="${relays}controller=$cpid,engines=$epid"
  URL=$urls
}

# profile_herald (PROFILE=1; the window defaults to 30 s then): 8 s CPU
# profiles of relay and controller from their pprof listeners, /proc/PID/io
# and the load tester's counts over the same seconds; then, if perf is
# there, 4 s of `perf record -g` of every Herald process (kernel time
# included, which pprof's SIGPROF sampling under-counts) and 3 s of its
# context switches by stack (switches.awk); then strace -c -f for 4 s.
profile_herald() { # rundir
  local d=$1 p name pid
  sleep 9
  for p in ${PROCS//,/ }; do echo "${p%%=*} $(tr '\n' ' ' </proc/${p#*=}/io) $(cut -d' ' -f14,15 /proc/${p#*=}/stat)"; done >"$d/io.before"
  curl -fsS -o "$d/relay.pprof" "http://127.0.0.1:$RELAY_PPROF/debug/pprof/profile?seconds=8" &
  curl -fsS -o "$d/controller.pprof" "http://127.0.0.1:$CTRL_PPROF/debug/pprof/profile?seconds=8" &
  wait
  for p in ${PROCS//,/ }; do echo "${p%%=*} $(tr '\n' ' ' </proc/${p#*=}/io) $(cut -d' ' -f14,15 /proc/${p#*=}/stat)"; done >"$d/io.after"
  if command -v perf >/dev/null; then
    for p in ${PROCS//,/ }; do
      perf record -q -F 999 -g -p "${p#*=}" -o "$d/perf.${p%%=*}.data" -- sleep 4 >/dev/null 2>&1 &
    done
    wait
    for p in ${PROCS//,/ }; do
      perf record -q -e sched:sched_switch -g -p "${p#*=}" -o "$d/switch.${p%%=*}.data" -- sleep 3 >/dev/null 2>&1 &
    done
    wait
    for p in ${PROCS//,/ }; do
      name=${p%%=*}
      perf report -i "$d/perf.$name.data" --stdio --children --sort sym -g none --percent-limit 2 >"$d/perf.$name.txt" 2>/dev/null || true
      perf script -i "$d/switch.$name.data" 2>/dev/null | awk -f "$ROOT/bench/compare/switches.awk" | sort -rn >"$d/switch.$name.txt" || true
    done
  fi
  if command -v strace >/dev/null; then
    for p in ${PROCS//,/ }; do
      timeout -s INT 4 strace -c -f -p "${p#*=}" -o "$d/strace.${p%%=*}.txt" 2>/dev/null &
    done
    wait
  fi
}

run_one() { # server scenario rep
  local server=$1 sc=$2 rep=$3
  local name=$sc.$server.$rep
  RUNDIR=$OUT/$name.run
  mkdir -p "$RUNDIR"
  port_check
  case $server in
    cf-mem) start_cf memory ;;
    cf-redis) start_cf redis ;;
    herald) start_herald ;;
    *) log "unknown server $server"; exit 2 ;;
  esac
  local load; load=$(cut -d' ' -f1-3 /proc/loadavg)
  log "$name: $(args_of "$sc")  (load $load)"
  local prof=""
  if [[ -n ${PROFILE:-} && $server == herald && $sc != idle ]]; then
    profile_herald "$RUNDIR" & prof=$!
  fi
  # shellcheck disable=SC2046
  HERALD_TOKEN_SECRET=$SECRET "$HERALD" loadtest $(args_of "$sc") --url "$URL" --server-pid "$MAIN" \
    --procs "$PROCS" --channel-prefix "cmp$RANDOM-" --progress=false \
    --out "$OUT/$name.json" --html "$OUT/$name.html" >"$RUNDIR/loadtest.txt" 2>&1 ||
    log "$name: loadtest failed (see $RUNDIR/loadtest.txt)"
  [[ -n $prof ]] && wait "$prof"
  echo "$name $load $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/loadavg.txt"
  stop_all
  rm -rf "$RUNDIR/data"
}

log "results in $OUT; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $(date -u '+%Y-%m-%d %H:%M UTC') commit $(git rev-parse --short HEAD) quick=${QUICK:-0}" >"$OUT/meta.txt"
echo "herald $HERALD" >>"$OUT/meta.txt"
read -ra servers <<<"$SERVERS"
k=0
for rep in $(seq "$RUNS"); do
  for sc in $SCENARIOS; do
    # Rotate the order per scenario, so no server always runs first.
    n=${#servers[@]}
    for ((j = 0; j < n; j++)); do
      run_one "${servers[$(((j + k) % n))]}" "$sc" "$rep"
    done
    k=$((k + 1))
    if [[ $sc == bcast-1 ]]; then
      log "floor pass (bench/floor, 10,000 connections)"
      "$OUT/floor" -conns 10000 -writers 2 -rounds $FLOOR_ROUNDS >"$OUT/floor.$rep.txt" 2>&1 || log "floor failed"
      echo "floor.$rep $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/loadavg.txt"
    fi
  done
done

doc=(--doc "$ROOT/docs/performance.md")
[[ -n ${NO_DOC:-} ]] && doc=()
"$OUT/compare" --dir "$OUT" "${doc[@]}" --html "$OUT/compare.html"
[[ -z ${NO_DOC:-} ]] && cp "$OUT/compare.html" "$ROOT/docs/compare.html"
log "done: $OUT/compare.html"
