"""What many tests build: the registries they load, small real corpora, and deployments bound to temporary folders."""

import hashlib
import json
from pathlib import Path

from embedding_assets.core.sharding import shard_of
from embedding_assets.core.store import scan
from resources.deployments import PROJECT_ROOT, local_resources

MODELS_YAML = PROJECT_ROOT / "models.yaml"
DEFAULT_VERSION = "minilm-l6-v1"
# The image demo's registry: MiniLM and the small random open_clip model (see gpu_ops/clip_encoder.py).
IMAGES_YAML = PROJECT_ROOT / "models-images.yaml"
CLIP_VERSION = "tiny-clip-v1"
# The bucket the `bucket` fixture creates on moto's S3 server.
S3_BUCKET = "embeddings"


def stable_sample(rows: list[dict], size: int) -> list[dict]:
    """`size` rows chosen by the sha1 of their id: the same rows on every machine."""
    return sorted(rows, key=lambda row: hashlib.sha1(row["id"].encode()).digest())[:size]


def near_duplicate_pair(base_text: str) -> tuple[str, str]:
    """Two ids in different shards and a light edit of `base_text` (one word changed)."""
    first = "near-dup:original"
    second = next(f"near-dup:copy-{n}" for n in range(100) if shard_of(f"near-dup:copy-{n}") != shard_of(first))
    return first, second


def lone_document(store, records: list[dict], version: str = DEFAULT_VERSION) -> dict:
    """A record whose content no other document carries (not a duplicate, nobody's representative)."""
    rows = scan(store.open_embeddings_table(version), None, ["doc_id", "origin_hash"]).to_pylist()
    carriers = {}
    for row in rows:
        carriers.setdefault(row["origin_hash"], set()).add(row["doc_id"])
    lone = {doc_ids.pop() for doc_ids in carriers.values() if len(doc_ids) == 1}
    return next(record for record in sorted(records, key=lambda r: r["id"]) if record["id"] in lone)


class CountingEncoder:
    """A real encoder, keeping the texts it was asked to encode."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.texts_seen: list[str] = []

    def __getattr__(self, name):
        return getattr(self.encoder, name)

    def encode_texts(self, texts, token_counts=None):
        self.texts_seen += texts
        return self.encoder.encode_texts(texts, token_counts)


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def make_resources(corpus_uri: str, lance_uri: str, cache_dir: Path, registry_path: Path = MODELS_YAML) -> dict:
    return local_resources(corpus_uri, lance_uri, cache_dir, registry_path, device="cpu")
