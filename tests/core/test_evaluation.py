from embedding_assets.core.evaluation import EVAL_SET_PATH, EvalQuery, build_eval_set, evaluate_retrieval, load_eval_set


def test_the_shipped_evaluation_set_is_exactly_what_the_build_gives(stdlib_table):
    shipped = load_eval_set(EVAL_SET_PATH)
    assert shipped == build_eval_set(stdlib_table)
    assert len(shipped) == 300
    ids = set(stdlib_table.column("id").to_pylist())
    assert all(query.relevant and set(query.relevant) <= ids for query in shipped)
    assert len({query.query for query in shipped}) == 300


def test_recall_and_mrr_count_only_queries_whose_documents_are_in_the_corpus(store, minilm_encoder, minilm_spec):
    from datetime import datetime, timezone

    from embedding_assets.core.corpus_sync import sync_corpus_shard
    from embedding_assets.core.embedding_run import embed_shard
    from embedding_assets.core.sources import SourceDocument

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
