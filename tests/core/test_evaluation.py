from datetime import datetime, timedelta, timezone

import numpy as np

from embedding_assets.core.corpus_sync import sync_corpus_shard
from embedding_assets.core.documents import live_doc_ids
from embedding_assets.core.eval_sets import derive_eval_set, eval_set_for_corpus
from embedding_assets.core.evaluation import EvalQuery, RetrievalScore, evaluate_retrieval, query_vectors
from embedding_assets.core.promotion import QualityComparison
from embedding_assets.core.sharding import shard_of
from embedding_assets.core.sources import SourceDocument
from tests.builders import CountingEncoder

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _sync(store, documents: list[SourceDocument]) -> None:
    for shard in {shard_of(document.doc_id) for document in documents} | {"000"}:
        sync_corpus_shard(store, [d for d in documents if shard_of(d.doc_id) == shard], shard, NOW)


def test_the_derived_set_asks_by_title_or_by_a_held_out_sentence_never_the_first(store, sample_records):
    documents = [SourceDocument(r["id"], r["text"], r["title"], "test") for r in sample_records[:60]]
    # Files whose title is their own name: the query is a sentence held out of the body.
    body = "Parsing starts here. The tokenizer splits every line into words and numbers. It then stops."
    documents.append(SourceDocument("notes/parsing.txt", body, "parsing", "test"))
    _sync(store, documents)
    derived = dict((query.query, (query, kind)) for query, kind in derive_eval_set(store, size=200))
    assert derived["The tokenizer splits every line into words and numbers."][0].relevant == ("notes/parsing.txt",)
    assert "Parsing starts here." not in derived
    titled = {r["title"]: r["id"] for r in sample_records[:60]}
    by_title = [(query, kind) for query, kind in derived.values() if kind == "title"]
    assert len(by_title) >= 50 and all(titled[query.query] in query.relevant for query, _ in by_title)


def test_the_set_is_frozen_once_per_corpus_and_a_given_set_is_used_only_while_it_covers_it(store, sample_records):
    first = [SourceDocument(r["id"], r["text"], r["title"], "test") for r in sample_records[:40]]
    _sync(store, first)
    frozen = eval_set_for_corpus(store, None, "", NOW)
    assert frozen.queries and "derived from the corpus" in frozen.provenance
    # More documents arrive: the same frozen queries, so versions are compared on one set.
    _sync(store, first + [SourceDocument(r["id"], r["text"], r["title"], "test") for r in sample_records[40:60]])
    assert eval_set_for_corpus(store, None, "", NOW + timedelta(hours=1)) == frozen
    # A set given by the user that covers the corpus wins; one about other documents does not.
    given = [EvalQuery("anything", (first[0].doc_id,))]
    assert eval_set_for_corpus(store, given, "mine.jsonl", NOW).queries == given
    assert eval_set_for_corpus(store, [EvalQuery("x", ("not-here",))], "other.jsonl", NOW) == frozen


def test_an_unmeasured_quality_gate_fails_closed():
    unmeasured = QualityComparison(RetrievalScore(0.0, 0.0, 0, 12), None, 0.02)
    assert not unmeasured.passed and "fails closed" in unmeasured.describe()
    assert QualityComparison(RetrievalScore(0.5, 0.4, 10, 0), None, 0.02).passed


def test_recall_and_mrr_count_only_queries_whose_documents_are_in_the_corpus(store, minilm_encoder, minilm_spec):
    from embedding_assets.core.embedding_run import embed_shard

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    texts = {
        "a": "Return the square root of x.",
        "b": "Open a file and return a stream.",
        "c": "Sort the list in place.",
    }
    sync_corpus_shard(store, [SourceDocument(k, v, None, "test") for k, v in texts.items()], "000", now)
    embed_shard(store, minilm_spec, lambda: minilm_encoder, "000", lambda: now)
    queries = [
        EvalQuery("square root of a number", ("a",)),
        EvalQuery("open a file", ("b",)),
        EvalQuery("something absent", ("zzz",)),
    ]
    score = evaluate_retrieval(store, minilm_spec.key, minilm_encoder, queries, k=1)
    assert (score.queries, score.skipped) == (2, 1)
    assert score.recall_at_k == 1.0 and score.mrr == 1.0


def test_query_vectors_are_encoded_once_per_model_version(store, minilm_spec, minilm_encoder):
    texts = ["how do I sort a list", "open a file for reading", "how do I sort a list"]
    counting = CountingEncoder(minilm_encoder)
    first = query_vectors(store, counting, texts)
    assert sorted(counting.texts_seen) == sorted(set(texts))
    assert np.allclose(first, minilm_encoder.encode_texts(texts).vectors, atol=1e-5)
    again = query_vectors(store, counting, [*texts, "a new query"])
    assert counting.texts_seen[-1:] == ["a new query"] and len(counting.texts_seen) == 3
    assert np.array_equal(again[:3], first)
    # Another version (other settings under the same weights) has vectors of its own.
    other = CountingEncoder(minilm_encoder)
    other.spec = minilm_spec.model_copy(update={"key": "minilm-other", "window_overlap": 16})
    query_vectors(store, other, texts[:1])
    assert other.texts_seen == texts[:1]


def test_live_doc_ids_answers_only_the_ids_asked_about_and_not_tombstones(store):
    ids = [doc_id for doc_id in (f"doc-{n}" for n in range(200)) if shard_of(doc_id) == "000"][:3]
    documents = [SourceDocument(doc_id, f"The text of {doc_id}, about one thing.", None, "test") for doc_id in ids]
    sync_corpus_shard(store, documents, "000", NOW)
    sync_corpus_shard(store, documents[:2], "000", NOW + timedelta(hours=1))
    assert live_doc_ids(store, [ids[0], ids[2], "absent"]) == {ids[0]}
