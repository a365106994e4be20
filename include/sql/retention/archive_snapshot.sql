-- The rows to archive, fixed once, inside the REPEATABLE READ transaction that then exports exactly them.
INSERT INTO {work} (id, row_md5)
SELECT t.{pk}, md5(t::text)
FROM {table} AS t
WHERE {matches} AND NOT ({referenced});
