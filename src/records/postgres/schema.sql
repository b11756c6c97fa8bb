-- kubedojo-data-api: the DataRecords table source (`--postgres-migrate` applies this).
-- Idempotent: every statement can run again on an existing schema. `@schema@` is the
-- configured schema (a plain lowercase identifier), `@channel@` the NOTIFY channel.

CREATE SCHEMA IF NOT EXISTS @schema@;

-- One row per DataRecord. Operators write this table with plain SQL.
CREATE TABLE IF NOT EXISTS @schema@.datarecords (
    namespace        text COLLATE "C" NOT NULL,
    name             text COLLATE "C" NOT NULL,
    uid              uuid NOT NULL DEFAULT gen_random_uuid(),
    labels           jsonb NOT NULL DEFAULT '{}'::jsonb,
    annotations      jsonb NOT NULL DEFAULT '{}'::jsonb,
    source           text NOT NULL DEFAULT 'postgres',            -- spec.source
    query            text NOT NULL DEFAULT '',                    -- spec.query
    data             jsonb NOT NULL DEFAULT '{}'::jsonb,          -- spec.data (string values)
    sync_status      text NOT NULL DEFAULT 'Current',             -- status.syncStatus
    last_sync_time   timestamptz,                                 -- status.lastSyncTime
    created_at       timestamptz NOT NULL DEFAULT now(),          -- metadata.creationTimestamp
    resource_version bigint NOT NULL DEFAULT 0,                   -- set at commit, never by hand
    PRIMARY KEY (namespace, name)
);

-- Label selectors are pushed down as `labels @> '{"k":"v"}'` and `labels ? 'k'`.
CREATE INDEX IF NOT EXISTS datarecords_labels ON @schema@.datarecords USING gin (labels);

-- The change log: one row per committed insert, update or delete, in commit order.
-- `id` is the resourceVersion.
CREATE TABLE IF NOT EXISTS @schema@.changes (
    id           bigint PRIMARY KEY,
    op           "char" NOT NULL CHECK (op IN ('I', 'U', 'D')),
    namespace    text COLLATE "C" NOT NULL,
    name         text COLLATE "C" NOT NULL,
    old          jsonb,          -- the row before (U, D)
    new          jsonb,          -- the row after (I, U)
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Ids start at 2: resourceVersion 1 is the empty table before any change.
CREATE SEQUENCE IF NOT EXISTS @schema@.change_id START 2 MINVALUE 2;

-- compacted_through: the oldest resourceVersion a watch or an Exact list can start from
-- (every change after it is still in the log); older ones get 410 Expired.
CREATE TABLE IF NOT EXISTS @schema@.log_state (
    one               boolean PRIMARY KEY DEFAULT true CHECK (one),
    compacted_through bigint NOT NULL DEFAULT 1
);
INSERT INTO @schema@.log_state DEFAULT VALUES ON CONFLICT DO NOTHING;

-- Runs at COMMIT (a deferred constraint trigger) under a transaction-scoped advisory
-- lock, so ids are handed out in commit order: when a reader sees id N, every smaller
-- id is already visible or will never exist. That is what makes "replay the log after
-- N" lose nothing.
CREATE OR REPLACE FUNCTION @schema@.log_change() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    v bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(@lock@);
    IF TG_OP = 'UPDATE' AND (OLD.namespace, OLD.name) IS DISTINCT FROM (NEW.namespace, NEW.name) THEN
        -- A renamed key is the old record deleted and a new one added.
        v := nextval('@schema@.change_id');
        INSERT INTO @schema@.changes (id, op, namespace, name, old, new)
            VALUES (v, 'D', OLD.namespace, OLD.name, to_jsonb(OLD), NULL);
        PERFORM pg_notify('@channel@', v::text);
        v := nextval('@schema@.change_id');
        INSERT INTO @schema@.changes (id, op, namespace, name, old, new)
            VALUES (v, 'I', NEW.namespace, NEW.name, NULL,
                    jsonb_set(to_jsonb(NEW), '{resource_version}', to_jsonb(v)));
    ELSIF TG_OP = 'DELETE' THEN
        v := nextval('@schema@.change_id');
        INSERT INTO @schema@.changes (id, op, namespace, name, old, new)
            VALUES (v, 'D', OLD.namespace, OLD.name, to_jsonb(OLD), NULL);
        PERFORM pg_notify('@channel@', v::text);
        RETURN NULL;
    ELSE
        v := nextval('@schema@.change_id');
        INSERT INTO @schema@.changes (id, op, namespace, name, old, new)
            VALUES (v, CASE TG_OP WHEN 'INSERT' THEN 'I' ELSE 'U' END, NEW.namespace, NEW.name,
                    CASE TG_OP WHEN 'INSERT' THEN NULL ELSE to_jsonb(OLD) END,
                    jsonb_set(to_jsonb(NEW), '{resource_version}', to_jsonb(v)));
    END IF;
    -- Stamp the row. This update changes only resource_version, which the update
    -- trigger's WHEN clause ignores, so it logs nothing.
    UPDATE @schema@.datarecords SET resource_version = v
        WHERE namespace = NEW.namespace AND name = NEW.name;
    PERFORM pg_notify('@channel@', v::text);
    RETURN NULL;
END
$fn$;

DROP TRIGGER IF EXISTS datarecords_log_insert_delete ON @schema@.datarecords;
CREATE CONSTRAINT TRIGGER datarecords_log_insert_delete
    AFTER INSERT OR DELETE ON @schema@.datarecords
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION @schema@.log_change();

DROP TRIGGER IF EXISTS datarecords_log_update ON @schema@.datarecords;
CREATE CONSTRAINT TRIGGER datarecords_log_update
    AFTER UPDATE ON @schema@.datarecords
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN ((to_jsonb(OLD) - 'resource_version') IS DISTINCT FROM (to_jsonb(NEW) - 'resource_version'))
    EXECUTE FUNCTION @schema@.log_change();

-- TRUNCATE fires no row triggers: refuse it rather than let watchers drift.
CREATE OR REPLACE FUNCTION @schema@.refuse_truncate() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'TRUNCATE of @schema@.datarecords is not supported (watchers would miss it): use DELETE';
END
$fn$;
DROP TRIGGER IF EXISTS datarecords_no_truncate ON @schema@.datarecords;
CREATE TRIGGER datarecords_no_truncate BEFORE TRUNCATE ON @schema@.datarecords
    FOR EACH STATEMENT EXECUTE FUNCTION @schema@.refuse_truncate();

-- Deletes changes older than the newest `keep`; returns how many went.
CREATE OR REPLACE FUNCTION @schema@.compact(keep bigint) RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    newest bigint;
    cut bigint;
    n bigint;
BEGIN
    SELECT max(id) INTO newest FROM @schema@.changes;
    IF newest IS NULL OR newest - keep < 2 THEN
        RETURN 0;
    END IF;
    cut := newest - keep;
    UPDATE @schema@.log_state SET compacted_through = greatest(compacted_through, cut);
    DELETE FROM @schema@.changes WHERE id <= cut;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
