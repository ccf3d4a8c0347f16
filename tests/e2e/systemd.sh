#!/usr/bin/env bash
# shellcheck disable=SC2016 # the checks' bash -c scripts take their arguments as $1, $2
# Issue 12 point 4 end to end: kiln.service run by a real systemd as PID 1, with its hardening.
# This machine's PID 1 is not systemd (package.sh starts the installed binary by hand), so the
# unit runs in a container booted with systemd:
#
#   1. debootstrap --variant=minbase (systemd, systemd-sysv, dbus, ipxe) of this machine's
#      Debian release (the package's binary is linked against its glibc) into a scratch ROOT;
#      cached as a tarball in the e2e assets dir, so only a fresh machine pays the minutes
#      (delete target/e2e-assets/systemd-root/ to take newer Debian packages).
#   2. The .deb packaging/build-deb.sh built (package.sh's, when its binary has the build id of
#      $KILN_BIN; else built here the same way) is installed in ROOT with dpkg -i
#      (systemd-nspawn without --boot); /etc/kiln/kiln.toml gets the namespace's interface and
#      address appended, as an operator would, and `systemctl enable kiln`.
#   3. systemd-nspawn --boot in a network namespace this test created (lib.sh's ns_create: a
#      bridge br0 with a tap for QEMU; never the host's network), --register=no (no
#      systemd-machined on this machine: systemctl -M is not available, so every look inside
#      goes through nsenter into the container's namespaces, found from systemd-nspawn's PID).
#   4. Checks: systemd is PID 1 and kiln.service is active (no restart, admin API up);
#      `systemd-analyze verify kiln.service` in the container; `systemctl show` has the unit's
#      hardening (values read from the installed unit file); the running process has them in
#      force (/proc: no_new_privs, a bounding set of exactly CAP_NET_BIND_SERVICE and
#      CAP_NET_RAW, a seccomp filter, the unit's open-file limit; in its mount namespace /usr and
#      /etc are read-only and /var/lib/kiln writable); the admin API answers `kiln enroll` and
#      `kiln hardware list` run in the container with the data dir's token; the journal has
#      kiln's start lines; a QEMU machine on br0 netboots from kiln in the container (DHCP,
#      iPXE, and the agent OS's initrd over HTTP); `systemctl stop kiln` stops it cleanly;
#      the container powers off on SIGTERM.
#   Cleanup in a trap, whatever happened: QEMU and the container stopped (bounded waits), ROOT
#   removed (after checking nothing is mounted below it), the namespace deleted.
#
# Hardening in a container: every hardening option of kiln.service works under systemd-nspawn
# and none is weakened for the test (the container keeps CAP_SYS_ADMIN: the container's systemd
# sets up the unit's mount namespace, seccomp filter and capability bounding set as on a
# machine). Two things of the container, not of the unit, need a flag:
#   - LimitNOFILE=65536: systemd-nspawn drops CAP_SYS_RESOURCE, so the container's systemd
#     cannot raise a hard limit above the one it started with; --rlimit gives it the 512Ki a
#     machine's PID 1 has. Where this machine's own root cannot raise its hard limit (a
#     sandbox without CAP_SYS_RESOURCE, e.g. hard limit 20000), systemd clamps LimitNOFILE to
#     it; the test then expects that value and says so.
#   - the network: --network-namespace-path alone makes systemd-nspawn (252) mount a sysfs that
#     lists the HOST's interfaces, where kiln finds no br0; with --private-network added,
#     /sys/class/net is the namespace's.
#
#   tests/e2e/systemd.sh
#
# Cost: ~2.7 min on a fresh machine (debootstrap ~135 s, then ~15 s to cache ROOT as a
# tarball), ~20 s with the cached ROOT; the .deb is package.sh's (same job, same target/).
# Environment: KILN_DEB=PATH.deb installs that package (no build, no build-id check);
# KILN_DEBIAN_MIRROR (default http://deb.debian.org/debian); KILN_AGENT_OS as for package.sh.
# Needs root, debootstrap and systemd-container (.ci/packages.sh), network access to the mirror
# for the first debootstrap.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"

