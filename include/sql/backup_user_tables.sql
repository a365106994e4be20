-- Every ordinary table a logical backup must hold data for: outside the system schemas and not
-- owned by an extension. Run inside the backup's snapshot; oid -> "schema.table".
SELECT c.oid::bigint AS oid, n.nspname || '.' || c.relname AS qualified_name
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_(toast|temp)'
  AND NOT EXISTS (
      SELECT 1 FROM pg_depend d
      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 2;
