"""pg_backup_daily at scale 1 (tens of thousands of visits, 100k audit events): multipart uploads,
parallel restore into a new cluster, identical content. Slow: `make test-fast` skips it."""

import json
import os

import pytest

from harness.pg_cluster import start_cluster
from harness.stack import BUCKET, DBNAME, start_stack
from harness.synthetic import fingerprint
from tests.support.clusters import restore_by_hand
from tests.support.dags import run_dag, xcom_values
from tests.support.s3 import download_backup

pytestmark = pytest.mark.slow

SCALE = float(os.environ.get("PGDR_SCALE_TEST_SCALE", "1"))


@pytest.fixture(scope="module")
def big_stack(tmp_path_factory):
    services = start_stack(scale=SCALE, staging_dir=tmp_path_factory.mktemp("staging-scale"))
    yield services
    services.stop()


def test_scale_one_backup_uses_multipart_and_restores_identically(big_stack, airflow_db, monkeypatch, tmp_path):
    assert big_stack.row_counts["public.visits"] >= 20_000
    assert big_stack.row_counts["public.audit_events"] >= 50_000
    for name, value in big_stack.airflow_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AIRFLOW_VAR_PGDR_MULTIPART_CHUNK_MB", "5")
    monkeypatch.setenv("AIRFLOW_VAR_PGDR_STAGING_DIR", str(tmp_path / "staging"))
    dag_run = run_dag("pg_backup_daily")
    assert str(dag_run.state) == "success"
    (seal,) = xcom_values(dag_run, "backup.verify_and_seal")
    client = big_stack.s3.client()
    manifest = json.loads(client.get_object(Bucket=BUCKET, Key=seal["manifest_key"])["Body"].read())
    multipart = [obj for obj in manifest["objects"] if obj["size"] >= 5 * 1024 * 1024]
    assert multipart, "no object was large enough for a multipart upload"
    for obj in multipart:
        head = client.head_object(Bucket=BUCKET, Key=obj["key"], ChecksumMode="ENABLED")
        assert head["ContentLength"] == obj["size"] and head["ServerSideEncryption"] == "AES256"
    assert manifest["row_counts"] == big_stack.row_counts
    files = download_backup(client, BUCKET, manifest, tmp_path / "download")
    with start_cluster() as fresh:
        restore_by_hand(fresh, files, jobs=2)
        assert fingerprint(fresh, DBNAME) == fingerprint(big_stack.cluster, DBNAME)
