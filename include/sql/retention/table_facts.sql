-- One policy table as the retention session sees it (parameters: schema, table): its primary key,
-- whether row-level security could hide rows from this role (RLS on, and the role neither a superuser,
-- nor BYPASSRLS, nor the owner of an unforced table), and the privileges the actions need.
SELECT c.oid::bigint AS oid,
       ARRAY(SELECT a.attname::text
             FROM pg_index i
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
             WHERE i.indrelid = c.oid AND i.indisprimary
             ORDER BY a.attnum) AS primary_key,
       c.relrowsecurity
         AND NOT (SELECT r.rolsuper OR r.rolbypassrls FROM pg_roles r WHERE r.rolname = current_user)
         AND (c.relforcerowsecurity OR NOT pg_has_role(current_user, c.relowner, 'USAGE')) AS rls_hides_rows,
       has_table_privilege(c.oid, 'SELECT') AS can_select,
       has_table_privilege(c.oid, 'UPDATE') AS can_update,
       has_table_privilege(c.oid, 'DELETE') AS can_delete
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = %(table)s AND c.relkind IN ('r', 'p');
