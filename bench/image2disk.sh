#!/usr/bin/env bash
# image2disk throughput and memory, over loopback HTTP.
#
# Generates a disk image (SIZE_MB, default 2048) that looks like an OS image — real files from
# /usr (binaries, libraries, text), some incompressible data, and long zero runs — compresses
# it with zstd, gzip and xz, serves the files from nginx on 127.0.0.1, and measures:
#   - kiln-agent image2disk into a new file, for raw / zstd / gzip / xz (MB/s, peak RSS);
#   - the shell pipeline `curl | zstd -d | tee >(sha256sum) | dd bs=4M conv=fdatasync`;
#   - each decompressor alone into /dev/null (zstd -d, gzip -d or pigz -d, xz -d -T1);
#   - each other stage of the zstd pipeline alone: the HTTP download (curl -o /dev/null), OpenSSL
#     SHA-256 (openssl dgst -sha256) of the served .zst and of the raw image, and the write
#     (dd bs=4M oflag=direct from the page cache into the target; conv=fdatasync where the
#     target's file system refuses O_DIRECT);
#   - qemu-img convert -O raw from a qcow2 served over HTTP (qemu-img's curl block driver),
#     the other tool that streams an image from a URL to a disk (it checks no digest).
# Targets: the agent ≥ 90% of the decompressor alone, ≥ 3× the shell pipeline (zstd), its zstd
# rate ≥ 60% of the slowest stage of that pipeline measured alone, and a peak RSS ≤ 64 MiB.
# All rates are MB/s of raw image (the .zst stages move fewer bytes in the same time).
#
#   SIZE_MB=256 bench/image2disk.sh        # quick run while developing
#   bench/image2disk.sh                    # the full 2 GiB run (a few minutes)
#
# Environment: SIZE_MB; WORK (scratch dir, default /var/tmp/kiln-bench-image2disk; with KEEP=1
# it is kept and the image reused by the next run of the same size); TARGET_DIR (where the
# written image goes: default /dev/shm when it has room, so the figures measure the pipeline
# rather than this machine's disk — set TARGET_DIR=$WORK to include the disk); AGENT (binary;
# default: cargo build --release). Loopback only; nginx is stopped on exit.
set -euo pipefail

SIZE_MB=${SIZE_MB:-2048}
WORK=${WORK:-/var/tmp/kiln-bench-image2disk}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

need() { command -v "$1" >/dev/null || { echo "image2disk.sh: needs $1" >&2; exit 1; }; }
for t in nginx curl zstd gzip xz python3 sha256sum openssl dd qemu-img flock /usr/bin/time; do need "$t"; done

if [[ -z ${AGENT:-} ]]; then
    (cd "$ROOT" && cargo build --release -p kiln-agent --quiet)
    AGENT=$ROOT/target/release/kiln-agent
fi

# One benchmark at a time (lib.sh's lock): two would spoil each other's figures, and two runs of
# this one would share WORK's image while each one's cleanup removes WORK.
BENCH_WORK=${BENCH_WORK:-$ROOT/target/bench-work}
lock_bench_work image2disk.sh
mkdir -p "$WORK/www" "$WORK/nginx"
if [[ -z ${TARGET_DIR:-} ]]; then
    TARGET_DIR=$WORK
    if [[ -d /dev/shm ]] && (($(df --output=avail -k /dev/shm | tail -1) > SIZE_MB * 1024 * 3 / 2)); then
        TARGET_DIR=/dev/shm
    fi
