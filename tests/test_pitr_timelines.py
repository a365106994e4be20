"""Point-in-time recovery across a failover (timelines) and across a site-loss rebuild (system identifiers),
the recovered cluster's environment, port and expiry, and the edges of a target: on real clusters and S3.

WAL reaches S3 the way pgdr's archive holds it (zstd objects with their hashes and system identifier in
the metadata, under ``<db>/wal/<system_identifier>/``); the servers hand their WAL over through
``archive_command`` into a local directory, which these tests upload, so a promoted standby's timeline
history and its new timeline's segments arrive exactly as PostgreSQL writes them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import zstandard

from harness.pg_cluster import PgCluster, _as_server_user, _chown_to_server_user, free_port, start_cluster
from harness.stack import BUCKET, CONN_ID, DBNAME
from tests.support.clusters import SERVER_USER, shared_dir
from tests.support.s3 import plain_store
from tests.support.waiting import wait_for

log = logging.getLogger("test_pitr_timelines")


class Archived:
    """A cluster whose completed WAL segments (and history files) land in ``archive`` via archive_command."""

    def __init__(self, cluster: PgCluster, archive: Path) -> None:
        self.cluster = cluster
        self.archive = archive

    @classmethod
    def start(cls) -> Archived:
        archive = shared_dir("pgdr-arch-")
        cluster = start_cluster()
        cluster.execute("ALTER SYSTEM SET archive_mode = 'on'")
        cluster.execute(f"ALTER SYSTEM SET archive_command = 'cp %p {archive}/%f'")
        cluster.stop()
        cluster.start()
        cluster.execute(f"CREATE DATABASE {DBNAME}")
        cluster.execute("CREATE TABLE marks (n int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())",
                        dbname=DBNAME)
        return cls(cluster, archive)

    @property
    def system_identifier(self) -> str:
        return str(self.cluster.execute("SELECT system_identifier FROM pg_control_system()")[0][0])

    def insert(self, first: int, last: int) -> None:
        self.cluster.execute("INSERT INTO marks (n) SELECT generate_series(%s, %s)", dbname=DBNAME,
                             params=(first, last))

    def switch(self) -> str:
        """Close the current segment and wait until it is archived; returns its name."""
        (name,) = self.cluster.execute("SELECT pg_walfile_name(pg_switch_wal())")[0]
        deadline = time.monotonic() + 30
        while not (self.archive / name).exists():
            assert time.monotonic() < deadline, f"{name} was never archived"
            time.sleep(0.1)
        return name

    def now(self):
        return self.cluster.execute("SELECT clock_timestamp()")[0][0]

    def destroy(self) -> None:
        self.cluster.destroy()
        shutil.rmtree(self.archive, ignore_errors=True)


def base_backup(store, source: Archived, work: Path) -> str:
    """A base backup through pgdr's own code path, sealed with its manifest; returns its id."""
    from pgdr.backup.base import run_base_backup
    from pgdr.core.pgtools import PgTarget
    from pgdr.store.manifest import backup_prefix, new_backup_id

    time.sleep(1.1)  # backup ids are seconds
    backup_id = new_backup_id()
    prefix = backup_prefix(store.prefix, CONN_ID, "base", backup_id)
    cluster = source.cluster
    target = PgTarget(conn_id=CONN_ID, host=cluster.host, port=cluster.port, user="postgres", dbname=DBNAME)
    manifest = run_base_backup(database=CONN_ID, backup_id=backup_id, prefix=prefix, target=target,
                               connect=lambda: cluster.connect(DBNAME), store=store, workdir=work / backup_id,
                               bindir=cluster.bindir, level=1, kms_key_id=None, airflow={}, log=log)
    store.put_manifest(prefix, manifest)
    return backup_id


