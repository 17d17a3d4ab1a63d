from datetime import datetime, timezone

from embedding_assets.core import change_plan
from embedding_assets.core.change_plan import plan_changes
from embedding_assets.core.corpus_sync import sync_corpus_shard
from embedding_assets.core.minhash import MinHasher
from embedding_assets.core.sharding import shard_of
from embedding_assets.core.sources import SourceDocument

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_the_source_is_compared_a_batch_at_a_time_and_what_left_it_is_found_by_streaming(store, monkeypatch):
    """Batches of two source records (one store lookup each) find the same change as one pass would."""
    monkeypatch.setattr(change_plan, "IN_LIST_SIZE", 2)
    ids = [doc_id for doc_id in (f"doc-{n}" for n in range(400)) if shard_of(doc_id) == "000"][:6]
    texts = {doc_id: f"The page of {doc_id}: what it does, and why it is here." for doc_id in ids}
    sync_corpus_shard(store, [SourceDocument(i, t, None, "test") for i, t in texts.items()], "000", NOW)
    source = [SourceDocument(i, t, None, "test") for i, t in texts.items() if i != ids[5]]
    source[0] = SourceDocument(ids[0], "An edited page, with other words in it altogether.", None, "test")
    source.append(SourceDocument("added-doc", "A page that was not there before this change.", None, "test"))
    plan = plan_changes(store, source, MinHasher())
    assert (plan.added, plan.edited, plan.removed) == (1, 1, 1)
    assert set(plan.ingest_shards) == {"000", shard_of("added-doc")}
    assert plan_changes(store, source, MinHasher()).digest == plan.digest
    unchanged = plan_changes(store, [SourceDocument(i, t, None, "test") for i, t in texts.items()], MinHasher())
    assert unchanged.empty
