# Shared by the benchmark scripts (sourced). bench_settings, kiln_rev, meta_run and build_kiln
# read REPO (the checkout); new_run sets RUN (the run's scratch directory), which build_kiln and
# release_run read.
# shellcheck shell=bash disable=SC2034 # it sets variables for the scripts that source it

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
# machine_busy: true when the 1-minute load average is above 1 (other work competes for the CPUs).
machine_busy() { awk '{exit !($1 > 1.0)}' /proc/loadavg; }

# usage: the script's header comment (from its third line to `set -euo`) as help text.
usage() { sed -n '3,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

# bench_settings: the environment bmc.sh and boot-services.sh share (see their --help): BENCH_DIR,
# BENCH_WORK (scratch, and the lock that makes runs wait for each other), QUICK, WRITE, PY.
bench_settings() {
	BENCH_DIR=$REPO/bench
	BENCH_WORK=${BENCH_WORK:-$REPO/target/bench-work}
	QUICK=${BENCH_QUICK:-0}
	if [ "$QUICK" = 1 ]; then WRITE=${BENCH_WRITE:-0}; else WRITE=${BENCH_WRITE:-1}; fi
	PY=/usr/bin/python3
}

# ---- run directory ------------------------------------------------------------------------------

# lock_bench_work WHAT: one benchmark at a time, as two would share the CPUs and spoil each other's
# figures: wait (up to 30 min) for the lock on BENCH_WORK. WHAT names the other run in the message.
lock_bench_work() {
	mkdir -p "$BENCH_WORK"
	exec 9>"$BENCH_WORK/lock"
	if ! flock -n 9; then
		log "another $1 run holds $BENCH_WORK/lock; waiting for it (up to 30 min)"
		flock -w 1800 9 || die "gave up waiting for the other run"
	fi
}

# new_run PREFIX: RUN = a fresh scratch directory in BENCH_WORK, with empty RESULTS and META files.
new_run() {
	RUN=$(mktemp -d "$BENCH_WORK/$1.XXXXXX")
	chmod 755 "$RUN"
	RESULTS=$RUN/results.tsv
	META=$RUN/meta.tsv
	: >"$RESULTS"
	: >"$META"
}

# release_run RC NS...: the EXIT trap's last steps: delete the namespaces that exist and a temporary
# policy-rc.d; remove RUN, or keep it (and say where) after a failure or with BENCH_KEEP=1.
release_run() {
	local rc=$1 ns
	shift
	for ns in "$@"; do
		if ip netns list | awk '{print $1}' | grep -qxF -- "$ns"; then
			ip netns del "$ns" || log "could not delete namespace $ns"
		fi
	done
	drop_temp_policy
	if [ -n "$RUN" ] && [ -d "$RUN" ]; then
		if [ "$rc" -ne 0 ] || [ "${BENCH_KEEP:-0}" = 1 ]; then
			log "scratch kept: $RUN"
		else
			rm -rf "$RUN"
		fi
	fi
}

# meta KEY VALUE: one line of META, which the report script renders.
meta() { printf '%s\t%s\n' "$1" "$2" >>"$META"; }

# The machine and the checkout, as the reports describe them.
cpu_model() { grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'; }
mem_total() { awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo; }
kiln_rev() {
	printf '%s%s\n' "$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')" \
		"$(git -C "$REPO" diff --quiet HEAD -- crates Cargo.lock 2>/dev/null || echo ' + uncommitted changes in crates/')"
}

# meta_run CMD: the run's date, command CMD, machine and kiln revision.
meta_run() {
	meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
	meta command "$1"
	meta nproc "$(nproc)"
	meta kernel "$(uname -r)"
	meta cpu "$(cpu_model)"
	meta mem "$(mem_total)"
	meta kiln.rev "$(kiln_rev) (release build)"
}

# ---- processes ----------------------------------------------------------------------------------

PIDS=() # every background process the script started and has not stopped yet

# stop_pids PID...: SIGTERM all, up to 5 s for them to go, then SIGKILL what is left.
stop_pids() {
	local pid left
	[ $# -gt 0 ] || return 0
	for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
	for _ in $(seq 50); do
		left=0
		for pid in "$@"; do kill -0 "$pid" 2>/dev/null && left=1 && break; done
		[ "$left" = 1 ] || break
		sleep 0.1
	done
	for pid in "$@"; do
		if kill -0 "$pid" 2>/dev/null; then
			log "pid $pid ignored SIGTERM; SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		wait "$pid" 2>/dev/null || true
	done
}

# forget PID...: drop stopped processes from PIDS.
forget() {
	local keep=() p q drop
	for p in "${PIDS[@]}"; do
		drop=0
		for q in "$@"; do [ "$p" = "$q" ] && drop=1 && break; done
		[ "$drop" = 1 ] || keep+=("$p")
	done
	PIDS=("${keep[@]}")
}

# stop_and_forget PID...: stop them and drop them from PIDS.
stop_and_forget() {
	stop_pids "$@"
	forget "$@"
}

# ---- packages -----------------------------------------------------------------------------------

TEMP_POLICY=0 # 1 while apt_install's own /usr/sbin/policy-rc.d is in place

# missing_packages PKG...: the Debian packages not installed (the check CI's set-up uses).
# shellcheck source=.ci/packages.sh
source "$(dirname "${BASH_SOURCE[0]}")/../.ci/packages.sh"

# apt_install PKG...: apt-get install --no-install-recommends (after an apt-get update when the first
# try fails); no packaged service starts meanwhile: a temporary policy-rc.d unless there is one.
apt_install() {
	log "installing: $*"
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod +x /usr/sbin/policy-rc.d
		TEMP_POLICY=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2 || {
		DEBIAN_FRONTEND=noninteractive apt-get update >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2
	}
	drop_temp_policy
}

drop_temp_policy() {
	if [ "$TEMP_POLICY" = 1 ]; then
		rm -f /usr/sbin/policy-rc.d
		TEMP_POLICY=0
	fi
}

# ---- servers ------------------------------------------------------------------------------------

# nginx_conf DIR ROOT LISTEN...: on stdout, a minimal nginx.conf serving the files in ROOT on each
# LISTEN address: one worker in the foreground, no access log, sendfile; pid, error log and
# temporary files in DIR.
nginx_conf() {
	local dir=$1 root=$2 listen
	shift 2
	cat <<-EOF
		worker_processes 1;
		daemon off;
		pid $dir/nginx.pid;
		error_log $dir/error.log;
		events { worker_connections 64; }
		http {
		    access_log off;
		    sendfile on;
		    client_body_temp_path $dir;
		    proxy_temp_path $dir;
		    fastcgi_temp_path $dir;
		    uwsgi_temp_path $dir;
		    scgi_temp_path $dir;
		    server {
	EOF
	for listen in "$@"; do echo "        listen $listen;"; done
	cat <<-EOF
		        root $root;
		    }
		}
	EOF
}

# ---- kiln ---------------------------------------------------------------------------------------

# build_kiln: KILN = a private copy of $KILN_BIN (default: a release build of this checkout),
# so a concurrent rebuild cannot swap the binary under a running benchmark.
KILN_BIN=${KILN_BIN:-}
build_kiln() {
	if [ -z "$KILN_BIN" ]; then
		log "building kiln (cargo build --release -p kiln)"
		(cd "$REPO" && cargo build --release -p kiln >&2)
		KILN_BIN=$REPO/target/release/kiln
	fi
	[ -x "$KILN_BIN" ] || die "kiln binary $KILN_BIN missing"
	cp "$KILN_BIN" "$RUN/kiln"
	KILN=$RUN/kiln
}
