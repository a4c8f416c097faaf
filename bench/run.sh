#!/usr/bin/env bash
# Side-by-side benchmark of ferryd against vsftpd, pure-ftpd and pyftpdlib on loopback.
# One command: builds, installs the peers if missing, starts every server with a throw-away
# configuration under a temp dir, runs the scenarios (servers alternating inside each
# repetition), stops the servers and prints one markdown table. See bench/README.md.
#
# Overrides (defaults are the issue's): SIZE_MB=1024 RUNS=3 SESSIONS=500 PACE=32 IDLE=10000
# IDLE_FORKING=5000 STORM=200 DOWNLOADERS=50 NOOP_SECS=5 SERVERS="ferryd vsftpd pure-ftpd
# pyftpdlib" BASE_PORT=24120 PASV_LO=10000 PASV_HI=30999 KEEP=1 (keep the temp dir).
# BASE_REV=REV adds "ferryd-base", ferryd built from that git revision (bench/compare.sh).
set -euo pipefail

SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-3}
SESSIONS=${SESSIONS:-500}
PACE=${PACE:-32}
IDLE=${IDLE:-10000}
# Servers with a process pair per session (vsftpd, pure-ftpd) are held to this many idle
# sessions: 2 processes each, and this machine's pid_max is 32768 for everyone on it.
IDLE_FORKING=${IDLE_FORKING:-5000}
STORM=${STORM:-200}
DOWNLOADERS=${DOWNLOADERS:-50}
NOOP_SECS=${NOOP_SECS:-5}
SERVERS=${SERVERS:-"ferryd vsftpd pure-ftpd pyftpdlib"}
BASE_PORT=${BASE_PORT:-24120}
PASV_LO=${PASV_LO:-10000}
PASV_HI=${PASV_HI:-30999}
USER_NAME=bench
USER_PASS=bench-pass

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }

# ---------------------------------------------------------------- build
# PROFILE=debug NO_BUILD=1 reuse existing binaries (a smoke test of the script itself).
PROFILE=${PROFILE:-release}
if [[ -z ${NO_BUILD:-} ]]; then
    log "building ferryd and the load client ($PROFILE)"
    cargo build --profile "${PROFILE/debug/dev}" --quiet --bin ferryd --example ferry_load
fi
FERRYD=$ROOT/target/$PROFILE/ferryd
LOAD=$ROOT/target/$PROFILE/examples/ferry_load
if [[ -n ${BASE_REV:-} ]]; then
    # The baseline in a worktree of its own, built into a target dir of its own.
    BASE_TREE=$ROOT/target/bench-base/tree
    rm -rf "$BASE_TREE"; git worktree prune
    git worktree add -q --detach "$BASE_TREE" "$BASE_REV"
    log "building ferryd at $BASE_REV ($(git -C "$BASE_TREE" log -1 --format=%h))"
    cargo build --manifest-path "$BASE_TREE/Cargo.toml" --target-dir "$ROOT/target/bench-base" \
        --profile "${PROFILE/debug/dev}" --quiet --bin ferryd
    git worktree remove --force "$BASE_TREE"
    FERRYD_BASE=$ROOT/target/bench-base/$PROFILE/ferryd
fi

ulimit -n "$(ulimit -Hn)"
log "open-file limit $(ulimit -n)"

WORK=$(mktemp -d /tmp/ferry-bench.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [[ -z ${KEEP:-} ]]; then rm -rf "$WORK"; else log "kept $WORK"; fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- peers
if [[ $SERVERS == *vsftpd* ]] && ! command -v vsftpd >/dev/null && [[ ! -x /usr/sbin/vsftpd ]]; then
    log "installing vsftpd"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q vsftpd >&2
fi
PURE=$WORK/pure-pkg
if [[ $SERVERS == *pure-ftpd* ]]; then
    # pure-ftpd and vsftpd conflict as Debian packages: unpack pure-ftpd instead of installing.
    log "unpacking pure-ftpd"
    mkdir -p "$PURE"
    (cd "$WORK" && apt-get download -q pure-ftpd >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && apt-get download -q pure-ftpd >/dev/null; })
    dpkg -x "$WORK"/pure-ftpd_*.deb "$PURE"
    for lib in libsodium23 libcap2 libssl3; do
        dpkg -s "$lib" >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$lib" >&2
    done