MIRROR=${KILN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOT_PACKAGES=systemd,systemd-sysv,dbus,ipxe
SD_ROOT=
SD_NSPAWN_PID=
SD_PID=
SD_LOG=

# sd NAME CMD...: run CMD inside the booted container (its mount, UTS, IPC, network and PID
# namespaces; systemctl and journalctl talk to the container's systemd).
sd() { nsenter --target "$SD_PID" --mount --uts --ipc --net --pid -- "$@"; }

# offline CMD...: run CMD in ROOT with systemd-nspawn, not booted, no network.
offline() { systemd-nspawn --quiet --register=no --keep-unit --private-network -D "$SD_ROOT" -- "$@"; }

# deb_build_id DEB: the GNU build id of the /usr/bin/kiln a .deb holds.
deb_build_id() {
	local tmp
	tmp=$(mktemp)
	dpkg-deb --fsys-tarfile "$1" | tar -xO ./usr/bin/kiln >"$tmp" || true
	build_id "$tmp"
	rm -f "$tmp"
}
build_id() { readelf -n "$1" 2>/dev/null | sed -n 's/.*Build ID: *\([0-9a-f]*\).*/\1/p'; }

# find_deb: the package to install: $KILN_DEB, else package.sh's .deb when its binary is
# $KILN_BIN (same build id), else one built now like package.sh does. Sets DEB.
find_deb() {
	if [ -n "${KILN_DEB:-}" ]; then
		DEB=$KILN_DEB
		log "package: $DEB (KILN_DEB)"
		return
	fi
	local built want
	built=$(find "$REPO/target/debian" -maxdepth 1 -name 'kiln_*.deb' 2>/dev/null | head -n 1)
	want=$(build_id "$KILN_BIN")
	if [ -n "$built" ] && [ -n "$want" ] && [ "$(deb_build_id "$built")" = "$want" ]; then
		DEB=$built
		log "package: $DEB (package.sh's build; its kiln is $KILN_BIN, build id $want)"
		return
	fi
	local agent_os=${KILN_AGENT_OS:-} debs t=$SECONDS
	if [ -z "$agent_os" ] && [ -s "$E2E_ASSETS/agent-os/initrd.img" ]; then agent_os=$E2E_ASSETS/agent-os; fi
	log "building the package (no .deb of $KILN_BIN yet; agent OS: ${agent_os:-built now})"
	debs=$(KILN_AGENT_OS=$agent_os KILN_DEB_FAST=1 "$REPO/packaging/build-deb.sh" 2>>"$E2E_WORK/build.log") ||
		die "packaging/build-deb.sh failed (see $E2E_WORK/build.log)"
	DEB=$(grep '\.deb$' <<<"$debs")
	log "package: $DEB built in $((SECONDS - t)) s"
}

# make_root: debootstrap ROOT, or unpack the cached tarball of an earlier debootstrap.
make_root() {
	local codename cache t=$SECONDS
	# shellcheck disable=SC1091 # the running system's file
	codename=$( (. /etc/os-release && echo "${VERSION_CODENAME:-}"))
	[ -n "$codename" ] || die "no VERSION_CODENAME in /etc/os-release"
	cache=$E2E_ASSETS/systemd-root/$codename-minbase-${ROOT_PACKAGES//,/-}.tar.zst
	mkdir -p "$SD_ROOT"
	if [ -s "$cache" ]; then
		zstd -dc "$cache" | tar -C "$SD_ROOT" -x --numeric-owner --xattrs ||
			die "unpacking $cache failed"
		ok "root: $codename minbase with $ROOT_PACKAGES unpacked from the cache in $((SECONDS - t)) s"
		return
	fi
	log "debootstrap --variant=minbase --include=$ROOT_PACKAGES $codename (from $MIRROR)"
	if ! timeout 900 debootstrap --variant=minbase --include="$ROOT_PACKAGES" "$codename" "$SD_ROOT" "$MIRROR" \
		>"$E2E_WORK/debootstrap.log" 2>&1; then
		E2E_LOGS+=("debootstrap=$E2E_WORK/debootstrap.log")
		not_ok "root: debootstrap failed (see $E2E_WORK/debootstrap.log)"
		exit 1
	fi
	ok "root: debootstrap of $codename minbase with $ROOT_PACKAGES in $((SECONDS - t)) s"
	rm -rf "$SD_ROOT/var/cache/apt/archives/"*.deb
	mkdir -p "$(dirname "$cache")"
	if tar -C "$SD_ROOT" -c --numeric-owner --xattrs . | zstd -q -f -T0 -3 -o "$cache.tmp"; then
		mv "$cache.tmp" "$cache"
	else
		rm -f "$cache.tmp"
		log "could not cache the root in $cache"
	fi
}

# stop_container: SIGTERM to systemd-nspawn (it asks the container's systemd to power off),
# then SIGKILL after TIMEOUT s. 0 if it powered off by itself in time.
stop_container() {
	local timeout=${1:-60} deadline
	[ -n "$SD_NSPAWN_PID" ] || return 0
	kill -0 "$SD_NSPAWN_PID" 2>/dev/null || { wait "$SD_NSPAWN_PID" 2>/dev/null || true; SD_NSPAWN_PID=; return 0; }
	kill -TERM "$SD_NSPAWN_PID" 2>/dev/null || true
	deadline=$((SECONDS + timeout))
	while [ "$SECONDS" -lt "$deadline" ]; do
		if ! kill -0 "$SD_NSPAWN_PID" 2>/dev/null; then
			wait "$SD_NSPAWN_PID" 2>/dev/null || true
			SD_NSPAWN_PID=
			return 0
		fi
		sleep 0.5
	done
	log "the container did not power off within $timeout s: SIGKILL to systemd-nspawn $SD_NSPAWN_PID"
	kill -KILL "$SD_NSPAWN_PID" 2>/dev/null || true
	wait "$SD_NSPAWN_PID" 2>/dev/null || true
	SD_NSPAWN_PID=
	return 1
}

# remove_root: delete ROOT, unless something is still mounted below it (then say so).
remove_root() {
	[ -n "$SD_ROOT" ] && [ -d "$SD_ROOT" ] || return 0
	if awk '{print $5}' /proc/self/mountinfo | grep -q "^$SD_ROOT\(/\|$\)"; then
		log "mounts left below $SD_ROOT: not removing it"
		return 1
	fi
	rm -rf --one-file-system "$SD_ROOT"
}

systemd_exit() {
	local rc=$? i
	set +e
	# QEMU first, then the container (its kiln), then the rest of the harness's cleanup
	for ((i = ${#E2E_PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${E2E_PIDS[i]}"; done
	E2E_PIDS=()
	stop_container 60
	remove_root
	(exit "$rc")
	e2e_cleanup
}

# wait_container TIMEOUT: until systemd-nspawn's child is the container's systemd and it has
# finished booting (running, or degraded: a minbase container may fail a unit of its own).
# Sets SD_PID.
wait_container() {
	local deadline=$((SECONDS + $1)) child state=
	while [ "$SECONDS" -lt "$deadline" ]; do
		kill -0 "$SD_NSPAWN_PID" 2>/dev/null || { log "systemd-nspawn exited"; return 1; }
		child=$(awk '{print $1}' "/proc/$SD_NSPAWN_PID/task/$SD_NSPAWN_PID/children" 2>/dev/null)
		if [ -n "$child" ] && [ "$(cat "/proc/$child/comm" 2>/dev/null)" = systemd ]; then
			SD_PID=$child
			state=$(sd systemctl is-system-running 2>/dev/null) || true
			case $state in running | degraded) log "container: system $state"; return 0 ;; esac
		fi
		sleep 0.5
	done
	log "container: not booted within $1 s (state: ${state:-none})"
	return 1
}

# host_pid_of PID: the PID on this machine of the container's process PID (from NSpid).
host_pid_of() {
	local ns st
	ns=$(readlink "/proc/$SD_PID/ns/pid")
	for st in /proc/[0-9]*/status; do
		[ "$(readlink "${st%/status}/ns/pid" 2>/dev/null)" = "$ns" ] || continue
		if awk -v want="$1" '/^NSpid:/ { exit !($NF == want) }' "$st" 2>/dev/null; then
			basename "${st%/status}"
			return 0
		fi
	done
}

# service_events HOST: kiln's events for HOST, read through the admin API in the container.
service_events() { sd kiln events "$1" --last 1000 2>&1 || true; }

run_case() {
	e2e_setup systemd
	trap systemd_exit EXIT
	for tool in debootstrap systemd-nspawn nsenter zstd dpkg-deb readelf; do
		command -v "$tool" >/dev/null || die "needs $tool (apt-get install debootstrap systemd-container zstd binutils)"
	done
	SD_ROOT=$E2E_WORK/root
	SD_LOG=$E2E_WORK/container.log
	E2E_LOGS+=("container console=$SD_LOG")
	local t0=$SECONDS host=sd-vm mac=52:54:00:3f:0d:01

	find_deb
	make_root

	# ---- install, configure, enable (the container not booted) ------------------------------
	cp "$DEB" "$SD_ROOT/root/kiln.deb"
	if ! offline dpkg -i /root/kiln.deb >"$E2E_WORK/dpkg.log" 2>&1; then
		E2E_LOGS+=("dpkg -i=$E2E_WORK/dpkg.log")
		not_ok "install: dpkg -i $(basename "$DEB") in the container failed"
		exit 1
	fi
	rm -f "$SD_ROOT/root/kiln.deb"
	ok "install: dpkg -i $(basename "$DEB") in the container"
	printf '\n# the test namespace\ninterface = "br0"\naddress = "%s"\n' "$SERVER_IP" >>"$SD_ROOT/etc/kiln/kiln.toml"
	offline systemctl enable kiln.service >>"$E2E_WORK/dpkg.log" 2>&1 || die "systemctl enable kiln failed"
	write_hardware_csv "$SD_ROOT/root/hardware.csv" "$host,$mac,10.77.0.59"
	local unit=$SD_ROOT/lib/systemd/system/kiln.service
	[ -f "$unit" ] || unit=$SD_ROOT/usr/lib/systemd/system/kiln.service
	[ -f "$unit" ] || die "the package installed no kiln.service"
	# The open-file limit the service must get: the unit's, unless this machine cannot give
	# it to anyone (a sandbox whose root lacks CAP_SYS_RESOURCE, hard limit below it): then
	# systemd sets the closest it can, this machine's hard limit.
	NOFILE=$(sed -n 's/^LimitNOFILE=//p' "$unit")
	NOFILE_NOTE=
	if ! [[ $NOFILE =~ ^[0-9]+$ ]]; then
		not_ok "unit: kiln.service sets no numeric LimitNOFILE= ('$NOFILE')"
		NOFILE=none
	elif [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$NOFILE" ] && ! (ulimit -Hn "$NOFILE") 2>/dev/null; then
		NOFILE_NOTE=", clamped to this machine's hard limit: its root cannot raise it"
		log "this machine's open-file hard limit is $(ulimit -Hn) and cannot be raised (no CAP_SYS_RESOURCE): LimitNOFILE=$NOFILE is checked as $(ulimit -Hn)"
		NOFILE=$(ulimit -Hn)
	fi

	# ---- boot ------------------------------------------------------------------------------
	ns_create 1
	local t=$SECONDS
	# --private-network with --network-namespace-path: without it, systemd-nspawn (252) mounts
	# a sysfs showing the HOST's interfaces (/sys/class/net), and kiln finds no br0 there.
	# --rlimit: the container's systemd starts with the open-file hard limit systemd gives
	# itself as PID 1 of a machine (512Ki), not this machine's (ulimit -Hn); it cannot raise
	# it for LimitNOFILE= itself (systemd-nspawn drops CAP_SYS_RESOURCE).
	systemd-nspawn --quiet --boot --register=no --keep-unit --machine="kiln-e2e-$$" -D "$SD_ROOT" \
		--private-network --network-namespace-path="/run/netns/$E2E_NS" --console=pipe \
		--rlimit=RLIMIT_NOFILE=524288 </dev/null >"$SD_LOG" 2>&1 &
	SD_NSPAWN_PID=$!
	wait_container 120 || die "the container did not boot (see $SD_LOG)"
	ok "boot: systemd-nspawn --boot in namespace $E2E_NS: the container's systemd booted in $((SECONDS - t)) s"
	check "boot: PID 1 in the container is systemd ($(sd cat /proc/1/comm 2>&1))" \
		test "$(sd cat /proc/1/comm 2>/dev/null)" = systemd

	# ---- the service -----------------------------------------------------------------------
	# up once the data dir has api.json (written when its admin API listens); a kiln that
	# exits at start would be "active" for a moment and then restarted (Restart=on-failure)
	local active='' restarts=''
	for _ in $(seq 150); do
		[ -s "$SD_ROOT/var/lib/kiln/api.json" ] && break
		sleep 0.2
	done
	active=$(sd systemctl is-active kiln 2>/dev/null) || true
	restarts=$(sd systemctl show kiln --property=NRestarts --value 2>/dev/null) || true
	check "service: systemctl is-active kiln: ${active:-nothing}, its admin API listening, restarted ${restarts:-?} times" \
		test "$active" = active -a "$restarts" = 0 -a -s "$SD_ROOT/var/lib/kiln/api.json"
	local verify
	verify=$(sd systemd-analyze verify kiln.service 2>&1) && verify=${verify:-ok} || verify="failed: $verify"
	printf '%s\n' "$verify" | sed 's/^/#   verify: /'
	check "unit: systemd-analyze verify kiln.service passes in the container, without a warning" \
		test "$verify" = ok
	local props=(NoNewPrivileges ProtectSystem ProtectHome PrivateTmp PrivateDevices ProtectKernelTunables
		ProtectKernelModules ProtectKernelLogs ProtectControlGroups ProtectClock ProtectHostname ProtectProc
		ProcSubset RestrictRealtime RestrictSUIDSGID LockPersonality MemoryDenyWriteExecute RemoveIPC
		UMask StateDirectory StateDirectoryMode LimitNOFILE Restart) p want got shown mismatch=
	shown=$(sd systemctl show kiln "${props[@]/#/--property=}" 2>&1) || true
	printf '%s\n' "$shown" | sed 's/^/#   /'
	for p in "${props[@]}"; do
		want=$(sed -n "s/^$p=//p" "$unit" | tail -n 1)
		got=$(sed -n "s/^$p=//p" <<<"$shown")
		[ -n "$want" ] && [ "$got" = "$want" ] || mismatch+=" $p(unit '$want', in force '$got')"
	done
	check "hardening: systemctl show kiln has the unit's ${#props[@]} settings${mismatch:+; differs:$mismatch}" \
		test -z "$mismatch"
	got=$(sd systemctl show kiln --property=CapabilityBoundingSet --value 2>/dev/null) || true
	check "hardening: systemctl show kiln: CapabilityBoundingSet=$got" \
		test "$got" = "cap_net_bind_service cap_net_raw"
	got=$(sd systemctl show kiln --property=RestrictAddressFamilies --value 2>/dev/null) || true
	want=$(sed -n 's/^RestrictAddressFamilies=//p' "$unit")
	check "hardening: systemctl show kiln: RestrictAddressFamilies=$got (the unit's: $want)" \
		test "$(tr ' ' '\n' <<<"$got" | sort)" = "$(tr ' ' '\n' <<<"$want" | sort)"

	# what the running process really has (its /proc, by its PID on this machine)
	local main host_pid status limits
	main=$(sd systemctl show kiln --property=MainPID --value 2>/dev/null) || true
	host_pid=$(host_pid_of "$main")
	status=$(cat "/proc/$host_pid/status" 2>/dev/null) || true
	limits=$(cat "/proc/$host_pid/limits" 2>/dev/null) || true
	log "kiln's main process: PID $main in the container, ${host_pid:-?} here; $(grep -E '^(NoNewPrivs|CapBnd|CapEff|Seccomp):' <<<"$status" | tr '\n\t' '  ')"
	check "in force: kiln runs with no_new_privs (NoNewPrivs: 1)" grep -qP '^NoNewPrivs:\t1$' <<<"$status"
	# CAP_NET_BIND_SERVICE is bit 10, CAP_NET_RAW bit 13
	check "in force: kiln's bounding set is CAP_NET_BIND_SERVICE and CAP_NET_RAW only (CapBnd 0x2400)" \
		grep -qP '^CapBnd:\t0000000000002400$' <<<"$status"
	check "in force: kiln runs under a seccomp filter (Seccomp: 2)" grep -qP '^Seccomp:\t2$' <<<"$status"
	check "in force: kiln's open-file limit is $NOFILE (LimitNOFILE=$(sed -n 's/^LimitNOFILE=//p' "$unit")$NOFILE_NOTE)" \
		grep -qE "^Max open files +$NOFILE +$NOFILE " <<<"$limits"
	# its mount namespace: ProtectSystem=strict with ReadWritePaths=/var/lib/kiln
	check "in force: in kiln's mount namespace /usr and /etc are read-only, /var/lib/kiln writable" \
		nsenter --target "${host_pid:-0}" --mount --root -- \
		sh -c '! test -w /usr && ! test -w /etc && test -w /var/lib/kiln'

	# ---- the admin API, from the container, with the data dir's token --------------------------
	check "admin API: kiln enroll (in the container, /var/lib/kiln's admin token) enrolls $host" \
		sd kiln enroll /root/hardware.csv
	check "admin API: kiln hardware netboot $host on" sd kiln hardware netboot "$host" on
	local listed
	listed=$(sd kiln hardware list 2>&1) || true
	printf '%s\n' "$listed" | sed 's/^/#   /'
	check "admin API: kiln hardware list answers and lists $host ($mac)" \
		bash -c 'grep -q "$1" <<<"$3" && grep -qi "$2" <<<"$3"' _ "$host" "$mac" "$listed"

	# ---- the journal -----------------------------------------------------------------------
	local journal
	journal=$(sd journalctl -u kiln --no-pager -o cat 2>&1 | sed -e 's/\x1b\[[0-9;]*m//g') || true
	printf '%s\n' "$journal" >"$E2E_WORK/journal-kiln.txt"
	E2E_LOGS+=("journalctl -u kiln=$E2E_WORK/journal-kiln.txt")
	check "journal: kiln's start line (kiln serving, interface br0) is in journalctl -u kiln" \
		grep -qE 'kiln serving.*interface="?br0' <<<"$journal"
	check "journal: kiln read /etc/kiln/kiln.toml and has $NOFILE open files" \
		bash -c 'grep -q "config=/etc/kiln/kiln.toml" <<<"$1" && grep -q "open_files=$2\$" <<<"$1"' _ "$journal" "$NOFILE"

	# ---- a machine netboots from the service -------------------------------------------------
	vm_start "$host" --fw bios --tap tap0 --mac "$mac" --mem 1024
	local events='' deadline=$((SECONDS + 240))
	while [ "$SECONDS" -lt "$deadline" ]; do
		events=$(service_events "$host")
		grep -qE 'http.artifact +GET /artifacts/initrd.img 200' <<<"$events" && break
		kill -0 "$VM_PID" 2>/dev/null || break
		[ "$(sd systemctl is-active kiln 2>/dev/null)" = active ] || break
		sleep 2
	done
	printf '%s\n' "$events" >"$E2E_WORK/events.txt"
	E2E_LOGS+=("kiln events=$E2E_WORK/events.txt")
	check "netboot: kiln.service answered the machine's DHCP (dhcp.ack in its events)" \
		grep -q 'dhcp.ack' <<<"$events"
	check "netboot: the machine fetched the installed agent OS from kiln.service (http.artifact initrd.img 200)" \
		grep -qE 'http.artifact +GET /artifacts/initrd.img 200' <<<"$events"
	stop_pid "$VM_PID"

	# ---- stop ------------------------------------------------------------------------------
	check "stop: systemctl stop kiln stops the service (inactive, not failed)" \
		bash -c 'timeout 60 "$@" systemctl stop kiln && [ "$("$@" systemctl is-active kiln)" = inactive ]' \
		_ nsenter --target "$SD_PID" --mount --uts --ipc --net --pid --
	t=$SECONDS
	if stop_container 60; then
		ok "poweroff: the container's systemd powered off on SIGTERM to systemd-nspawn in $((SECONDS - t)) s"
	else
		not_ok "poweroff: the container did not power off within 60 s of SIGTERM"
	fi
	log "systemd.sh took $((SECONDS - t0)) s"
}

out=$E2E_WORK_BASE/systemd.$$.out
mkdir -p "$E2E_WORK_BASE"
(run_case) 2>&1 | tee "$out" || true
passed=$(grep -c '^ok - ' "$out" || true)
failed=$(grep -c '^not ok - ' "$out" || true)
rm -f "$out"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
