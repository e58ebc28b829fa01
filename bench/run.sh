#!/usr/bin/env bash
# Hot-path micro-benchmarks, benchstat-ready (`make bench`; see bench/README.md).
#
# Environment (all optional):
#   COUNT      runs of each benchmark (default 5; benchstat wants >= 5 for its CI)
#   BENCH      -bench regexp (default .)
#   BENCHTIME  -benchtime (default: go's 1s)
#   PKGS       packages (default: the hot-path packages below)
#   FULL=1     also run the system benchmarks that are skipped by default
#              (seconds of setup each, engines in process: BenchmarkHistoryHTTP,
#              BenchmarkConsumeToStream, BenchmarkStreamLatency10k)
#   SKIP       -skip regexp (default: those system benchmarks unless FULL=1)
#   OUT        output file (default bench/results/bench-<timestamp>.txt);
#              bench.out is always refreshed with a copy of the last run
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT=${COUNT:-5}
BENCH=${BENCH:-.}
PKGS=${PKGS:-./relay ./internal/protocol ./controller ./internal/store/sqlite ./management ./internal/archive ./internal/auth ./internal/partition ./loadtest}
heavy='BenchmarkHistoryHTTP|BenchmarkConsumeToStream|BenchmarkStreamLatency10k|BenchmarkWriteBatchesChat'
if [[ ${FULL:-} == 1 ]]; then
	SKIP=${SKIP:-}
else
	SKIP=${SKIP-$heavy}
fi
stamp=$(date +%Y%m%d-%H%M%S)
OUT=${OUT:-bench/results/bench-$stamp.txt}
mkdir -p "$(dirname "$OUT")"

args=(test -run '^$' -bench "$BENCH" -benchmem -count "$COUNT")
[[ -n ${BENCHTIME:-} ]] && args+=(-benchtime "$BENCHTIME")
[[ -n $SKIP ]] && args+=(-skip "$SKIP")
# shellcheck disable=SC2206 # PKGS is a word list
args+=($PKGS)

# Context for whoever reads the file later; benchstat ignores lines that are
# neither benchmark results nor "key: value" configuration, so these are
# prefixed with '#'. (A differing configuration key such as a commit would
# make benchstat put old and new in separate tables.)
{
	echo "# herald micro-benchmarks $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "# commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
	echo "# $(go version), $(nproc) CPUs, kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
	echo "# go ${args[*]}"
} >"$OUT"
echo "go ${args[*]}  > $OUT" >&2
rc=0
go "${args[@]}" 2>&1 | tee -a "$OUT" || rc=$?
cp "$OUT" bench.out
echo "results: $OUT (and bench.out); compare runs with: benchstat OLD NEW" >&2
exit "$rc"