fi
if [[ $SERVERS == *pyftpdlib* ]]; then
    log "pyftpdlib into a venv"
    python3 -m venv "$WORK/venv"
    "$WORK/venv/bin/pip" install -q pyftpdlib >&2
fi

# ---------------------------------------------------------------- files
log "writing a ${SIZE_MB} MiB test file"
mkdir -p "$WORK/files"
dd if=/dev/urandom of="$WORK/files/big.bin" bs=1M count="$SIZE_MB" status=none
head -c 65536 /dev/urandom >"$WORK/files/64k.bin"
chmod 644 "$WORK/files/"*
# A home holding the files (hard links: one copy on disk and in the page cache).
fill_home() { mkdir -p "$1" && ln -f "$WORK/files/big.bin" "$WORK/files/64k.bin" "$1/"; }

port_free() { ! ss -Hltn "sport = :$1" | grep -q .; }
wait_port() { # wait_port PORT PID LOG
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$2" 2>/dev/null || break
        sleep 0.1
    done
    log "server on port $1 did not come up:"; cat "$3" >&2; return 1
}

declare -A PORT PID
n=0
for s in $SERVERS; do
    n=$((n + 1)); p=$((BASE_PORT + n))
    port_free "$p" || { log "port $p is taken; set BASE_PORT"; exit 1; }
    PORT[$s]=$p
done

# A login re-hashes a password stored with another round count to the server's setting, so
# the two password costs need two ferryd processes: the measured one at 1 000 rounds (as the
# peers' cheap hashes), and one at the default 600 000 for the "600 000 iterations" rows.
PORT[ferryd600k]=$((BASE_PORT + 9))
start_ferryd() {
    local d=$WORK/ferryd d6=$WORK/ferryd600k
    port_free "${PORT[ferryd600k]}" || { log "port ${PORT[ferryd600k]} is taken; set BASE_PORT"; exit 1; }
    mkdir -p "$d" "$d6"
    echo "$USER_PASS" | "$FERRYD" user add bench1k --password-stdin --iterations 1000 --data-dir "$d" >/dev/null
    echo "$USER_PASS" | "$FERRYD" user add "$USER_NAME" --password-stdin --data-dir "$d6" >/dev/null
    fill_home "$d/home/bench1k"; fill_home "$d6/home/$USER_NAME"
    local common=(--passive-ports "$PASV_LO-$PASV_HI" --registration closed
        --max-sessions 30000 --max-sessions-per-ip 30000 --max-sessions-per-user 0
        --max-transfers-per-user 0 --ban-after-failures 0 --idle-timeout-secs 3600
        --login-timeout-secs 600)
    "$FERRYD" serve --data-dir "$d6" --listen "127.0.0.1:${PORT[ferryd600k]}" "${common[@]}" \
        >"$d6/stdout.log" 2>&1 &
    PID[ferryd600k]=$!
    PIDS+=("${PID[ferryd600k]}")
    wait_port "${PORT[ferryd600k]}" "${PID[ferryd600k]}" "$d6/stdout.log"
    "$FERRYD" serve --data-dir "$d" --listen "127.0.0.1:${PORT[ferryd]}" "${common[@]}" \
        --pbkdf2-iterations 1000 >"$d/stdout.log" 2>&1 &
    PID[ferryd]=$!
}

