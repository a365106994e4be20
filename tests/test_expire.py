"""Backup retention end to end on S3 (moto, versioned, Object Lock): GFS, leases, locks, WAL and PITR."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError

from harness.stack import BUCKET, CONN_ID
from tests.support.dags import run_dag, task_states, xcom_values

log = logging.getLogger("test_expire")
SSE = {"ServerSideEncryption": "AES256"}


def _store(stack, prefix: str, lock_policy=None, backup_lock_date=None):
    from pgdr.store.s3 import BackupStore

    return BackupStore(client=stack.s3.client(), bucket=BUCKET, prefix=prefix, sse_args=SSE, part_size=64 << 20,
                       log=log, lock_policy=lock_policy, backup_lock_date=backup_lock_date)


def _bid(when: datetime) -> str:
    return when.strftime("%Y%m%dT%H%M%SZ")


def _copy_backup(s3, source: dict, prefix: str, when: datetime, status: str | None,
                 lock_until: datetime | None = None) -> str:
    """A copy of a real backup's objects under a past backup id, its manifest rewritten to that date."""
    backup_id = _bid(when)
    target = f"{prefix}/{CONN_ID}/logical/{backup_id}"
    lock = {"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": lock_until} if lock_until else {}
    objects = []
    for obj in source["objects"]:
        body = s3.get_object(Bucket=BUCKET, Key=obj["key"])["Body"].read()
        s3.put_object(Bucket=BUCKET, Key=f"{target}/{obj['name']}", Body=body, ChecksumAlgorithm="SHA256",
                      **SSE, **lock)
        objects.append({**obj, "key": f"{target}/{obj['name']}"})
    manifest = {**source, "backup_id": backup_id, "objects": objects,
                "started_at": when.isoformat(), "finished_at": (when + timedelta(minutes=3)).isoformat()}
    s3.put_object(Bucket=BUCKET, Key=f"{target}/manifest.json", Body=json.dumps(manifest).encode(),
                  ChecksumAlgorithm="SHA256", **SSE, **lock)
    if status:
        s3.put_object(Bucket=BUCKET, Key=f"{target}/verification.json", ChecksumAlgorithm="SHA256", **SSE,
                      Body=json.dumps({"status": status, "verified_at": when.isoformat()}).encode())
    return backup_id


def _month_start(now: datetime, back: int) -> datetime:
    from pgdr.retain.gfs import add_months

    return add_months(now.year, now.month, -back)


def _run_backup_retention(dry_run: bool):
    """The pg_data_retention DAG's backups group, for real (the data group is left out: it would edit the
    stack's shared database)."""
    from harness.run_dag import load_dag_for_test

    dag = load_dag_for_test("pg_data_retention").partial_subset(["protected_databases", "backups.expire"],
                                                                 include_upstream=True)
    return dag.test(run_conf={"dry_run": dry_run})


