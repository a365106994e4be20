"""Manifests and the digests they carry: pure code, no services."""

import base64
import hashlib
import json
import os
from datetime import datetime, timezone

import pytest

from pgdr.core.checksums import StreamDigest
from pgdr.store.manifest import Manifest, ManifestError, ObjectEntry, backup_id_time, backup_prefix, new_backup_id


def _manifest(**changes):
    fields = dict(
        backup_id="20261126T020000Z", kind="logical", database="care_commons_db", dbname="care_commons",
        started_at="2026-11-26T02:00:00+00:00", finished_at="2026-11-26T02:01:00+00:00",
        server_version="15.18", server_version_num=150018, system_identifier="7312",
        objects=[ObjectEntry(name="dump/toc.dat", key="p/care_commons_db/logical/20261126T020000Z/dump/toc.dat",
                             size=10, sha256="a" * 64, role="toc")],
        row_counts={"public.visits": 3}, tool_versions={"pg_dump": "15"}, encryption={"sse": "AES256"},
    )
    fields.update(changes)
    return Manifest(**fields)


def test_round_trip_through_json():
    manifest = _manifest()
    assert Manifest.from_json(manifest.to_json()) == manifest


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"backup_id": "../../etc"}, "backup_id"),
        ({"kind": "weird"}, "kind"),
        ({"objects": []}, "no objects"),
        ({"row_counts": {"public.visits": -1}}, "row count"),
        ({"objects": [ObjectEntry(name="../x", key="k", size=1, sha256="a" * 64, role="toc")]}, "not allowed"),
        ({"objects": [ObjectEntry(name="x", key="k", size=1, sha256="nothex", role="toc")]}, "sha256"),
    ],
)
def test_invalid_manifests_are_refused(changes, needle):
    with pytest.raises(ManifestError, match=needle):
        _manifest(**changes).validate()


def _incremental(**changes):
    fields = dict(kind="base", backup_id="20261128T020000Z", depends_on="20261127T020000Z",
                  dump={"backup_type": "incremental", "chain": ["20261126T020000Z", "20261127T020000Z"]})
    fields.update(changes)
    return _manifest(**fields)


def test_an_incremental_base_backup_names_its_parent_and_chain_through_json():
    manifest = Manifest.from_json(_incremental().to_json())
    assert manifest.depends_on == "20261127T020000Z" and manifest.backup_type == "incremental"
    assert manifest.chain == ["20261126T020000Z", "20261127T020000Z", "20261128T020000Z"]
    assert json.loads(manifest.to_json())["depends_on"] == "20261127T020000Z"


def test_a_manifest_written_before_incrementals_loads_as_full():
    old = json.loads(_manifest(kind="base").to_json())
    del old["depends_on"]     # what every manifest written before this field looks like
    manifest = Manifest.from_dict(old)
    assert manifest.depends_on is None and manifest.backup_type == "full" and manifest.chain == [manifest.backup_id]


@pytest.mark.parametrize(("changes", "needle"), [
    ({"kind": "logical"}, "only base backups are incremental"),
    ({"dump": {"chain": []}}, "up to depends_on"),
    ({"dump": {"chain": ["20261126T020000Z"]}}, "up to depends_on"),
    ({"dump": {"chain": ["20261129T020000Z", "20261127T020000Z"]}}, "older backup ids"),
])
def test_an_inconsistent_chain_is_refused(changes, needle):
    with pytest.raises(ManifestError, match=needle):
        _incremental(**changes).validate()


def test_backup_ids_are_sortable_utc_times():
    moment = datetime(2026, 11, 26, 2, 0, 5, tzinfo=timezone.utc)
    backup_id = new_backup_id(moment)
    assert backup_id == "20261126T020005Z"
    assert backup_id_time(backup_id) == moment
    assert backup_prefix("pgdr", "db", "logical", backup_id) == "pgdr/db/logical/20261126T020005Z"
    with pytest.raises(ManifestError):
        backup_prefix("pgdr", "db", "logical", "latest/../x")


@pytest.mark.parametrize("size", [0, 1, 5 * 1024 * 1024, 5 * 1024 * 1024 + 1, 12 * 1024 * 1024 + 7])
def test_stream_digest_matches_hashlib_and_s3_composite_rules(size):
    part = 5 * 1024 * 1024
    data = os.urandom(size)
    digest = StreamDigest(part)
    for start in range(0, size, 777_777):  # chunk boundaries unrelated to part boundaries
        digest.update(data[start:start + 777_777])
    result = digest.finish()
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.size == size
    parts = [data[i:i + part] for i in range(0, size, part)] or [b""]
    composite = hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest()
    assert result.s3_checksum(multipart=True) == f"{base64.b64encode(composite).decode()}-{len(parts)}"
    assert result.s3_checksum(multipart=False) == base64.b64encode(hashlib.sha256(data).digest()).decode()
