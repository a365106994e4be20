-- Enabled triggers on a policy table (parameter: oid) whose function belongs to a role that is neither the
-- table's owner, nor this session's role, nor a superuser: they would run with this session's rights.
SELECT tg.tgname::text AS trigger_name, pr.proname::text AS function_name, o.rolname::text AS function_owner
FROM pg_trigger tg
JOIN pg_class c ON c.oid = tg.tgrelid
JOIN pg_proc pr ON pr.oid = tg.tgfoid
JOIN pg_roles o ON o.oid = pr.proowner
WHERE tg.tgrelid = %(oid)s::oid AND NOT tg.tgisinternal AND tg.tgenabled <> 'D'
  AND pr.proowner <> c.relowner AND o.rolname <> session_user AND NOT o.rolsuper
ORDER BY 1;
