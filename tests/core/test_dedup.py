from datetime import datetime, timezone

from embedding_assets.core.corpus_sync import sync_corpus_shard
from embedding_assets.core.dedup import SignatureIndex, choose_representatives, dedup_shard
from embedding_assets.core.dedup_change import dedup_change
from embedding_assets.core.minhash import BANDS, MinHasher
from embedding_assets.core.sharding import shard_of
from embedding_assets.core.sources import iter_source
from embedding_assets.core.store import LanceStore, scan
from embedding_assets.core.text import content_hash, normalize_text
from partitions import shard_partitions
from tests.builders import near_duplicate_pair, write_jsonl

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_greedy_rule_follows_hash_order_and_never_points_at_a_duplicate():
    # a < b < c < d; b~a, c~b (but not a), d~a and d~c.
    graph = {
        "a": [("b", 0.9), ("d", 0.86)],
        "b": [("a", 0.9), ("c", 0.9)],
        "c": [("b", 0.9), ("d", 0.95)],
        "d": [("a", 0.86), ("c", 0.95)],
    }
    asked = []

    def neighbours_of(hashes):
        asked.append(set(hashes))
        return {h: graph[h] for h in hashes}

    chosen = choose_representatives(["d", "b"], neighbours_of)
    # b is a duplicate of a; c is a representative (its only smaller neighbour b is not);
    # d has two representative neighbours, a (0.86) and c (0.95): it takes the most similar.
    assert chosen == {"b": ("a", 0.9), "d": ("c", 0.95)}
    assert choose_representatives(["c"], neighbours_of) == {"c": ("c", 1.0)}
    assert {"a", "b", "c", "d"} >= set().union(*asked)


def test_ties_go_to_the_smaller_hash():
    graph = {"a": [("c", 0.9)], "b": [("c", 0.9)], "c": [("a", 0.9), ("b", 0.9)]}
    assert choose_representatives(["c"], lambda hs: {h: graph[h] for h in hs}) == {"c": ("a", 0.9)}


def _build(uri: str, corpus_path, shard_order) -> LanceStore:
    store = LanceStore(uri)
    shards = shard_partitions.get_partition_keys()
    for shard in shards:
        sync_corpus_shard(store, iter_source(str(corpus_path), corpus_path.parent, shard), shard, NOW)
    hasher = MinHasher()
    for shard in shard_order:
        dedup_shard(store, shard, hasher)
    return store


def _signatures(store):
    columns = ["doc_id", "content_hash", "representative_hash", "dup_kind", "jaccard"]
    return sorted(scan(store.table("signatures"), None, columns).to_pylist(), key=lambda r: r["doc_id"])


def test_near_duplicates_across_shards_exact_duplicates_and_order_independence(tmp_path, sample_records):
    corpus_path = write_jsonl(tmp_path / "corpus.jsonl", sample_records)
    shards = shard_partitions.get_partition_keys()
    forward = _build(str(tmp_path / "forward"), corpus_path, shards)
    backward = _build(str(tmp_path / "backward"), corpus_path, list(reversed(shards)))
    assert _signatures(forward) == _signatures(backward)

    rows = {row["doc_id"]: row for row in _signatures(forward)}
    original, copy = near_duplicate_pair("")
    assert shard_of(original) != shard_of(copy)
    a, b = rows[original], rows[copy]
    representative, duplicate = (a, b) if a["content_hash"] < b["content_hash"] else (b, a)
    assert (
        representative["dup_kind"] == "self" and representative["representative_hash"] == representative["content_hash"]
    )
    assert duplicate["dup_kind"] == "near" and duplicate["representative_hash"] == representative["content_hash"]
    assert 0.85 <= duplicate["jaccard"] < 1.0

    exact = rows["exact-dup:copy"]
    first = next(
        r for r in rows.values() if r["content_hash"] == exact["content_hash"] and r["doc_id"] != "exact-dup:copy"
    )
    kinds = {exact["doc_id"]: exact["dup_kind"], first["doc_id"]: first["dup_kind"]}
    assert kinds[min(kinds)] == "self" and kinds[max(kinds)] == "exact"

    # Every representative is itself a representative: no chains.
    self_hashes = {r["content_hash"] for r in rows.values() if r["dup_kind"] != "near"}
    assert all(r["representative_hash"] in self_hashes for r in rows.values())
    bands = scan(forward.table("lsh_bands"), None, ["content_hash"]).column("content_hash").to_pylist()
    assert set(bands) == {r["content_hash"] for r in rows.values()}
    assert len(bands) == BANDS * len(set(bands))


def test_rerun_writes_nothing_and_a_deleted_representative_hands_over(tmp_path, sample_records):
    corpus_path = write_jsonl(tmp_path / "corpus.jsonl", sample_records)
    store = _build(str(tmp_path / "lance"), corpus_path, shard_partitions.get_partition_keys())
    versions = store.table("signatures").version
    hasher = MinHasher()
    for shard in shard_partitions.get_partition_keys():
        stats = dedup_shard(store, shard, hasher)
        assert stats.rows_written == 0 and stats.contents_signed == 0
    assert store.table("signatures").version == versions

    original, copy = near_duplicate_pair("")
    rows = {r["doc_id"]: r for r in _signatures(store)}
    representative = min((original, copy), key=lambda d: rows[d]["content_hash"])
    survivor = copy if representative == original else original
    write_jsonl(corpus_path, [r for r in sample_records if r["id"] != representative])
    for shard in {shard_of(representative), shard_of(survivor)}:
        sync_corpus_shard(store, iter_source(str(corpus_path), tmp_path, shard), shard, NOW)
    for shard in {shard_of(representative), shard_of(survivor)}:
        dedup_shard(store, shard, hasher)
    rows = {r["doc_id"]: r for r in _signatures(store)}
    assert representative not in rows
    assert rows[survivor]["dup_kind"] == "self"
    text = next(r["text"] for r in sample_records if r["id"] == survivor)
    assert rows[survivor]["representative_hash"] == content_hash(normalize_text(text))


