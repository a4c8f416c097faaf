#!/usr/bin/env bash
# ferryd on S3 against the same transfer made directly to the S3 server: RETR and STOR of one
# big file through `ferryd --storage s3` (curl over FTP) and GET/PUT of it straight to the
# bucket (curl with SigV4), alternating within each repetition, both against one local s3s-fs.
# The ratio is what ferryd costs on top of the object store. See bench/README.md.
#
# Overrides: SIZE_MB=1024 RUNS=3 BASE_PORT=24140 KEEP=1 (keep the temp dir).
set -euo pipefail

SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-3}
BASE_PORT=${BASE_PORT:-24140}
USER_NAME=bench1k
USER_PASS=bench-pass
BUCKET=ferry-bench
export AWS_ACCESS_KEY_ID=ferry-bench-key AWS_SECRET_ACCESS_KEY=ferry-bench-secret
# rclone (aws-sdk-go) cannot use a CA bundle with its own transport; the endpoint is plain HTTP.
unset AWS_CA_BUNDLE

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
log() { printf '[bench-s3 %s] %s\n' "$(date +%T)" "$*" >&2; }

PROFILE=${PROFILE:-release}
if [[ -z ${NO_BUILD:-} ]]; then
    log "building ferryd ($PROFILE)"
    cargo build --profile "${PROFILE/debug/dev}" --quiet --bin ferryd
fi
FERRYD=$ROOT/target/${PROFILE}/ferryd
S3S=$(command -v s3s-fs || echo "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs")
if [[ ! -x $S3S ]]; then
    log "installing s3s-fs"
    cargo install s3s-fs --version 0.14.1 --features binary --locked --quiet
fi

WORK=$(mktemp -d /tmp/ferry-bench-s3.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [[ -z ${KEEP:-} ]]; then rm -rf "$WORK"; else log "kept $WORK"; fi
}
trap cleanup EXIT

log "writing a ${SIZE_MB} MiB test file"
dd if=/dev/urandom of="$WORK/big.bin" bs=1M count="$SIZE_MB" status=none

mkdir -p "$WORK/s3/$BUCKET"
: >"$WORK/s3s.log"
RUST_LOG=info NO_COLOR=1 "$S3S" --host 127.0.0.1 --port 0 --access-key "$AWS_ACCESS_KEY_ID" \
    --secret-key "$AWS_SECRET_ACCESS_KEY" "$WORK/s3" >"$WORK/s3s.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q 'server is running at' "$WORK/s3s.log" && break; sleep 0.1; done
ENDPOINT=$(grep -o 'http://127.0.0.1:[0-9]*' "$WORK/s3s.log" | head -1)
[[ -n $ENDPOINT ]] || { log "s3s-fs did not start:"; cat "$WORK/s3s.log" >&2; exit 1; }
log "s3s-fs at $ENDPOINT"

D=$WORK/ferryd
mkdir -p "$D"
# The operator commands take the storage from the configuration file, as the server does.
printf 'storage = "s3"\ns3_bucket = "%s"\ns3_endpoint = "%s"\ns3_allow_http = true\n' \
    "$BUCKET" "$ENDPOINT" >"$D/ferryd.toml"
echo "$USER_PASS" | "$FERRYD" user add "$USER_NAME" --password-stdin --iterations 1000 \
    --config "$D/ferryd.toml" --data-dir "$D" >/dev/null
"$FERRYD" serve --config "$D/ferryd.toml" --data-dir "$D" --listen "127.0.0.1:$BASE_PORT" \
    --registration closed --pbkdf2-iterations 1000 >"$D/stdout.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q 'listening on' "$D/stdout.log" && break; sleep 0.1; done
grep -q 'listening on' "$D/stdout.log" || { log "ferryd did not start:"; cat "$D/stdout.log" >&2; exit 1; }
FTP="ftp://$USER_NAME:$USER_PASS@127.0.0.1:$BASE_PORT"

# rclone as the S3 client that uploads in parts as ferryd does: parts of 5 MiB, 2 in flight.
export RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=Other \
    RCLONE_CONFIG_BENCH_ENDPOINT=$ENDPOINT RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID \
    RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY RCLONE_CONFIG_BENCH_REGION=us-east-1