def upload_wal(store, source: Path, system_identifier: str | None, name: str | None = None,
               sent: set | None = None) -> list[str]:
    """Upload WAL files as pgdr's archive holds them; ``system_identifier`` None writes the legacy layout."""
    from pgdr.wal.names import wal_prefix

    base = wal_prefix(store.prefix, CONN_ID) + (f"/{system_identifier}" if system_identifier else "")
    files = [source] if source.is_file() else sorted(p for p in source.iterdir() if p.is_file())
    keys = []
    for path in files:
        if sent is not None and path.name in sent:
            continue
        raw = path.read_bytes()
        body = zstandard.ZstdCompressor(level=1).compress(raw)
        key = f"{base}/{name or path.name}.zst"
        metadata = {"sha256": hashlib.sha256(body).hexdigest(), "raw-sha256": hashlib.sha256(raw).hexdigest()}
        if system_identifier:
            metadata["system-identifier"] = system_identifier
        store.client.put_object(Bucket=store.bucket, Key=key, Body=body, Metadata=metadata,
                                ServerSideEncryption="AES256")
        keys.append(key)
        if sent is not None:
            sent.add(path.name)
    return keys


def plan(store, point_in_time: str, timeline="latest"):
    from pgdr.restore.pitr_fetch import plan_point_in_time
    from pgdr.store.manifest import MANIFEST_NAME, backup_prefix

    def load(backup_id):
        prefix = backup_prefix(store.prefix, CONN_ID, "base", backup_id)
        return store.read_manifest(f"{prefix}/{MANIFEST_NAME}"), prefix

    return plan_point_in_time(store, CONN_ID, point_in_time, load, timeline)


def recover(store, point_in_time: str, pitr_root: Path, name: str, port: int | None = None, keep_hours=1.0,
            **kwargs):
    from harness.pg_cluster import pg_bindir
    from pgdr.restore.pitr import PointInTimeRecovery

    target, manifest, prefix, wal, _ = plan(store, point_in_time)
    recovery = PointInTimeRecovery(store=store, manifest=manifest, prefix=prefix, wal=wal, target=target,
                                   data_dir=pitr_root / name, port=port or free_port(), os_user=SERVER_USER,
                                   login="postgres", bindir=pg_bindir(), jobs=2, log=log, listen_addresses="127.0.0.1",
                                   keep_hours=keep_hours, **kwargs)
    return recovery, recovery.run()


def rows(outcome: dict) -> set[int]:
    from pgdr.restore.pitr_cluster import connect_recovered

    conn = connect_recovered(outcome, "postgres", DBNAME)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT n FROM marks")
            return {row[0] for row in cur.fetchall()}
    finally:
        conn.close()


@pytest.fixture()
def pitr_root():
    root = shared_dir("pgdr-pitr-")
    yield root
    from harness.pg_cluster import pg_bindir
    from pgdr.restore.pitr_cluster import stop_recovered

    for data_dir in root.iterdir():
        if data_dir.is_dir() and (data_dir / "PG_VERSION").exists():
            stop_recovered(str(data_dir), SERVER_USER, pg_bindir())
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def work(tmp_path):
    return tmp_path


# ---------------------------------------------------------------- a failover: timeline 2

def _standby_of(primary: Archived) -> Archived:
    """A streaming standby of ``primary`` archiving into its own directory once promoted."""
    base = Path(tempfile.mkdtemp(prefix="pgdr-standby-"))
    standby = PgCluster(base_dir=base, port=free_port(), bindir=primary.cluster.bindir)
    base.mkdir(exist_ok=True)
    standby.socket_dir.mkdir(exist_ok=True)
    for path in (base, standby.socket_dir):
        _chown_to_server_user(path)
    subprocess.run(_as_server_user([str(standby.bindir / "pg_basebackup"), "-D", str(standby.data_dir), "-R",
                                    "-X", "stream", "-h", primary.cluster.host, "-p", str(primary.cluster.port),
                                    "-U", "postgres"]), check=True, capture_output=True)
    archive = shared_dir("pgdr-arch-")
    with open(standby.data_dir / "postgresql.auto.conf", "a") as conf:
        conf.write(f"\nport = {standby.port}\nunix_socket_directories = '{standby.socket_dir}'\n"
                   f"archive_command = 'cp %p {archive}/%f'\n")
    standby.start()
    return Archived(standby, archive)


