-- Tables whose rows row-level security could hide from the current role: RLS enabled and not
-- owned by a role the current one belongs to. Only asked when the role lacks BYPASSRLS.
SELECT n.nspname || '.' || c.relname AS qualified_name
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND c.relrowsecurity
  AND NOT pg_has_role(current_user, c.relowner, 'USAGE')
ORDER BY 1;
