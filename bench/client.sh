#!/usr/bin/env bash
# The ferry client against lftp, the same transfers in the same run, against one ferryd on
# loopback: (a) pget of a big file over 4 connections, (b) mirror (download) of a tree of small
# files into an empty directory, (c) the same mirror again with nothing changed, (b) and (c) at
# -P 1 and -P 4. The two clients alternate inside each repetition; every run's result is
# checked (cmp, diff -r) so a broken transfer cannot look fast. Prints one markdown table of
# medians and the ratio ferry/lftp (below 1.00x: ferry takes less time). See bench/README.md.
#
# Overrides: SIZE_MB=1024 RUNS=5 FILES=1000 SEGMENTS=4 PARALLEL="1 4" PORT=24150
# PASV_LO=34000 PASV_HI=34999 KEEP=1 (keep the temp dir). PROFILE=debug NO_BUILD=1 reuse
# existing binaries (a smoke test of the script itself).
set -euo pipefail

SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-5}
FILES=${FILES:-1000}
SEGMENTS=${SEGMENTS:-4}
PARALLEL=${PARALLEL:-"1 4"}
PORT=${PORT:-24150}
PASV_LO=${PASV_LO:-34000}
PASV_HI=${PASV_HI:-34999}
USER_NAME=bench1k
USER_PASS=bench-pass

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
log() { printf '[client-bench %s] %s\n' "$(date +%T)" "$*" >&2; }

# ---------------------------------------------------------------- build and peers
PROFILE=${PROFILE:-release}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [[ -z ${NO_BUILD:-} ]]; then
    log "building ferryd and ferry ($PROFILE)"
    cargo build --profile "${PROFILE/debug/dev}" --quiet --bin ferryd --bin ferry
fi
FERRYD=$TARGET/$PROFILE/ferryd
FERRY=$TARGET/$PROFILE/ferry
if ! command -v lftp >/dev/null; then
    log "installing lftp"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q lftp >&2
fi

WORK=$(mktemp -d /tmp/ferry-client-bench.XXXXXX)
SERVER_PID=
cleanup() {
    if [[ -n $SERVER_PID ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    if [[ -z ${KEEP:-} ]]; then rm -rf "$WORK"; else log "kept $WORK"; fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- server and files
DATA=$WORK/ferryd
HOME_DIR=$DATA/home/$USER_NAME
mkdir -p "$DATA"
# 1 000 PBKDF2 rounds, as bench/run.sh's measured account: the default 600 000 would put
# ~65 ms per login into every figure (pget and mirror -P 4 log in several times).
echo "$USER_PASS" | "$FERRYD" user add "$USER_NAME" --password-stdin --iterations 1000 --data-dir "$DATA" >/dev/null
mkdir -p "$HOME_DIR"
log "writing a ${SIZE_MB} MiB file and a tree of $FILES small files"
dd if=/dev/urandom of="$HOME_DIR/big.bin" bs=1M count="$SIZE_MB" status=none
# 20 directories, two levels deep (4 x 4 under 4); files of 1-8 KiB spread over all of them.
dirs=()
for a in 1 2 3 4; do
    dirs+=("tree/d$a")
    for b in 1 2 3 4; do dirs+=("tree/d$a/e$b"); done
done
python3 - "$HOME_DIR" "$FILES" "${dirs[@]}" <<'EOF'
import os, random, sys
home, files, dirs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rng = random.Random(1)
for d in dirs:
    os.makedirs(os.path.join(home, d), exist_ok=True)
for i in range(files):
    path = os.path.join(home, dirs[i % len(dirs)], f"f{i:04}.dat")
    with open(path, "wb") as f:
        f.write(rng.randbytes(rng.randint(1024, 8192)))
EOF

(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && { log "port $PORT is taken; set PORT"; exit 1; }
"$FERRYD" serve --data-dir "$DATA" --listen "127.0.0.1:$PORT" --passive-ports "$PASV_LO-$PASV_HI" \
    --registration closed --max-sessions 30000 --max-sessions-per-ip 30000 \
    --max-sessions-per-user 0 --max-transfers-per-user 0 --ban-after-failures 0 \
    --pbkdf2-iterations 1000 >"$DATA/stdout.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$DATA/stdout.log" >&2; exit 1; }
    sleep 0.1
done
log "ferryd on 127.0.0.1:$PORT; lftp $(lftp --version | head -1 | awk '{print $4}')"

# ---------------------------------------------------------------- clients
# run_client CLIENT DIR COMMANDS: runs one client in DIR and prints its wall time in seconds.
run_client() {
    local client=$1 dir=$2 commands=$3 t0 t1
    t0=$(date +%s.%N)
    if [[ $client == ferry ]]; then
        (cd "$dir" && HOME=$WORK FERRY_PASSWORD=$USER_PASS FERRY_HISTORY=/dev/null \
            "$FERRY" -q "127.0.0.1:$PORT" -c "login $USER_NAME; $commands") >"$WORK/client.out" 2>&1
    else
        # No AUTH TLS attempt (ferryd here has no certificate); stop at the first error.
        (cd "$dir" && HOME=$WORK lftp -u "$USER_NAME,$USER_PASS" -p "$PORT" \
            -e "set ftp:ssl-allow no; set cmd:fail-exit yes; $commands; bye" 127.0.0.1) >"$WORK/client.out" 2>&1
    fi || { log "$client failed: $commands"; cat "$WORK/client.out" >&2; exit 1; }
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}'
}
# fresh DIR: an empty directory with no dirty pages of an earlier run still to write back.
fresh() { rm -rf "$1"; sync; mkdir -p "$1"; }
same_tree() { diff -r "$HOME_DIR/tree" "$1" >/dev/null || { log "$2: the mirrored tree differs"; exit 1; }; }

# Downloads ferryd has logged so far (its audit log is flushed at least once a second).
downloads() { sleep 1.5; grep -c '"event":"download"' "$DATA/log/audit.jsonl" || true; }

declare -A R   # "scenario|client" -> seconds (or counts) separated by spaces
add() { R["$1|$2"]="${R["$1|$2"]:-} $3"; }
median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]}'; }

