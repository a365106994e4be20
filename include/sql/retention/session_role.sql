-- The retention session's role and what would let a trigger it fires become superuser: superuser itself,
-- CREATEROLE (may grant itself powerful roles), or the roles that run programs or write server files.
SELECT r.rolname::text,
       r.rolsuper,
       r.rolcreaterole,
       ARRAY(SELECT p::text FROM unnest(ARRAY['pg_execute_server_program', 'pg_write_server_files']) AS p
             WHERE pg_has_role(r.oid, p, 'MEMBER')) AS server_roles
FROM pg_roles r
WHERE r.rolname = session_user;
