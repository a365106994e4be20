"""Tables mode without a database: the dump's table of contents filtered down to the schema and the
chosen tables' data (pgdr.restore.tables.tables_list / data_objects_for_tables).

The restore end to end (the rows back in recovered_<time>, nothing else touched) is in
tests/test_restore.py::test_tables_mode_recovers_deleted_rows_and_touches_nothing_else.
"""

from __future__ import annotations

from types import SimpleNamespace

from pgdr.restore.tables import data_objects_for_tables, tables_list

# pg_restore --list of a directory dump, trimmed (the shape pg_restore 15-18 prints)
LISTING = """\
;
; Archive created at 2026-11-26 02:00:01 UTC
;     dbname: care_commons
;
; Selected TOC Entries:
;
5; 2615 16390 SCHEMA - care pgdr_owner
3401; 0 0 COMMENT - SCHEMA care pgdr_owner
2; 3079 16391 EXTENSION - pgcrypto
870; 1247 16400 TYPE care visit_status care_owner
240; 1255 16410 FUNCTION care touch() care_owner
220; 1259 16420 TABLE care visits care_owner
221; 1259 16421 SEQUENCE care visits_id_seq care_owner
222; 1259 16430 TABLE public clients care_owner
3320; 2604 16431 DEFAULT care visits id care_owner
3390; 0 16420 TABLE DATA care visits care_owner
3391; 0 16430 TABLE DATA public clients care_owner
3392; 0 16440 TABLE DATA public "Odd Name" care_owner
3402; 0 0 SEQUENCE SET care visits_id_seq care_owner
3210; 2606 16450 CONSTRAINT care visits visits_pkey care_owner
3211; 1259 16451 INDEX care visits_client_idx care_owner
3212; 2606 16452 FK CONSTRAINT care visits visits_client_fk care_owner
3300; 2620 16460 TRIGGER care visits visits_touch care_owner
3400; 0 0 ACL - TABLE visits care_owner
""".splitlines()


def test_the_use_list_keeps_the_schema_and_only_the_chosen_tables_data():
    kept = tables_list(LISTING, ["care.visits"])
    assert kept == [
        "5; 2615 16390 SCHEMA - care pgdr_owner",
        "2; 3079 16391 EXTENSION - pgcrypto",
        "870; 1247 16400 TYPE care visit_status care_owner",
        "240; 1255 16410 FUNCTION care touch() care_owner",
        "220; 1259 16420 TABLE care visits care_owner",
        "221; 1259 16421 SEQUENCE care visits_id_seq care_owner",
        "222; 1259 16430 TABLE public clients care_owner",
        "3320; 2604 16431 DEFAULT care visits id care_owner",
        "3390; 0 16420 TABLE DATA care visits care_owner",
        "3402; 0 0 SEQUENCE SET care visits_id_seq care_owner",
    ]
    # no other table's rows, no constraints, indexes, triggers, grants or comments: the tables
    # are moved bare into recovered_<time>, and nothing runs on them there
    assert not any(word in line for line in kept for word in ("DATA public clients", "INDEX", "TRIGGER",
                                                              "ACL", "CONSTRAINT", "COMMENT"))


def test_only_the_chosen_tables_data_files_are_downloaded():
    objects = [SimpleNamespace(name=f"dump/{dump_id}.dat.zst") for dump_id in (3390, 3391, 3392)]
    objects.append(SimpleNamespace(name="dump/toc.dat"))
    chosen = data_objects_for_tables(LISTING, objects, ["care.visits", "public.clients"])
    assert [o.name for o in chosen] == ["dump/3390.dat.zst", "dump/3391.dat.zst"]
    assert data_objects_for_tables(LISTING, objects, ["care.nothing"]) == []