# The baseline ferryd, as the measured one (1 000 rounds), for the side-by-side comparison.
start_ferryd_base() {
    local d=$WORK/ferryd-base
    mkdir -p "$d"
    echo "$USER_PASS" | "$FERRYD_BASE" user add bench1k --password-stdin --iterations 1000 --data-dir "$d" >/dev/null
    fill_home "$d/home/bench1k"
    "$FERRYD_BASE" serve --data-dir "$d" --listen "127.0.0.1:${PORT[ferryd-base]}" \
        --passive-ports "$PASV_LO-$PASV_HI" --registration closed --max-sessions 30000 \
        --max-sessions-per-ip 30000 --max-sessions-per-user 0 --max-transfers-per-user 0 \
        --ban-after-failures 0 --idle-timeout-secs 3600 --login-timeout-secs 600 \
        --pbkdf2-iterations 1000 >"$d/stdout.log" 2>&1 &
    PID[ferryd-base]=$!
}

start_vsftpd() {
    local d=$WORK/vsftpd
    # vsftpd logs in system users through PAM: a dedicated account and a minimal PAM service.
    id ferrybench >/dev/null 2>&1 || useradd -M -d "$d/home" -s /usr/sbin/nologin ferrybench
    usermod -d "$d/home" ferrybench
    echo "ferrybench:$USER_PASS" | chpasswd -c SHA512
    [[ -f /etc/pam.d/ferrybench-vsftpd ]] || printf '%s\n' \
        'auth required pam_unix.so' 'account required pam_unix.so' 'session required pam_unix.so' \
        >/etc/pam.d/ferrybench-vsftpd
    mkdir -p "$d" /var/run/vsftpd/empty
    fill_home "$d/home"
    chown -R ferrybench "$d/home"
    cat >"$d/vsftpd.conf" <<EOF
listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port=${PORT[vsftpd]}
background=NO
anonymous_enable=NO
local_enable=YES
write_enable=YES
chroot_local_user=YES
allow_writeable_chroot=YES
local_root=$d/home
pam_service_name=ferrybench-vsftpd
userlist_enable=NO
pasv_enable=YES
pasv_min_port=$PASV_LO
pasv_max_port=$PASV_HI
max_clients=0
max_per_ip=0
seccomp_sandbox=NO
lock_upload_files=NO
xferlog_enable=NO
idle_session_timeout=3600
data_connection_timeout=600
EOF
    /usr/sbin/vsftpd "$d/vsftpd.conf" >"$d/stdout.log" 2>&1 &
    PID[vsftpd]=$!
}

start_pure() {
    local d=$WORK/pure-ftpd
    mkdir -p "$d"
    fill_home "$d/home"
    chown -R nobody "$d/home"
    printf '%s\n%s\n' "$USER_PASS" "$USER_PASS" |
        "$PURE/usr/bin/pure-pw" useradd "$USER_NAME" -u nobody -d "$d/home" -f "$d/pureftpd.passwd" >/dev/null
    # pure-pw hashes with argon2id at t=511 (seconds per login on this machine): store a
    # SHA-512 crypt hash instead (5000 rounds, like vsftpd's system password), which pure-ftpd
    # checks with crypt(3).
    local h
    h=$(openssl passwd -6 -salt ferrybench "$USER_PASS")
    awk -F: -v OFS=: -v h="$h" '{$2 = h; print}' "$d/pureftpd.passwd" >"$d/p.tmp" && mv "$d/p.tmp" "$d/pureftpd.passwd"
    "$PURE/usr/bin/pure-pw" mkdb "$d/pureftpd.pdb" -f "$d/pureftpd.passwd"
    # At most half the passive range is allowed as sessions.
    local max=$(((PASV_HI - PASV_LO + 1) / 2))
    "$PURE/usr/sbin/pure-ftpd" -l "puredb:$d/pureftpd.pdb" -S "127.0.0.1,${PORT[pure-ftpd]}" \
        -p "$PASV_LO:$PASV_HI" -c "$max" -C "$max" -E -A -H -I 60 >"$d/stdout.log" 2>&1 &
    PID[pure-ftpd]=$!
}

