#!/usr/bin/env bash
# Runs one `herald loadtest` scenario and writes its results to
# $RESULTS/$NAME-$STAMP.{json,html}; `make loadtest SCENARIO=… [URL=…] [ARGS=…]`.
#
#   loadtest/scripts/run.sh <scenario> [herald loadtest flags…]
#
# Without URL it starts a fresh `herald dev` (every service and embedded
# engine in one process, on the default ports, data in a temporary
# directory, a random token secret), waits for the relay's /readyz on
# 127.0.0.1:9100, runs the scenario with --server-pid of that process and
# stops it with SIGTERM. With URL it runs against that server only; the
# token secret comes from HERALD_TOKEN_SECRET (or pass --secret/--token in
# the flags), SERVER_PID adds --server-pid.
#
# Environment: URL, HERALD (binary, default bin/herald), RESULTS (default
# loadtest/results), NAME (default the scenario), STAMP (default now),
# READY_TIMEOUT (seconds, default 120), SERVER_PID (with URL).
set -euo pipefail

usage() {
	echo "usage: $0 <idle|broadcast|chat|churn|recovery> [herald loadtest flags…]  (make loadtest SCENARIO=… [URL=…] [ARGS=…])" >&2
	exit 2
}
[[ $# -ge 1 && -n "$1" ]] || usage
scenario=$1
shift
case $scenario in
idle | broadcast | chat | churn | recovery) ;;
*)
	echo "unknown scenario '$scenario'" >&2
	usage
	;;
esac

cd "$(dirname "$0")/../.."
HERALD=${HERALD:-bin/herald}
RESULTS=${RESULTS:-loadtest/results}
NAME=${NAME:-$scenario}
STAMP=${STAMP:-$(date +%Y%m%d-%H%M%S)}
READY_TIMEOUT=${READY_TIMEOUT:-120}
[[ -x $HERALD ]] || {
	echo "$HERALD not found: run 'make build' first" >&2
	exit 1
}
mkdir -p "$RESULTS"
json=$RESULTS/$NAME-$STAMP.json
html=$RESULTS/$NAME-$STAMP.html

dev_pid=""
tmp=""
stop_dev() {
	if [[ -n $dev_pid ]] && kill -0 "$dev_pid" 2>/dev/null; then
		kill -TERM "$dev_pid" 2>/dev/null || true
		for _ in $(seq 1 400); do
			kill -0 "$dev_pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$dev_pid" 2>/dev/null; then
			echo "herald dev (pid $dev_pid) did not stop within 40s of SIGTERM; killing it" >&2
			kill -KILL "$dev_pid" 2>/dev/null || true
		fi
		wait "$dev_pid" 2>/dev/null || true
	fi
	dev_pid=""
	if [[ -n $tmp ]]; then
		[[ -f $tmp/dev.log ]] && cp "$tmp/dev.log" "$RESULTS/$NAME-$STAMP.dev.log"
		rm -rf "$tmp"
		tmp=""
	fi
}
trap stop_dev EXIT
trap 'exit 130' INT TERM

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

args=("$scenario")
if [[ -z ${URL:-} ]]; then
	busy=()
	for p in 8000 8080 8081 8090 9000 9092 9100 9101 9102 9103; do
		if port_busy "$p"; then busy+=("$p"); fi
	done
	if [[ ${#busy[@]} -gt 0 ]]; then
		echo "cannot start herald dev: 127.0.0.1 port(s) ${busy[*]} already in use (make run / make cluster?);" >&2
		echo "stop that, or run against it with URL=ws://…/connection/websocket and HERALD_TOKEN_SECRET" >&2
		exit 1
	fi
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/herald-loadtest.XXXXXX")
	secret=lt-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
	HERALD_TOKEN_SECRET=$secret HERALD_LOG_LEVEL=${HERALD_LOG_LEVEL:-warn} \
		"$HERALD" dev --data-dir "$tmp/data" >"$tmp/dev.log" 2>&1 &
	dev_pid=$!
	echo "herald dev started (pid $dev_pid, data $tmp/data); waiting for http://127.0.0.1:9100/readyz" >&2
	deadline=$((SECONDS + READY_TIMEOUT))
	until curl -fsS -o /dev/null --max-time 2 http://127.0.0.1:9100/readyz 2>/dev/null; do
		if ! kill -0 "$dev_pid" 2>/dev/null; then
			echo "herald dev exited before becoming ready; its log:" >&2
			tail -n 40 "$tmp/dev.log" >&2
			exit 1
		fi
		if ((SECONDS >= deadline)); then
			echo "herald dev not ready after ${READY_TIMEOUT}s; its log:" >&2
			tail -n 40 "$tmp/dev.log" >&2
			exit 1
		fi
		sleep 0.2
	done
	echo "herald dev ready" >&2
	export HERALD_TOKEN_SECRET=$secret
	args+=(--url ws://127.0.0.1:8000/connection/websocket --server-pid "$dev_pid")
else
	args+=(--url "$URL")
	[[ -n ${SERVER_PID:-} ]] && args+=(--server-pid "$SERVER_PID")
fi
args+=(--out "$json" --html "$html" "$@")

echo "+ $HERALD loadtest ${args[*]}" >&2
rc=0
"$HERALD" loadtest "${args[@]}" || rc=$?
stop_dev
if [[ -f $json ]]; then
	echo "results: $json" >&2
	echo "report:  $html" >&2
fi
exit "$rc"
