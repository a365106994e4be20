-- The session's list of rows to archive: each one's key and the md5 of its text, so that only a row
-- still exactly as exported is deleted later. A temporary table: it lives as long as the session.
CREATE TEMP TABLE {work} ON COMMIT PRESERVE ROWS AS
SELECT t.{pk} AS id, md5(t::text) AS row_md5 FROM {table} AS t
WITH NO DATA;
