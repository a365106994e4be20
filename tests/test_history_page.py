"""The backup history page: pure rendering of built histories, then end to end on real services,
rendered by headless Chromium (Debian's ``chromium``; CI installs it, so a missing browser fails).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.stack import BACKUP_PASSWORD, BUCKET, CONN_ID, DBNAME
from pgdr.report.history import (
    BackupPoint,
    DrillPoint,
    History,
    HistoryError,
    RestorePoint,
    VerifyPoint,
    backup_point,
    collect,
    drill_point,
    format_duration,
    format_size,
    parse_time,
    report_time,
    verify_point,
    with_chain_sizes,
)
from pgdr.report.history_page import main, render_page
from tests.support.dags import run_dag, task_states

REPO_ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 27, 8, 0, tzinfo=timezone.utc)
CHECKS = ("freshness", "integrity", "deep_check", "bucket_posture", "wal")


# --- reading the rendered DOM --------------------------------------------------------------------

class Dom(HTMLParser):
    """Elements (tag, attributes, text inside) in document order, and the visible text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[dict] = []
        self._open: list[dict] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        element = {"tag": tag, "attrs": dict(attrs), "text": "", "children": []}
        if self._open:
            self._open[-1]["children"].append(element)
        self.elements.append(element)
        if tag not in ("meta", "br", "link", "img", "input"):  # HTML's void elements; SVG ones close themselves
            self._open.append(element)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if self._open and self._open[-1]["tag"] == tag:
            self._open.pop()

    def handle_endtag(self, tag):
        for index in range(len(self._open) - 1, -1, -1):
            if self._open[index]["tag"] == tag:
                del self._open[index:]
                break

    def handle_data(self, data):
        for element in self._open:
            element["text"] += data
        if not any(e["tag"] in ("style", "title") for e in self._open):
            self.text.append(data)

    def find(self, tag: str, **attrs) -> list[dict]:
        return [e for e in self.elements if e["tag"] == tag and all(
            e["attrs"].get(name.replace("_", "-")) == value for name, value in attrs.items())]

    @staticmethod
    def descendants(element: dict, tag: str, css: str | None = None) -> list[dict]:
        found = []
        for child in element["children"]:
            if child["tag"] == tag and (css is None or css in child["attrs"].get("class", "").split()):
                found.append(child)
            found.extend(Dom.descendants(child, tag, css))
        return found

    def chart(self, chart: str, **attrs) -> dict:
        (svg,) = self.find("svg", data_chart=chart, **attrs)
        return svg


# --- pure: built histories -------------------------------------------------------------------------

def _history(**overrides) -> History:
    backups = []
    for day in range(4):
        started = NOW - timedelta(days=4 - day, hours=6)
        backups.append(BackupPoint("care_commons_db", "logical", started.strftime("%Y%m%dT%H%M%SZ"), started,
                                   started + timedelta(seconds=40 + day), 10_000_000 + day * 1_000_000, 14,
                                   "bad" if day == 1 else "good"))
    backups.append(BackupPoint("care_commons_db", "base", "20261126T020500Z", NOW - timedelta(hours=30),
                               NOW - timedelta(hours=29, minutes=58), 52_428_800, 3, "unverified"))
    verifications = [VerifyPoint("care_commons_db", NOW - timedelta(hours=6 * n), "failed" if n == 1 else "ok",
                                 tuple((c, "failed" if n == 1 and c == "integrity" else "ok") for c in CHECKS))
                     for n in range(3)]
    drills = [DrillPoint("care_commons_db", NOW - timedelta(days=60), "20260927T020000Z", 1275.4, 3600.0, "ok"),
              DrillPoint("care_commons_db", NOW - timedelta(days=30), "20261027T020000Z", 4000.0, 3600.0, "failed"),
              DrillPoint("care_commons_db", NOW - timedelta(days=1), "20261126T020000Z", None, 3600.0, "failed")]
    history = History(generated_at=NOW, bucket="pgdr-backups", prefix="pgdr", days=90,
                      databases=("care_commons_db",), rto_budget_seconds=3600.0, backups=backups,
                      verifications=verifications, drills=drills,
                      restores=[RestorePoint("care_commons_db", NOW - timedelta(days=2), "succeeded", "tables", 95.0)])
    for name, value in overrides.items():
        setattr(history, name, value)
    return history


