-- A least-privilege role for pgoutbox: it may log in, open replication connections
-- (REPLICATION), and read the outbox table. Nothing else: it cannot write to any
-- table, create tables or read other data. The integration tests run as this role.
--
-- Run as a superuser (or a role with CREATEROLE and the table owner for the GRANT).
-- Replace the password, or use another authentication method in pg_hba.conf. The
-- publication (sql/publication.sql) must then be created by the table owner, because
-- this role does not own the table.
DO $$
BEGIN
    CREATE ROLE pgoutbox WITH LOGIN REPLICATION PASSWORD 'change-me';
EXCEPTION WHEN duplicate_object THEN
    RAISE NOTICE 'role pgoutbox exists; granting only';
END
$$;
GRANT USAGE ON SCHEMA public TO pgoutbox;
GRANT SELECT ON public.outbox TO pgoutbox;

-- The sync guard (--sync-guard, for synchronous replication) needs nothing more:
-- pg_current_snapshot() and current_setting('synchronous_standby_names') are open to
-- every role that may log in.

-- Only for --checkpoint-store postgres (standbys on several hosts share the position):
-- CREATE TABLE public.pgoutbox_checkpoint (
--     slot       text PRIMARY KEY,
--     lsn        pg_lsn NOT NULL,
--     system_id  text NOT NULL,
--     database   text NOT NULL,
--     updated_at timestamptz NOT NULL DEFAULT now()
-- );
-- GRANT SELECT, INSERT, UPDATE ON public.pgoutbox_checkpoint TO pgoutbox;
