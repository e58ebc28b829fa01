#!/usr/bin/env bash
# `make perf-report`: runs the standard load test set, each run against a
# fresh `herald dev` (loadtest/scripts/run.sh), then regenerates the results
# section of docs/performance.md with bench/perfreport.
#
# Environment:
#   PERF_SCALE  modest (default: minutes on a 2-core machine) or full (the
#               relay issue's targets: 18,000 idle, 10,000-subscriber
#               broadcast, 10,000 connections over 1,000 channels)
#   PERF_RUNS   space-separated run names to do only some runs (the report
#               then shows only those)
#   PERF_NOTE   text added under the tables
#   DOC         document to update (default docs/performance.md)
set -euo pipefail
cd "$(dirname "$0")/../.."

scale=${PERF_SCALE:-modest}
doc=${DOC:-docs/performance.md}
stamp=$(date +%Y%m%d-%H%M%S)

# name | scenario | flags
case $scale in
modest)
	runs=(
		"idle-2k|idle|--conns 2000 --connect-rate 1000 --warmup 2s --duration 10s --drain 0s"
		"broadcast-1k-10|broadcast|--conns 1000 --rate 10 --connect-rate 1000 --warmup 3s --duration 15s --drain 3s"
		"broadcast-1k-100|broadcast|--conns 1000 --rate 100 --connect-rate 1000 --warmup 3s --duration 15s --drain 3s"
		"chat-1k-100|chat|--conns 1000 --channels 100 --rate 100 --connect-rate 1000 --warmup 3s --duration 15s --drain 3s"
		"chat-1k-500|chat|--conns 1000 --channels 100 --rate 500 --connect-rate 1000 --warmup 3s --duration 15s --drain 3s"
	)
	;;
full)
	runs=(
		"idle-18k|idle|--conns 18000 --connect-rate 1000 --warmup 5s --duration 30s --drain 0s"
		"broadcast-10k-1|broadcast|--conns 10000 --rate 1 --connect-rate 1000 --warmup 5s --duration 60s --drain 5s"
		"broadcast-10k-25|broadcast|--conns 10000 --rate 25 --connect-rate 1000 --warmup 5s --duration 30s --drain 5s"
		"chat-10k-1000|chat|--conns 10000 --channels 1000 --rate 1000 --connect-rate 1000 --warmup 5s --duration 30s --drain 5s"
		"chat-10k-5000|chat|--conns 10000 --channels 1000 --rate 5000 --connect-rate 1000 --warmup 5s --duration 30s --drain 5s"
	)
	;;
*)
	echo "PERF_SCALE must be modest or full, got '$scale'" >&2
	exit 2
	;;
esac

load_before=$(cat /proc/loadavg 2>/dev/null || true)
pairs=()
failed=()
for r in "${runs[@]}"; do
	IFS='|' read -r name scenario flags <<<"$r"
	if [[ -n ${PERF_RUNS:-} && " $PERF_RUNS " != *" $name "* ]]; then
		continue
	fi
	echo "=== $name: herald loadtest $scenario $flags" >&2
	# shellcheck disable=SC2086 # flags are words
	if ! NAME=$name STAMP=$stamp URL= loadtest/scripts/run.sh "$scenario" $flags; then
		failed+=("$name")
	fi
	json=loadtest/results/$name-$stamp.json
	if [[ -f $json ]]; then
		pairs+=("$name=$json")
	fi
	sleep 2 # let the previous stack's sockets and files go
done
if [[ ${#pairs[@]} -eq 0 ]]; then
	echo "no run produced results" >&2
	exit 1
fi
load_after=$(cat /proc/loadavg 2>/dev/null || true)
go run ./bench/perfreport --doc "$doc" --scale "$scale" --load-before "$load_before" --load-after "$load_after" \
	--note "${PERF_NOTE:-}" "${pairs[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
	echo "runs that exited non-zero (their results, if any, are in the report): ${failed[*]}" >&2
	exit 1
fi
