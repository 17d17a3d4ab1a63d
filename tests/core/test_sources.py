import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedding_assets.core.corpus_sync import known_file_versions, sync_corpus_shard, sync_corpus_shards
from embedding_assets.core.sharding import SHARD_COUNT, shard_keys, shard_of
from embedding_assets.core.sources import (
    SourceDocument,
    SourceRejection,
    SourceUnavailable,
    belongs_to_shard,
    iter_source,
    source_last_modified,
)
from embedding_assets.core.store import scan
from resources.deployments import PROJECT_ROOT
from tests.builders import S3_BUCKET, write_jsonl


def _by_kind(records):
    documents = [r for r in records if isinstance(r, SourceDocument)]
    rejections = [r for r in records if isinstance(r, SourceRejection)]
    return documents, rejections


def test_embedded_corpus_is_real_python_documentation(stdlib_table, cache_dir):
    ids = stdlib_table.column("id").to_pylist()
    assert len(ids) >= 5000
    assert len(set(ids)) == len(ids)
    assert {"py:json.loads", "py:posixpath.join", "topic:assert"} <= set(ids)
    texts = dict(zip(ids, stdlib_table.column("text").to_pylist()))
    assert "JSON" in texts["py:json.loads"]
    # Re-exported and inherited docstrings are natural exact duplicates.
    assert len(set(texts.values())) < len(texts)


def test_reading_one_shard_yields_only_that_shard(cache_dir):
    records = list(iter_source("stdlib", cache_dir, "007"))
    assert records and all(shard_of(r.doc_id) == "007" for r in records)
    assert len(records) < 2 * sum(1 for _ in iter_source("stdlib", cache_dir)) / SHARD_COUNT


def test_directory_source_reads_text_and_markdown_and_rejects_broken_utf8(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("alpha", encoding="utf-8")
    (tmp_path / "docs" / "b.md").write_text("# beta", encoding="utf-8")
    (tmp_path / "docs" / "c.bin").write_bytes(b"ignored")
    (tmp_path / "docs" / "broken.txt").write_bytes(b"ok \xff\xfe not utf-8")
    documents, rejections = _by_kind(list(iter_source(str(tmp_path / "docs"), tmp_path)))
    assert sorted(d.doc_id for d in documents) == ["a.txt", "b.md"]
    assert [(r.doc_id, r.reason) for r in rejections] == [("broken.txt", "invalid_utf8")]
    assert "byte 3" in rejections[0].detail


def test_jsonl_source_rejects_malformed_lines_missing_and_duplicate_ids(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({"id": "a", "text": "first", "title": "A"}),
                "{not json",
                json.dumps({"text": "no id"}),
                json.dumps({"id": "a", "text": "second a"}),
                json.dumps({"id": 7, "text": "numeric id"}),
                json.dumps({"id": "b", "text": None}),
            ]
        ),
        encoding="utf-8",
    )
    documents, rejections = _by_kind(list(iter_source(str(path), tmp_path)))
    assert [(d.doc_id, d.text, d.title) for d in documents] == [("a", "first", "A"), ("7", "numeric id", None)]
    assert [r.reason for r in rejections] == ["malformed_json", "missing_id", "duplicate_id", "missing_text"]
    assert rejections[0].doc_id == "corpus.jsonl:line-2"
    assert "record 1" in rejections[2].detail
    # A line that names no document could be any of them; a duplicate or a bad field names its own.
    assert [r.whole_source for r in rejections] == [True, True, False, False]


def test_parquet_source_and_missing_columns(tmp_path):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"id": ["x", "y"], "text": ["ex", "why"], "title": ["X", None]}), good)
    documents, rejections = _by_kind(list(iter_source(str(good), tmp_path)))
    assert [(d.doc_id, d.text, d.title) for d in documents] == [("x", "ex", "X"), ("y", "why", None)]
    assert not rejections
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"identifier": ["x"], "body": ["ex"]}), bad)
    documents, rejections = _by_kind(list(iter_source(str(bad), tmp_path)))
    assert not documents
    assert rejections[0].reason == "missing_columns" and rejections[0].whole_source
    assert "id, text" in rejections[0].detail


