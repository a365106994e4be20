-- One short transaction: hard-delete up to batch_rows soft-deleted rows the rule matches and nothing
-- references; rows another session holds are skipped (left for the next run).
WITH batch AS (
    SELECT t.{pk} AS id FROM {table} AS t
    WHERE {matches} AND NOT ({referenced})
    LIMIT %(batch_rows)s
    FOR UPDATE OF t SKIP LOCKED
)
DELETE FROM {table} AS t
USING batch
WHERE t.{pk} = batch.id AND {matches};
