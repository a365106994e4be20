"""Two real runs of pg_backup_daily with file and configuration backups configured, shared by
test_files_backup.py, test_config_backup.py and test_restore_files.py through the session-scoped
``backups`` fixture of tests/conftest.py (taken once per session).

The uploads tree: nested directories, a few hundred small files, one file larger than the multipart
part size (5 MiB here), a symlink and a FIFO. Between the runs one file is modified, one deleted and
one added. The configuration: a ``.env`` holding a secret, a JSON file marked secret by
``pgdr_secret_files``, and a plain YAML file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import time
from pathlib import Path

from tests.support.dags import environment, run_dag, task_states, xcom_values
from tests.support.s3 import objects

PREFIX = "files-e2e"
KEY = base64.b64encode(hashlib.sha256(b"pgdr test key-encryption key").digest()).decode()
OTHER_KEY = base64.b64encode(hashlib.sha256(b"some other key").digest()).decode()
SECRET = "sk_live_PGDR_TEST_7c1e9a0b44d2"
JSON_SECRET = "db-password-PGDR-TEST-55aa91"
LARGE_BYTES = 6 << 20   # over the 5 MiB part size: uploaded in parts


def make_uploads(root: Path, seed: int = 7) -> None:
    rng = random.Random(seed)
    for n in range(300):
        folder = root / f"client_{n % 12:02d}" / f"visit_{n % 5}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"scan_{n:03d}.txt").write_bytes(rng.randbytes(200 + rng.randrange(3000)))
    (root / "empty_dir").mkdir()
    (root / "archive").mkdir()
    (root / "archive" / "large.bin").write_bytes(os.urandom(LARGE_BYTES))
    os.symlink("client_00/visit_0/scan_000.txt", root / "latest_scan")
    os.mkfifo(root / "upload.pipe")


def tree_state(root: Path) -> dict[str, tuple]:
    """What a user compares: every file's sha256, size and mtime; every link's target."""
    state = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            state[rel] = ("symlink", os.readlink(path))
        elif path.is_file():
            info = path.stat()
            state[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest(), info.st_size, info.st_mtime_ns)
        elif path.is_dir():
            state[rel] = ("dir",)
    return state


def env_for(stack, work: Path) -> dict[str, str]:
    uploads, config = work / "uploads", work / "care-commons"
    env = stack.airflow_env()
    env.update({
        "AIRFLOW_VAR_PGDR_STAGING_DIR": str(work / "staging"),
        "AIRFLOW_VAR_PGDR_S3_PREFIX": PREFIX,
        "AIRFLOW_VAR_PGDR_MULTIPART_CHUNK_MB": "5",
        "AIRFLOW_VAR_PGDR_FILE_DIRS": json.dumps({"care_commons_db": [str(uploads)]}),
        "AIRFLOW_VAR_PGDR_CONFIG_FILES": json.dumps({"care_commons_db": [
            str(config / ".env"), str(config / "config" / "secrets.json"), str(config / "config" / "app.yaml")]}),
        "AIRFLOW_VAR_PGDR_SECRET_FILES": json.dumps(["secrets.json"]),
        "AIRFLOW_CONN_PGDR_CONFIG_KEY": json.dumps({"conn_type": "generic", "password": KEY}),
    })
    return env


def file_backups(stack, tmp_path_factory) -> dict:
    """Run pg_backup_daily twice and return what the tests need (the ``backups`` fixture, once a session)."""
    work = tmp_path_factory.mktemp("file-backups")
    uploads, config = work / "uploads", work / "care-commons"
    make_uploads(uploads)
    (config / "config").mkdir(parents=True)
    (config / ".env").write_text(f"DATABASE_URL=postgres://app@db/care\nSTRIPE_KEY={SECRET}\n")
    (config / "config" / "secrets.json").write_text(json.dumps({"db_password": JSON_SECRET}))
    (config / "config" / "app.yaml").write_text("feature_flags:\n  evv: true\n")
    env = env_for(stack, work)
    runs = []
    with environment(env):
        for step in range(2):
            if step == 1:
                changed = uploads / "client_03" / "visit_3" / "scan_003.txt"
                changed.write_bytes(b"replaced scan " * 40)
                (uploads / "client_04" / "visit_4" / "scan_004.txt").unlink()
                (uploads / "client_05" / "new_scan.txt").write_bytes(b"a new upload")
            dag_run = run_dag("pg_backup_daily")
            states = task_states(dag_run)
            assert str(dag_run.state) == "success", states
            (files_seal,) = xcom_values(dag_run, "backup.seal_files")
            (config_seal,) = xcom_values(dag_run, "backup.seal_config")
            runs.append({"run_id": dag_run.run_id, "states": states, "files": files_seal, "config": config_seal,
                         "tree": tree_state(uploads)})
            time.sleep(1.1)  # backup ids are whole seconds
    return {"env": env, "work": work, "uploads": uploads, "config": config, "runs": runs}


def manifest_of(stack, seal: dict) -> dict:
    from harness.stack import BUCKET

    return json.loads(stack.s3.client().get_object(Bucket=BUCKET, Key=seal["manifest_key"])["Body"].read())


def objects_under(stack, prefix: str) -> dict[str, int]:
    """Each object's size under ``prefix``, by key."""
    return {key: obj["Size"] for key, obj in objects(stack.s3.client(), prefix).items()}