fi
TARGET=$TARGET_DIR/kiln-bench-image2disk-target.$$
SERVER_PID=
cleanup() {
    if [[ -n $SERVER_PID ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -f "$TARGET" "$WORK/pipeline.sha"
    if [[ -z ${KEEP:-} ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT INT TERM

echo "load at start: $(uptime)"
echo "cores: $(nproc), target: $TARGET_DIR"
IMG=$WORK/www/image-${SIZE_MB}M.raw

# --- the image ---------------------------------------------------------------------------
# Per 64 MiB: 26 MiB of real files from /usr, 6 MiB random, 32 MiB zeros (in 4 runs).
if [[ ! -s $IMG ]]; then
    echo "generating a ${SIZE_MB} MiB image…"
    python3 - "$IMG" "$SIZE_MB" <<'EOF'
import os, sys
path, size = sys.argv[1], int(sys.argv[2]) << 20
MIB = 1 << 20
def usr_files():
    while True:
        for d, _, files in os.walk("/usr"):
            for f in files:
                p = os.path.join(d, f)
                try:
                    if os.path.isfile(p) and not os.path.islink(p):
                        with open(p, "rb") as fh:
                            yield fh.read(8 * MIB)
                except OSError:
                    pass
src, pending = usr_files(), b""
def real(n):
    global pending
    while len(pending) < n:
        pending += next(src)
    out, pending = pending[:n], pending[n:]
    return out
zeros = bytes(8 * MIB)
with open(path, "wb") as out:
    written = 0
    while written < size:
        for piece in (real(13 * MIB), zeros, os.urandom(6 * MIB), zeros, real(13 * MIB), zeros, zeros):
            piece = piece[: size - written]
            out.write(piece)
            written += len(piece)
EOF
fi
for c in zst gz xz; do
    f=$IMG.$c
    [[ -s $f ]] && continue
    echo "compressing $c…"
    case $c in
        zst) zstd -q -T0 -3 -c "$IMG" >"$f.tmp" ;;
        gz) if command -v pigz >/dev/null; then pigz -6 -c "$IMG" >"$f.tmp"; else gzip -6 -c "$IMG" >"$f.tmp"; fi ;;
        xz) xz -T0 -2 -c "$IMG" >"$f.tmp" ;;
    esac
    mv "$f.tmp" "$f"
done
if [[ ! -s $IMG.qcow2 ]]; then
    echo "converting to qcow2…"
    qemu-img convert -q -O qcow2 "$IMG" "$IMG.qcow2.tmp"
    mv "$IMG.qcow2.tmp" "$IMG.qcow2"
fi
SIZE=$(stat -c %s "$IMG")
# The measurements get 10 minutes (making the image does not count).
DEADLINE=$((SECONDS + 600))

# --- the server --------------------------------------------------------------------------
# nginx cannot bind port 0 and say which port it got, so: a free-looking port, then a check that
# the server answering there is this nginx (it serves this run's token file); when another
# process took the port meanwhile, nginx exits and the next port is tried.
TOKEN=$$-$RANDOM$RANDOM
echo "$TOKEN" >"$WORK/www/.token"
for attempt in 1 2 3 4 5; do
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    nginx_conf "$WORK/nginx" "$WORK/www" "127.0.0.1:$PORT" >"$WORK/nginx/nginx.conf"
    nginx -e "$WORK/nginx/error.log" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" 9>&- &
    SERVER_PID=$!
    for _ in $(seq 100); do
        [[ $(curl -s -m 2 "http://127.0.0.1:$PORT/.token" 2>/dev/null) == "$TOKEN" ]] && break 2
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
    echo "image2disk.sh: nginx did not serve this run's token on port $PORT (attempt $attempt); another port" >&2
done
[[ -n $SERVER_PID ]] || { echo "image2disk.sh: nginx would not start; $WORK/nginx/error.log:" >&2; tail -n 5 "$WORK/nginx/error.log" >&2; exit 1; }
BASE=http://127.0.0.1:$PORT/$(basename "$IMG")

# --- measurements ------------------------------------------------------------------------
mbps() { python3 -c "print(f'{$SIZE / $1 / 1e6:8.1f}')"; }
ratio() { python3 -c "print(f'{$1 / $2:5.2f}')"; }
# timed CMD…: sets ELAPSED (s) and RSS (KiB) from GNU time.
timed() {
    if ((SECONDS > DEADLINE)); then echo "image2disk.sh: over the 10 min budget, stopping" >&2; exit 1; fi
    sync
    local rc=0
    /usr/bin/time -f '%e %M' -o "$WORK/time" "$@" || rc=$?
    # (on failure GNU time writes "Command exited with …" first: the figures are on the last line)
    read -r ELAPSED RSS < <(tail -n 1 "$WORK/time")
    return "$rc"
}

declare -A AGENT_S AGENT_RSS ALONE_S
echo
printf '%-34s %9s %8s %10s\n' run "MB/s" seconds "peak RSS"
for c in raw zst gz xz; do
    f=$IMG; [[ $c != raw ]] && f=$IMG.$c
    url=$BASE; [[ $c != raw ]] && url=$BASE.$c
    sha=$(sha256sum "$f" | cut -d' ' -f1)
    rm -f "$TARGET"
    timed "$AGENT" image2disk --quiet --url "$url" --sha256 "$sha" --disk "$TARGET" --size "$SIZE" >/dev/null
    AGENT_S[$c]=$ELAPSED AGENT_RSS[$c]=$RSS
    printf '%-34s %9s %8.2f %7d KiB\n' "kiln-agent image2disk ($c)" "$(mbps "$ELAPSED")" "$ELAPSED" "$RSS"
done
rm -f "$TARGET"

timed bash -c "set -o pipefail; curl -s '$BASE.zst' | zstd -q -d | tee >(sha256sum >'$WORK/pipeline.sha') \
    | dd of='$TARGET' bs=4M conv=fdatasync status=none"
PIPE_S=$ELAPSED
printf '%-34s %9s %8.2f\n' "curl|zstd -d|tee sha256sum|dd" "$(mbps "$ELAPSED")" "$ELAPSED"
rm -f "$TARGET"

GZ=gzip; command -v pigz >/dev/null && GZ=pigz
for c in zst gz xz; do
    case $c in
        zst) cmd=(zstd -q -d -c "$IMG.zst") ;;
        gz) cmd=("$GZ" -d -c "$IMG.gz") ;;
        xz) cmd=(xz -d -T1 -c "$IMG.xz") ;;
    esac
    timed bash -c '"$@" >/dev/null' _ "${cmd[@]}"
    ALONE_S[$c]=$ELAPSED
    printf '%-34s %9s %8.2f\n' "${cmd[0]} -d alone ($c)" "$(mbps "$ELAPSED")" "$ELAPSED"