def _wait_replayed(primary: Archived, standby: Archived) -> None:
    (lsn,) = primary.cluster.execute("SELECT pg_current_wal_lsn()")[0]
    deadline = time.monotonic() + 30
    while not standby.cluster.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", params=(lsn,))[0][0]:
        assert time.monotonic() < deadline, "the standby never caught up"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def failover(stack, tmp_path_factory):
    """Base backup B1 on the primary (timeline 1); rows 1-15 on timeline 1; the standby promoted (timeline 2)
    writes rows 16-30; the old primary, never fenced, writes rows 100-110 on timeline 1 and takes base
    backup B2 there: both branches shipped, as after a real split-brain failover."""
    work = tmp_path_factory.mktemp("failover")
    store = plain_store(stack.s3.client(), f"tl/{os.urandom(4).hex()}", log=log)
    primary = Archived.start()
    standby = None
    try:
        system_identifier = primary.system_identifier
        first = base_backup(store, primary, work)
        primary.insert(1, 10)
        standby = _standby_of(primary)
        primary.insert(11, 15)
        _wait_replayed(primary, standby)
        subprocess.run(_as_server_user([str(standby.cluster.bindir / "pg_ctl"), "-D", str(standby.cluster.data_dir),
                                        "-w", "promote"]), check=True, capture_output=True)
        standby.insert(16, 25)
        standby.switch()
        standby.insert(26, 30)
        standby.switch()
        primary.insert(100, 110)
        primary.switch()
        second = base_backup(store, primary, work)   # the old primary's: on the abandoned branch
        primary.insert(111, 112)
        primary.switch()
        deadline = time.monotonic() + 30
        while not (standby.archive / "00000002.history").exists():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # where timeline 2 left timeline 1, as PostgreSQL wrote it
        branch_lsn = (standby.archive / "00000002.history").read_text().split()[1]
        upload_wal(store, primary.archive, system_identifier)
        upload_wal(store, standby.archive, system_identifier)
        yield {"store": store, "first": first, "second": second, "branch_lsn": branch_lsn,
               "standby_archive": sorted(p.name for p in standby.archive.iterdir()),
               "system_identifier": system_identifier}
    finally:
        if standby is not None:
            standby.destroy()
        primary.destroy()


def test_latest_after_a_failover_recovers_the_new_timelines_commits(failover, pitr_root):
    target, manifest, _, wal, _ = plan(failover["store"], "latest")
    # the old primary's base backup B2 lies after the branch: recovery starts from B1 and follows timeline 2
    assert manifest.backup_id == failover["first"] and wal.timeline == 2
    assert wal.last.startswith("00000002") and [h.name for h in wal.histories] == ["00000002.history"]
    _, outcome = recover(failover["store"], "latest", pitr_root, "latest")
    assert rows(outcome) == set(range(1, 31)), "timeline 2's rows are back, the abandoned branch's are not"
    assert outcome["timeline"] == 2


def test_a_target_on_the_abandoned_branch_is_refused(failover):
    from pgdr.restore.request import RestoreRefused
    from pgdr.wal.names import format_lsn, parse_lsn

    after = format_lsn(parse_lsn(failover["branch_lsn"]) + 0x100000)
    with pytest.raises(RestoreRefused, match=f"abandoned branch: timeline 2 left timeline 1 at LSN "
                                             f"{failover['branch_lsn']}"):
        plan(failover["store"], after, timeline=1)
    with pytest.raises(RestoreRefused, match="abandoned branch"):
        plan(failover["store"], "latest", timeline="current")
    # before the branch, timeline 1 is fine
    before = format_lsn(parse_lsn(failover["branch_lsn"]) - 1)
    _, manifest, _, wal, _ = plan(failover["store"], before, timeline=1)
    assert manifest.backup_id == failover["first"] and wal.timeline == 1


def test_the_restore_plan_read_through_the_wal_archive_view_is_the_same_plan(failover):
    """pgdr.wal.archive.ArchiveView with pitr_plan.plan_from_archive: what restore/pitr_fetch can plan through."""
    from pgdr.restore.pitr_plan import AbandonedBranch, Target, plan_from_archive
    from pgdr.wal.archive import ArchiveView

    store = failover["store"]
    _, manifest, _, wal, _ = plan(store, "latest")
    view = ArchiveView(store, CONN_ID)
    again = plan_from_archive(view, manifest, Target("latest"))
    assert [s.key for s in again.segments] == [s.key for s in wal.segments]
    assert (again.timeline, again.system_identifier) == (wal.timeline, wal.system_identifier) == \
        (2, str(failover["system_identifier"]))
    assert [h.name for h in again.histories] == ["00000002.history"]
    with pytest.raises(AbandonedBranch, match="abandoned branch"):
        plan_from_archive(view, manifest, Target("latest"), timeline="current")


