"""Bad input through Dagster: refused with a reason, the rest embedded, released once fixed."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
from dagster import instance_for_test, materialize

from embedding_assets.cli.pipeline_runner import run_pipeline
from embedding_assets.core.sharding import shard_of
from embedding_assets.core.store import LanceStore, scan
from embedding_assets.corpus import corpus
from embedding_assets.definitions import build_definitions
from tests.builders import DEFAULT_VERSION, make_resources

GOOD = {
    "good-en": "Return the number of items in a container.",
    "good-ja": "コンテナ内の要素数を返します。",
    "good-emoji": "Ship it 🚀 when the tests are green ✅",
    "good-ar": "أعد عدد العناصر في الحاوية.",
}
BAD = {
    "empty": ("", "empty_text"),
    "blank": ("   \t\n  ", "whitespace_only"),
    "nul": ("binary\x00junk", "control_characters"),
    "one-huge-token": ("x" * 100_000, "word_too_long"),
    "very-long": (" ".join(f"word{i}" for i in range(9_000)), "too_many_tokens"),
}


def _jsonl(path, fixed=False):
    # Titles give the derived evaluation set its queries: one-sentence texts alone give it none.
    lines = [json.dumps({"id": k, "title": f"how many items, {k}", "text": v}) for k, v in GOOD.items()]
    for doc_id, (text, _) in BAD.items():
        lines.append(json.dumps({"id": doc_id, "text": "Now a proper sentence about " + doc_id if fixed else text}))
    if not fixed:
        lines += [
            "{this is not json",
            json.dumps({"text": "a record without an id"}),
            json.dumps({"id": "good-en", "text": "dup"}),
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _quarantine(store):
    return {(row["doc_id"], row["reason"]) for row in scan(store.table("quarantine"), None).to_pylist()}


def test_every_kind_of_bad_input_is_quarantined_and_released_when_fixed(tmp_path, cache_dir):
    source = _jsonl(tmp_path / "corpus.jsonl")
    defs = build_definitions(make_resources(str(source), str(tmp_path / "lance"), cache_dir))
    store = LanceStore(str(tmp_path / "lance"))
    with instance_for_test() as instance:
        report = run_pipeline(defs, instance, say=lambda _: None)
        held = _quarantine(store)
        expected = {(doc_id, reason) for doc_id, (_, reason) in BAD.items()} | {
            ("corpus.jsonl:line-10", "malformed_json"),
            ("corpus.jsonl:line-11", "missing_id"),
            ("good-en", "duplicate_id"),
        }
        assert held == expected
        stages = {row["doc_id"]: row["stage"] for row in scan(store.table("quarantine"), None).to_pylist()}
        assert stages["very-long"] == "embed" and stages["nul"] == "corpus"
        assert report.live_version == DEFAULT_VERSION
        rows = scan(store.open_embeddings_table(DEFAULT_VERSION), None, ["doc_id"]).column("doc_id").to_pylist()
        assert set(rows) == set(GOOD)
        checks = {check.name: check for check in report.checks}
        assert checks["count_parity_check"].passed
        assert not checks["quarantine_check"].passed and checks["quarantine_check"].verdict == "WARN"
        assert "8 input(s) in quarantine" in checks["quarantine_check"].description

        _jsonl(source, fixed=True)
        report = run_pipeline(defs, instance, say=lambda _: None)
        assert _quarantine(store) == set()
        rows = scan(store.open_embeddings_table(DEFAULT_VERSION), None, ["doc_id"]).column("doc_id").to_pylist()
        assert set(rows) == set(GOOD) | set(BAD)
        assert report.per_version[DEFAULT_VERSION]["model_calls"] == len(BAD)


def test_broken_utf8_in_a_directory_and_a_parquet_without_its_columns(tmp_path, cache_dir):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "fine.txt").write_text("A perfectly fine note.", encoding="utf-8")
    (docs / "broken.txt").write_bytes(b"caf\xe9 au lait")
    with instance_for_test() as instance:
        resources = make_resources(str(docs), str(tmp_path / "lance"), cache_dir)
        for doc_id in ("broken.txt", "fine.txt"):
            materialize([corpus], partition_key=shard_of(doc_id), resources=resources, instance=instance)
        store = LanceStore(str(tmp_path / "lance"))
        assert ("broken.txt", "invalid_utf8") in _quarantine(store)

        export = tmp_path / "export.parquet"
        pq.write_table(pa.table({"id": ["fine.txt"], "body": ["renamed column"]}), export)
        resources = make_resources(str(export), str(tmp_path / "lance"), cache_dir)
        result = materialize([corpus], partition_key=shard_of("fine.txt"), resources=resources, instance=instance)
        metadata = result.asset_materializations_for_node("corpus")[0].metadata
        assert metadata["source_complete"].value is False and metadata["deleted"].value == 0
        materialize([corpus], partition_key=shard_of("export.parquet"), resources=resources, instance=instance)
        assert ("export.parquet", "missing_columns") in _quarantine(store)
        documents = scan(store.table("documents"), "doc_id = 'fine.txt'").to_pylist()
        assert documents and not documents[0]["deleted"]
