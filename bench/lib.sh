# Shared by the benchmark scripts (sourced; they set REPO, and RUN before build_kiln).

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

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