def test_the_wal_check_follows_the_new_timeline_and_names_its_gap(failover):
    from pgdr.verify.wal import archive_findings
    from pgdr.wal.names import wal_prefix

    store = failover["store"]
    assert archive_findings(store, CONN_ID, ship_seconds=3600) == []
    # remove a completed segment of timeline 2 that is followed by more of it (a gap, not the end)
    tl2 = [n for n in failover["standby_archive"] if n.startswith("00000002") and len(n) == 24]
    assert len(tl2) >= 2, failover["standby_archive"]
    victim = f"{wal_prefix(store.prefix, CONN_ID)}/{failover['system_identifier']}/{tl2[0]}.zst"
    body = store.client.get_object(Bucket=BUCKET, Key=victim)
    saved = (body["Body"].read(), body["Metadata"])
    store.delete_keys([victim])
    try:
        (finding,) = archive_findings(store, CONN_ID, ship_seconds=3600)
        assert finding["problem"] == "WAL archive gap" and tl2[0] in finding["detail"]
    finally:
        store.client.put_object(Bucket=BUCKET, Key=victim, Body=saved[0], Metadata=saved[1])


# ---------------------------------------------------------------- a site-loss rebuild: two clusters, same names

@pytest.fixture(scope="module")
def rebuilt(stack, tmp_path_factory):
    """Cluster A (the lost site) and cluster B (rebuilt from scratch: a new system identifier) write the
    same segment names into the same database's archive. A switched segments before its base backup, so
    A's base backup starts later in the segment numbering than B's."""
    work = tmp_path_factory.mktemp("rebuilt")
    store = plain_store(stack.s3.client(), f"si/{os.urandom(4).hex()}", log=log)
    lost, new = Archived.start(), None
    try:
        for _ in range(3):
            lost.insert(90000 + _, 90000 + _)
            lost.switch()
        lost_base = base_backup(store, lost, work)
        lost.insert(1, 10)
        time.sleep(1.1)
        moment = lost.now()
        time.sleep(1.1)
        lost.insert(11, 12)
        lost.switch()
        upload_wal(store, lost.archive, lost.system_identifier)
        lost_archive = sorted(p.name for p in lost.archive.iterdir())
        lost.destroy()
        new = Archived.start()
        new_base = base_backup(store, new, work)
        new.insert(1001, 1010)
        new.switch()
        upload_wal(store, new.archive, new.system_identifier)
        yield {"store": store, "moment": moment, "lost_base": lost_base, "new_base": new_base, "new": new,
               "lost_archive": lost_archive,
               "work": work}
    finally:
        if new is not None:
            new.destroy()
        lost.destroy()


def test_each_cluster_recovers_its_own_rows_from_the_same_segment_names(rebuilt, pitr_root):
    store = rebuilt["store"]
    _, manifest, _, wal, _ = plan(store, "latest")
    assert manifest.backup_id == rebuilt["new_base"] and wal.system_identifier == manifest.system_identifier
    _, outcome = recover(store, "latest", pitr_root, "new")
    assert rows(outcome) == set(range(1001, 1011))
    _, manifest, _, wal, _ = plan(store, rebuilt["moment"].isoformat())
    assert manifest.backup_id == rebuilt["lost_base"]
    _, outcome = recover(store, rebuilt["moment"].isoformat(), pitr_root, "lost")
    assert rows(outcome) == {90000, 90001, 90002, *range(1, 11)}


def test_retention_keeps_each_clusters_wal_for_its_own_base_backups(rebuilt, stack):
    import dataclasses

    from pgdr.retain import backups as expire
    from pgdr.settings import SETTINGS, parse_settings
    from pgdr.verify.wal import archive_findings

    store = rebuilt["store"]
    env = {**stack.airflow_env(), "AIRFLOW_VAR_PGDR_S3_PREFIX": store.prefix,
           "AIRFLOW_VAR_PGDR_WAL_RECEIVER_DIR": str(rebuilt["work"] / "receiver"),
           "AIRFLOW_VAR_PGDR_STAGING_DIR": str(rebuilt["work"] / "staging")}
    settings = parse_settings({s.name: env.get(f"AIRFLOW_VAR_PGDR_{s.name.upper()}") for s in SETTINGS})
    settings = dataclasses.replace(settings, pitr_window_days=7.0)
    report = expire.run(store=store, database=CONN_ID, settings=settings, dry_run=False, log=log)
    assert not report["errors"] and report["counts"]["deleted"] == 0, report
    # the lost cluster's WAL before its base backup went; everything either base backup needs stayed
    assert report["counts"]["wal_deleted"] > 0, report["wal"]
    assert archive_findings(store, CONN_ID, ship_seconds=1e9) == []
    plan(store, "latest")
    plan(store, rebuilt["moment"].isoformat())


