#!/usr/bin/env bash
# Side-by-side benchmark of this checkout's ferryd against ferryd built from another revision
# (default: the parent commit), in one run on one machine: RETR, STOR, 500 sessions, idle
# memory per session, p99 NOOP latency. The last column is this checkout against the baseline
# (above 1.00x: this checkout is better). Usage: bench/compare.sh [REV]; the overrides of
# bench/run.sh apply (default here: SIZE_MB=1024 RUNS=5 IDLE=2000).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE_REV=$(git rev-parse --verify "${1:-HEAD~1}^{commit}") \
    SERVERS="ferryd ferryd-base" RUNS=${RUNS:-5} IDLE=${IDLE:-2000} exec bench/run.sh