cat "$HOME_DIR/big.bin" >/dev/null   # in the page cache for every run alike
clients=(ferry lftp)
for rep in $(seq "$RUNS"); do
    # Alternate which client goes first.
    order=("${clients[@]}")
    ((rep % 2 == 0)) && order=(lftp ferry)
    log "repetition $rep/$RUNS: ${order[*]}"
    for c in "${order[@]}"; do
        d=$WORK/local-$c
        fresh "$d"
        t=$(run_client "$c" "$d" "pget -n $SEGMENTS big.bin")
        cmp -s "$HOME_DIR/big.bin" "$d/big.bin" || { log "$c: pget copy differs"; exit 1; }
        add pget "$c" "$t"
        log "  $c pget -n $SEGMENTS: $t s"
        for p in $PARALLEL; do
            fresh "$d"
            n0=$(downloads)
            t=$(run_client "$c" "$d" "mirror -P $p tree local")
            same_tree "$d/local" "$c mirror -P $p"
            add "mirror$p" "$c" "$t"
            n1=$(downloads)
            # The count of (c) means something only if (b) counted every file.
            ((n1 - n0 >= FILES)) || { log "$c mirror -P $p: ferryd logged $((n1 - n0)) downloads"; exit 1; }
            n0=$n1
            t2=$(run_client "$c" "$d" "mirror -P $p tree local")
            same_tree "$d/local" "$c mirror -P $p (again)"
            n=$(($(downloads) - n0))
            add "again$p" "$c" "$t2"
            add "fetched$p" "$c" "$n"
            log "  $c mirror -P $p: $t s, again: $t2 s ($n files downloaded again)"
        done
    done
done
rm -rf "$WORK"/local-*

# ---------------------------------------------------------------- table
echo "Run $(date -u +%FT%RZ) on $(nproc) cores, $(uname -sr); ferryd and ferry $PROFILE; lftp $(lftp --version | head -1 | awk '{print $4}'); RUNS=$RUNS SIZE_MB=$SIZE_MB FILES=$FILES"
echo
echo "| scenario (seconds, median of $RUNS) | ferry | lftp | ferry / lftp |"
echo "|---|---:|---:|---:|"
row() { # row SCENARIO LABEL [count]: a count has no ratio
    local f l
    f=$(echo "${R["$1|ferry"]:-}" | median); l=$(echo "${R["$1|lftp"]:-}" | median)
    if [[ -z $f ]]; then echo "| $2 | – | – | – |"
    elif [[ -n ${3:-} ]]; then echo "| $2 | $f | $l | – |"
    else awk -v f="$f" -v l="$l" -v s="$2" 'BEGIN {printf "| %s | %.3f | %.3f | %.2fx |\n", s, f, l, f / l}'; fi
}
row pget "(a) pget -n $SEGMENTS of $SIZE_MB MiB"
for p in $PARALLEL; do
    row "mirror$p" "(b) mirror -P $p of $FILES files in ${#dirs[@]} directories, into an empty one"
    row "again$p" "(c) the same mirror -P $p again, nothing changed"
    row "fetched$p" "(c) files downloaded again by it (ferryd's audit log)" count
done
f=$(echo "${R["pget|ferry"]}" | median); l=$(echo "${R["pget|lftp"]}" | median)
awk -v f="$f" -v l="$l" -v m="$SIZE_MB" 'BEGIN {printf "\npget throughput: ferry %.0f MiB/s, lftp %.0f MiB/s.\n", m / f, m / l}'