start_pyftpdlib() {
    local d=$WORK/pyftpdlib
    mkdir -p "$d"
    fill_home "$d/home"
    cat >"$d/server.py" <<EOF
import logging
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer
logging.basicConfig(level=logging.WARNING)
auth = DummyAuthorizer()
auth.add_user("$USER_NAME", "$USER_PASS", "$d/home", perm="elradfmwMT")
FTPHandler.authorizer = auth
FTPHandler.passive_ports = range($PASV_LO, $PASV_HI + 1)
FTPHandler.timeout = 3600
server = FTPServer(("127.0.0.1", ${PORT[pyftpdlib]}), FTPHandler)
server.max_cons = 30000
server.max_cons_per_ip = 0
server.serve_forever()
EOF
    "$WORK/venv/bin/python" "$d/server.py" >"$d/stdout.log" 2>&1 &
    PID[pyftpdlib]=$!
}

for s in $SERVERS; do
    log "starting $s on 127.0.0.1:${PORT[$s]}"
    case $s in
        ferryd) start_ferryd ;; ferryd-base) start_ferryd_base ;; vsftpd) start_vsftpd ;;
        pure-ftpd) start_pure ;; pyftpdlib) start_pyftpdlib ;;
        *) log "unknown server $s"; exit 1 ;;
    esac
    PIDS+=("${PID[$s]}")
    wait_port "${PORT[$s]}" "${PID[$s]}" "$WORK/$s/stdout.log"
done