def test_every_backup_is_a_point_in_its_size_and_duration_plot():
    dom = Dom(render_page(_history()))
    for chart in ("size", "duration"):
        logical = dom.chart(chart, data_kind="logical")
        assert logical["attrs"]["data-points"] == "4"
        points = Dom.descendants(logical, "circle", "point")
        assert len(points) == 4
        assert ["bad" in p["attrs"]["class"] for p in points] == [False, True, False, False]
        assert len(Dom.descendants(logical, "polyline", "series")) == 1
        base = dom.chart(chart, data_kind="base")
        assert len(Dom.descendants(base, "circle", "point")) == 1
        assert not Dom.descendants(base, "polyline")  # one point draws no line
    # bigger backups sit higher (smaller y)
    ys = [float(p["attrs"]["cy"]) for p in Dom.descendants(dom.chart("size", data_kind="logical"), "circle")]
    assert ys == sorted(ys, reverse=True)
    tips = [p["text"] for p in Dom.descendants(dom.chart("size", data_kind="logical"), "circle")]
    assert tips[-1] == f"{_history().backups[3].backup_id}: 12.4 MB in 14 objects (good)"


def test_the_latest_panel_shows_the_newest_backup_of_each_kind_the_latest_verification_and_drill():
    history = _history()
    dom = Dom(render_page(history))
    (logical,) = dom.find("tr", data_kind="logical")
    cells = [c["text"].strip() for c in Dom.descendants(logical, "td")]
    assert cells == ["logical", history.backups[3].backup_id, "12.4 MB", "43.0 s", "1 d 05 h", "good"]
    (base,) = dom.find("tr", data_kind="base")
    assert [c["text"].strip() for c in Dom.descendants(base, "td")] == [
        "base", "20261126T020500Z", "50.0 MB full", "2 min 00 s", "1 d 05 h", "unverified"]
    (verify,) = dom.find("p", **{"class": "latest-verify"})
    assert "2026-11-27 08:00 UTC" in verify["text"] and "integrity: ok" in verify["text"]
    (drill,) = dom.find("p", **{"class": "latest-drill"})
    assert "20261126T020000Z" in drill["text"] and "RTO — of a 1 h 00 min budget" in " ".join(drill["text"].split())
    (restore,) = dom.find("p", **{"class": "latest-restore"})
    assert "(tables)" in restore["text"] and "succeeded in 1 min 35 s" in restore["text"]


def test_verification_results_are_a_cell_per_check_per_run_and_failures_are_red():
    dom = Dom(render_page(_history()))
    grid = dom.chart("verify")
    assert (grid["attrs"]["data-runs"], grid["attrs"]["data-checks"], grid["attrs"]["data-cells"]) == ("3", "5", "15")
    cells = Dom.descendants(grid, "rect", "cell")
    assert len(cells) == 15
    failed = [c for c in cells if "failed" in c["attrs"]["class"].split()]
    assert [c["text"] for c in failed] == ["2026-11-27 02:00 UTC integrity: failed"]
    labels = [t["text"] for t in Dom.descendants(grid, "text", "tick")][:5]
    assert labels == list(CHECKS)


def test_drill_rtos_are_bars_against_the_budget_line():
    dom = Dom(render_page(_history()))
    chart = dom.chart("rto")
    assert chart["attrs"]["data-bars"] == "3" and chart["attrs"]["data-budget-seconds"] == "3600"
    bars = Dom.descendants(chart, "rect", "bar")
    assert [b["attrs"]["class"].split()[1] for b in bars] == ["ok", "failed", "failed"]
    (budget,) = Dom.descendants(chart, "line", "budget")
    first_top, over_top = float(bars[0]["attrs"]["y"]), float(bars[1]["attrs"]["y"])
    assert over_top < float(budget["attrs"]["y1"]) < first_top  # 4000 s reaches above the 3600 s line
    assert bars[1]["text"].endswith("RTO 1 h 06 min (failed)")
    # a drill over budget that otherwise passed is orange, not green
    history = _history(drills=[DrillPoint("care_commons_db", NOW, "20261126T020000Z", 4000.0, 3600.0, "ok")])
    assert Dom.descendants(Dom(render_page(history)).chart("rto"), "rect", "over")


