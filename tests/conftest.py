import hashlib
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dagster import instance_for_test

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LANCE_LOG", "error")

from embedding_assets.core.stdlib_corpus import stdlib_corpus_path  # noqa: E402
from embedding_assets.definitions import PROJECT_ROOT, build_definitions, local_resources  # noqa: E402
from gpu_ops.encoders import load_encoder  # noqa: E402
from gpu_ops.registry import load_registry  # noqa: E402
from partitions import shard_of  # noqa: E402
from resources.lance_store import LanceStore  # noqa: E402

MODELS_YAML = PROJECT_ROOT / "models.yaml"
DEFAULT_VERSION = "minilm-l6-v1"
# The image demo's registry: MiniLM and the small random open_clip model (see gpu_ops/clip_encoder.py).
IMAGES_YAML = PROJECT_ROOT / "models-images.yaml"
CLIP_VERSION = "tiny-clip-v1"


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


def _stable_sample(rows: list[dict], size: int) -> list[dict]:
    return sorted(rows, key=lambda row: hashlib.sha1(row["id"].encode()).digest())[:size]


def near_duplicate_pair(base_text: str) -> tuple[str, str]:
    """Two ids in different shards and a light edit of `base_text` (one word changed)."""
    first = "near-dup:original"
    second = next(f"near-dup:copy-{n}" for n in range(100) if shard_of(f"near-dup:copy-{n}") != shard_of(first))
    return first, second


@pytest.fixture(scope="session")
def sample_records(stdlib_table) -> list[dict]:
    """About 250 real documents from the Python docs, plus a cross-shard near duplicate and an exact duplicate."""
    rows = [row for row in stdlib_table.to_pylist() if 80 <= len(row["text"]) <= 1500 and row["id"].startswith("py:")]
    sample = _stable_sample(rows, 240)
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


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


@pytest.fixture
def sample_corpus(tmp_path, sample_records) -> Path:
    return write_jsonl(tmp_path / "corpus.jsonl", sample_records)


@pytest.fixture
def lance_uri(tmp_path) -> str:
    return str(tmp_path / "lance")


@pytest.fixture
def store(lance_uri) -> LanceStore:
    return LanceStore(lance_uri)


def make_resources(corpus_uri: str, lance_uri: str, cache_dir: Path, registry_path: Path = MODELS_YAML) -> dict:
    return local_resources(corpus_uri, lance_uri, cache_dir, registry_path, device="cpu")


@pytest.fixture
def sample_defs(sample_corpus, lance_uri, cache_dir):
    return build_definitions(make_resources(str(sample_corpus), lance_uri, cache_dir))


@pytest.fixture
def instance():
    with instance_for_test() as dagster_instance:
        yield dagster_instance
