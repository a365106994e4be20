-- Every ordinary table of a restored database, as the manifest names it ("schema.table") and as
-- SQL must quote it; extension-owned tables excluded, like the backup's own list.
SELECT n.nspname || '.' || c.relname AS qualified_name,
       quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS quoted_name
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_(toast|temp)'
  AND NOT EXISTS (
      SELECT 1 FROM pg_depend d
      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1;