def test_everything_interpolated_is_escaped_and_nothing_is_fetched():
    hostile = '<script>alert("x")</script>'
    history = _history(databases=(hostile,), unreadable=['pgdr/reports/verify/"><img src=x onerror=alert(1)>.json'])
    history.backups = [BackupPoint(hostile, "logical", "20261126T020000Z", NOW - timedelta(hours=5),
                                   NOW - timedelta(hours=4), 1, 1, "good")]
    history.verifications = [VerifyPoint(hostile, NOW, "ok", (('"><b>check</b>', "ok&"),))]
    page = render_page(history)
    assert "<script" not in page and "<img" not in page and "<b>check" not in page
    assert "&lt;script&gt;alert(" in page
    dom = Dom(page)
    (section,) = dom.find("section", data_database=hostile)
    assert Dom.descendants(section, "h2")[0]["text"] == hostile  # escaped, so it reads back as written
    assert dom.chart("verify")["attrs"]["data-database"] == hostile
    for fetch in ("http:", "https:", "src=", "url(", "@import", "<link"):
        assert fetch not in render_page(_history()), fetch


# --- incremental base backups (PostgreSQL 17+) -----------------------------------------------------

def _chain_history() -> History:
    """A full base backup of 50 MB and two daily incrementals of 2 and 3 MB after it."""
    ids = ["20261124T020000Z", "20261125T020000Z", "20261126T020000Z"]
    sizes = [50 << 20, 2 << 20, 3 << 20]
    points = []
    for n, (bid_, size) in enumerate(zip(ids, sizes, strict=True)):
        started = parse_time(bid_)
        points.append(BackupPoint("care_commons_db", "base", bid_, started, started + timedelta(seconds=30 - n),
                                  size, 2, "good", backup_type="incremental" if n else "full",
                                  chain=tuple(ids[:n]), chain_size_bytes=sum(sizes[:n + 1]) if n else None))
    return _history(backups=[b for b in _history().backups if b.kind != "base"] + points)


def test_incremental_base_backups_show_their_own_size_and_their_chain_total():
    dom = Dom(render_page(_chain_history()))
    (base,) = dom.find("tr", data_kind="base")
    (size,) = Dom.descendants(base, "td", "size")
    assert " ".join(size["text"].split()) == "3.0 MB incremental, chain of 3: 55.0 MB"
    assert (size["attrs"]["data-type"], size["attrs"]["data-bytes"], size["attrs"]["data-chain-bytes"]) == (
        "incremental", str(3 << 20), str(55 << 20))
    # the stored-size plot tells fulls from incrementals; the chain plot shows what a restore downloads
    points = Dom.descendants(dom.chart("size", data_kind="base"), "circle", "point")
    assert [p["attrs"]["class"] for p in points] == ["point good full", "point good incremental",
                                                    "point good incremental"]
    assert points[2]["text"] == ("20261126T020000Z: 3.0 MB in 2 objects, incremental on 20261125T020000Z; chain of "
                                 "3 from full 20261124T020000Z: 55.0 MB (good)")
    chain = Dom.descendants(dom.chart("chain", data_kind="base"), "circle", "point")
    assert [p["text"] for p in chain] == [
        "20261124T020000Z: a restore downloads 50.0 MB (the full alone)",
        "20261125T020000Z: a restore downloads 52.0 MB (its chain of 2)",
        "20261126T020000Z: a restore downloads 55.0 MB (its chain of 3)"]
    ys = [float(p["attrs"]["cy"]) for p in chain]
    assert ys == sorted(ys, reverse=True)   # each piece adds to what a restore needs
    # only full backups: no chain plot, the size cell says full
    assert not Dom(render_page(_history())).find("svg", data_chart="chain")


def test_the_manifest_contract_reads_as_full_or_incremental_and_chain_totals_need_every_piece():
    full = {"started_at": "2026-11-24T02:00:00+00:00", "objects": [{"size": 100}, {"size": 5}]}
    assert backup_point("db", "base", "20261124T020000Z", full, None).backup_type == "full"   # an old manifest
    incremental = {**full, "objects": [{"size": 7}], "depends_on": "20261125T020000Z",
                   "dump": {"backup_type": "incremental", "chain": ["20261124T020000Z", "20261125T020000Z"]}}
    point = backup_point("db", "base", "20261126T020000Z", incremental, {"status": "good"})
    assert (point.backup_type, point.chain, point.size_bytes) == (
        "incremental", ("20261124T020000Z", "20261125T020000Z"), 7)
    shown = with_chain_sizes([point], {"20261124T020000Z": 105, "20261125T020000Z": 9})
    assert shown[0].chain_size_bytes == 121 and shown[0].restore_size_bytes == 121
    assert with_chain_sizes([point], {"20261124T020000Z": 105})[0].chain_size_bytes is None   # a piece not found
    hostile = {**incremental, "depends_on": "<script>", "dump": {"chain": ["<b>x</b>"]}}
    assert backup_point("db", "base", "20261126T020000Z", hostile, None).backup_type == "full"