def _cluster(base: str, count: int) -> list[str]:
    """`count` light edits of `base` (one word each, at different places): near duplicates of each
    other, so which of them represents the rest is a chain of greedy decisions."""
    words = base.split(" ")
    return [" ".join(words[:n] + [f"variant{n}"] + words[n + 1 :]) for n in range(2, 2 + count)]


def _apply_change(store: LanceStore, corpus_path, records: list[dict]) -> dict:
    write_jsonl(corpus_path, records)
    shards = shard_partitions.get_partition_keys()
    for shard in shards:
        sync_corpus_shard(store, iter_source(str(corpus_path), corpus_path.parent, shard), shard, NOW)
    return dedup_change(store, shards, SignatureIndex(store, MinHasher()))


def test_a_change_decides_again_only_what_it_can_move_and_agrees_with_a_full_run(tmp_path, sample_records):
    base = next(r["text"] for r in sample_records if r["id"] == "near-dup:original")
    cluster = [{"id": f"cluster:{n}", "title": None, "text": text} for n, text in enumerate(_cluster(base, 5))]
    records = sample_records + cluster
    corpus_path = write_jsonl(tmp_path / "corpus.jsonl", records)
    store = _build(str(tmp_path / "incremental"), corpus_path, shard_partitions.get_partition_keys())
    rows = {r["doc_id"]: r for r in _signatures(store)}
    cluster_ids = [r["id"] for r in cluster] + ["near-dup:original", "near-dup:copy-0"]
    head = min((doc_id for doc_id in cluster_ids if doc_id in rows), key=lambda d: rows[d]["content_hash"])

    lone = next(r for r in sample_records if r["id"].startswith("py:") and rows[r["id"]]["dup_kind"] == "self")
    changes = [
        # The cluster's representative leaves: the others elect again, possibly along a chain.
        [r for r in records if r["id"] != head],
        # An edit, an exact duplicate of a lone document, and a brand-new text.
        [
            *[r for r in records if r["id"] not in (head, "exact-dup:copy")],
            {"id": "exact-dup:copy", "title": None, "text": base + " Edited afterwards."},
            {"id": "added:twin", "title": None, "text": lone["text"]},
            {"id": "added:new", "title": None, "text": "A text about nothing any other document says, at all."},
        ],
        # The representative returns.
        records,
    ]
    for n, changed in enumerate(changes):
        moved = _apply_change(store, corpus_path, changed)
        fresh = _build(str(tmp_path / f"full-{n}"), corpus_path, shard_partitions.get_partition_keys())
        assert _signatures(store) == _signatures(fresh)
        bands = scan(store.table("lsh_bands"), None, ["content_hash"]).column("content_hash").to_pylist()
        fresh_bands = scan(fresh.table("lsh_bands"), None, ["content_hash"]).column("content_hash").to_pylist()
        assert sorted(bands) == sorted(fresh_bands)
        # Lookups, not a re-run: a handful of rows move, of about 250.
        assert 0 < sum(s.rows_written + s.rows_removed for s in moved.values()) < 20

    assert _apply_change(store, corpus_path, records) == {}


def test_a_full_build_signs_each_text_once_whatever_the_shard_order(tmp_path, sample_records):
    corpus_path = write_jsonl(tmp_path / "corpus.jsonl", sample_records)
    store = LanceStore(str(tmp_path / "lance"))
    shards = shard_partitions.get_partition_keys()
    for shard in shards:
        sync_corpus_shard(store, iter_source(str(corpus_path), corpus_path.parent, shard), shard, NOW)
    hasher = MinHasher()
    # The first shard's run bands (and signs) the whole corpus; the others find every neighbour's
    # MinHash kept with its bands, including neighbours in shards not yet deduplicated.
    signed = [dedup_shard(store, shard, hasher).contents_signed for shard in reversed(shards)]
    texts = scan(store.table("documents"), "deleted = false AND modality = 'text'", ["content_hash"])
    assert signed[0] == len(set(texts.column("content_hash").to_pylist())) and sum(signed[1:]) == 0
    kept = scan(store.table("content_minhashes"), None, ["content_hash"]).column("content_hash").to_pylist()
    assert sorted(kept) == sorted(set(texts.column("content_hash").to_pylist()))


def test_runs_banding_at_once_share_the_work_and_write_each_text_once(tmp_path, sample_records, monkeypatch):
    """A run that finds band rows another run committed since its own last write skips them: the two
    sign disjoint batches, and every text ends with exactly one set of band rows."""
    corpus_path = write_jsonl(tmp_path / "corpus.jsonl", sample_records)
    store = _build(str(tmp_path / "lance"), corpus_path, [])
    monkeypatch.setattr("embedding_assets.core.dedup.SIGN_BATCH", 16)
    first, second = SignatureIndex(store, MinHasher()), SignatureIndex(store, MinHasher())
    texts = len(first.text_hashes)
    write = first._write_bands
    done = {}

    def write_then_let_the_other_run_band(signatures):
        write(signatures)
        if not done:
            done["second"] = second.complete_bands(set(), start_at=0.5)

    monkeypatch.setattr(first, "_write_bands", write_then_let_the_other_run_band)
    assert first.complete_bands(set()) == 16
    assert done["second"] == texts - 16
    bands = scan(store.table("lsh_bands"), None, ["content_hash"]).column("content_hash").to_pylist()
    assert len(bands) == BANDS * texts and set(bands) == first.text_hashes