# ---------------------------------------------------------------- helpers
declare -A R   # "metric|server" -> values separated by spaces
add() { R["$1|$2"]="${R["$1|$2"]:-} $3"; }
median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]}'; }
field() { sed -n "s/.*RESULT.* $1=\([^ ]*\).*/\1/p; s/^RESULT $1=\([^ ]*\).*/\1/p" | head -1; }
url() { echo "ftp://$(login_user "$1" "${2:-}"):$USER_PASS@127.0.0.1:${PORT[$1]}"; } # url SERVER [1k]
login_user() { # login_user SERVER [1k]: vsftpd logs in the system account ferrybench
    if [[ $1 == ferryd-base || ($1 == ferryd && ${2:-} == 1k) ]]; then echo bench1k
    elif [[ $1 == vsftpd ]]; then echo ferrybench
    else echo "$USER_NAME"; fi
}
load() { # load SERVER USER MODE ARGS...
    local s=$1 u=$2; shift 2
    "$LOAD" "$@" --addr "127.0.0.1:${PORT[$s]}" --user "$u" --pass "$USER_PASS" || true
}
# Resident memory (KiB) summed over a process and all its descendants: tree_rss PID [Rss|Pss]
# (Pss shares each shared page among the processes mapping it).
tree_rss() {
    local root=$1 key=${2:-Rss} i=0 pid ppid
    local -A kids=()
    for st in /proc/[0-9]*/stat; do
        read -r pid _ _ ppid _ 2>/dev/null <"$st" || continue
        kids[$ppid]+=" $pid"
    done
    local tree=("$root")
    while ((i < ${#tree[@]})); do
        for pid in ${kids[${tree[i]}]:-}; do tree+=("$pid"); done
        i=$((i + 1))
    done
    printf '/proc/%s/smaps_rollup\n' "${tree[@]}" | xargs cat 2>/dev/null |
        awk -v k="$key:" '$1 == k {s += $2} END {print s + 0}'
}
# curl_timed CURL_ARGS...: prints curl's -w output (0 if it failed) and curl's own CPU time
# as a percentage of its wall time: near 100 means curl, not the server, set the pace.
curl_timed() {
    local t w LC_ALL=C
    t=$( { TIMEFORMAT='%R %U %S'; time curl -s --max-time 300 "$@" >"$WORK/curl.w" 2>/dev/null || echo 0 >"$WORK/curl.w"; } 2>&1 )
    w=$(cat "$WORK/curl.w")
    echo "${w:-0} $(echo "$t" | awk '{ if ($1 > 0) printf "%.0f", 100 * ($2 + $3) / $1; else print 0 }')"
}
tree_count() { pstree -p "$1" 2>/dev/null | grep -o '([0-9]*)' | wc -l; }


# ---------------------------------------------------------------- references
log "references: raw loopback TCP, sendfile over loopback, page-cache read"
cat "$WORK/files/big.bin" >/dev/null
for _ in $(seq "$RUNS"); do
    add raw_mem ref "$("$LOAD" raw --size-mb "$SIZE_MB" | field mib_s)"
    add raw_sendfile ref "$("$LOAD" raw --size-mb "$SIZE_MB" --file "$WORK/files/big.bin" | field mib_s)"
    # dd prints "N bytes ... copied, T s, X GB/s": bytes / seconds
    bps=$(dd if="$WORK/files/big.bin" of=/dev/null bs=4M 2>&1 | awk '/copied/ {for (i=1;i<=NF;i++) if ($i=="s,") print $1 / $(i-1)}')
    add dd_cache ref "$(awk -v b="$bps" 'BEGIN {printf "%.0f", b / 1048576}')"
done

# ---------------------------------------------------------------- repeated scenarios
rotate() { local -a a=($SERVERS); local k=$(($1 % ${#a[@]})); echo "${a[@]:k} ${a[@]:0:k}"; }
for rep in $(seq "$RUNS"); do
    order=$(rotate "$((rep - 1))")
    log "repetition $rep/$RUNS: $order"
    for s in $order; do
        read -r sp cpu < <(curl_timed -o /dev/null -w '%{speed_download}' "$(url "$s" 1k)/big.bin") || { sp=0; cpu=0; }
        add retr "$s" "$(awk -v b="$sp" 'BEGIN {printf "%.0f", b / 1048576}')"
        add retr_cpu "$s" "$cpu"
        # Equal writeback state for every STOR: no earlier upload's dirty pages pending.
        rm -f "$WORK"/*/home/up.bin "$WORK"/ferryd*/home/*/up.bin; sync
        read -r sp cpu < <(curl_timed -o /dev/null -T "$WORK/files/big.bin" -w '%{speed_upload}' "$(url "$s" 1k)/up.bin") || { sp=0; cpu=0; }
        add stor "$s" "$(awk -v b="$sp" 'BEGIN {printf "%.0f", b / 1048576}')"
        add stor_cpu "$s" "$cpu"
        log "  $s: RETR $(echo "${R["retr|$s"]}" | awk '{print $NF}') MiB/s, STOR $(echo "${R["stor|$s"]}" | awk '{print $NF}') MiB/s"
        out=$(load "$s" "$(login_user "$s" 1k)" sessions --clients "$SESSIONS" --pace "$PACE" --file 64k.bin 2>&1)
        echo "$out" | grep -v RESULT | sed "s/^/  $s: /" >&2
        for k in sessions_per_s p50_ms p99_ms errors client_cpu_s total_s; do add "s4_$k" "$s" "$(echo "$out" | field $k)"; done
    done
done

# ---------------------------------------------------------------- once per server
for s in $SERVERS; do
    if [[ $s == ferryd && -z ${BASE_REV:-} ]]; then
        log "ferryd: $SESSIONS sessions with the default 600 000 PBKDF2 iterations"
        out=$(load ferryd600k "$USER_NAME" sessions --clients "$SESSIONS" --pace "$PACE" --file 64k.bin --timeout-secs 600 2>&1)
        echo "$out" | grep -v RESULT | sed "s/^/  $s: /" >&2
        for k in sessions_per_s p50_ms p99_ms errors client_cpu_s; do add "s4x_$k" ferryd "$(echo "$out" | field $k)"; done
    fi
    log "$s: unpaced burst of $SESSIONS sessions"
    out=$(load "$s" "$(login_user "$s" 1k)" sessions --clients "$SESSIONS" --pace 0 --file 64k.bin 2>&1)
    echo "$out" | grep -v RESULT | sed "s/^/  $s: /" >&2
    for k in sessions_per_s errors; do add "burst_$k" "$s" "$(echo "$out" | field $k)"; done

    n=$IDLE
    [[ $s == vsftpd || $s == pure-ftpd ]] && ((n > IDLE_FORKING)) && n=$IDLE_FORKING
    log "$s: $n idle logged-in sessions"
    sleep 2
    before=$(tree_rss "${PID[$s]}"); before_pss=$(tree_rss "${PID[$s]}" Pss)
    out=$WORK/idle-$s.out
    "$LOAD" idle --addr "127.0.0.1:${PORT[$s]}" --user "$(login_user "$s" 1k)" --pass "$USER_PASS" --clients "$n" --pace "$PACE" --hold-secs 3600 --timeout-secs 120 >"$out" 2>&1 &
    lp=$!
    PIDS+=("$lp")
    for _ in $(seq 1800); do grep -q '^READY' "$out" && break; kill -0 "$lp" 2>/dev/null || break; sleep 0.5; done
    sleep 1
    after=$(tree_rss "${PID[$s]}"); after_pss=$(tree_rss "${PID[$s]}" Pss)
    held=$(field held <"$out")
    procs=$(tree_count "${PID[$s]}")
    kill "$lp" 2>/dev/null || true; wait "$lp" 2>/dev/null || true
    grep -v RESULT "$out" | grep -v READY | sed "s/^/  $s: /" >&2
    add idle_held "$s" "${held:-0}"
    add idle_procs "$s" "$procs"
    add idle_kib "$s" "$(awk -v a="$after" -v b="$before" -v n="${held:-0}" 'BEGIN {if (n > 0) printf "%.1f", (a - b) / n; else print "n/a"}')"
    add idle_pss "$s" "$(awk -v a="$after_pss" -v b="$before_pss" -v n="${held:-0}" 'BEGIN {if (n > 0) printf "%.1f", (a - b) / n; else print "n/a"}')"
    log "  $s: held ${held:-0}, RSS $before -> $after KiB, PSS $before_pss -> $after_pss KiB over $procs processes"
    # Let the server reap the closed sessions before the next scenario.
    sleep 5

    log "$s: NOOP latency during a login storm of $STORM and $DOWNLOADERS downloads"
    out=$(load "$s" "$(login_user "$s" 1k)" noop-latency --during login-storm --clients "$STORM" --secs "$NOOP_SECS" 2>&1)
    echo "$out" | grep -v RESULT | sed "s/^/  $s: /" >&2
    add noop_storm "$s" "$(echo "$out" | field p99_ms)"
    if [[ $s == ferryd && -z ${BASE_REV:-} ]]; then
        out=$(load ferryd600k "$USER_NAME" noop-latency --during login-storm --clients "$STORM" --secs "$NOOP_SECS" --timeout-secs 600 2>&1)
        echo "$out" | grep -v RESULT | sed "s/^/  $s (600k): /" >&2
        add noop_storm600k ferryd "$(echo "$out" | field p99_ms)"
    fi
    out=$(load "$s" "$(login_user "$s" 1k)" noop-latency --during download --clients "$DOWNLOADERS" --file big.bin --secs "$NOOP_SECS" 2>&1)
    echo "$out" | grep -v RESULT | sed "s/^/  $s: /" >&2
    add noop_dl "$s" "$(echo "$out" | field p99_ms)"
    add noop_dl_mib "$s" "$(echo "$out" | field bg_mib_s)"
done

# ---------------------------------------------------------------- table
med() { echo "${R["$1|$2"]:-}" | median; }
PEERS=$(for s in $SERVERS; do if [[ $s != ferryd ]]; then echo "$s"; fi; done)
raw_sf=$(med raw_sendfile ref)
raw_mem=$(med raw_mem ref)
# row LABEL METRIC BETTER(high|low) [FERRYD_METRIC]
row() {
    local label=$1 m=$2 better=$3 fm=${4:-$2} best="" v
    local line="| $label |"
    for s in $SERVERS; do
        if [[ $s == ferryd ]]; then v=$(med "$fm" ferryd); else v=$(med "$m" "$s"); fi
        line+=" ${v:-–} |"
    done
    for s in $PEERS; do
        v=$(med "$m" "$s")
        [[ -z $v || $v == n/a ]] && continue
        if [[ -z $best ]] || awk -v v="$v" -v b="$best" -v h="$better" 'BEGIN {exit !((h == "high") ? v > b : v < b)}'; then best=$v; fi
    done
    v=$(med "$fm" ferryd)
    if [[ -n $best && -n $v && $v != n/a ]]; then
        line+=" $(awk -v v="$v" -v b="$best" -v h="$better" 'BEGIN {if (h == "high") r = (b > 0 ? v / b : -1); else r = (v > 0 && b > 0 ? b / v : -1); if (r < 0) print "–"; else printf "%.2fx", r}') |"
    else line+=" – |"; fi
    echo "$line"
}
plain() { # plain LABEL METRIC: medians only, no ratio
    local line="| $1 |" v
    for s in $SERVERS; do v=$(med "$2" "$s"); line+=" ${v:-–} |"; done
    echo "$line – |"
}
frac() { # fraction of the sendfile reference
    local line="| $1 |" v
    for s in $SERVERS; do v=$(med "$2" "$s"); line+=" $(awk -v v="${v:-0}" -v r="$3" 'BEGIN {printf "%.2f", v / r}') |"; done
    echo "$line – |"
}

echo
echo "Run $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -sr); SIZE_MB=$SIZE_MB RUNS=$RUNS SESSIONS=$SESSIONS PACE=$PACE IDLE=$IDLE IDLE_FORKING=$IDLE_FORKING STORM=$STORM DOWNLOADERS=$DOWNLOADERS"
echo
header="| scenario |"; sep="|---|"
for s in $SERVERS; do header+=" $s |"; sep+="---:|"; done
if [[ $PEERS == ferryd-base ]]; then echo "$header ferryd vs ferryd-base |"; else echo "$header ferryd vs best peer |"; fi
echo "$sep---:|"
row "1. RETR ${SIZE_MB} MiB, curl (MiB/s, median of $RUNS; ferryd: 1 000 it.)" retr high
frac "1. RETR / sendfile-over-loopback reference" retr "$raw_sf"
plain "1. curl's own CPU during RETR (% of its wall time)" retr_cpu
row "2. STOR ${SIZE_MB} MiB, curl (MiB/s, median of $RUNS; ferryd: 1 000 it.)" stor high
frac "2. STOR / raw loopback TCP reference" stor "$raw_mem"
plain "2. curl's own CPU during STOR (% of its wall time)" stor_cpu
row "4. $SESSIONS sessions, pace $PACE (sessions/s; ferryd: 1 000 iterations)" s4_sessions_per_s high
row "4. total time of the $SESSIONS sessions (s)" s4_total_s low
[[ -z ${BASE_REV:-} ]] && row "4. ferryd with 600 000 iterations (sessions/s)" s4_sessions_per_s high s4x_sessions_per_s
row "4. p50 session time (ms)" s4_p50_ms low
row "4. p99 session time (ms)" s4_p99_ms low
row "4. failed sessions (paced)" s4_errors low
row "4. load client CPU (s)" s4_client_cpu_s low
row "4. unpaced burst of $SESSIONS (sessions/s)" burst_sessions_per_s high
row "4. unpaced burst: failed sessions" burst_errors low
row "5. idle logged-in sessions held (asked: $IDLE; forking servers $IDLE_FORKING)" idle_held high
row "5. server processes while holding them" idle_procs low
row "5. RSS growth per idle session, summed over processes (KiB)" idle_kib low
row "5. PSS growth per idle session (KiB; shared pages split)" idle_pss low
row "6. p99 NOOP RTT during login storms of $STORM, ${NOOP_SECS} s (ms; ferryd: 1 000 it.)" noop_storm low
[[ -z ${BASE_REV:-} ]] && row "6. ferryd: the same with 600 000 iterations (ms)" noop_storm low noop_storm600k
row "6. p99 NOOP RTT during $DOWNLOADERS downloads (ms)" noop_dl low
row "6. throughput of those $DOWNLOADERS downloads (MiB/s)" noop_dl_mib high
echo
echo "References (median of $RUNS): raw loopback TCP from memory $raw_mem MiB/s; sendfile over loopback $raw_sf MiB/s; page-cache read (dd bs=4M) $(med dd_cache ref) MiB/s."