def test_collect_totals_a_chain_whose_full_is_older_than_the_window(stack):
    """The page shows 7 days; the chain's full is 10 days old: read for its size, not shown as a point."""
    import os

    from pgdr.store.layout import backup_prefix, manifest_key
    from tests.support.s3 import plain_store

    store = plain_store(stack.s3.client(), f"t/{os.urandom(4).hex()}")
    full_id, inc1, inc2 = (backup_id(NOW - timedelta(days=d)) for d in (10, 2, 1))
    for bid_, size, chain in ((full_id, 1000, []), (inc1, 40, [full_id]), (inc2, 60, [full_id, inc1])):
        manifest = {"started_at": parse_time(bid_).isoformat(), "objects": [{"size": size}],
                    "depends_on": chain[-1] if chain else None,
                    "dump": {"backup_type": "incremental" if chain else "full", "chain": chain}}
        store.put_json(manifest_key(backup_prefix(store.prefix, "db", "base", bid_)), manifest)
    history = collect(store, databases=["db"], rto_budget_seconds=3600, days=7, now=NOW)
    assert {p.backup_id: (p.backup_type, p.chain_size_bytes) for p in history.backups} == {
        inc1: ("incremental", 1040), inc2: ("incremental", 1100)}
    assert not history.unreadable


def backup_id(when: datetime) -> str:
    return when.strftime("%Y%m%dT%H%M%SZ")


def test_an_empty_history_says_so():
    page = render_page(_history(backups=[], verifications=[], drills=[], restores=[]))
    dom = Dom(page)
    assert not dom.find("svg")
    text = " ".join(dom.text)
    assert "No complete backup yet." in text and "No verification report in this period." in text
    assert "No restore drill in this period." in text


def test_documents_are_read_leniently_and_unusable_ones_are_listed_not_guessed():
    manifest = {"started_at": "2026-11-26T02:00:00+00:00", "finished_at": "2026-11-26T02:01:30+00:00",
                "objects": [{"size": 100}, {"size": 23}], "a_field_a_new_kind_adds": {"x": 1}}
    point = backup_point("db", "files", "20261126T020000Z", manifest, {"status": "good"})
    assert (point.size_bytes, point.objects, point.duration_seconds, point.status) == (123, 2, 90.0, "good")
    assert backup_point("db", "files", "20261126T020000Z", {**manifest, "objects": [{"size": "x"}]}, None) is None
    assert backup_point("db", "files", "20261126T020000Z", {"objects": []}, None).started_at == \
        datetime(2026, 11, 26, 2, tzinfo=timezone.utc)
    assert verify_point({"database": "db", "results": "nope"}) is None
    run = verify_point({"database": "db", "status": "ok", "written_at": "2026-11-26T08:00:00Z",
                        "results": [{"check": "wal", "status": "failed"}]})
    assert run.status == "failed" and run.checks == (("wal", "failed"),)
    early = drill_point({"kind": "drill", "database": "db", "status": "failed", "rto_seconds": None},
                        at=NOW)
    assert (early.at, early.rto_seconds, early.status) == (NOW, None, "failed")
    assert drill_point({"kind": "restore", "database": "db"}, at=NOW) is None
    assert report_time("p/reports/verify/20261126T080000Z-care_commons_db.json") == \
        datetime(2026, 11, 26, 8, tzinfo=timezone.utc)
    assert report_time("p/reports/verify/latest.json") is None
    page = render_page(_history(unreadable=["pgdr/reports/drill/20261101T040000Z-care_commons_db.json"]))
    assert "1 document(s) could not be read" in page and "20261101T040000Z-care_commons_db.json" in page


def test_sizes_and_durations_read_as_people_write_them():
    assert [format_size(v) for v in (0, 1023, 1024, 12_345_678, 5 * 1024 ** 3, None)] == [
        "0 B", "1023 B", "1.0 KB", "11.8 MB", "5.0 GB", "—"]
    assert [format_duration(v) for v in (4.23, 61, 3725, 90000, float("nan"))] == [
        "4.2 s", "1 min 01 s", "1 h 02 min", "1 d 01 h", "—"]


