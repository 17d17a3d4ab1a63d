import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedding_assets.core.sharding import SHARD_COUNT, shard_of
from embedding_assets.core.sources import SourceDocument, SourceRejection, iter_source


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
    assert not any(r.whole_source for r in rejections)


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
