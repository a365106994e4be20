"""The whole set of real services a pgdr run needs, shared by the tests, the demo and bench/.

A PostgreSQL 15 cluster holding a synthetic care-commons database and a backup
role, an S3 endpoint (moto server) with a versioned bucket, and a Slack webhook
receiver. :meth:`Stack.airflow_env` gives the AIRFLOW_CONN_* / AIRFLOW_VAR_PGDR_*
variables that point pgdr at them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from harness.pg_cluster import PgCluster, start_cluster
from harness.s3_server import S3Server, start_s3_server
from harness.slack_receiver import SlackReceiver

DBNAME = "care_commons"
CONN_ID = "care_commons_db"
BACKUP_ROLE = "pgdr_backup"
BACKUP_PASSWORD = "pgdr-Backup-Secret-7f3a9c"
BUCKET = "pgdr-backups"
RESTORE_CONN_ID = "care_commons_admin"
RESTORE_ROLE = "pgdr_restore"
RESTORE_PASSWORD = "pgdr-Restore-Secret-2b8e41"
# base64 of 32 bytes: the key-encryption key of configuration backups (setting pgdr_config_key_conn_id)
CONFIG_KEY = "cGdkci10ZXN0LWNvbmZpZy1rZXktMzItYnl0ZXMhISE="


def postgres_conn(cluster: PgCluster, dbname: str = DBNAME, user: str = BACKUP_ROLE,
                  password: str = BACKUP_PASSWORD) -> str:
    return json.dumps({"conn_type": "postgres", "host": cluster.host, "port": cluster.port,
                       "login": user, "password": password, "schema": dbname})


@dataclass
class Stack:
    cluster: PgCluster
    s3: S3Server
    slack: SlackReceiver
    staging_dir: Path
    row_counts: dict[str, int] = field(default_factory=dict)

    def airflow_env(self, s3_endpoint: str | None = None) -> dict[str, str]:
        s3_conn = json.loads(self.s3.airflow_conn_uri())
        if s3_endpoint:
            s3_conn["extra"]["endpoint_url"] = s3_endpoint
        return {
            "AIRFLOW_CONN_CARE_COMMONS_DB": postgres_conn(self.cluster),
            "AIRFLOW_CONN_BACKUP_S3": json.dumps(s3_conn),
            "AIRFLOW_CONN_CARE_COMMONS_ADMIN": postgres_conn(self.cluster, user=RESTORE_ROLE,
                                                             password=RESTORE_PASSWORD),
            "AIRFLOW_CONN_SLACK_ALERTS": self.slack.airflow_conn(),
            "AIRFLOW_CONN_PGDR_CONFIG_KEY": json.dumps({"conn_type": "generic", "password": CONFIG_KEY}),
            "AIRFLOW_VAR_PGDR_DATABASES": json.dumps([CONN_ID]),
            "AIRFLOW_VAR_PGDR_S3_BUCKET": BUCKET,
            "AIRFLOW_VAR_PGDR_S3_PREFIX": "pgdr",
            "AIRFLOW_VAR_PGDR_STAGING_DIR": str(self.staging_dir),
            "AIRFLOW_VAR_PGDR_LOCAL_RETENTION_DAYS": "30",
            "AIRFLOW_VAR_PGDR_RESTORE_CONN_IDS": json.dumps({CONN_ID: RESTORE_CONN_ID}),
            # physical backups need a WAL receiver; the tests and bench that exercise them turn them on
            "AIRFLOW_VAR_PGDR_PHYSICAL_BACKUPS": "false",
            # dag.test() runs have no second person to approve a replace or a retention run that acts;
            # tests/test_approval.py turns four-eyes approval on and answers it through the api-server
            "AIRFLOW_VAR_PGDR_FOUR_EYES": "false",
        }

    def stop(self) -> None:
        for stop in (self.slack.stop, self.s3.stop, self.cluster.destroy):
            try:
                stop()
            except Exception:  # noqa: BLE001 - tear down everything we can
                pass


def start_stack(scale: float, staging_dir: Path, seed: int = 42) -> Stack:
    from harness.synthetic import create_care_commons

    cluster = start_cluster()
    s3 = slack = None
    try:
        row_counts = create_care_commons(cluster, dbname=DBNAME, scale=scale, seed=seed)
        cluster.create_backup_role(BACKUP_ROLE, BACKUP_PASSWORD)
        cluster.create_restore_role(RESTORE_ROLE, RESTORE_PASSWORD)
        s3 = start_s3_server()
        s3.create_bucket(BUCKET)
        slack = SlackReceiver()
    except BaseException:
        cluster.destroy()
        if s3:
            s3.stop()
        raise
    return Stack(cluster=cluster, s3=s3, slack=slack, staging_dir=staging_dir, row_counts=row_counts)