def test_a_window_outside_its_range_is_refused_before_anything_is_read(tmp_path, capsys):
    with pytest.raises(HistoryError, match="days must be a whole number from 1 to 3660"):
        collect(None, databases=["db"], rto_budget_seconds=3600, days=0)
    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(tmp_path / "report.html"), "--days", "0"])
    assert exit_.value.code == 2 and "--days must be from 1 to 3660" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()


# --- end to end: real backups, a real verify run, the page in Chromium ---------------------------

def _chromium() -> str:
    found = shutil.which("chromium")
    assert found, ("Debian's chromium package is not installed (apt-get install -y chromium); .ci/run installs it, "
                   "and this test needs it to render the history page")
    return found


def _browser(args: list[str], page: Path, profile: Path) -> subprocess.CompletedProcess:
    argv = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={profile}", *args, page.as_uri()]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)


def _png_pixels(path: Path) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Width, height and RGB pixels of an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, idat, header = 8, b"", None
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        chunk = data[position + 8:position + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        position += 12 + length
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, header
    channels = 3 if color == 2 else 4
    raw, stride = zlib.decompress(idat), width * channels
    previous, pixels, offset = bytearray(stride), [], 0
    for _ in range(height):
        kind, line = raw[offset], bytearray(raw[offset + 1:offset + 1 + stride])
        offset += 1 + stride
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        pixels.extend(tuple(line[i:i + 3]) for i in range(0, stride, channels))
        previous = line
    return width, height, pixels


def _objects(client, bucket: str, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


def test_the_page_verify_writes_shows_the_plots_and_latest_figures_in_chromium(stack, airflow_db, pgdr_env, tmp_path,
                                                                              monkeypatch):
    _chromium()
    client = stack.s3.client()
    prefix = pgdr_env["AIRFLOW_VAR_PGDR_S3_PREFIX"]
    for _ in range(2):
        dag_run = run_dag("pg_backup_daily")
        assert str(dag_run.state) == "success", task_states(dag_run)
    manifests = [json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
                 for key in _objects(client, BUCKET, f"{prefix}/{CONN_ID}/logical/") if key.endswith("/manifest.json")]
    assert len(manifests) == 2
    newest = manifests[-1]
    newest_size = sum(obj["size"] for obj in newest["objects"])
    # two drill records as pg_restore_test writes them (the drill itself is tested in tests/test_drill.py)
    for days_ago, rto, status in ((40, 1275.4, "ok"), (10, 4100.0, "failed")):
        when = datetime.now(timezone.utc) - timedelta(days=days_ago)
        stamp = when.strftime("%Y%m%dT%H%M%SZ")
        record = {"kind": "drill", "database": CONN_ID, "backup_id": newest["backup_id"], "status": status,
                  "started_at": when.isoformat(timespec="seconds"), "rto_seconds": rto,
                  "rto_budget_seconds": 3600.0, "problems": []}
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/reports/drill/{stamp}-{CONN_ID}.json",
                          Body=json.dumps(record).encode(), ServerSideEncryption="AES256")
    # beside them, a point-in-time drill's record (not a bar here) and a report cut short (listed as not shown)
    stamp = (datetime.now(timezone.utc) - timedelta(days=5)).strftime("%Y%m%dT%H%M%SZ")
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/reports/drill/{stamp}-{CONN_ID}-pitr.json",
                      Body=json.dumps({"kind": "pitr_drill", "database": CONN_ID, "status": "ok"}).encode(),
                      ServerSideEncryption="AES256")
    broken = f"{prefix}/reports/verify/{stamp}-{CONN_ID}.json"
    client.put_object(Bucket=BUCKET, Key=broken, Body=b'{"database": "care_commons_db", "resu',
                      ServerSideEncryption="AES256")

    # a scheduled-like verify run: every check passes, the page lands beside the reports
    dag_run = run_dag("pg_backup_verify")
    states = task_states(dag_run)
    assert str(dag_run.state) == "success" and states["history_page"] == "success", states
    key = f"{prefix}/reports/index.html"
    head = client.head_object(Bucket=BUCKET, Key=key)
    assert head["ContentType"].startswith("text/html") and head["ServerSideEncryption"] == "AES256"

    # a failing check: the run fails, and the page still shows it
    monkeypatch.setenv("AIRFLOW_VAR_PGDR_FRESHNESS_HOURS", "0.0001")
    dag_run = run_dag("pg_backup_verify")
    states = task_states(dag_run)
    assert str(dag_run.state) == "failed" and states["verify.freshness[0]"] == "failed", states
    assert states["history_page"] == "success", states
    page = tmp_path / "index.html"
    page.write_bytes(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())

    # what the browser shows: Chromium's own DOM after it parsed and laid out the page
    dumped = _browser(["--dump-dom"], page, tmp_path / "profile").stdout
    dom = Dom(dumped)
    for chart in ("size", "duration"):
        svg = dom.chart(chart, data_kind="logical", data_database=CONN_ID)
        points = Dom.descendants(svg, "circle", "point")
        assert len(points) == 2 and [p["text"].split(":")[0] for p in points] == [m["backup_id"] for m in manifests]
    size_tip = Dom.descendants(dom.chart("size", data_kind="logical"), "circle")[-1]["text"]
    assert size_tip.startswith(f"{newest['backup_id']}: {format_size(newest_size)} in {len(newest['objects'])} objects")
    grid = dom.chart("verify", data_database=CONN_ID)
    cells = Dom.descendants(grid, "rect", "cell")
    assert grid["attrs"]["data-runs"] == "2" and len(cells) == 2 * int(grid["attrs"]["data-checks"])
    assert [c["text"].split(" ", 3)[-1] for c in cells if "failed" in c["attrs"]["class"].split()] == [
        "freshness: failed"]
    bars = Dom.descendants(dom.chart("rto", data_database=CONN_ID), "rect", "bar")
    assert [b["attrs"]["class"] for b in bars] == ["bar ok", "bar failed"]
    (latest,) = dom.find("tr", data_kind="logical")
    latest_cells = [c["text"].strip() for c in Dom.descendants(latest, "td")]
    assert latest_cells[:3] == ["logical", newest["backup_id"], format_size(newest_size)]
    assert Dom.descendants(latest, "td", "size")[0]["attrs"]["data-bytes"] == str(newest_size)
    assert latest_cells[5] == "good"  # the first verify run's integrity check marked it
    (drill,) = dom.find("p", **{"class": "latest-drill"})
    assert "RTO 1 h 08 min of a 1 h 00 min budget" in " ".join(drill["text"].split())
    (unreadable,) = dom.find("section", **{"class": "database unreadable"})
    assert [item["text"] for item in Dom.descendants(unreadable, "code")] == [broken]

    # and it is drawn: a screenshot holds the plots' colours, not a blank page
    shot = tmp_path / "page.png"
    _browser([f"--screenshot={shot}", "--window-size=1280,1800"], page, tmp_path / "profile")
    width, height, pixels = _png_pixels(shot)
    assert (width, height) == (1280, 1800)
    counts = {name: sum(1 for p in pixels if p == rgb) for name, rgb in
              {"series blue": (0x1F, 0x77, 0xB4), "ok green": (0x2C, 0xA0, 0x2C), "failed red": (0xD6, 0x27, 0x28),
               "header": (0x1D, 0x35, 0x57)}.items()}
    assert all(count > 50 for count in counts.values()), counts
    assert sum(1 for p in pixels if p != (255, 255, 255)) > len(pixels) // 10

    # no row data and no secret on the page
    text = page.read_text()
    phi = [value for row in stack.cluster.execute(
        "SELECT last_name, ssn, date_of_birth::text FROM clients WHERE ssn IS NOT NULL LIMIT 20", dbname=DBNAME)
        for value in row if value and len(value) >= 6]
    assert phi and not [value for value in phi if value in text]
    assert BACKUP_PASSWORD not in text

    # `make report`'s command: the same page from the same settings, written locally and uploaded on request
    out = tmp_path / "report.html"
    before = head["LastModified"]
    result = subprocess.run([sys.executable, "-m", "pgdr.history", "--out", str(out), "--upload"], cwd=REPO_ROOT,
                            env={**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'plugins'}:{REPO_ROOT}"},
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"uploaded to s3://{BUCKET}/{key}" in result.stderr
    local = Dom(out.read_text())
    assert len(Dom.descendants(local.chart("size", data_kind="logical"), "circle", "point")) == 2
    assert local.chart("verify")["attrs"]["data-runs"] == "2"
    uploaded = client.get_object(Bucket=BUCKET, Key=key)
    assert uploaded["Body"].read() == out.read_bytes() and uploaded["LastModified"] >= before
