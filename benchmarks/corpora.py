"""Benchmark inputs: the embedded default corpus, as records or as a JSONL source one can edit."""

import json
import re
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


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text) if len(p.strip()) >= 40]


def first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0]


def scaled_records(records: list[dict], size: int, total: int | None = None) -> list[dict]:
    """`size` documents drawn evenly from `total` (default `size`) grown from the embedded corpus, for runs far
    beyond its ~9,900 docstrings. Only real text, recombined as documentation sites recombine it:

    - every original docstring;
    - sections: each paragraph of a multi-paragraph docstring as its own page (a sentence-level split);
    - overviews: the first sentences of five consecutive docstrings (a module's summary page, a merge);
    - pages documenting two APIs `d` places apart in corpus order, for d = 1, 2, 3, … until `total` is
      reached (neighbours in the same module: new content, though a long docstring paired with several
      short ones yields near duplicates, as a real corpus holds).

    Sampling `size` evenly from one `total`-document corpus keeps the mix and the lengths of a smaller
    run the same as a larger one's, so two sizes differ in count only."""
    total = max(size, total or size)
    texts = [r for r in records if r["text"].strip()]
    grown = [{"id": r["id"], "title": r.get("title"), "text": r["text"]} for r in texts]
    for r in texts:
        sections = _paragraphs(r["text"])
        if len(sections) > 1:
            grown += [
                {"id": f"section:{r['id']}#{k}", "title": r.get("title"), "text": section}
                for k, section in enumerate(sections)
            ]
    for start in range(len(texts) - 4):
        group = texts[start : start + 5]
        grown.append(
            {
                "id": "overview:" + "+".join(r["id"] for r in group),
                "title": group[0].get("title"),
                "text": "\n".join(f"{r['id']}: {first_sentence(r['text'])}" for r in group),
            }
        )
    distance = 1
    while len(grown) < total and distance < len(texts):
        for first, second in zip(texts, texts[distance:]):
            grown.append(
                {
                    "id": f"pair{distance}:{first['id']}+{second['id']}",
                    "title": first.get("title"),
                    "text": f"{first['text']}\n\n{second['text']}",
                }
            )
        distance += 1
    grown = grown[:total]
    return [grown[k * total // size] for k in range(size)]