def test_gfs_on_s3_keeps_exactly_the_expected_backups_reports_locks_and_extends_them(stack, airflow_db, pgdr_env):
    from pgdr.retain.gfs import add_months
    from pgdr.store import leases

    prefix = pgdr_env["AIRFLOW_VAR_PGDR_S3_PREFIX"]
    s3 = stack.s3.client()
    store = _store(stack, prefix)
    dag_run = run_dag("pg_backup_daily")
    assert str(dag_run.state) == "success", task_states(dag_run)
    (sealed,) = [x for x in xcom_values(dag_run, "backup.verify_and_seal")]
    newest = sealed["backup_id"]
    source = store.read_json(f"{prefix}/{CONN_ID}/logical/{newest}/manifest.json")
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{CONN_ID}/logical/{newest}/verification.json", **SSE,
                  Body=json.dumps({"status": "good"}).encode())

    now = datetime.now(timezone.utc)
    month = _month_start(now, 3) + timedelta(hours=2)
    year = datetime(now.year - 3, 1, 2, 2, tzinfo=timezone.utc)
    ids = {
        "daily": _copy_backup(s3, source, prefix, now - timedelta(days=5), "good"),
        "month_first": _copy_backup(s3, source, prefix, month, "good", lock_until=now + timedelta(days=1)),
        "month_second": _copy_backup(s3, source, prefix, month + timedelta(days=1), "good"),
        "locked": _copy_backup(s3, source, prefix, month + timedelta(days=2), "good",
                               lock_until=now + timedelta(days=2)),
        "leased": _copy_backup(s3, source, prefix, month + timedelta(days=5), "bad"),
        "year_first": _copy_backup(s3, source, prefix, year, "good"),
        "year_second": _copy_backup(s3, source, prefix, year + timedelta(days=1), "unverified"),
        "ancient": _copy_backup(s3, source, prefix, datetime(now.year - 9, 1, 2, 2, tzinfo=timezone.utc), "good"),
    }
    orphan = _bid(now - timedelta(days=3))
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{CONN_ID}/logical/{orphan}/toc.dat", Body=b"half", **SSE)
    leases.hold(store, CONN_ID, "logical", ids["leased"], "manual__restore-1", hours=2)
    everything = {e.backup_id for e in store.catalog(CONN_ID, "logical")}
    kept_ids = {newest, ids["daily"], ids["month_first"], ids["locked"], ids["leased"], ids["year_first"]}
    gone_ids = {ids["month_second"], ids["year_second"], ids["ancient"], orphan}
    assert everything == kept_ids | gone_ids

    # a dry run deletes nothing and reports the same plan
    stack.slack.clear()
    dry = _run_backup_retention(dry_run=True)
    assert str(dry.state) == "success", task_states(dry)
    assert {e.backup_id for e in store.catalog(CONN_ID, "logical")} == everything
    (dry_out,) = xcom_values(dry, "backups.expire")
    dry_report = store.read_json(dry_out["report_key"])
    assert {b["backup_id"] for b in dry_report["backups"] if b["action"] == "delete"} == gone_ids

    stack.slack.clear()
    real = _run_backup_retention(dry_run=False)
    assert str(real.state) == "success", task_states(real)
    assert {e.backup_id for e in store.catalog(CONN_ID, "logical")} == kept_ids
    for backup_id in gone_ids:  # every version gone, not hidden behind a delete marker
        assert not s3.list_object_versions(Bucket=BUCKET, Prefix=f"{prefix}/{CONN_ID}/logical/{backup_id}/").get(
            "Versions")
    (out,) = xcom_values(real, "backups.expire")
    report = store.read_json(out["report_key"])
    reasons = {b["backup_id"]: b["reasons"] for b in report["backups"]}
    assert "newest verified" in reasons[newest]
    assert f"monthly: first of {month:%Y-%m}" in reasons[ids["month_first"]]
    assert f"yearly: first of {year:%Y}" in reasons[ids["year_first"]]
    assert reasons[ids["leased"]] == ["leased by restore run manual__restore-1"]
    assert reasons[ids["locked"]][0].startswith("locked until ")
    assert report["counts"]["deleted"] == 4 and report["counts"]["locked"] == 1
    assert report["bytes_freed"]["backups"] > 0
    assert dry_report["backups"] == report["backups"]

    # S3 itself refuses an early delete of the locked backup; its manifest stays listed
    locked_key = f"{prefix}/{CONN_ID}/logical/{ids['locked']}/manifest.json"
    version = s3.head_object(Bucket=BUCKET, Key=locked_key)["VersionId"]
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=BUCKET, Key=locked_key, VersionId=version)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    # the month's keeper, written with a short lock, now holds it for its monthly role
    head = s3.head_object(Bucket=BUCKET, Key=f"{prefix}/{CONN_ID}/logical/{ids['month_first']}/manifest.json")
    assert head["ObjectLockRetainUntilDate"] >= add_months(month.year, month.month, 12) - timedelta(seconds=1)
    text = "\n".join(stack.slack.texts())
    assert "backup retention for care_commons_db" in text
    assert "toc" not in text and ids["ancient"] not in text  # counts only