def test_unknown_source_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(iter_source(str(tmp_path / "nope.jsonl"), tmp_path))
    (tmp_path / "corpus.csv").write_text("id,text\n")
    with pytest.raises(ValueError, match="expected a directory"):
        list(iter_source(str(tmp_path / "corpus.csv"), tmp_path))


# A source read that is not provably whole deletes nothing: each way a read can fall short.
T1 = datetime(2026, 1, 1, tzinfo=timezone.utc)
T2 = datetime(2026, 1, 2, tzinfo=timezone.utc)
DOCS = [{"id": f"doc-{n}", "text": f"Document number {n}, about subject {n}."} for n in range(12)]


def _sync_every_shard(store, uri, cache_dir, now, s3_client=None):
    return [
        sync_corpus_shard(store, iter_source(uri, cache_dir, shard, s3_client), shard, now) for shard in shard_keys()
    ]


def _of_shard(records, shard):
    return [record for record in records if belongs_to_shard(record, shard)]


def _live(store):
    return set(scan(store.table("documents"), "deleted = false", ["doc_id"]).column("doc_id").to_pylist())


def _quarantine(store):
    return {row["doc_id"]: row for row in scan(store.table("quarantine"), None).to_pylist()}


def _assert_nothing_deleted(stats, store, live_before, reason):
    assert _live(store) == live_before
    assert all(not shard.source_complete and shard.deleted == 0 for shard in stats)
    assert all(any(problem.startswith(reason) for problem in shard.source_problems) for shard in stats)


def test_a_jsonl_file_cut_at_a_third_deletes_nothing_and_quarantines_its_last_line(tmp_path, store):
    path = write_jsonl(tmp_path / "corpus.jsonl", DOCS)
    _sync_every_shard(store, str(path), tmp_path, T1)
    live_before = _live(store)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    assert not path.read_bytes().endswith(b"\n")
    last_line = path.read_bytes().count(b"\n") + 1

    stats = _sync_every_shard(store, str(path), tmp_path, T2)
    _assert_nothing_deleted(stats, store, live_before, "truncated_file")
    entry = _quarantine(store)[f"corpus.jsonl:line-{last_line}"]
    assert entry["reason"] == "truncated_file" and "cut short" in entry["detail"]


def test_a_last_line_without_its_newline_that_parses_is_whole(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps(record) for record in DOCS), encoding="utf-8")
    documents, rejections = _by_kind(list(iter_source(str(path), tmp_path)))
    assert len(documents) == len(DOCS) and not rejections


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [("{not json", "malformed_json"), (json.dumps({"text": "a record that lost its id"}), "missing_id")],
)
def test_a_line_that_names_no_document_anywhere_deletes_nothing(tmp_path, store, bad_line, reason):
    path = write_jsonl(tmp_path / "corpus.jsonl", DOCS)
    _sync_every_shard(store, str(path), tmp_path, T1)
    live_before = _live(store)
    # Half the documents gone and one line unreadable: the lost line could be any of them.
    lines = [json.dumps(record) for record in DOCS[:6]] + [bad_line]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    stats = _sync_every_shard(store, str(path), tmp_path, T2)
    _assert_nothing_deleted(stats, store, live_before, reason)
    assert _quarantine(store)["corpus.jsonl:line-7"]["reason"] == reason


def test_an_emptied_jsonl_file_deletes_nothing(tmp_path, store):
    path = write_jsonl(tmp_path / "corpus.jsonl", DOCS)
    _sync_every_shard(store, str(path), tmp_path, T1)
    live_before = _live(store)
    path.write_text("\n\n", encoding="utf-8")
    stats = _sync_every_shard(store, str(path), tmp_path, T2)
    _assert_nothing_deleted(stats, store, live_before, "empty_file")
    assert "holds no record" in _quarantine(store)["corpus.jsonl"]["detail"]


def test_a_parquet_file_whose_footer_does_not_parse_deletes_nothing(tmp_path, store):
    path = tmp_path / "corpus.parquet"
    pq.write_table(pa.Table.from_pylist(DOCS), path)
    _sync_every_shard(store, str(path), tmp_path, T1)
    live_before = _live(store)
    path.write_bytes(path.read_bytes()[:-20])
    stats = _sync_every_shard(store, str(path), tmp_path, T2)
    _assert_nothing_deleted(stats, store, live_before, "unreadable_parquet")
    assert "not a readable Parquet file" in _quarantine(store)["corpus.parquet"]["detail"]


