-- The outbox table, compatible with Debezium's outbox EventRouter: the same columns,
-- so moving from Debezium changes nothing in the application.
--
-- An application writes its business rows and the event in one transaction:
--
--   BEGIN;
--   UPDATE orders SET status = 'paid' WHERE id = 42;
--   INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
--   VALUES (gen_random_uuid(), 'order', '42', 'OrderPaid', '{"order":42}');
--   COMMIT;
--
-- pgoutbox reads the insert from the WAL, so the row itself is not needed afterwards.
-- Either delete it in the same transaction (the insert is still decoded and published;
-- the table stays empty and never bloats), or delete old rows periodically, e.g.
--   DELETE FROM outbox WHERE created_at < now() - interval '1 day';
-- pgoutbox's publication publishes inserts only, so the deletes are never sent.
CREATE TABLE IF NOT EXISTS public.outbox (
    id            uuid        PRIMARY KEY,
    aggregatetype text        NOT NULL,
    aggregateid   text        NOT NULL,
    type          text        NOT NULL,
    payload       jsonb,
    created_at    timestamptz NOT NULL DEFAULT now()
);