def test_objects_get_their_gfs_lock_at_write_and_a_failed_upload_leaves_nothing_listed(stack, pgdr_env, tmp_path):
    from pgdr.backup.upload import remove_partial_upload
    from pgdr.core.checksums import file_digest
    from pgdr.core.progress import Progress
    from pgdr.retain.gfs import Policy
    from pgdr.retain.object_lock import gfs_lock_date
    from pgdr.store.manifest import new_backup_id
    from pgdr.store.object_lock import LockPolicy

    prefix = pgdr_env["AIRFLOW_VAR_PGDR_S3_PREFIX"]
    s3 = stack.s3.client()
    store = _store(stack, prefix, LockPolicy("GOVERNANCE", 7.0), gfs_lock_date(Policy(30, 12, 7)))
    path = tmp_path / "table.dat.zst"
    path.write_bytes(b"x" * 1000)
    digest = file_digest(path, store.part_size)
    now = datetime.now(timezone.utc)
    started = now - timedelta(days=3)   # a backup that failed three days ago
    key = f"{prefix}/{CONN_ID}/logical/{new_backup_id(started)}/table.dat.zst"
    store.upload_file(path, key, digest, {}, Progress("upload", log))
    # the first backup of its year so far: locked for the yearly role
    assert s3.head_object(Bucket=BUCKET, Key=key)["ObjectLockRetainUntilDate"] == datetime(
        started.year + 7, 1, 1, tzinfo=timezone.utc)
    wal_key = f"{prefix}/{CONN_ID}/wal/000000010000000000000003.zst"
    store.upload_file(path, wal_key, digest, {}, Progress("upload", log))
    wal_until = s3.head_object(Bucket=BUCKET, Key=wal_key)["ObjectLockRetainUntilDate"]
    assert timedelta(days=6.9) < wal_until - now < timedelta(days=7.1)
    partial_key = f"{prefix}/{CONN_ID}/wal/000000010000000000000004.partial.zst"
    store.upload_file(path, partial_key, digest, {}, Progress("upload", log))
    assert "ObjectLockRetainUntilDate" not in s3.head_object(Bucket=BUCKET, Key=partial_key)
    # the layout per cluster (<db>/wal/<system identifier>/<name>) is locked the same way
    cluster_key = f"{prefix}/{CONN_ID}/wal/7311111111111111111/000000010000000000000003.zst"
    store.upload_file(path, cluster_key, digest, {}, Progress("upload", log))
    cluster_until = s3.head_object(Bucket=BUCKET, Key=cluster_key)["ObjectLockRetainUntilDate"]
    assert timedelta(days=6.9) < cluster_until - now < timedelta(days=7.1)
    cluster_partial = f"{prefix}/{CONN_ID}/wal/7311111111111111111/000000010000000000000004.partial.zst"
    store.upload_file(path, cluster_partial, digest, {}, Progress("upload", log))
    assert "ObjectLockRetainUntilDate" not in s3.head_object(Bucket=BUCKET, Key=cluster_partial)

    remove_partial_upload(store, [key], log)
    assert store.list_keys(f"{prefix}/{CONN_ID}/logical") == []
    assert store.catalog(CONN_ID, "logical") == []
    versions = s3.list_object_versions(Bucket=BUCKET, Prefix=key)
    assert len(versions["Versions"]) == 1 and len(versions["DeleteMarkers"]) == 1  # hidden, kept by the lock
    # retention finds the hidden orphan, does not attempt it and reports the lock
    from pgdr.retain import backups as expire

    report = expire.run(store=store, database=CONN_ID, settings=_settings_from_env(), dry_run=False, log=log)
    (locked,) = report["locked"]
    assert locked["backup_id"] == new_backup_id(started) and locked["complete"] is False
    assert locked["reasons"] == [f"locked until {started.year + 7}-01-01T00:00:00+00:00"]
    assert report["counts"]["deleted"] == 0 and not report["errors"]
    assert len(s3.list_object_versions(Bucket=BUCKET, Prefix=key)["Versions"]) == 1


def _settings_from_env(**overrides):
    import dataclasses
    import os

    from pgdr.settings import SETTINGS, parse_settings

    raw = {s.name: os.environ.get(f"AIRFLOW_VAR_PGDR_{s.name.upper()}") for s in SETTINGS}
    return dataclasses.replace(parse_settings(raw), **overrides)


