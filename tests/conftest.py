import os
import socket
import urllib.request
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest
from dagster import instance_for_test
from moto.server import ThreadedMotoServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LANCE_LOG", "error")

from embedding_assets.core.sources.stdlib_corpus import stdlib_corpus_path  # noqa: E402
from embedding_assets.core.store import LanceStore  # noqa: E402
from embedding_assets.definitions import build_definitions  # noqa: E402
from gpu_ops.loading import load_encoder  # noqa: E402
from gpu_ops.registry import load_registry  # noqa: E402
from tests.builders import (  # noqa: E402
    CLIP_VERSION,
    DEFAULT_VERSION,
    IMAGES_YAML,
    MODELS_YAML,
    S3_BUCKET,
    make_resources,
    near_duplicate_pair,
    stable_sample,
    write_jsonl,
)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def stdlib_table(cache_dir):
    return pq.read_table(stdlib_corpus_path(cache_dir))


@pytest.fixture(scope="session")
def minilm_spec():
    return load_registry(MODELS_YAML).spec(DEFAULT_VERSION)


@pytest.fixture(scope="session")
def minilm_encoder(minilm_spec, cache_dir):
    return load_encoder(minilm_spec, cache_dir, "cpu")


@pytest.fixture(scope="session")
def clip_spec():
    return load_registry(IMAGES_YAML).spec(CLIP_VERSION)


@pytest.fixture(scope="session")
def clip_encoder(clip_spec, cache_dir):
    return load_encoder(clip_spec, cache_dir, "cpu")


@pytest.fixture(scope="session")
def sample_records(stdlib_table) -> list[dict]:
    """About 250 real documents from the Python docs, plus a cross-shard near duplicate and an exact duplicate."""
    rows = [row for row in stdlib_table.to_pylist() if 80 <= len(row["text"]) <= 1500 and row["id"].startswith("py:")]
    sample = stable_sample(rows, 240)
    long_topic = next(row for row in stdlib_table.to_pylist() if row["id"] == "topic:assert")
    base = next(row["text"] for row in rows if 600 <= len(row["text"]) <= 900)
    first, second = near_duplicate_pair(base)
    words = base.split(" ")
    edited = " ".join(words[:-3] + ["changed"] + words[-2:])
    records = [{"id": row["id"], "title": row["title"], "text": row["text"]} for row in [*sample, long_topic]]
    records += [
        {"id": first, "title": "original", "text": base},
        {"id": second, "title": "edited copy", "text": edited},
        {"id": "exact-dup:copy", "title": "exact copy", "text": sample[0]["text"]},
    ]
    return records


@pytest.fixture
def sample_corpus(tmp_path, sample_records) -> Path:
    return write_jsonl(tmp_path / "corpus.jsonl", sample_records)


@pytest.fixture
def lance_uri(tmp_path) -> str:
    return str(tmp_path / "lance")


@pytest.fixture
def store(lance_uri) -> LanceStore:
    return LanceStore(lance_uri)


@pytest.fixture
def sample_defs(sample_corpus, lance_uri, cache_dir):
    return build_definitions(make_resources(str(sample_corpus), lance_uri, cache_dir))


@pytest.fixture
def instance():
    with instance_for_test() as dagster_instance:
        yield dagster_instance


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def bucket(monkeypatch):
    """(client, endpoint) of moto's S3 server over real HTTP on 127.0.0.1, with S3_BUCKET created
    and the AWS variables pointing at it."""
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    # moto keeps its buckets per process, not per server: start every test from an empty account.
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).close()
    for name, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=S3_BUCKET)
    yield client, endpoint
    server.stop()
