-- Foreign keys that point at a policy table (parameter: oid): a row they still reference is never
-- archived or purged, whatever the key's ON DELETE rule, so nothing goes by cascade unarchived.
SELECT con.conname::text AS name,
       cn.nspname::text AS child_schema,
       cl.relname::text AS child_table,
       ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY k.ord) AS child_columns,
       ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum ORDER BY k.ord) AS parent_columns
FROM pg_constraint con
JOIN pg_class cl ON cl.oid = con.conrelid
JOIN pg_namespace cn ON cn.oid = cl.relnamespace
WHERE con.contype = 'f' AND con.confrelid = %(oid)s::oid
ORDER BY 1;
