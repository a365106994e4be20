-- One short transaction: mark up to batch_rows rows the rule matches as soft-deleted (as_of).
WITH batch AS (
    SELECT t.{pk} AS id FROM {table} AS t
    WHERE {matches}
    LIMIT %(batch_rows)s
    FOR UPDATE OF t SKIP LOCKED
)
UPDATE {table} AS t
SET {soft_delete_column} = %(as_of)s
FROM batch
WHERE t.{pk} = batch.id AND {matches};
