-- A recovery marker: a row committed at a known time, so a point-in-time recovery drill can
-- check that the data it recovers is the data that was true at the moment it chose.
-- Written through the restore connection; holds no PHI (an id, a time and pgdr's run id).
CREATE SCHEMA IF NOT EXISTS pgdr;
CREATE TABLE IF NOT EXISTS pgdr.recovery_markers (
    id bigserial PRIMARY KEY,
    marked_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    run_id text NOT NULL
);
REVOKE ALL ON SCHEMA pgdr FROM PUBLIC;
-- a marker must never wait for a synchronous standby that is down (it is read long after)
SET LOCAL synchronous_commit TO local;
INSERT INTO pgdr.recovery_markers (run_id) VALUES (%(run_id)s) RETURNING id, marked_at;
