-- Columns of a policy table (parameter: oid) with their type names, to check the policy's columns.
SELECT a.attname::text AS name, t.typname::text AS type_name, format_type(a.atttypid, a.atttypmod) AS type
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = %(oid)s::oid AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum;
