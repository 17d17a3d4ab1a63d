"""Fusion, duplicate collapse and phrase queries of text and hybrid search; canary buckets."""

from datetime import datetime, timezone

from lancedb.query import MatchQuery, PhraseQuery

from embedding_assets.core.canary import Canary, routed_to_canary
from embedding_assets.core.text_search import RRF_K, collapse_duplicates, fuse, text_query


def _row(doc_id: str, content_hash: str | None = None) -> dict:
    return {"doc_id": doc_id, "content_hash": content_hash or f"hash-{doc_id}"}


def test_reciprocal_rank_fusion_favours_what_both_lists_rank():
    vector = [_row("a"), _row("b"), _row("c")]
    text = [_row("c"), _row("d")]
    fused = fuse([vector, text], 4)
    assert [row["doc_id"] for row in fused] == ["c", "a", "b", "d"]  # b and d tie: first list first
    assert fused[0]["_score"] == 1 / (RRF_K + 3) + 1 / (RRF_K + 1)


def test_exact_duplicates_collapse_to_the_best_ranked():
    rows = [_row("a", "same"), _row("b"), _row("copy-of-a", "same"), _row("c")]
    assert [row["doc_id"] for row in collapse_duplicates(rows)] == ["a", "b", "c"]


def test_a_quoted_query_is_an_exact_phrase():
    assert isinstance(text_query('"read a file"'), PhraseQuery)
    assert isinstance(text_query("read a file"), MatchQuery)
    assert isinstance(text_query('"'), MatchQuery)


def test_canary_routing_is_sticky_and_a_larger_share_only_adds_callers():
    def canary(share: float) -> Canary:
        return Canary("live", "candidate", "embeddings__candidate", 3, share, datetime.now(timezone.utc), "test")

    callers = [f"user-{n}" for n in range(2000)]
    at_10 = {caller for caller in callers if routed_to_canary(canary(0.1), caller)}
    at_50 = {caller for caller in callers if routed_to_canary(canary(0.5), caller)}
    assert at_10 < at_50 and 140 < len(at_10) < 260 and 900 < len(at_50) < 1100
    assert at_10 == {caller for caller in callers if routed_to_canary(canary(0.1), caller)}
    assert not routed_to_canary(None, "user-1")
