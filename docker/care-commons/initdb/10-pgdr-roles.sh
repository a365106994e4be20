#!/usr/bin/env bash
# Runs once, from /docker-entrypoint-initdb.d, when the care-commons data volume is first created;
# idempotent, so it can be run again to change a password (docs/deployment.md).
#
# Three roles, each with only what its job needs:
#   pgdr_backup       dumps and base backups: sees every row, streams a base backup, reads statistics
#   pgdr_replication  the WAL receiver: replication connections only, no access to any table
#   pgdr_admin        restores and drills: creates databases and roles, so a superuser; a separate
#                     login from the bootstrap superuser, so Airflow never holds that password
#
# Passwords come from the container environment and are read by psql's \getenv: they never
# appear in this file, in a process argument list, or in the server log.
set -euo pipefail

: "${PGDR_BACKUP_PASSWORD:?PGDR_BACKUP_PASSWORD must be set for care-commons-db}"
: "${PGDR_REPLICATION_PASSWORD:?PGDR_REPLICATION_PASSWORD must be set for care-commons-db}"
: "${PGDR_ADMIN_PASSWORD:?PGDR_ADMIN_PASSWORD must be set for care-commons-db}"

# synchronous_commit=local: the server already names the WAL receiver in synchronous_standby_names,
# and the receiver cannot be connected while the database is being initialised; these commits
# must not wait for it.
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
\getenv pgdr_backup_password PGDR_BACKUP_PASSWORD
\getenv pgdr_replication_password PGDR_REPLICATION_PASSWORD
\getenv pgdr_admin_password PGDR_ADMIN_PASSWORD
BEGIN;
SET LOCAL synchronous_commit = local;
-- keep the statements carrying passwords out of the server log, even on error
SET LOCAL log_statement = 'none';
SET LOCAL log_min_error_statement = 'panic';
SELECT format('CREATE ROLE %I', name)
  FROM unnest(ARRAY['pgdr_backup', 'pgdr_replication', 'pgdr_admin']) AS name
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
