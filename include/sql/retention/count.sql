-- Rows a rule matches, and how many of those other rows still reference (kept for a later run).
SELECT count(*) AS matched, count(*) FILTER (WHERE {referenced}) AS referenced
FROM {table} AS t
WHERE {matches};
