"""The free space a point-in-time recovery from an incremental chain asks for before its first byte is fetched
(pgdr.restore.pitr_fetch.chain_space_needed): the pieces unpacked, the combined copy, and the two downloads held
at once (the piece being unpacked and the next one, which downloads meanwhile). Pure: no services."""

from pgdr.store.manifest import Manifest, ObjectEntry

MiB = 1 << 20


def _piece(backup_id: str, stored: int, raw: int, depends_on: str | None = None) -> Manifest:
    tar = ObjectEntry(name="data.tar.zst", key=f"b/{backup_id}/data.tar.zst", size=stored, sha256="0" * 64,
                      role="base_tar", compression="zstd", raw_size=raw)
    manifest_file = ObjectEntry(name="backup_manifest", key=f"b/{backup_id}/backup_manifest", size=MiB,
                                sha256="1" * 64, role="backup_manifest")
    return Manifest(backup_id=backup_id, kind="base", database="db", dbname="app", started_at="", finished_at="",
                    server_version="18.6", server_version_num=180006, system_identifier="7",
                    objects=[tar, manifest_file], row_counts={}, tool_versions={}, encryption={}, depends_on=depends_on)


def test_a_full_alone_needs_itself_unpacked_and_its_download():
    from pgdr.restore.pitr_fetch import chain_space_needed

    assert chain_space_needed([_piece("F", 300 * MiB, 1000 * MiB)]) == 1000 * MiB + 300 * MiB


def test_a_chain_needs_every_piece_unpacked_the_combined_copy_and_two_downloads_at_once():
    from pgdr.restore.pitr_fetch import chain_space_needed

    chain = [_piece("F", 300 * MiB, 1000 * MiB), _piece("I1", 20 * MiB, 60 * MiB, "F"),
             _piece("I2", 30 * MiB, 70 * MiB, "I1"), _piece("I3", 10 * MiB, 50 * MiB, "I2")]
    unpacked = (1000 + 60 + 70 + 50) * MiB
    # the full's tar and the largest incremental's may be on disk together (one downloads while one unpacks)
    assert chain_space_needed(chain) == 2 * unpacked + 300 * MiB + 30 * MiB
