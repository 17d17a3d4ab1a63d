"""The evaluation set the quality gate measures with: never vacuous, frozen once per corpus.

A set given by the user (`EVAL_SET`) is used while it covers the corpus. Otherwise the set is
derived from the corpus itself: a document's title is the query for it where the title says
something (not the file name again, not shared by other contents), else a sentence held out of
the document's body (never the first, which often restates the title). The sample is the
documents with the smallest sha1 of their content hash, so it does not depend on the order of
runs or on which shard changed. It is frozen in the `eval_queries` table with its provenance and
reused until most of its documents have left the corpus, so a version is compared with the one
before it on the same queries.
"""

import hashlib
import heapq
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath

import pyarrow as pa

from embedding_assets.core.documents import LIVE_DOCUMENTS, live_doc_ids
from embedding_assets.core.evaluation import EvalQuery
from embedding_assets.core.schemas import EVAL_QUERIES_SCHEMA
from embedding_assets.core.store import LanceStore, scan, scan_batches, scan_in

DERIVED_SET_SIZE = 200
# A set applies to the corpus while at least this share of its queries has a relevant live document.
MIN_COVERAGE = 0.5
MIN_QUERY_WORDS = 5
MAX_QUERY_WORDS = 40
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class EvalSet:
    queries: list[EvalQuery]
    # Where the queries came from: the user's file, or how and when they were derived.
    provenance: str


def coverage(store: LanceStore, queries: list[EvalQuery]) -> float:
    """The share of `queries` with a relevant document still live (only their ids are looked up)."""
    if not queries:
        return 0.0
    live = live_doc_ids(store, {doc_id for query in queries for doc_id in query.relevant})
    return sum(any(doc_id in live for doc_id in query.relevant) for query in queries) / len(queries)


def _rank(content_hash: str) -> bytes:
    return hashlib.sha1(content_hash.encode()).digest()


def held_out_sentence(text: str) -> str | None:
    """The longest sentence after the first with a query's length, if the text has one."""
    sentences = [s.strip() for s in _SENTENCE_END.split(text)[1:]]
    fitting = [s for s in sentences if MIN_QUERY_WORDS <= len(s.split()) <= MAX_QUERY_WORDS]
    return max(fitting, key=lambda s: (len(s), s), default=None)


def _informative_title(title: str | None, doc_id: str) -> bool:
    """A title that is more than the document's own file name."""
    if not title or len(title.strip()) < 3:
        return False
    return title.strip().lower() not in {doc_id.lower(), PurePosixPath(doc_id).stem.lower()}


def _sample(store: LanceStore, size: int) -> list[dict]:
    """The `size` live texts (or captions) of smallest rank, streamed: memory is bounded by `size`."""
    columns = ["doc_id", "title", "text", "content_hash"]
    batches = scan_batches(store.table("documents"), f"{LIVE_DOCUMENTS} AND text != ''", columns)
    rows = (row for batch in batches for row in batch.to_pylist())
    return heapq.nsmallest(size, rows, key=lambda row: (_rank(row["content_hash"]), row["doc_id"]))


def derive_eval_set(store: LanceStore, size: int = DERIVED_SET_SIZE) -> list[tuple[EvalQuery, str]]:
    """(query, kind) pairs drawn from the live corpus; kind is `title` or `held_out_sentence`."""
    sample = _sample(store, size * 2)
    table = store.table("documents")
    relevant: dict[str, set[str]] = {}
    for part in scan_in(table, "content_hash", {row["content_hash"] for row in sample}, ["doc_id", "content_hash"]):
        for doc_id, content in zip(part.column("doc_id").to_pylist(), part.column("content_hash").to_pylist()):
            relevant.setdefault(content, set()).add(doc_id)
    contents_of_title: dict[str, set[str]] = {}
    titles = {row["title"] for row in sample if row["title"]}
    for part in scan_in(table, "title", titles, ["title", "content_hash"], LIVE_DOCUMENTS):
        for title, content in zip(part.column("title").to_pylist(), part.column("content_hash").to_pylist()):
            contents_of_title.setdefault(title, set()).add(content)
    derived, seen = [], set()
    for row in sample:
        title = row["title"]
        if _informative_title(title, row["doc_id"]) and len(contents_of_title.get(title, ())) == 1:
            query, kind = title.strip(), "title"
        else:
            query, kind = held_out_sentence(row["text"]), "held_out_sentence"
        if query and query not in seen:
            seen.add(query)
            derived.append((EvalQuery(query, tuple(sorted(relevant[row["content_hash"]]))), kind))
        if len(derived) == size:
            break
    return derived


def _frozen(store: LanceStore) -> EvalSet | None:
    rows = scan(store.table("eval_queries")).to_pylist()
    if not rows:
        return None
    newest = max(row["set_id"] for row in rows)
    current = [row for row in rows if row["set_id"] == newest]
    kinds = sorted({row["kind"] for row in current})
    provenance = (
        f"derived from the corpus at {current[0]['built_at']:%Y-%m-%d %H:%M} UTC "
        f"({len(current)} queries: {', '.join(kinds)} -> document), frozen as set {newest}"
    )
    return EvalSet([EvalQuery(row["query"], tuple(row["relevant"])) for row in current], provenance)


def freeze(store: LanceStore, derived: list[tuple[EvalQuery, str]], now: datetime) -> None:
    set_id = now.strftime("%Y%m%dT%H%M%S")
    rows = [
        {"set_id": set_id, "query": query.query, "relevant": list(query.relevant), "kind": kind, "built_at": now}
        for query, kind in derived
    ]
    store.table("eval_queries").add(pa.Table.from_pylist(rows, schema=EVAL_QUERIES_SCHEMA))


def eval_set_for_corpus(store: LanceStore, given: list[EvalQuery] | None, given_name: str, now: datetime) -> EvalSet:
    """The user's set if it covers the corpus, else the frozen derived one (derived and frozen now if
    there is none, or if the corpus moved away from it)."""
    if given and coverage(store, given) >= MIN_COVERAGE:
        return EvalSet(given, f"{given_name} ({len(given)} queries)")
    frozen = _frozen(store)
    if frozen is not None and coverage(store, frozen.queries) >= MIN_COVERAGE:
        return frozen
    derived = derive_eval_set(store)
    if derived:
        freeze(store, derived, now)
    return _frozen(store) or EvalSet([], "the corpus has no text to derive queries from")
