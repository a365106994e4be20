# pgdr Airflow image: the official Airflow 3.3.2 image plus, for each PostgreSQL major in the build
# argument PG_MAJORS, the tools pgdr orchestrates (pg_dump, pg_dumpall, pg_restore, pg_basebackup,
# pg_receivewal, pg_verifybackup, pg_combinebackup, initdb, pg_ctl, postgres) and pgdr's pinned
# Python requirements (docker/requirements.txt).
#
#   docker compose build                                        # 15 16 17 18
#   docker compose build --build-arg PG_MAJORS="16 18"          # only the majors you protect
FROM apache/airflow:3.3.2-python3.11

# pgdr picks the tools per server at run time (setting pgdr_pg_bindir, /usr/lib/postgresql/{major}/bin):
# list every major a protected server runs. A server whose major is missing fails its task at once,
# naming the tool and the major.
ARG PG_MAJORS="15 16 17 18"

USER root

# Each major from the PGDG apt repository (apt.postgresql.org), whichever Debian release the base
# image is built on: postgresql-client-N for the backup tools and postgresql-N as well, because
# point-in-time recovery and the restore drills start a server of the backup's own major (initdb,
# pg_ctl, postgres: a data directory only runs on its major) and pg_combinebackup rebuilds
# incremental chains. postgresql-common is installed first and told not to create a "main" cluster,
# so the image carries the binaries only; pgdr creates its own clusters (point-in-time recovery).
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates curl gnupg; \
    install -d -m 0755 /usr/share/postgresql-common/pgdg; \
    curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
        https://www.postgresql.org/media/keys/ACCC4CF8.asc; \
    . /etc/os-release; \
    echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt ${VERSION_CODENAME}-pgdg main" \
        > /etc/apt/sources.list.d/pgdg.list; \
    apt-get update; \
    apt-get install -y --no-install-recommends postgresql-common; \
    sed -ri 's/#?(create_main_cluster) .*$/\1 = false/' /etc/postgresql-common/createcluster.conf; \
    packages="$(for major in ${PG_MAJORS}; do printf 'postgresql-client-%s postgresql-%s ' "${major}" "${major}"; done)"; \
    test -n "${packages}"; \
    apt-get install -y --no-install-recommends ${packages}; \
    apt-get autoremove -yqq --purge; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/*

# pgdr runs each server's tools from /usr/lib/postgresql/<its major>/bin (pgdr_pg_bindir): fail the
# build, not a 02:00 backup, if one is missing or is not of its directory's major. pg_combinebackup
# (incremental chains) exists from PostgreSQL 17 on.
RUN set -eu; \
    for major in ${PG_MAJORS}; do \
        tools="pg_dump pg_dumpall pg_restore pg_basebackup pg_receivewal pg_verifybackup initdb pg_ctl postgres psql"; \
        if [ "${major}" -ge 17 ]; then tools="${tools} pg_combinebackup"; fi; \
        for tool in ${tools}; do \
            test -x "/usr/lib/postgresql/${major}/bin/${tool}" || { echo "missing /usr/lib/postgresql/${major}/bin/${tool}" >&2; exit 1; }; \
            "/usr/lib/postgresql/${major}/bin/${tool}" --version | grep -q " ${major}\." || { echo "${tool} is not version ${major}" >&2; exit 1; }; \
        done; \
    done

# Directories that back named volumes: a fresh volume takes the ownership and mode of the image's
# directory, so the airflow user (any AIRFLOW_UID, always group 0) can write staging, the WAL the
# receiver streams, point-in-time recovery clusters and restored files.
RUN install -d -o airflow -g root -m 0770 /opt/airflow/staging /opt/airflow/pitr /opt/airflow/restore \
    /var/lib/pgdr /var/lib/pgdr/wal

# The same pattern as the setting pgdr_pg_bindir, for `python -m pgdr.wal_receiver` (it reads the
# primary's major first). No major's directory goes on PATH: pgdr runs every tool by its full path,
# and the pg_wrapper commands on PATH (psql, pg_dump) pick the newest installed major.
ENV PGDR_PG_BINDIR="/usr/lib/postgresql/{major}/bin"

USER airflow

# apache-airflow is repeated at the base image's version so pip can never up- or downgrade Airflow.
COPY docker/requirements.txt /opt/pgdr/requirements.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /opt/pgdr/requirements.txt
