#!/usr/bin/env bash
# Runs once, from /docker-entrypoint-initdb.d, when the care-commons data volume is first created;
# idempotent, so it can be run again (docs/deployment.md).
#
# Incremental base backups (PostgreSQL 17+, pg_basebackup --incremental) are made from the WAL
# summaries the server writes only with summarize_wal = on. It is set here rather than as a -c
# option in docker-compose.yaml because PostgreSQL 15 and 16 do not know the setting and would
# refuse to start with it (their base backups stay full). summarize_wal takes effect on reload.
set -euo pipefail

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
SELECT current_setting('server_version_num')::int >= 170000 AS pgdr_has_wal_summaries \gset
\if :pgdr_has_wal_summaries
ALTER SYSTEM SET summarize_wal = on;
SELECT pg_reload_conf();
\else
\echo 'PostgreSQL before 17: no WAL summaries, base backups stay full'
\endif
SQL