done

# The other stages of the zstd pipeline, each alone (rates in raw-image MB/s).
declare -A STAGE_S
timed curl -s -o /dev/null "$BASE.zst"
STAGE_S[curl]=$ELAPSED
printf '%-34s %9s %8.2f\n' "curl -o /dev/null (zst)" "$(mbps "$ELAPSED")" "$ELAPSED"
STAGE_S[zstd]=${ALONE_S[zst]}
cat "$IMG" "$IMG.zst" >/dev/null # both in the page cache
timed openssl dgst -sha256 -r -out /dev/null "$IMG.zst"
STAGE_S[sha256]=$ELAPSED
printf '%-34s %9s %8.2f\n' "openssl dgst -sha256 (zst)" "$(mbps "$ELAPSED")" "$ELAPSED"
timed openssl dgst -sha256 -r -out /dev/null "$IMG"
SHA_RAW_S=$ELAPSED
printf '%-34s %9s %8.2f\n' "openssl dgst -sha256 (raw)" "$(mbps "$ELAPSED")" "$ELAPSED"
rm -f "$TARGET"
DD_HOW="oflag=direct"
if ! dd if="$IMG" of="$TARGET" bs=4M count=1 oflag=direct status=none 2>/dev/null; then
    DD_HOW="conv=fdatasync (O_DIRECT refused on $TARGET_DIR)"
