-- One short transaction: take a batch of archived keys off the work list and delete those rows that
-- are still exactly as archived, still match the rule and are still referenced by nothing.
WITH batch AS (
    DELETE FROM {work} WHERE id IN (SELECT id FROM {work} LIMIT %(batch_rows)s) RETURNING id, row_md5
), gone AS (
    DELETE FROM {table} AS t
    USING batch
    WHERE t.{pk} = batch.id AND md5(t::text) = batch.row_md5 AND {matches} AND NOT ({referenced})
    RETURNING 1
)
SELECT (SELECT count(*) FROM batch) AS taken, (SELECT count(*) FROM gone) AS deleted;
