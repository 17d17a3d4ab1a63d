"""Benchmark inputs: the embedded default corpus, as records or as a JSONL source one can edit."""

import json
from pathlib import Path

import pyarrow.parquet as pq

from embedding_assets.core.sharding import shard_of
from embedding_assets.core.sources.stdlib_corpus import stdlib_corpus_path
from embedding_assets.core.text import normalize_text


def stdlib_records(cache_dir: Path) -> list[dict]:
    return pq.read_table(stdlib_corpus_path(cache_dir)).to_pylist()


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(json.dumps({"id": r["id"], "title": r.get("title"), "text": r["text"]}) + "\n" for r in records)
    )
    return path


def distinct_texts(records: list[dict], count: int, min_chars: int = 40, max_chars: int = 2000) -> list[str]:
    """`count` distinct normalized texts, in corpus order (so every run measures the same ones)."""
    texts = dict.fromkeys(normalize_text(r["text"]) for r in records if min_chars <= len(r["text"]) <= max_chars)
    chosen = list(texts)[:count]
    if len(chosen) < count:
        raise ValueError(f"the corpus has only {len(chosen)} distinct texts of that size")
    return chosen


def one_shard_records(texts: list[str], shard: str = "000") -> list[dict]:
    """The texts under ids that all fall in `shard`, so one run embeds them all."""
    ids = (f"bench-{n}" for n in range(10_000_000))
    return [{"id": next(i for i in ids if shard_of(i) == shard), "text": text} for text in texts]


def varied_records(records: list[dict], size: int) -> list[dict]:
    """At least `size` documents grown from the embedded corpus with real variations, as a team's corpus
    grows: every original docstring; each docstring joined with the next one (a page that documents two
    neighbouring APIs: new content, not a near duplicate); and originals under a second id prefixed
    with their title (a copy with a heading: a near or exact duplicate, as real corpora hold)."""
    texts = [r for r in records if r["text"].strip()]
    varied = [{"id": r["id"], "title": r.get("title"), "text": r["text"]} for r in texts]
    for first, second in zip(texts, texts[1:]):
        varied.append(
            {
                "id": f"pair:{first['id']}+{second['id']}",
                "title": first.get("title"),
                "text": f"{first['text']}\n\n{second['text']}",
            }
        )
    for r in texts[: max(0, size - len(varied))]:
        varied.append(
            {"id": f"titled:{r['id']}", "title": r.get("title"), "text": f"{r.get('title') or r['id']}: {r['text']}"}
        )
    return varied
