-- The publication pgoutbox streams: the outbox table's inserts only. Updates, deletes
-- and truncates (cleanup) are filtered out by PostgreSQL before they reach pgoutbox.
-- pgoutbox creates it on first start when its role may (table owner); otherwise run
-- this as the table owner before starting pgoutbox. Create it BEFORE the slot: a
-- publication created after the slot's start point is invisible to the walsender.
CREATE PUBLICATION pgoutbox FOR TABLE public.outbox WITH (publish = 'insert');