@pytest.mark.slow
def test_wal_pruned_to_the_pitr_window_still_recovers_to_its_oldest_moment(stack, airflow_db, monkeypatch):
    import time

    from test_pitr import Site

    from pgdr.restore.pitr_plan import parse_target, plan_wal
    from pgdr.retain import backups as expire
    from pgdr.wal.archive import wal_objects
    from pgdr.wal.local import scan
    from pgdr.wal.names import wal_prefix

    site = Site(stack, monkeypatch)
    try:
        site.base_backup()
        site.insert(1, 10)
        site.cluster.execute("SELECT pg_switch_wal()")
        second = site.base_backup()
        site.insert(11, 20)
        time.sleep(1.2)
        (moment,) = site.cluster.execute("SELECT clock_timestamp()")[0]
        time.sleep(1.2)
        site.insert(21, 30)
        site.cluster.execute("SELECT pg_switch_wal()")
        time.sleep(1)
        site.ship()
        store = site.store()
        second_manifest = store.read_manifest(f"{site.prefix}/{CONN_ID}/base/{second}/manifest.json")
        start = second_manifest.wal["start_wal_file"]
        base = wal_prefix(site.prefix, CONN_ID) + "/"   # every cluster's WAL (<system identifier>/<name>.zst)

        def segments() -> list[str]:
            return sorted(k.rsplit("/", 1)[-1][:24] for k in store.list_keys(base) if k.endswith(".zst"))

        assert any(name < start for name in segments()), "WAL older than the second base backup is archived"
        local_before = {item.name for item in scan(site.receiver_dir) if item.kind == "segment"}

        # the window opens exactly at the moment: the second base backup is the newest finished before it
        window = (datetime.now(timezone.utc) - moment).total_seconds() / 86400
        report = expire.run(store=store, database=CONN_ID, settings=_settings_from_env(pitr_window_days=window),
                            dry_run=False, log=log)
        assert report["wal"]["cutoff"] == start and report["counts"]["wal_deleted"] > 0, report["wal"]
        assert report["counts"]["deleted"] == 0 and not report["errors"]
        assert min(segments()) == start
        assert not s3_versions_before(stack, base, start)
        local_after = {item.name for item in scan(site.receiver_dir) if item.kind == "segment"}
        assert local_after == {n for n in local_before if n >= start} and local_after != local_before

        found = wal_objects(store.list_objects(base), base, second_manifest.system_identifier)
        assert plan_wal(found, start, parse_target(moment.isoformat())).first == start
        dag_run, states = site.recover(moment.isoformat())
        assert str(dag_run.state) == "success", states
        (outcome,) = xcom_values(dag_run, "restore")
        assert site.recovered_rows(outcome) == set(range(1, 21))
    finally:
        site.close()


def s3_versions_before(stack, base: str, start: str) -> list[str]:
    listing = stack.s3.client().list_object_versions(Bucket=BUCKET, Prefix=base)
    return [v["Key"] for v in listing.get("Versions", []) + listing.get("DeleteMarkers", [])
            if v["Key"].rsplit("/", 1)[-1][:24] < start and not v["Key"].endswith(".history.zst")]


def _synthetic_backup(s3, prefix: str, when: datetime, status: str | None) -> str:
    """A small backup directory (a dump object, its manifest, a verification marker) dated ``when``."""
    backup_id = _bid(when)
    target = f"{prefix}/{CONN_ID}/logical/{backup_id}"
    s3.put_object(Bucket=BUCKET, Key=f"{target}/toc.dat", Body=b"dump " * 100, **SSE)
    manifest = {"backup_id": backup_id, "kind": "logical", "database": CONN_ID, "started_at": when.isoformat(),
                "finished_at": (when + timedelta(minutes=3)).isoformat(),
                "objects": [{"name": "toc.dat", "key": f"{target}/toc.dat", "size": 500}]}
    s3.put_object(Bucket=BUCKET, Key=f"{target}/manifest.json", Body=json.dumps(manifest).encode(), **SSE)
    if status:
        s3.put_object(Bucket=BUCKET, Key=f"{target}/verification.json", **SSE,
                      Body=json.dumps({"status": status, "verified_at": when.isoformat()}).encode())
    return backup_id


def _all_versions(s3, prefix: str) -> tuple[set, set]:
    listed = s3.list_object_versions(Bucket=BUCKET, Prefix=prefix)
    return ({(v["Key"], v["VersionId"]) for v in listed.get("Versions", [])},
            {(m["Key"], m["VersionId"]) for m in listed.get("DeleteMarkers", [])})


