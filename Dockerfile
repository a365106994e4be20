# pgdr Airflow image: the official Airflow 3.3.2 image plus the PostgreSQL 15 tools that pgdr
# orchestrates (pg_dump, pg_dumpall, pg_restore, pg_basebackup, pg_receivewal, pg_verifybackup,
# initdb, pg_ctl) and pgdr's pinned Python requirements (docker/requirements.txt).
FROM apache/airflow:3.3.2-python3.11

USER root

# PostgreSQL 15 from the PGDG apt repository, whichever Debian release the base image is built on
# (bookworm ships postgresql-15 itself, newer releases do not; PGDG has 15 for both).
# postgresql-common is installed first and told not to create a "main" cluster, so the image
# carries the server binaries only; pgdr creates its own clusters (point-in-time recovery) with initdb.
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
    apt-get install -y --no-install-recommends postgresql-client-15 postgresql-15; \
    apt-get autoremove -yqq --purge; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/*

# pgdr runs every tool from pgdr_pg_bindir (default /usr/lib/postgresql/15/bin): fail the build,
# not a 02:00 backup, if one is missing or is not version 15.
RUN set -eu; \
    for tool in pg_dump pg_dumpall pg_restore pg_basebackup pg_receivewal pg_verifybackup initdb pg_ctl psql; do \
        test -x "/usr/lib/postgresql/15/bin/${tool}" || { echo "missing /usr/lib/postgresql/15/bin/${tool}" >&2; exit 1; }; \
        "/usr/lib/postgresql/15/bin/${tool}" --version | grep -q ' 15\.' || { echo "${tool} is not version 15" >&2; exit 1; }; \
    done

# Directories that back named volumes: a fresh volume takes the ownership and mode of the image's
# directory, so the airflow user (any AIRFLOW_UID, always group 0) can write staging, the WAL the
# receiver streams, point-in-time recovery clusters and restored files.
RUN install -d -o airflow -g root -m 0770 /opt/airflow/staging /opt/airflow/pitr /opt/airflow/restore \
    /var/lib/pgdr /var/lib/pgdr/wal

# initdb, pg_ctl and pg_verifybackup are not on Debian's default PATH (only the pg_wrapper client
# commands are); put the version-15 binaries first so pgdr always runs the 15 tools.
ENV PATH="/usr/lib/postgresql/15/bin:${PATH}" \
    PGDR_PG_BINDIR=/usr/lib/postgresql/15/bin

USER airflow

# apache-airflow is repeated at the base image's version so pip can never up- or downgrade Airflow.
COPY docker/requirements.txt /opt/pgdr/requirements.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /opt/pgdr/requirements.txt