fi
rm -f "$TARGET"
if [[ $DD_HOW == oflag=direct ]]; then
    timed dd if="$IMG" of="$TARGET" bs=4M oflag=direct status=none
else
    timed dd if="$IMG" of="$TARGET" bs=4M conv=fdatasync status=none
fi
STAGE_S[write]=$ELAPSED
printf '%-34s %9s %8.2f\n' "dd bs=4M ${DD_HOW%% *}" "$(mbps "$ELAPSED")" "$ELAPSED"
rm -f "$TARGET"

# qemu-img convert from qcow2 over HTTP.
QEMU_IMG_S=
# One request at a time (-m 1) with 4 MiB reads: with its defaults (8 coroutines, 256 KiB
# readahead) qemu-img 7.2 hung here against nginx (no progress, connections in CLOSE-WAIT).
QEMU_IMG_SRC='json:{"file.driver":"http","file.url":"'$BASE.qcow2'","file.readahead":"4194304","file.timeout":30}'
if timed timeout 300 qemu-img convert -m 1 -O raw "$QEMU_IMG_SRC" "$TARGET" 2>"$WORK/qemu-img.err"; then
    QEMU_IMG_S=$ELAPSED
    printf '%-34s %9s %8.2f %7d KiB\n' "qemu-img convert http qcow2->raw" "$(mbps "$ELAPSED")" "$ELAPSED" "$RSS"
    cmp -s "$IMG" "$TARGET" || echo "qemu-img convert: its output differs from the image"
else
    echo "qemu-img convert over HTTP not measured: $(tr '\n' ' ' <"$WORK/qemu-img.err" | head -c 300)"
    echo "  (Debian ships qemu-img's curl block driver in qemu-block-extra: apt-get install qemu-block-extra)"
fi
rm -f "$TARGET"

echo
echo "image: $SIZE bytes; served: raw $SIZE, zst $(stat -c %s "$IMG.zst"), gz $(stat -c %s "$IMG.gz"), xz $(stat -c %s "$IMG.xz"), qcow2 $(stat -c %s "$IMG.qcow2")"
# The issue's targets: gz and xz at ≥ 90 % of their decompressor alone; zstd (the fast one) is
# held to ≥ 60 % of the slowest stage alone, below.
for c in zst gz xz; do
    target="(target ≥ 0.90)"
    [ "$c" = zst ] && target="(no target of its own: see the slowest stage)"
    echo "agent $c vs decompressor alone: $(ratio "${ALONE_S[$c]}" "${AGENT_S[$c]}") $target"
done
echo "agent zst vs shell pipeline:      $(ratio "$PIPE_S" "${AGENT_S[zst]}") (target ≥ 3)"
slowest=curl
for st in "${!STAGE_S[@]}"; do
    python3 -c "import sys; sys.exit(0 if ${STAGE_S[$st]} > ${STAGE_S[$slowest]} else 1)" && slowest=$st
done
echo "agent zst vs slowest stage alone:  $(ratio "${STAGE_S[$slowest]}" "${AGENT_S[zst]}") (target ≥ 0.60; slowest: $slowest at $(mbps "${STAGE_S[$slowest]}") MB/s)"
echo "agent raw vs openssl sha256 (raw): $(ratio "$SHA_RAW_S" "${AGENT_S[raw]}") (sha256 of the raw image bounds the raw pipeline)"
if [[ -n $QEMU_IMG_S ]]; then
    echo "agent zst vs qemu-img convert:     $(ratio "$QEMU_IMG_S" "${AGENT_S[zst]}")"
fi
max=0; for c in "${!AGENT_RSS[@]}"; do ((AGENT_RSS[$c] > max)) && max=${AGENT_RSS[$c]}; done
echo "agent peak RSS: $((max / 1024)) MiB (target ≤ 64)"
echo "load at end: $(uptime)"
