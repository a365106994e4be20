#!/usr/bin/env bash
# Runs once, from /docker-entrypoint-initdb.d, when the care-commons data volume is first created.
# Creates the backup role pgdr uses and allows it to stream WAL / take base backups over the network.
# The password comes from the container environment (PGDR_BACKUP_PASSWORD) and is read by psql's
# \getenv, so it never appears in this file, in a process argument list, or in the server log.
set -euo pipefail

: "${PGDR_BACKUP_PASSWORD:?PGDR_BACKUP_PASSWORD must be set for care-commons-db}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
\getenv pgdr_backup_password PGDR_BACKUP_PASSWORD
BEGIN;
-- keep the statement carrying the password out of the server log, even on error
SET LOCAL log_statement = 'none';
SET LOCAL log_min_error_statement = 'panic';
SELECT 'CREATE ROLE pgdr_backup'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgdr_backup') \gexec
-- BYPASSRLS: care-commons uses row-level security; without it a dump silently misses rows.
-- REPLICATION: needed by pg_basebackup and pg_receivewal (WAL streaming).
ALTER ROLE pgdr_backup WITH LOGIN BYPASSRLS REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE
  PASSWORD :'pgdr_backup_password';
GRANT pg_read_all_data TO pgdr_backup;
-- pg_monitor: verification reads pg_stat_replication, the slot and the archiver's statistics.
GRANT pg_monitor TO pgdr_backup;
COMMIT;
SQL

# Replication connections are not matched by the image's "host all all all" rule: allow the backup
# role to connect for replication from the compose network, with SCRAM authentication.
if ! grep -q '^host[[:space:]]\+replication[[:space:]]\+pgdr_backup' "$PGDATA/pg_hba.conf"; then
  cat >> "$PGDATA/pg_hba.conf" <<'HBA'

# pgdr: base backups and WAL streaming
host    replication     pgdr_backup     all     scram-sha-256
HBA
fi
