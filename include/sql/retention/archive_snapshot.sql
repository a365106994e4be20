-- The rows to archive, fixed once (run inside the REPEATABLE READ transaction that exports them):
-- each one's key and the md5 of its text, so only a row still exactly as exported is deleted later.
CREATE TEMP TABLE {work} ON COMMIT PRESERVE ROWS AS
SELECT t.{pk} AS id, md5(t::text) AS row_md5
FROM {table} AS t
WHERE {matches} AND NOT ({referenced});
