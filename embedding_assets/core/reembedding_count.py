"""Counting and timing what a version's backfill will do, for its re-embedding plan.

The plan asks the embedding stage's own questions (`plan_shard`, the stored-vector lookup,
`encoding_order`) across every shard, so its `calls` are the representatives the backfill will
really encode after exact and near-duplicate reuse; it tokenizes them with the version's tokenizer
to count windows and tokens, and times a small sample on the device the run has.
"""

import time
from collections import Counter

from embedding_assets.core.documents import live_content_modalities, texts_by_content
from embedding_assets.core.embedding_run.encode import encoding_order
from embedding_assets.core.embedding_run.plan import by_representative, plan_shard
from embedding_assets.core.embedding_run.rows import complete_vector_sets, expected_window_count
from embedding_assets.core.reembedding_plan import ReembeddingPlan
from embedding_assets.core.retained import open_retained_table
from embedding_assets.core.store import LanceStore, scan_in
from gpu_ops.encoder import SPECIAL_TOKENS, Encoder
from gpu_ops.registry import ModelSpec

# Representatives timed on the device: enough for a steady rate, a few seconds of a GPU.
SAMPLE_CONTENTS = 32
# Contents read at once while counting windows and tokens.
TOKENIZE_CHUNK = 1_024
# Characters tokenized at once: token spans are Python tuples, so a chunk of the corpus's longest texts (which
# come last, and grow longer as the corpus grows) took 900 MB at 250,000 documents when tokenized whole.
TOKENIZE_CHARS = 500_000


def _stored_representatives(store: LanceStore, table, spec: ModelSpec, contents: set[str]) -> set[str]:
    """Representatives with a complete set of vectors in the version's table or among those it retained."""
    found: set[str] = set()
    for source in [t for t in (table, open_retained_table(store, spec.key)) if t is not None]:
        columns = ["doc_id", "chunk", "origin_hash", "vector", "generated_at"]
        for part in scan_in(source, "origin_hash", contents - found, columns):
            found |= complete_vector_sets(part).keys()
    return found


def plan_reembedding(
    store: LanceStore,
    spec: ModelSpec,
    encoder: Encoder,
    shards: list[str],
    concurrent_runs: int,
    load_seconds: float,
    gpu_hour_usd: float = 0.0,
    sample_contents: int = SAMPLE_CONTENTS,
) -> ReembeddingPlan:
    """The plan of embedding every shard of `spec`'s version from where its table stands now."""
    # Created as the embedding stage creates it, recording the settings that shape its vectors.
    table = store.embeddings_table(spec.key, spec.dim, spec.vector_settings(), spec.vector_precision)
    todo, per_shard_representatives, shards_with_work = [], 0, 0
    documents = up_to_date = held = 0
    for shard in shards:
        shard_plan = plan_shard(store, spec, table, shard)
        documents += shard_plan.documents
        up_to_date += shard_plan.up_to_date
        held += len(shard_plan.held)
        todo += shard_plan.todo
        per_shard_representatives += len(by_representative(list(shard_plan.todo)))
        shards_with_work += bool(shard_plan.todo)
    stored = _stored_representatives(store, table, spec, set(by_representative(todo)))
    remaining = [p for p in todo if p.representative_hash not in stored]
    ordered, documents_of = encoding_order(store, remaining)
    kinds = Counter(p.dup_kind for p in remaining)

    calls, windows, tokens, quarantined, callable_contents = 0, 0, 0, 0, []
    images = (
        {c for c, modality in live_content_modalities(store).items() if modality != "text"}
        if spec.modality == "multimodal"
        else set()
    )
    for start in range(0, len(ordered), TOKENIZE_CHUNK):
        chunk = ordered[start : start + TOKENIZE_CHUNK]
        texts = texts_by_content(store, chunk)
        with_text = [content for content in chunk if texts.get(content)]
        lengths = dict(zip(with_text, _token_counts(encoder, [texts[c] for c in with_text])))
        for content in chunk:
            count = lengths.get(content)
            if count is not None and spec.max_document_tokens is not None and count > spec.max_document_tokens:
                quarantined += len(documents_of[content])
                continue
            if count is None and content not in images:
                continue
            calls += 1
            if count is not None:
                callable_contents.append(content)
                pieces = expected_window_count(count, spec)
                stride = spec.window_tokens - spec.window_overlap
                windows += pieces
                # As the encoders count: a local model's windows with their special tokens, a provider's without.
                extra = 0 if spec.backend == "openai" else SPECIAL_TOKENS
                tokens += sum(min(spec.window_tokens, count - k * stride) + extra for k in range(pieces))
    sample_calls, sample_seconds = _timed_sample(store, encoder, callable_contents, sample_contents)
    return ReembeddingPlan(
        model_version=spec.key,
        documents=documents,
        to_write=len(todo),
        up_to_date=up_to_date,
        reuse_exact=kinds["exact"],
        reuse_near=kinds["near"],
        reuse_stored=len(todo) - len(remaining),
        calls=calls,
        calls_if_shards_race=max(calls, per_shard_representatives - len(stored)),
        quarantined=quarantined + held,
        windows=windows,
        tokens=tokens,
        shards_to_run=shards_with_work,
        device=f"{encoder.device} ({encoder.dtype})",
        sample_calls=sample_calls,
        sample_seconds=sample_seconds,
        load_seconds=load_seconds,
        concurrent_runs=max(1, concurrent_runs),
        price_per_1k_tokens=spec.price_per_1k_tokens,
        batch_api=spec.batch_api,
        gpu_hour_usd=gpu_hour_usd,
    )


def _token_counts(encoder: Encoder, texts: list[str]) -> list[int]:
    """Each text's token count, tokenizing at most about TOKENIZE_CHARS characters at once."""
    counts, batch, size = [], [], 0
    for text in texts:
        batch.append(text)
        size += len(text)
        if size >= TOKENIZE_CHARS:
            counts += map(len, encoder.token_spans(batch))
            batch, size = [], 0
    return counts + list(map(len, encoder.token_spans(batch))) if batch else counts


def _timed_sample(store: LanceStore, encoder: Encoder, contents: list[str], size: int) -> tuple[int, float]:
    """Representatives spread over the length order (short to long), encoded once to warm up and once timed; only
    the sample's texts are read (keeping every callable text for it held the corpus's text in memory).

    Not for a hosted model: its rate is the provider's rate limits and queue, which a few paid requests
    do not measure (its plan gives no ETA; its cost needs none)."""
    if not contents or size <= 0 or encoder.device == "hosted":
        return 0, 0.0
    step = max(1, len(contents) // size)
    chosen = contents[::step][:size]
    texts = texts_by_content(store, chosen)
    sample = [texts[content] for content in chosen]
    spans = encoder.token_spans(sample)
    windows = [window for text, text_spans in zip(sample, spans) for window in encoder.windows(text, text_spans)]
    encoder.encode_texts(windows[:2])
    started = time.perf_counter()
    encoder.encode_texts(windows)
    return len(sample), time.perf_counter() - started
