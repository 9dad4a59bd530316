#!/bin/sh
# capture.sh regenerates the real pgoutput messages under testdata/pg15/ and
# the fuzz seeds built from them. It starts a throwaway PostgreSQL (initdb and
# pg_ctl from PATH), runs a fixed script, peeks the slot in binary and stops
# and deletes the cluster on exit. Run it from anywhere; as root it runs the
# server as the postgres user.
#
#   decoder/testdata/capture.sh            # port 54329
#   PORT=55432 decoder/testdata/capture.sh
#
# decoder's TestCaptured* tests assert the decoded values, so edit them
# together with the SQL below.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
port=${PORT:-54329}
tmp=$(mktemp -d)
sep='fefdfc' # fuzzSep in decoder_fuzz_test.go, in hex

as_pg() {
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cleanup() {
	as_pg pg_ctl -D "$tmp/data" -m immediate stop >/dev/null 2>&1 || true
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

[ "$(id -u)" = 0 ] && chown postgres "$tmp"
as_pg initdb -D "$tmp/data" -A trust -U postgres --no-sync >/dev/null
cat >>"$tmp/data/postgresql.conf" <<EOF
wal_level = logical
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$tmp'
fsync = off
EOF
as_pg pg_ctl -D "$tmp/data" -l "$tmp/log" -w start >/dev/null

q() { psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

q >/dev/null <<'SQL'
CREATE TABLE outbox(
	id uuid PRIMARY KEY,
	aggregatetype text NOT NULL,
	aggregateid text,
	type text,
	payload jsonb,
	attachment bytea
);
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE misc(id int PRIMARY KEY, note text, big text, m mood);
ALTER TABLE misc ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE misc_full(id int, note text);
ALTER TABLE misc_full REPLICA IDENTITY FULL;
CREATE PUBLICATION outbox_pub FOR TABLE outbox WITH (publish = 'insert');
CREATE PUBLICATION misc_pub FOR TABLE misc, misc_full;
SELECT pg_create_logical_replication_slot('capture', 'pgoutput');

-- 1: two rows in one transaction; NULLs and a bytea.
BEGIN;
INSERT INTO outbox VALUES
	('00000000-0000-0000-0000-000000000001', 'order', 'o-1', 'created', '{"total": 10}', '\x00ff10'),
	('00000000-0000-0000-0000-000000000002', 'order', NULL, NULL, NULL, NULL);
COMMIT;
-- 2: unicode and empty strings.
INSERT INTO outbox VALUES
	('00000000-0000-0000-0000-000000000003', 'customer', 'ünïcødé-日本-🚀', '', '{"msg": "héllo 🌍"}', '');
-- 3: aborted; must never appear.
BEGIN;
INSERT INTO outbox VALUES ('00000000-0000-0000-0000-0000000000ff', 'order', 'aborted', 'x', '{}', NULL);
ROLLBACK;
-- 4: a payload large enough to be TOASTed (96000 hex characters).
INSERT INTO outbox
	SELECT '00000000-0000-0000-0000-000000000004', 'order', 'o-big', 'big',
		jsonb_build_object('blob', string_agg(md5(i::text), '' ORDER BY i)), NULL
	FROM generate_series(1, 3000) i;
-- 5: schema change, then a row with the new column.
ALTER TABLE outbox ADD COLUMN tracing text;
INSERT INTO outbox VALUES
	('00000000-0000-0000-0000-000000000005', 'order', 'o-5', 'shipped', '{"n": 5}', NULL, 'trace-5');
-- 6: a transactional logical message alone, then one with a row.
SELECT pg_logical_emit_message(true, 'outbox', '{"kind": "ping"}') IS NOT NULL;
BEGIN;
SELECT pg_logical_emit_message(true, 'outbox', '{"kind": "with-row"}') IS NOT NULL;
INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
	VALUES ('00000000-0000-0000-0000-000000000006', 'order', 'o-6', 'paid', '{"n": 6}');
COMMIT;
-- 7: a non-transactional message (arrives without Begin/Commit).
SELECT pg_logical_emit_message(false, 'audit', 'plain text') IS NOT NULL;

-- misc_pub: what publish='insert' filters out, to seed the other paths.
INSERT INTO misc
	SELECT 1, 'first', string_agg(md5(i::text), '' ORDER BY i), 'ok' FROM generate_series(1, 200) i;
UPDATE misc SET note = 'second' WHERE id = 1;  -- big unchanged: 'u'
UPDATE misc SET id = 2 WHERE id = 1;           -- key change: 'K' then 'N'
DELETE FROM misc WHERE id = 2;                 -- 'K'
INSERT INTO misc_full VALUES (1, 'a');
UPDATE misc_full SET note = 'b';               -- 'O' then 'N'
DELETE FROM misc_full;                         -- 'O'
TRUNCATE misc, misc_full;
SELECT pg_replication_origin_create('upstream') IS NOT NULL;
SELECT pg_replication_origin_session_setup('upstream');
BEGIN;
SELECT pg_replication_origin_xact_setup('0/12345678', '2024-01-02 03:04:05+00');
INSERT INTO misc VALUES (3, 'from upstream', NULL, 'happy');
COMMIT;
SELECT pg_replication_origin_session_reset();
SQL

peek() {
	q -At -c "SELECT encode(data, 'hex') FROM pg_logical_slot_peek_binary_changes('capture', NULL, NULL,
		'proto_version', '1', 'publication_names', '$1', 'messages', 'true')"
}

mkdir -p "$here/pg15" "$here/fuzz/FuzzDecode"
peek outbox_pub >"$here/pg15/outbox.hex"
peek misc_pub >"$here/pg15/misc.hex"

# seed writes hex (one message, or several joined by the separator) as a
# `go test fuzz v1` corpus file.
seed() {
	printf 'go test fuzz v1\n[]byte("%s")\n' "$(printf %s "$2" | sed 's/../\\x&/g')" \
		>"$here/fuzz/FuzzDecode/$1"
}
# Messages over 8 KiB (the TOASTed payload) stay out of the seeds: they
# slow the fuzzer down and the unit tests cover them.
rm -f "$here"/fuzz/FuzzDecode/pg15-*
for f in outbox misc; do
	i=0
	while read -r hex; do
		i=$((i + 1))
		[ ${#hex} -le 16384 ] || continue
		seed "pg15-$f-$(printf %02d $i)" "$hex"
	done <"$here/pg15/$f.hex"
	seed "pg15-$f-all" "$(awk 'length($0) <= 16384' "$here/pg15/$f.hex" | tr '\n' ' ' | sed "s/ $//; s/ /$sep/g")"
done
echo "wrote $(wc -l <"$here/pg15/outbox.hex") outbox and $(wc -l <"$here/pg15/misc.hex") misc messages"
