# A PostgreSQL cluster of the caller's own (sourced by tests/e2e/multi.sh and bench/rack.sh):
# initdb + pg_ctl in a fresh temp dir, unix socket only (listen_addresses=''), trust auth, run
# as `nobody` when root (PostgreSQL refuses root). No system service is touched.
#
#   pg_start          sets PG_DIR, PG_BIN and STORE (the URL for `kiln serve --store`)
#   pg_stop [LOG]     stops it (immediate), copies its log to LOG, removes PG_DIR
#   psql_q SQL        one query, unaligned output
# shellcheck shell=bash disable=SC2034 # sets PG_DIR, PG_BIN and STORE for the caller

PG_DIR=
PG_BIN=
STORE=

pg_ctl_run() {
	local cmd=("$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" \
		-o "-k $PG_DIR -c listen_addresses='' -p 5432 ${PG_EXTRA_OPTS:-}" "$@")
	if [ "$(id -u)" -eq 0 ]; then runuser -u nobody -- "${cmd[@]}"; else "${cmd[@]}"; fi
}

pg_start() {
	PG_BIN=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
	if [ ! -x "$PG_BIN/initdb" ]; then
		echo "PostgreSQL missing: apt-get install postgresql" >&2
		return 1
	fi
	# Not under a 0700 work dir: as root the cluster runs as nobody, who must reach it.
	PG_DIR=$(mktemp -d /tmp/kiln-pg.XXXXXX)
	[ "$(id -u)" -ne 0 ] || chown nobody "$PG_DIR"
	local init=("$PG_BIN/initdb" -D "$PG_DIR/data" -U kiln --auth=trust --no-sync --no-locale -E UTF8)
	if [ "$(id -u)" -eq 0 ]; then
		(cd "$PG_DIR" && runuser -u nobody -- "${init[@]}") >/dev/null
	else
		"${init[@]}" >/dev/null
	fi
	(cd "$PG_DIR" && pg_ctl_run -w start) >/dev/null
	STORE="postgresql://kiln@/postgres?host=$PG_DIR&port=5432"
}

pg_stop() {
	[ -n "$PG_DIR" ] || return 0
	(cd "$PG_DIR" && pg_ctl_run -m immediate stop) >/dev/null 2>&1 || true
	[ -z "${1:-}" ] || cp "$PG_DIR/postgres.log" "$1" 2>/dev/null || true
	rm -rf "$PG_DIR"
	PG_DIR=
}

psql_q() { "$PG_BIN/psql" -h "$PG_DIR" -p 5432 -U kiln -d postgres -At -c "$1"; }