def test_a_legacy_object_of_another_cluster_is_never_replayed(rebuilt):
    """WAL shipped before the keyed layout (directly under wal/) is read for a matching cluster only: the
    new cluster's segment that would continue the lost cluster's WAL, stored the old way, is left out."""
    from pgdr.wal.names import DEFAULT_SEGMENT_SIZE, next_segment

    store = rebuilt["store"]
    new = rebuilt["new"]
    lost_last = max(n for n in rebuilt["lost_archive"] if len(n) == 24)
    wanted = next_segment(lost_last, DEFAULT_SEGMENT_SIZE)
    name, n = "", 2000
    while name < wanted:
        new.insert(n, n)
        n += 1
        name = new.switch()
    assert name == wanted
    legacy = upload_wal(store, new.archive / name, None)
    try:
        store.client.copy_object(Bucket=BUCKET, Key=legacy[0], CopySource={"Bucket": BUCKET, "Key": legacy[0]},
                                 Metadata={"system-identifier": new.system_identifier}, MetadataDirective="REPLACE",
                                 ServerSideEncryption="AES256")
        _, manifest, _, wal, _ = plan(store, rebuilt["moment"].isoformat())
        assert manifest.backup_id == rebuilt["lost_base"]
        assert wal.last == lost_last and all(s.key != legacy[0] for s in wal.segments)
    finally:
        store.delete_keys(legacy)


# ---------------------------------------------------------------- the recovered cluster: secrets, port, expiry

@pytest.fixture(scope="module")
def quiet(stack, tmp_path_factory):
    """One cluster, one base backup, rows 1-10, then nothing committed for a while (a quiet database)."""
    work = tmp_path_factory.mktemp("quiet")
    store = plain_store(stack.s3.client(), f"q/{os.urandom(4).hex()}", log=log)
    source = Archived.start()
    try:
        base_backup(store, source, work)
        source.insert(1, 10)
        time.sleep(1.1)
        after_last_commit = source.now()
        time.sleep(1.1)
        source.switch()
        upload_wal(store, source.archive, source.system_identifier)
        yield {"store": store, "source": source, "after_last_commit": after_last_commit}
    finally:
        source.destroy()


def _postmaster_environment(outcome: dict) -> dict[str, str]:
    pid = int((Path(outcome["data_dir"]) / "postmaster.pid").read_text().split()[0])
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def test_the_recovered_server_gets_none_of_the_workers_secrets(quiet, pitr_root, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SENTINEL_DB", "postgresql://u:sentinel-secret@h/db")
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", "sentinel-fernet")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sentinel-aws")
    monkeypatch.setenv("PGPASSWORD", "sentinel-pg")
    _, outcome = recover(quiet["store"], "latest", pitr_root, "env")
    environment = _postmaster_environment(outcome)
    leaked = sorted(k for k in environment if k.startswith(("AIRFLOW", "AWS_", "PGPASS")))  # PGDATA: pg_ctl
    assert leaked == [] and "sentinel" not in "".join(environment.values()), leaked
    assert rows(outcome) == set(range(1, 11))


