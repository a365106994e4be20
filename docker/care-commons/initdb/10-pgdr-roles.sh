#!/usr/bin/env bash
# Runs once, from /docker-entrypoint-initdb.d, when the care-commons data volume is first created;
# idempotent, so it can be run again to change a password (docs/deployment.md).
#
# One role per duty, each with only what it needs (docs/deployment.md#roles):
#   pgdr_backup       dumps and base backups: sees every row, streams a base backup, reads statistics
#                     (pg_monitor: the WAL check reads pg_stat_replication and the slot); writes nothing
#   pgdr_replication  the WAL receiver: replication connections only, no access to any table
#   pgdr_markers      recovery markers: owns schema pgdr and writes only there; not a superuser, so a
#                     trigger or function another role planted can never run with a superuser's rights
#   pgdr_retention    pg_data_retention: reads and deletes/updates rows of the application's tables
#                     (pg_read_all_data, pg_write_all_data, BYPASSRLS); not a superuser, owns nothing
#   pgdr_admin        restores and drills: creates databases and roles and restores every owner,
#                     extension and policy exactly, so a superuser; used for nothing else, and a
#                     separate login from the bootstrap superuser, so Airflow never holds that password
#
# Passwords come from the container environment and are read by psql's \getenv: they never
# appear in this file, in a process argument list, or in the server log.
set -euo pipefail

: "${PGDR_BACKUP_PASSWORD:?PGDR_BACKUP_PASSWORD must be set for care-commons-db}"
: "${PGDR_REPLICATION_PASSWORD:?PGDR_REPLICATION_PASSWORD must be set for care-commons-db}"
: "${PGDR_ADMIN_PASSWORD:?PGDR_ADMIN_PASSWORD must be set for care-commons-db}"
: "${PGDR_MARKERS_PASSWORD:?PGDR_MARKERS_PASSWORD must be set for care-commons-db}"
: "${PGDR_RETENTION_PASSWORD:?PGDR_RETENTION_PASSWORD must be set for care-commons-db}"

# synchronous_commit=local: the server already names the WAL receiver in synchronous_standby_names,
# and the receiver cannot be connected while the database is being initialised; these commits
# must not wait for it.
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
\getenv pgdr_backup_password PGDR_BACKUP_PASSWORD
\getenv pgdr_replication_password PGDR_REPLICATION_PASSWORD
\getenv pgdr_admin_password PGDR_ADMIN_PASSWORD
\getenv pgdr_markers_password PGDR_MARKERS_PASSWORD
\getenv pgdr_retention_password PGDR_RETENTION_PASSWORD
BEGIN;
SET LOCAL synchronous_commit = local;
-- keep the statements carrying passwords out of the server log, even on error
SET LOCAL log_statement = 'none';
SET LOCAL log_min_error_statement = 'panic';
SELECT format('CREATE ROLE %I', name)
  FROM unnest(ARRAY['pgdr_backup', 'pgdr_replication', 'pgdr_admin', 'pgdr_markers', 'pgdr_retention']) AS name
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = name) \gexec
-- BYPASSRLS: care-commons uses row-level security; without it a dump silently misses rows.
-- REPLICATION: pg_basebackup streams the base backup over a replication connection.
ALTER ROLE pgdr_backup WITH LOGIN BYPASSRLS REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE
  PASSWORD :'pgdr_backup_password';
GRANT pg_read_all_data TO pgdr_backup;
-- pg_monitor: verification reads pg_stat_replication, the slot and the archiver's statistics.
GRANT pg_monitor TO pgdr_backup;
-- the manifest records the cluster's system identifier (matched against WAL and base backups)
GRANT EXECUTE ON FUNCTION pg_control_system() TO pgdr_backup;
ALTER ROLE pgdr_replication WITH LOGIN REPLICATION NOBYPASSRLS NOSUPERUSER NOCREATEDB NOCREATEROLE
  PASSWORD :'pgdr_replication_password';
ALTER ROLE pgdr_admin WITH LOGIN SUPERUSER PASSWORD :'pgdr_admin_password';
ALTER ROLE pgdr_markers WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD :'pgdr_markers_password';
-- retention reads what it archives and deletes what has passed the legal floor, in every table a
-- policy may name (present and future), through row-level security; it may create nothing
ALTER ROLE pgdr_retention WITH LOGIN BYPASSRLS NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
  PASSWORD :'pgdr_retention_password';
GRANT pg_read_all_data, pg_write_all_data TO pgdr_retention;
-- schema pgdr belongs to the markers role. One an earlier pgdr version made as a superuser is handed
-- over (with its table); one any other role made is left alone: the marker step refuses it by name.
SELECT format('ALTER SCHEMA pgdr OWNER TO pgdr_markers')
 WHERE EXISTS (SELECT FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner
                WHERE n.nspname = 'pgdr' AND r.rolsuper) \gexec
SELECT format('ALTER TABLE pgdr.recovery_markers OWNER TO pgdr_markers')
 WHERE EXISTS (SELECT FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
                WHERE c.oid = to_regclass('pgdr.recovery_markers') AND r.rolsuper) \gexec
CREATE SCHEMA IF NOT EXISTS pgdr AUTHORIZATION pgdr_markers;
REVOKE ALL ON SCHEMA pgdr FROM PUBLIC;
SELECT CASE WHEN nspowner = 'pgdr_markers'::regrole THEN 'schema pgdr belongs to pgdr_markers'
            ELSE format('WARNING: schema pgdr belongs to %s, not pgdr_markers: recovery markers will be refused '
                        'until it is dropped or given to pgdr_markers (docs/deployment.md#roles)', nspowner::regrole)
       END AS pgdr_schema
  FROM pg_namespace WHERE nspname = 'pgdr';
COMMIT;
SQL

# Replication connections are not matched by the image's "host all all all" rule: allow the two
# roles that stream (base backups, WAL) from the compose network, with SCRAM authentication.
if ! grep -q '^host[[:space:]]\+replication[[:space:]]\+pgdr_backup,pgdr_replication' "$PGDATA/pg_hba.conf"; then
  cat >> "$PGDATA/pg_hba.conf" <<'HBA'

# pgdr: base backups (pgdr_backup) and the synchronous WAL receiver (pgdr_replication)
host    replication     pgdr_backup,pgdr_replication     all     scram-sha-256
HBA
fi
