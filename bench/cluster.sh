#!/usr/bin/env bash
# The cluster against a single node, in one run on this machine: RETR of one big file (curl) and
# the 500-session scenario (examples/ferry_load.rs) through HAProxy in front of two nodes
# (contrib/cluster/run: PostgreSQL, s3s-fs, nodes on 127.0.0.11/12), against one ferryd on the
# embedded default (local files, no database) and one ferryd on the same database and bucket
# without the balancer. The order of the three alternates within each repetition; medians.
# See bench/README.md.
#
# Overrides: SIZE_MB=1024 RUNS=3 SESSIONS=500 PACE=32 KEEP=1 (keep the temp dir).
set -euo pipefail

SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-3}
SESSIONS=${SESSIONS:-500}
PACE=${PACE:-32}
USER_NAME=bench1k
USER_PASS=bench-pass
unset AWS_CA_BUNDLE

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
log() { printf '[bench-cluster %s] %s\n' "$(date +%T)" "$*" >&2; }

log "building ferryd and the load client (release)"
cargo build --release --quiet --bin ferryd --example ferry_load
FERRYD=$ROOT/target/release/ferryd
LOAD=$ROOT/target/release/examples/ferry_load

WORK=$(mktemp -d /tmp/ferry-bench-cluster.XXXXXX)
chmod a+x "$WORK" # the cluster's PostgreSQL may run as the postgres user
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [[ -z ${KEEP:-} ]]; then rm -rf "$WORK"; else log "kept $WORK"; fi
}
trap cleanup EXIT

log "writing the test files (${SIZE_MB} MiB and 64 KiB)"
dd if=/dev/urandom of="$WORK/big.bin" bs=1M count="$SIZE_MB" status=none
dd if=/dev/urandom of="$WORK/64k.bin" bs=64k count=1 status=none

log "starting the cluster (contrib/cluster/run)"
# The server rehashes a password at its own iteration count on login: the same cheap count
# everywhere, so the session rows measure the servers, not PBKDF2 (bench/run.sh does the same).
LIMITS=$'max_sessions = 30000\nmax_sessions_per_ip = 30000\npbkdf2_iterations = 1000'
CLUSTER_DIR=$WORK/cluster PROFILE=release EXTRA_CONFIG=$LIMITS contrib/cluster/run >"$WORK/cluster.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 3000); do grep -q 'cluster up' "$WORK/cluster.out" && break; sleep 0.2; done
grep -q 'cluster up' "$WORK/cluster.out" || { cat "$WORK/cluster.out" >&2; exit 1; }
export AWS_ACCESS_KEY_ID=ferry AWS_SECRET_ACCESS_KEY=ferry-cluster-secret
CONF=$WORK/cluster/ferryd.toml
"$FERRYD" user add "$USER_NAME" --password-stdin --iterations 1000 --config "$CONF" \
    <<<"$USER_PASS" >/dev/null

# The same database and bucket without the balancer: the configuration without the PROXY line.
grep -v proxy_protocol_from "$CONF" >"$WORK/direct.toml"
"$FERRYD" serve --config "$WORK/direct.toml" --node-name direct --listen 127.0.0.13:2121 \
    --passive-ports 32000-32999 --passive-address 127.0.0.13 --data-dir "$WORK/direct" \
    --pbkdf2-iterations 1000 >"$WORK/direct.log" 2>&1 &
PIDS+=($!)

# The embedded default: local files, JSON accounts, no database.
mkdir -p "$WORK/single"
"$FERRYD" user add "$USER_NAME" --password-stdin --iterations 1000 --data-dir "$WORK/single" \
    <<<"$USER_PASS" >/dev/null
"$FERRYD" serve --data-dir "$WORK/single" --listen 127.0.0.1:24190 \
    --max-sessions-per-ip 30000 --max-sessions 30000 --pbkdf2-iterations 1000 \
    >"$WORK/single.log" 2>&1 &
PIDS+=($!)
for f in direct single; do
    for _ in $(seq 100); do grep -q 'listening on' "$WORK/$f.log" && break; sleep 0.1; done
done

declare -A ADDR=([single]=127.0.0.1:24190 [direct]=127.0.0.13:2121 [cluster]=127.0.0.1:2121)
TARGETS=(single direct cluster)
for t in "${TARGETS[@]}"; do
    for f in big.bin 64k.bin; do
        curl -sS --max-time 600 -T "$WORK/$f" "ftp://$USER_NAME:$USER_PASS@${ADDR[$t]}/$f"
    done
done

declare -A R
add() { R["$1|$2"]="${R["$1|$2"]:-} $3"; }
median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]}'; }
field() { sed -n "s/^RESULT.* $1=\([^ ]*\).*/\1/p; s/^RESULT $1=\([^ ]*\).*/\1/p" | head -1; }

for run in $(seq "$RUNS"); do
    order=("${TARGETS[@]}")
    # Rotate the order each repetition so no target always runs first (cold) or last.
    for _ in $(seq $(((run - 1) % 3))); do order=("${order[@]:1}" "${order[0]}"); done
    for t in "${order[@]}"; do
        log "run $run: $t RETR"
        speed=$(curl -sS --max-time 600 -o /dev/null -w '%{speed_download}' \
            "ftp://$USER_NAME:$USER_PASS@${ADDR[$t]}/big.bin") || speed=0
        add retr "$t" "$(awk -v s="$speed" 'BEGIN { printf "%.1f", s / 1048576 }')"
        log "run $run: $t $SESSIONS sessions"
        out=$("$LOAD" sessions --clients "$SESSIONS" --pace "$PACE" --file 64k.bin \
            --addr "${ADDR[$t]}" --user "$USER_NAME" --pass "$USER_PASS" 2>&1) || true
        for k in sessions_per_s p50_ms p99_ms errors; do add "$k" "$t" "$(echo "$out" | field "$k")"; done
        sleep 2
    done
done

m() { echo "${R["$1|$2"]:-}" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
echo "| scenario (median of $RUNS) | single node (local, no database) | one node on the database and bucket | two nodes through HAProxy | cluster / single | cluster / one node |"
echo "|---|---|---|---|---|---|"
row() { # row LABEL METRIC
    local s d c
    s=$(m "$2" single) d=$(m "$2" direct) c=$(m "$2" cluster)
    echo "| $1 | $s | $d | $c | $(ratio "$c" "$s") | $(ratio "$c" "$d") |"
}
row "RETR ${SIZE_MB} MiB (MiB/s)" retr
row "$SESSIONS sessions, pace $PACE (sessions/s)" sessions_per_s
row "session p50 (ms)" p50_ms
row "session p99 (ms)" p99_ms
row "session errors" errors