def test_a_second_recovery_while_the_first_runs_takes_another_port_and_expiry_removes_both(quiet, pitr_root):
    from datetime import datetime, timedelta

    from pgdr.restore.pitr_cluster import expire_recovered, running_recovered

    port = free_port()
    _, first = recover(quiet["store"], "latest", pitr_root, "first", port=port, keep_hours=1.0)
    _, second = recover(quiet["store"], "latest", pitr_root, "second", port=first["port"], keep_hours=2.0)
    assert second["port"] != first["port"] and rows(second) == set(range(1, 11))
    assert rows(first) == set(range(1, 11)), "the first cluster still runs"
    assert {Path(r["data_dir"]).name for r in running_recovered(pitr_root)} == {"first", "second"}
    first_pid = int((Path(first["data_dir"]) / "postmaster.pid").read_text().split()[0])

    assert expire_recovered(pitr_root, log) == [], "nothing has expired yet"
    removed = expire_recovered(pitr_root, log, now=datetime.fromisoformat(first["expires_at"]) + timedelta(seconds=1))
    assert [Path(r["data_dir"]).name for r in removed] == ["first"]
    assert not Path(first["data_dir"]).exists()
    wait_for(lambda: not Path(f"/proc/{first_pid}").exists(), what="the expired postmaster to exit")
    assert Path(second["data_dir"]).exists() and rows(second) == set(range(1, 11))
    later = expire_recovered(pitr_root, log, now=datetime.fromisoformat(second["expires_at"]))
    assert [Path(r["data_dir"]).name for r in later] == ["second"] and not any(pitr_root.iterdir())


def test_the_next_recovery_removes_expired_clusters_first(quiet, pitr_root):
    _, first = recover(quiet["store"], "latest", pitr_root, "expired", keep_hours=0.0)
    _, second = recover(quiet["store"], "latest", pitr_root, "next", port=first["port"])
    assert not Path(first["data_dir"]).exists(), "the expired cluster (and its copy of the data) is gone"
    assert second["port"] == first["port"], "and its port is free again"


def test_listen_addresses_is_the_setting(quiet, pitr_root):
    _, outcome = recover(quiet["store"], "latest", pitr_root, "listen")
    conf = (Path(outcome["data_dir"]) / "postgresql.auto.conf").read_text()
    assert "listen_addresses = '127.0.0.1'" in conf and outcome["listen_addresses"] == "127.0.0.1"


# ---------------------------------------------------------------- edges of a target

def test_a_time_after_the_last_commit_recovers_to_the_end_and_says_so(quiet, pitr_root):
    when = quiet["after_last_commit"].isoformat()
    _, outcome = recover(quiet["store"], when, pitr_root, "quiet")
    assert rows(outcome) == set(range(1, 11))
    assert outcome["target_reached"] is False
    assert "after the last transaction in the WAL shipped" in outcome["note"]


class _ShipperRacesTheFetch:
    """The real S3 client; the first GET of the partial segment lands right after the shipper stored a newer
    version of it (as pg_wal_archive does every few seconds while a recovery fetches)."""

    def __init__(self, client, key: str, newer: dict) -> None:
        self._client, self._key, self._newer = client, key, newer

    def __getattr__(self, name):
        return getattr(self._client, name)

    def get_object(self, **kwargs):
        if kwargs.get("Key") == self._key and self._newer:
            self._client.put_object(Bucket=kwargs["Bucket"], Key=self._key, **self._newer)
            self._newer = {}
        return self._client.get_object(**kwargs)


def test_the_partial_segment_changing_during_the_fetch_is_taken_whole(quiet, pitr_root):
    """HEAD and GET of the growing partial segment may see two versions; one GET carries body and hashes."""
    from pgdr.wal.names import wal_prefix

    store, source = quiet["store"], quiet["source"]
    source.insert(11, 15)
    (current,) = source.cluster.execute("SELECT pg_walfile_name(pg_current_wal_flush_lsn())")[0]
    live = source.cluster.data_dir / "pg_wal" / current
    snapshot = Path(tempfile.mkdtemp()) / current
    shutil.copyfile(live, snapshot)
    (key,) = upload_wal(store, snapshot, source.system_identifier, name=current + ".partial")
    source.insert(16, 20)
    shutil.copyfile(live, snapshot)
    raw = snapshot.read_bytes()
    body = zstandard.ZstdCompressor(level=1).compress(raw)
    newer = {"Body": body, "ServerSideEncryption": "AES256",
             "Metadata": {"sha256": hashlib.sha256(body).hexdigest(), "raw-sha256": hashlib.sha256(raw).hexdigest(),
                          "system-identifier": source.system_identifier}}
    racing = plain_store(_ShipperRacesTheFetch(store.client, key, newer), store.prefix, log=log)
    try:
        _, outcome = recover(racing, "latest", pitr_root, "race")
        assert rows(outcome) == set(range(1, 21)), "the newer version, whole"
        assert outcome["wal_last_partial"] is True
    finally:
        store.delete_keys([key])
        assert key.startswith(wal_prefix(store.prefix, CONN_ID))