rclone_put() { # prints MiB/s
    local t0 t1
    t0=$(date +%s.%N)
    rclone copyto --ignore-times --s3-chunk-size 5M --s3-upload-concurrency 2 --s3-upload-cutoff 5M \
        "$WORK/big.bin" "bench:$BUCKET/$USER_NAME/up-rclone.bin" || { echo 0; return; }
    t1=$(date +%s.%N)
    awk -v s="$SIZE_MB" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", s / (b - a)}'
}

# s3s-fs wants the payload hash header; curl signs it with the request.
s3curl() {
    curl -sS -f --max-time 600 --aws-sigv4 "aws:amz:us-east-1:s3" \
        --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"
}
mib() { awk -v b="$1" 'BEGIN {printf "%.0f", b / 1048576}'; }
s3curl -T "$WORK/big.bin" -o /dev/null "$ENDPOINT/$BUCKET/$USER_NAME/big.bin"

declare -A R
add() { R[$1]="${R[$1]:-} $2"; }
median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]}'; }
direct() {
    add get_direct "$(mib "$(s3curl -o /dev/null -w '%{speed_download}' "$ENDPOINT/$BUCKET/$USER_NAME/big.bin" || echo 0)")"
    add put_direct "$(mib "$(s3curl -T "$WORK/big.bin" -o /dev/null -w '%{speed_upload}' "$ENDPOINT/$BUCKET/$USER_NAME/up-direct.bin" || echo 0)")"
    add put_rclone "$(rclone_put)"
}
through() {
    add get_ferryd "$(mib "$(curl -sS -f --max-time 600 -o /dev/null -w '%{speed_download}' "$FTP/big.bin" || echo 0)")"
    add put_ferryd "$(mib "$(curl -sS -f --max-time 600 -T "$WORK/big.bin" -o /dev/null -w '%{speed_upload}' "$FTP/up-ferryd.bin" || echo 0)")"
}
for rep in $(seq "$RUNS"); do
    if ((rep % 2)); then direct; through; else through; direct; fi
    log "repetition $rep/$RUNS: GET direct/ferryd $(echo "${R[get_direct]}" | awk '{print $NF}')/$(echo "${R[get_ferryd]}" | awk '{print $NF}') MiB/s, PUT direct/rclone/ferryd $(echo "${R[put_direct]}" | awk '{print $NF}')/$(echo "${R[put_rclone]}" | awk '{print $NF}')/$(echo "${R[put_ferryd]}" | awk '{print $NF}') MiB/s"
done
# The uploads must have arrived whole.
cmp -s "$WORK/big.bin" "$WORK/s3/$BUCKET/$USER_NAME/up-ferryd.bin" || { log "the upload through ferryd is not byte-exact"; exit 1; }

med() { echo "${R[$1]}" | median; }
ratio() { awk -v f="$1" -v d="$2" 'BEGIN {if (d > 0) printf "%.2fx", f / d; else print "–"}'; }
echo
echo "Run $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(uname -sr); SIZE_MB=$SIZE_MB RUNS=$RUNS; s3s-fs 0.14.1 on loopback"
echo
echo "| scenario (MiB/s, median of $RUNS) | direct to S3 | through ferryd (curl FTP) | ferryd / direct |"
echo "|---|---:|---:|---:|"
echo "| download ${SIZE_MB} MiB: curl GET (SigV4) / RETR | $(med get_direct) | $(med get_ferryd) | $(ratio "$(med get_ferryd)" "$(med get_direct)") |"
echo "| upload ${SIZE_MB} MiB: rclone multipart (5 MiB parts, 2 in flight) / STOR | $(med put_rclone) | $(med put_ferryd) | $(ratio "$(med put_ferryd)" "$(med put_rclone)") |"
echo "| upload ${SIZE_MB} MiB: curl single PUT (SigV4) / STOR | $(med put_direct) | $(med put_ferryd) | $(ratio "$(med put_ferryd)" "$(med put_direct)") |"
