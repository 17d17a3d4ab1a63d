"""S3 end to end over real HTTP: moto's server on 127.0.0.1 stands in for the bucket.

The corpus is read from the bucket, every LanceDB table lives in it, and the Parquet export
written there is read back with polars and compared with the table.
"""

import json
from datetime import datetime, timezone

import numpy as np
import polars as pl
from dagster import instance_for_test

from embedding_assets.cli.pipeline_runner import run_pipeline
from embedding_assets.core.corpus_sync import known_file_versions, sync_corpus_shards
from embedding_assets.core.sharding import shard_keys
from embedding_assets.core.sources.s3 import iter_s3
from embedding_assets.core.store import LanceStore, fixed_size_lists, s3_storage_options, scan
from embedding_assets.definitions import build_definitions
from tests.builders import DEFAULT_VERSION, make_resources
from tests.builders import S3_BUCKET as BUCKET


def test_corpus_tables_and_exports_all_on_s3(bucket, sample_records, cache_dir):
    client, endpoint = bucket
    text_files, jsonl_records = sample_records[:20], sample_records[20:80]
    for record in text_files:
        client.put_object(Bucket=BUCKET, Key=f"corpus/{record['id']}.txt", Body=record["text"].encode())
    lines = "".join(json.dumps(r) + "\n" for r in jsonl_records)
    client.put_object(Bucket=BUCKET, Key="corpus/more.jsonl", Body=lines.encode())

    defs = build_definitions(make_resources(f"s3://{BUCKET}/corpus/", f"s3://{BUCKET}/lance", cache_dir))
    with instance_for_test() as instance:
        report = run_pipeline(defs, instance, say=lambda _: None)
    assert report.totals["documents"] == 80
    assert report.live_version == DEFAULT_VERSION
    assert all(check.passed for check in report.checks if check.name != "quarantine_check")

    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="lance/")["Contents"]]
    assert any(key.startswith(f"lance/embeddings__{DEFAULT_VERSION}.lance/") for key in keys)
    assert any(key.startswith("lance/documents.lance/") for key in keys)

    store = LanceStore(f"s3://{BUCKET}/lance", s3_storage_options(endpoint, "us-east-1", allow_http=True))
    table = scan(store.open_embeddings_table(DEFAULT_VERSION), None)
    exports = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="exports/")["Contents"]]
    manifest_key = next(key for key in exports if key.endswith("manifest.json"))
    assert manifest_key.startswith(f"exports/{DEFAULT_VERSION}/")
    manifest = json.loads(client.get_object(Bucket=BUCKET, Key=manifest_key)["Body"].read())
    assert manifest["rows"] == table.num_rows and manifest["files"]
    options = {"aws_endpoint_url": endpoint, "aws_region": "us-east-1", "aws_allow_http": "true",
               "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}  # fmt: skip
    exported = pl.concat([pl.read_parquet(uri, storage_options=options) for uri in manifest["files"]])
    assert exported.height == table.num_rows
    assert set(exported.columns) >= {"id", "doc_id", "content_hash", "vector", "model_version", "origin", "origin_hash"}
    by_id = dict(zip(table.column("id").to_pylist(), fixed_size_lists(table.column("vector"))))
    for row_id, vector in zip(exported["id"].to_list(), exported["vector"].to_list()):
        assert np.array_equal(np.asarray(vector, dtype=np.float32), by_id[row_id])


def test_a_change_in_the_bucket_changes_the_fingerprint(bucket, cache_dir):
    client, _ = bucket
    client.put_object(Bucket=BUCKET, Key="docs/a.txt", Body=b"first")
    resources = make_resources(f"s3://{BUCKET}/docs/", f"s3://{BUCKET}/lance", cache_dir)
    source = resources["corpus_source"]
    before = source.fingerprint()
    assert [r.doc_id for r in source.read(None)] == ["a.txt"]
    client.put_object(Bucket=BUCKET, Key="docs/a.txt", Body=b"second")
    assert source.fingerprint() != before


def test_a_change_run_fetches_only_the_objects_whose_etag_changed(bucket, cache_dir, tmp_path):
    client, _ = bucket
    for n in range(5):
        client.put_object(Bucket=BUCKET, Key=f"docs/note-{n}.txt", Body=f"Note number {n}.".encode())
    store = LanceStore(str(tmp_path / "lance"))
    fetched = []
    client.meta.events.register(
        "before-parameter-build.s3.GetObject", lambda params, **_: fetched.append(params["Key"])
    )
    shards = shard_keys()

    def sync():
        records = iter_s3(f"s3://{BUCKET}/docs/", client, None, known_file_versions(store, shards))
        return sync_corpus_shards(store, records, shards, datetime.now(timezone.utc))

    assert sum(s.added for s in sync().values()) == 5 and len(fetched) == 5
    fetched.clear()
    client.put_object(Bucket=BUCKET, Key="docs/note-3.txt", Body=b"Note number 3, edited.")
    again = sync()
    assert fetched == ["docs/note-3.txt"]
    assert sum(s.changed for s in again.values()) == 1 and sum(s.unchanged for s in again.values()) == 4