def test_an_empty_or_missing_folder_fails_the_read_before_any_write(tmp_path, store):
    docs = tmp_path / "docs"
    docs.mkdir()
    for record in DOCS:
        (docs / f"{record['id']}.txt").write_text(record["text"], encoding="utf-8")
    _sync_every_shard(store, str(docs), tmp_path, T1)
    live_before = _live(store)
    for file in docs.iterdir():
        file.unlink()
    with pytest.raises(FileNotFoundError, match="no document was marked deleted"):
        _sync_every_shard(store, str(docs), tmp_path, T2)
    docs.rmdir()
    with pytest.raises(FileNotFoundError, match="does not exist: nothing was read"):
        _sync_every_shard(store, str(docs), tmp_path, T2)
    assert _live(store) == live_before


READ_AS_ANOTHER = """
import json, sys
from pathlib import Path
from embedding_assets.core.sources import iter_source
print(json.dumps([[type(r).__name__, r.__dict__] for r in iter_source(sys.argv[1], Path(sys.argv[2]))]))
"""


def test_an_unreadable_subfolder_or_file_is_reported_and_deletes_nothing(tmp_path, store):
    """The source is read, in a process of its own, by a user without the rights: `nobody` (through setpriv)
    when the tests run as root, who reads everything; else the tests' own user, once the folder and the file
    deny their owner too."""
    as_root = os.geteuid() == 0
    if as_root and not shutil.which("setpriv"):
        pytest.skip("running as root, setpriv is needed to read the folder as an unprivileged user")
    as_reader = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] if as_root else []
    # Modes that shut the reader out: group and others for nobody, the owner too for the tests' own user.
    folder_mode, file_mode = (0o700, 0o600) if as_root else (0o000, 0o000)
    docs = Path(tempfile.mkdtemp(prefix="corpus-", dir="/tmp"))
    try:
        docs.chmod(0o755)
        (docs / "private").mkdir(mode=0o700)
        for position, record in enumerate(DOCS):
            folder = docs / "private" if position % 2 else docs
            (folder / f"{record['id']}.txt").write_text(record["text"], encoding="utf-8")
            (folder / f"{record['id']}.txt").chmod(0o644)
        _sync_every_shard(store, str(docs), tmp_path, T1)
        live_before = _live(store)
        assert len(live_before) == len(DOCS)
        (docs / "doc-0.txt").chmod(file_mode)
        (docs / "private").chmod(folder_mode)

        read = subprocess.run(
            [*as_reader, sys.executable, "-c", READ_AS_ANOTHER, str(docs), str(tmp_path)],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        kinds = {"SourceDocument": SourceDocument, "SourceRejection": SourceRejection}
        records = [kinds[kind](**fields) for kind, fields in json.loads(read.stdout)]
    finally:
        (docs / "private").chmod(0o700)
        shutil.rmtree(docs)
    rejections = [r for r in records if isinstance(r, SourceRejection)]
    assert [(r.doc_id, r.reason, r.whole_source) for r in rejections] == [
        ("private", "unreadable_directory", True),
        ("doc-0.txt", "unreadable_file", True),
    ]
    assert all("Permission denied" in r.detail and "make it readable" in r.detail for r in rejections)
    assert len([r for r in records if isinstance(r, SourceDocument)]) == len(DOCS) // 2 - 1

    stats = [sync_corpus_shard(store, _of_shard(records, shard), shard, T2) for shard in shard_keys()]
    _assert_nothing_deleted(stats, store, live_before, "unreadable_directory")
    assert _quarantine(store)["private"]["reason"] == "unreadable_directory"
    assert _quarantine(store)["doc-0.txt"]["reason"] == "unreadable_file"


def test_an_s3_listing_error_or_an_empty_prefix_fails_before_any_write(bucket, tmp_path):
    client, _ = bucket
    with pytest.raises(SourceUnavailable, match="could not be listed .*NoSuchBucket.*no document was marked deleted"):
        list(iter_source("s3://no-such-bucket/corpus/", tmp_path, None, client))
    with pytest.raises(FileNotFoundError, match="no object under that prefix"):
        list(iter_source(f"s3://{S3_BUCKET}/corpus/", tmp_path, None, client))


def test_an_s3_object_that_cannot_be_read_deletes_nothing(bucket, tmp_path, store):
    client, _ = bucket
    for record in DOCS:
        client.put_object(Bucket=S3_BUCKET, Key=f"corpus/{record['id']}.txt", Body=record["text"].encode())
    uri = f"s3://{S3_BUCKET}/corpus/"
    _sync_every_shard(store, uri, tmp_path, T1, client)
    live_before = _live(store)

    # An object removed between the listing and its read (a sync in progress, a lifecycle rule).
    records = iter_source(uri, tmp_path, None, client)
    first = next(records)
    vanished = next(r["id"] for r in DOCS if f"{r['id']}.txt" > first.doc_id)
    client.delete_object(Bucket=S3_BUCKET, Key=f"corpus/{vanished}.txt")
    records = [first, *records]
    rejections = [r for r in records if isinstance(r, SourceRejection)]
    assert [(r.doc_id, r.reason, r.whole_source) for r in rejections] == [
        (f"{vanished}.txt", "unreadable_object", True)
    ]
    assert "NoSuchKey" in rejections[0].detail

    stats = [sync_corpus_shard(store, _of_shard(records, shard), shard, T2) for shard in shard_keys()]
    _assert_nothing_deleted(stats, store, live_before, "unreadable_object")
    assert _quarantine(store)[f"{vanished}.txt"]["reason"] == "unreadable_object"


def test_the_source_says_when_it_last_changed(tmp_path):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    for name, stamp in (("a.txt", 1_700_000_000), ("sub/b.md", 1_700_000_500)):
        (folder / name).write_text("some text", encoding="utf-8")
        os.utime(folder / name, (stamp, stamp))
    assert source_last_modified(str(folder)) == 1_700_000_500
    assert source_last_modified(str(folder / "a.txt")) == 1_700_000_000
    assert source_last_modified("stdlib") is None


def _sync_folder(store, folder: Path) -> dict:
    """One read of the folder for every shard, skipping what its listing shows unchanged (as a change run does)."""
    shards = shard_keys()
    records = iter_source(str(folder), folder, None, known=known_file_versions(store, shards))
    return sync_corpus_shards(store, records, shards, datetime(2026, 1, 1, tzinfo=timezone.utc))


def test_a_folder_is_read_again_only_where_its_listing_changed(tmp_path, store):
    folder = tmp_path / "notes"
    folder.mkdir()
    for n in range(6):
        (folder / f"note-{n}.txt").write_text(f"Note number {n} about the pipeline.")
    first = _sync_folder(store, folder)
    assert sum(s.added for s in first.values()) == 6

    # Same size and modification time: the listing says unchanged, so the file is not read (rsync's quick
    # check); a real edit moves its time and is read.
    quiet = folder / "note-0.txt"
    status = quiet.stat()
    quiet.write_text("Note NUMBER 0 about the pipeline.")
    os.utime(quiet, ns=(status.st_atime_ns, status.st_mtime_ns))
    (folder / "note-1.txt").write_text("Note number 1, edited.")
    (folder / "note-2.txt").unlink()
    second = _sync_folder(store, folder)
    totals = {
        kind: sum(getattr(s, kind) for s in second.values()) for kind in ("added", "changed", "unchanged", "deleted")
    }
    assert totals == {"added": 0, "changed": 1, "unchanged": 4, "deleted": 1}
    texts = {
        row["doc_id"]: row["text"]
        for row in scan(store.table("documents"), "deleted = false", ["doc_id", "text"]).to_pylist()
    }
    assert (
        texts["note-0.txt"] == "Note number 0 about the pipeline." and texts["note-1.txt"] == "Note number 1, edited."
    )
    assert "note-2.txt" not in texts
    # A file whose document was deleted is read again when it returns, whatever its listing says.
    (folder / "note-2.txt").write_text("Note number 2 about the pipeline.")
    revived = _sync_folder(store, folder)
    assert sum(s.changed for s in revived.values()) == 1 and sum(s.unchanged for s in revived.values()) == 5
    assert scan(store.table("documents"), "doc_id = 'note-2.txt' AND deleted = false").num_rows == 1
