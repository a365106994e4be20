"""Configuration backups on real services: secrets never reach S3 in the clear, and only the right key opens them.

The objects are fetched raw with a plain S3 client and searched for the secret values; the sealed
archive is opened here with the connection's key through the documented format.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import tarfile

import pytest
import zstandard

from harness.stack import BUCKET, CONN_ID
from tests.support.file_backups import JSON_SECRET, KEY, OTHER_KEY, PREFIX, SECRET, manifest_of, objects_under


@pytest.fixture(scope="module")
def config_manifest(stack, backups):
    return manifest_of(stack, backups["runs"][-1]["config"])


def _raw(stack, key: str) -> bytes:
    return stack.s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()


def test_the_manifest_records_which_files_were_sealed_and_how_never_the_key(backups, config_manifest):
    config = backups["config"]
    client_side = config_manifest["encryption"]["client_side"]
    assert client_side["algorithm"] == "AES-256-GCM"
    assert client_side["encrypted_files"] == [str(config / ".env"), str(config / "config" / "secrets.json")]
    wrapping = client_side["data_key"]
    assert wrapping["method"] == "connection" and wrapping["conn_id"] == "pgdr_config_key"
    files = {f["source"]: f for f in config_manifest["dump"]["files"]}
    assert files[str(config / ".env")]["encrypted"] and files[str(config / ".env")]["sha256"] is None
    assert not files[str(config / "config" / "app.yaml")]["encrypted"]
    text = json.dumps(config_manifest)
    assert KEY not in text and SECRET not in text and JSON_SECRET not in text


def test_no_stored_object_holds_a_secret_in_the_clear(stack, config_manifest):
    prefix = f"{PREFIX}/{CONN_ID}/config/{config_manifest['backup_id']}/"
    stored = objects_under(stack, prefix)
    assert set(stored) == {prefix + "config.tar.zst", prefix + "secrets.tar.zst.enc", prefix + "manifest.json"}
    for key in stored:
        raw = _raw(stack, key)
        assert SECRET.encode() not in raw and JSON_SECRET.encode() not in raw, key
        try:
            opened = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
        except zstandard.ZstdError:
            continue  # the sealed archive is not even zstd until it is opened
        assert SECRET.encode() not in opened and JSON_SECRET.encode() not in opened, key
    plain = zstandard.ZstdDecompressor().decompressobj().decompress(_raw(stack, prefix + "config.tar.zst"))
    assert b"feature_flags" in plain


def test_the_connection_key_opens_the_sealed_archive_and_gives_the_original(stack, backups, config_manifest):
    from pgdr.backup.config import object_aad
    from pgdr.core.envelope import ConnectionKeyWrapper, open_sealed

    wrapping = config_manifest["encryption"]["client_side"]["data_key"]
    data_key = ConnectionKeyWrapper("pgdr_config_key", base64.b64decode(KEY)).unwrap(wrapping)
    prefix = f"{PREFIX}/{CONN_ID}/config/{config_manifest['backup_id']}"
    blob = _raw(stack, f"{prefix}/secrets.tar.zst.enc")
    tar_bytes = zstandard.ZstdDecompressor().decompressobj().decompress(
        open_sealed(data_key, blob, object_aad(CONN_ID, config_manifest["backup_id"], "secrets.tar.zst.enc")))
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        env_text = tar.extractfile(str(backups["config"] / ".env").lstrip("/")).read()
    assert env_text == (backups["config"] / ".env").read_bytes()


def test_a_wrong_key_is_refused_by_name_and_decrypts_nothing(config_manifest):
    from pgdr.core.envelope import ConnectionKeyWrapper, KeyProblem

    wrapping = config_manifest["encryption"]["client_side"]["data_key"]
    with pytest.raises(KeyProblem, match="is not the key this backup was sealed with"):
        ConnectionKeyWrapper("pgdr_config_key", base64.b64decode(OTHER_KEY)).unwrap(wrapping)
    tampered = dict(wrapping, key_fingerprint=None)   # even without the id, GCM refuses the wrong key
    with pytest.raises(KeyProblem, match="does not unwrap this backup's data key"):
        ConnectionKeyWrapper("pgdr_config_key", base64.b64decode(OTHER_KEY)).unwrap(tampered)


@pytest.mark.parametrize("password, message", [
    (None, "has no password"), ("not base64!", "is not base64"),
    (base64.b64encode(b"short").decode(), "decodes to 5 bytes"),
])
def test_a_missing_or_malformed_key_is_refused_clearly(password, message):
    from pgdr.core.envelope import KeyProblem, parse_kek

    with pytest.raises(KeyProblem, match=message):
        parse_kek("pgdr_config_key", password)


def test_a_missing_listed_file_fails_before_anything_is_uploaded(stack, backups, tmp_path):
    from pgdr.backup.config import ConfigBackupError, run_config_backup
    from pgdr.core.envelope import ConnectionKeyWrapper
    from pgdr.store.s3 import BackupStore

    store = BackupStore(client=stack.s3.client(), bucket=BUCKET, prefix="config-missing",
                        sse_args={"ServerSideEncryption": "AES256"}, part_size=5 << 20, log=logging.getLogger("t"))
    missing = backups["config"] / "config" / "gone.yaml"
    with pytest.raises(ConfigBackupError, match=f"{missing} does not exist.*nothing was uploaded|nothing was uploaded.*"
                                                f"{missing} does not exist"):
        run_config_backup(database=CONN_ID, backup_id="20260101T000000Z", prefix="config-missing/x",
                          paths=(backups["config"] / ".env", missing), secret_files=(),
                          wrapper=ConnectionKeyWrapper("k", base64.b64decode(KEY)), store=store, workdir=tmp_path / "w",
                          level=1, kms_key_id=None, airflow={}, log=logging.getLogger("t"))
    assert objects_under(stack, "config-missing/") == {}


def test_with_kms_the_data_key_is_wrapped_by_kms_and_only_kms_unwraps_it(stack):
    import boto3

    from harness.s3_server import ACCESS_KEY, REGION, SECRET_KEY
    from pgdr.backup.config import object_aad
    from pgdr.core.envelope import KeyProblem, KmsKeyWrapper, open_sealed, seal

    kms = boto3.client("kms", endpoint_url=stack.s3.endpoint_url, region_name=REGION,
                       aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
    key_id = kms.create_key(Description="pgdr config test")["KeyMetadata"]["KeyId"]
    other = kms.create_key(Description="another")["KeyMetadata"]["KeyId"]
    data_key = KmsKeyWrapper(kms, key_id).new_data_key("pgdr:db:config:20260101T000000Z")
    assert data_key.wrapping["method"] == "kms" and data_key.wrapping["kms_key_id"] == key_id
    assert base64.b64encode(data_key.plaintext).decode() not in json.dumps(data_key.wrapping)
    aad = object_aad("db", "20260101T000000Z", "secrets.tar.zst.enc")
    blob = seal(data_key.plaintext, SECRET.encode(), aad)
    assert SECRET.encode() not in blob
    assert open_sealed(KmsKeyWrapper(kms, key_id).unwrap(data_key.wrapping), blob, aad) == SECRET.encode()
    with pytest.raises(KeyProblem, match="KMS could not unwrap"):
        KmsKeyWrapper(kms, other).unwrap({**data_key.wrapping, "kms_key_id": other})