def test_a_backup_hidden_by_a_delete_marker_is_restored_never_deleted(stack, airflow_db, pgdr_env):
    """Item 2: a manifest hidden by a delete marker (a mistaken `aws s3 rm`) made the backup an orphan and
    retention deleted every version of it. Now it is restored, kept, reported and alerted on."""
    prefix = pgdr_env["AIRFLOW_VAR_PGDR_S3_PREFIX"]
    s3 = stack.s3.client()
    store = _store(stack, prefix)
    now = datetime.now(timezone.utc)
    newest = _synthetic_backup(s3, prefix, now - timedelta(days=2), "good")
    keeper = _synthetic_backup(s3, prefix, _month_start(now, 3) + timedelta(hours=2), "good")
    daily = _synthetic_backup(s3, prefix, now - timedelta(days=4), "good")
    base = f"{prefix}/{CONN_ID}/logical/"
    # the newest backup's manifest removed by a plain delete; the month's keeper removed recursively
    s3.delete_object(Bucket=BUCKET, Key=f"{base}{newest}/manifest.json")
    for name in ("toc.dat", "manifest.json", "verification.json"):
        s3.delete_object(Bucket=BUCKET, Key=f"{base}{keeper}/{name}")
    assert {e.backup_id for e in store.catalog(CONN_ID, "logical") if e.complete} == {daily}
    data_before, markers_before = _all_versions(s3, base)
    assert len(markers_before) == 4

    dry = _run_backup_retention(dry_run=True)
    assert str(dry.state) == "success", task_states(dry)
    assert _all_versions(s3, base) == (data_before, markers_before)   # a dry run changes nothing
    (dry_out,) = xcom_values(dry, "backups.expire")
    dry_report = store.read_json(dry_out["report_key"])

    stack.slack.clear()
    real = _run_backup_retention(dry_run=False)
    assert str(real.state) == "success", task_states(real)
    data_after, markers_after = _all_versions(s3, base)
    assert data_after == data_before and not markers_after       # every version still there, markers gone
    assert {e.backup_id for e in store.catalog(CONN_ID, "logical") if e.complete} == {newest, keeper, daily}
    assert {(r["backup_id"], r["restored"]) for r in dry_report["restored"]} == {(newest, False), (keeper, False)}
    (out,) = xcom_values(real, "backups.expire")
    report = store.read_json(out["report_key"])
    from pgdr.retain.gfs import HIDDEN_REASON

    reasons = {b["backup_id"]: b["reasons"] for b in report["backups"]}
    assert HIDDEN_REASON in reasons[newest] and HIDDEN_REASON in reasons[keeper]
    assert "newest verified" in reasons[newest]
    assert report["counts"]["restored"] == 2 and report["counts"]["deleted"] == 0
    text = "\n".join(stack.slack.texts())
    assert "Hidden by a delete marker, restored" in text
    # and a second run, now that they are listed again, still keeps them by their GFS roles
    again = expire_run_now(store)
    kept = {b["backup_id"] for b in again["backups"] if b["action"] == "keep"}
    assert {newest, keeper, daily} <= kept and again["counts"]["restored"] == 0


def expire_run_now(store, dry_run: bool = False) -> dict:
    from pgdr.retain import backups as expire

    return expire.run(store=store, database=CONN_ID, settings=_settings_from_env(), dry_run=dry_run, log=log)


def _synthetic_base(s3, prefix: str, when: datetime, chain: list[str], lock_until: datetime | None = None) -> str:
    """A small base backup directory dated ``when``: a tar and a backup_manifest object, its manifest (full, or
    incremental on the last of ``chain``: the manifest contract's depends_on and dump.chain) and a good marker."""
    backup_id = _bid(when)
    target = f"{prefix}/{CONN_ID}/base/{backup_id}"
    lock = {"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": lock_until} if lock_until else {}
    objects = []
    for name, body in (("data.tar.zst", b"tar " * 200), ("backup_manifest", b"{}")):
        s3.put_object(Bucket=BUCKET, Key=f"{target}/{name}", Body=body, ChecksumAlgorithm="SHA256", **SSE, **lock)
        objects.append({"name": name, "key": f"{target}/{name}", "size": len(body)})
    manifest = {"backup_id": backup_id, "kind": "base", "database": CONN_ID, "started_at": when.isoformat(),
                "finished_at": (when + timedelta(minutes=3)).isoformat(), "objects": objects,
                "depends_on": chain[-1] if chain else None,
                "dump": {"backup_type": "incremental" if chain else "full", "chain": list(chain)}}
    s3.put_object(Bucket=BUCKET, Key=f"{target}/manifest.json", Body=json.dumps(manifest).encode(),
                  ChecksumAlgorithm="SHA256", **SSE, **lock)
    s3.put_object(Bucket=BUCKET, Key=f"{target}/verification.json", ChecksumAlgorithm="SHA256", **SSE,
                  Body=json.dumps({"status": "good", "verified_at": when.isoformat()}).encode())
    return backup_id


