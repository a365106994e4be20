-- A recovery marker: a row committed at a known time, so a point-in-time recovery drill can
-- check that the data it recovers is the data that was true at the moment it chose.
-- Holds no PHI (an id, a time and pgdr's run id). Written by the markers role (pgdr_marker_conn_ids),
-- a non-superuser that owns schema pgdr; pgdr.markers runs these statements one by one and checks,
-- before it inserts, that schema and table belong to the role writing and that the table has no
-- trigger or rule: CREATE ... IF NOT EXISTS would otherwise accept objects another role (the
-- database owner) created first, and a trigger of theirs would run with the writer's rights.
-- only pg_catalog is searched: no function or operator of another role is resolved by name
SET LOCAL search_path TO pg_catalog, pg_temp;
-- a marker must never wait for a synchronous standby that is down (it is read long after)
SET LOCAL synchronous_commit TO local;
CREATE SCHEMA IF NOT EXISTS pgdr;
CREATE TABLE IF NOT EXISTS pgdr.recovery_markers (
    id bigserial PRIMARY KEY,
    marked_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    run_id text NOT NULL
);
REVOKE ALL ON SCHEMA pgdr FROM PUBLIC;
INSERT INTO pgdr.recovery_markers (run_id) VALUES (%(run_id)s) RETURNING id, marked_at;