def test_base_backup_chains_are_kept_whole_deleted_whole_and_their_fulls_locked_as_long(stack, airflow_db, pgdr_env):
    """A month's keeper that is an incremental keeps its full (before, the full was deleted: the parent id was
    read as a list of characters); a chain outside every window goes whole; a locked incremental keeps its
    full, whose lock is extended to the incremental's."""
    from pgdr.retain.gfs import add_months

    prefix = pgdr_env["AIRFLOW_VAR_PGDR_S3_PREFIX"]
    s3 = stack.s3.client()
    store = _store(stack, prefix)
    now = datetime.now(timezone.utc)
    m3, m2 = _month_start(now, 3) + timedelta(hours=2), _month_start(now, 2) + timedelta(hours=2)

    def chain(start: datetime, days: int, lock_last: datetime | None = None) -> list[str]:
        ids: list[str] = []
        for n in range(days):
            last = n == days - 1
            ids.append(_synthetic_base(s3, prefix, start + timedelta(days=n), ids, lock_last if last else None))
        return ids

    a = chain(m3, 3)                                   # A0 the first of month -3: its keeper
    b = chain(m2 - timedelta(days=1), 3)               # B0 the last day of month -3, B1 the first of month -2
    c = chain(m3 + timedelta(days=10), 2)              # nothing keeps it
    locked_until = now + timedelta(days=20)
    d = chain(m3 + timedelta(days=14), 2, lock_last=locked_until)   # D1 locked by S3
    newest = chain(now - timedelta(days=2), 2)

    report = expire_run_now(store)
    reasons = {b_["backup_id"]: b_["reasons"] for b_ in report["backups"]}
    left = {e.backup_id for e in store.catalog(CONN_ID, "base") if e.complete}
    assert left == {a[0], b[0], b[1], d[0], d[1], *newest}, report["backups"]
    assert f"monthly: first of {m2:%Y-%m}" in reasons[b[1]]
    assert reasons[b[0]] == [f"needed by kept backup {b[1]}"]
    assert f"needed by kept backup {d[1]}" in reasons[d[0]] and reasons[d[1]][0].startswith("locked until ")
    for gone in (a[1], a[2], b[2], *c):   # every version, not hidden behind a delete marker
        assert not s3.list_object_versions(Bucket=BUCKET, Prefix=f"{prefix}/{CONN_ID}/base/{gone}/").get("Versions")
    assert not report["errors"]

    def lock_of(backup_id: str) -> datetime:
        return s3.head_object(Bucket=BUCKET, Key=f"{prefix}/{CONN_ID}/base/{backup_id}/manifest.json")[
            "ObjectLockRetainUntilDate"]

    # the full below a month's keeper is locked as long as the keeper; a locked incremental's full at least as long
    month_end = add_months(m2.year, m2.month, 12)
    assert lock_of(b[1]) >= month_end - timedelta(seconds=1) and lock_of(b[0]) >= month_end - timedelta(seconds=1)
    assert lock_of(d[0]) >= locked_until - timedelta(seconds=1)


def test_a_sealed_incremental_locks_its_chain_at_least_as_long_as_itself(stack, pgdr_env):
    """The full was locked for its own role when written; the incremental on it is a month's first, locked a
    year: once it is sealed, the full and the incremental between are locked as long (no retention run needed)."""
    from types import SimpleNamespace

    from pgdr.retain.object_lock import lock_chain_as_long

    prefix = pgdr_env["AIRFLOW_VAR_PGDR_S3_PREFIX"]
    s3 = stack.s3.client()
    store = _store(stack, prefix)
    now = datetime.now(timezone.utc)
    full = _synthetic_base(s3, prefix, now - timedelta(days=3), [], lock_until=now + timedelta(days=27))
    middle = _synthetic_base(s3, prefix, now - timedelta(days=2), [full], lock_until=now + timedelta(days=28))
    year = now + timedelta(days=365)
    last = _synthetic_base(s3, prefix, now - timedelta(days=1), [full, middle], lock_until=year)
    extended = lock_chain_as_long(store, CONN_ID, SimpleNamespace(backup_id=last, depends_on=middle,
                                                                  dump={"chain": [full, middle]}))
    # every version under it, as retention extends (the tar, both manifests, the verification marker)
    assert [(e["backup_id"], e["objects"]) for e in extended] == [(full, 4), (middle, 4)]
    for piece in (full, middle):
        for name in ("data.tar.zst", "backup_manifest", "manifest.json"):
            head = s3.head_object(Bucket=BUCKET, Key=f"{prefix}/{CONN_ID}/base/{piece}/{name}")
            assert head["ObjectLockRetainUntilDate"] >= year - timedelta(seconds=1)
    # a full, or a bucket whose pieces already hold long enough: nothing to do
    assert lock_chain_as_long(store, CONN_ID, SimpleNamespace(backup_id=full, depends_on=None, dump={})) == []
    assert lock_chain_as_long(store, CONN_ID, SimpleNamespace(backup_id=last, depends_on=middle,
                                                              dump={"chain": [full, middle]})) == []
