"""The embedding stage for one (model version, shard).

Vectors are content-addressed: a row's `origin_hash` names the content its vector embeds,
so any row anywhere in the version's table with that origin_hash can be reused, and so can the
rows of deleted or changed content the run kept in the retained table (`core.retained`). Only
representatives with no such row reach the model, in groups sorted by length (for tight
token-budget batches) and committed group by group, so a killed run keeps its progress
and a rerun embeds only what was not committed.

What a content gives a version depends on the model's modality: a multimodal model embeds an
image (or a pair's image) as chunk 0 and then the windows of its text (a pair's caption, so a
pair is found by its image and by its caption); a text model embeds texts and captions only,
and skips images alone (counted in `skipped_modality`).
"""

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from embedding_assets.core.embedding_run.encode import LazyEncoder, encode_group, encoding_order
from embedding_assets.core.embedding_run.plan import PlannedDocument, by_representative, plan_shard
from embedding_assets.core.embedding_run.rows import arrow_rows, complete_vector_sets, document_rows, origin_of
from embedding_assets.core.hosted_batches import ShardBatchLedger
from embedding_assets.core.quarantine import QuarantineEntry, replace_quarantine
from embedding_assets.core.retained import open_retained_table, retain_documents
from embedding_assets.core.schemas import recorded_model_settings
from embedding_assets.core.sharding import shard_resolver
from embedding_assets.core.store import LanceStore, delete_in, scan_in, sql_literal, upsert
from gpu_ops.registry import ModelSpec

# Representatives encoded and committed together: the unit of progress a crash can lose.
COMMIT_GROUP_CONTENTS = 256


@dataclass
class EmbedStats:
    documents: int = 0
    up_to_date: int = 0
    documents_written: int = 0
    vectors_written: int = 0
    model_calls: int = 0
    windows_encoded: int = 0
    images_encoded: int = 0
    skipped_modality: int = 0
    batches: int = 0
    tokens: int = 0
    reused: Counter = field(default_factory=Counter)
    rows_deleted: int = 0
    # Rows of deleted or changed content kept in the retained table, and documents written from it.
    rows_retained: int = 0
    restored: int = 0
    quarantined: int = 0
    quarantine_reasons: Counter = field(default_factory=Counter)
    undeduplicated: int = 0
    seconds: float = 0.0
    encoder: object = None

    @property
    def docs_per_second(self) -> float:
        return self.documents_written / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class Progress:
    shard: str
    documents_done: int
    documents_total: int
    docs_per_second: float
    eta_seconds: float


@dataclass
class _ShardWriter:
    """Writes one shard's rows to the version's table and counts what it wrote, reused and deleted."""

    spec: ModelSpec
    shard: str
    table: object
    # doc_id -> its row ids when the run began: a rewritten document's ids it no longer has are stale.
    existing_ids: dict[str, set[str]]
    stats: EmbedStats

    def write(
        self,
        documents: list[PlannedDocument],
        vectors_of: dict[str, np.ndarray],
        origin_times: dict[str, datetime],
        computed: set[str],
    ) -> None:
        rows, stale = [], set()
        for planned in documents:
            origin = origin_of(planned.dup_kind, planned.representative_hash in computed)
            if origin != "computed":
                self.stats.reused[origin] += 1
            new = document_rows(
                planned.doc_id,
                planned.content_hash,
                origin,
                planned.representative_hash,
                vectors_of[planned.representative_hash],
                origin_times[planned.representative_hash],
            )
            rows += new
            stale |= self.existing_ids.get(planned.doc_id, set()) - {row.id for row in new}
        if not rows:
            return
        # Rows of a document that had none when the run began are appended: merging them on `id` joins the
        # version's table at every commit (benchmarks/, row 13), and a rerun after a kill plans what was
        # committed as written. A document that had rows is merged, so its row ids stay unique.
        fresh = [row for row in rows if row.doc_id not in self.existing_ids]
        rewritten = [row for row in rows if row.doc_id in self.existing_ids]
        if fresh:
            self.table.add(arrow_rows(fresh, self.spec, self.shard))
        if rewritten:
            upsert(self.table, arrow_rows(rewritten, self.spec, self.shard), on="id")
        # Rows a document no longer has (fewer windows than before): removed once its new rows are in.
        self.stats.rows_deleted += delete_in(self.table, "id", stale)
        self.stats.documents_written += len(documents)
        self.stats.vectors_written += len(rows)


class VersionSettingsChanged(ValueError):
    """A registered version's vector settings differ from those its table was created with."""


def _embeddings_table(store: LanceStore, spec: ModelSpec):
    """The version's table, refused before any model call if the registry changed what shapes its vectors."""
    table = store.embeddings_table(spec.key, spec.dim, spec.vector_settings(), spec.vector_precision)
    recorded = recorded_model_settings(table.schema)
    changed = spec.settings_changed_since(recorded) if recorded is not None else []
    if changed:
        raise VersionSettingsChanged(
            f"model version {spec.key} changed since its table {table.name} was created ({'; '.join(changed)}): "
            "its vectors were made with the recorded settings and new ones must not mix with them. Register the "
            f"new settings under a new key with a bumped revision (e.g. {spec.key}-r2, see `make register`), "
            "or restore the recorded settings in the registry"
        )
    table_dim = table.schema.field("vector").type.list_size
    if table_dim != spec.dim:
        raise ValueError(f"table {table.name} holds {table_dim}-d vectors but {spec.key} declares dim {spec.dim}")
    return table


def _reuse_stored(store: LanceStore, writer: _ShardWriter, todo: list[PlannedDocument]) -> list[PlannedDocument]:
    """Write every document whose representative already has vectors, in the version's table or among
    those it retained; return the rest."""
    grouped = by_representative(todo)
    retained = open_retained_table(store, writer.spec.key)
    for table in [t for t in (writer.table, retained) if t is not None]:
        for part in scan_in(
            table, "origin_hash", grouped, ["doc_id", "chunk", "origin_hash", "vector", "generated_at"]
        ):
            found = complete_vector_sets(part)
            documents = [p for content in found for p in grouped.pop(content)]
            writer.write(
                documents,
                {content: vectors for content, (vectors, _) in found.items()},
                {content: generated_at for content, (_, generated_at) in found.items()},
                computed=set(),
            )
            if table is retained:
                writer.stats.restored += len(documents)
    return [p for documents in grouped.values() for p in documents]


def _encode_missing(
    store: LanceStore,
    writers: dict[str, _ShardWriter],
    encoder: LazyEncoder,
    todo: list[PlannedDocument],
    now: Callable[[], datetime],
    progress: Callable[[Progress], None],
    commit_group: int,
) -> list[QuarantineEntry]:
    """Encode and commit `todo` (documents of any of the writers' shards) group by group, in one
    length-sorted stream; the quarantine entries the model's refusals produced. A content is counted
    in the shard of its first document."""
    held = []
    spec = next(iter(writers.values())).spec
    shard_for = shard_resolver(list(writers))
    ordered, documents_of = encoding_order(store, todo)
    started, total = time.monotonic(), len(todo)
    label = next(iter(writers)) if len(writers) == 1 else f"{len(writers)} shards"
    done = 0
    for start in range(0, len(ordered), commit_group):
        group = ordered[start : start + commit_group]
        encoded = encode_group(store, spec, encoder, group, documents_of)
        held += encoded.held
        for content, (windows, images) in encoded.sent.items():
            stats = writers[shard_for(documents_of[content][0].doc_id)].stats
            stats.model_calls += 1
            stats.windows_encoded += windows
            stats.images_encoded += images
        if encoded.sent:
            # Batches mix shards and a provider counts tokens per batch: the group's go to its first content's shard.
            stats = writers[shard_for(documents_of[next(iter(encoded.sent))][0].doc_id)].stats
            stats.batches += encoded.batches
            stats.tokens += encoded.tokens
        vectors_of = encoded.vectors
        written: dict[str, list[PlannedDocument]] = {shard: [] for shard in writers}
        for planned in (p for content in vectors_of for p in documents_of[content]):
            written[shard_for(planned.doc_id)].append(planned)
        for shard, writer in writers.items():
            writer.write(written[shard], vectors_of, dict.fromkeys(vectors_of, now()), computed=set(vectors_of))
        done += sum(len(documents_of[content]) for content in group)
        elapsed = time.monotonic() - started
        rate = done / elapsed if elapsed else 0.0
        progress(Progress(label, done, total, rate, (total - done) / rate if rate else 0.0))
    return held


def _finish(
    store: LanceStore, writer: _ShardWriter, quarantine: list[QuarantineEntry], now: Callable[[], datetime]
) -> None:
    """Held documents keep no rows; the stage's quarantine for this (shard, version) becomes `quarantine`."""
    held = {entry.doc_id for entry in quarantine}
    writer.stats.rows_deleted += delete_in(writer.table, "doc_id", held, f"shard = {sql_literal(writer.shard)}")
    replace_quarantine(store, "embed", writer.shard, quarantine, now(), writer.spec.key)
    writer.stats.quarantined = len(quarantine)
    writer.stats.quarantine_reasons = Counter(entry.reason for entry in quarantine)


def _with_ledger(encoder, ledger: ShardBatchLedger):
    if hasattr(encoder, "attach_batch_ledger"):
        encoder.attach_batch_ledger(ledger)
    return encoder


def embed_shard(
    store: LanceStore,
    spec: ModelSpec,
    load_encoder: Callable,
    shard: str,
    now: Callable[[], datetime],
    progress: Callable[[Progress], None] = lambda _: None,
    commit_group: int = COMMIT_GROUP_CONTENTS,
) -> EmbedStats:
    return embed_shards(store, spec, load_encoder, [shard], now, progress, commit_group)[shard]


def embed_shards(
    store: LanceStore,
    spec: ModelSpec,
    load_encoder: Callable,
    shards: list[str],
    now: Callable[[], datetime],
    progress: Callable[[Progress], None] = lambda _: None,
    commit_group: int = COMMIT_GROUP_CONTENTS,
) -> dict[str, EmbedStats]:
    """The embedding stage for `shards` of one version, with one encoding stream for all of them: a change
    touching every shard has a few contents in each, and sixteen small length-sorted streams pad and batch
    three times worse on a CPU than one (benchmarks/, row 3). A hosted version's Batch API jobs are kept
    per shard, so such a version runs one shard at a time."""
    if not shards:
        return {}
    if spec.batch_api and len(shards) > 1:
        raise ValueError(f"{spec.key} uses the Batch API: embed its shards one at a time")
    started = time.monotonic()
    table = _embeddings_table(store, spec)
    # A hosted version's Batch API jobs are kept with the shard (its batch ids outlive a killed run).
    ledger = ShardBatchLedger(store, spec.key, shards[0])
    encoder = LazyEncoder(lambda: _with_ledger(load_encoder(), ledger))
    writers: dict[str, _ShardWriter] = {}
    held: dict[str, list[QuarantineEntry]] = {}
    remaining: list[PlannedDocument] = []
    for shard in shards:
        plan = plan_shard(store, spec, table, shard)
        stats = EmbedStats(
            documents=plan.documents,
            up_to_date=plan.up_to_date,
            skipped_modality=plan.skipped_modality,
            undeduplicated=plan.undeduplicated,
        )
        # Kept before anything is deleted or overwritten, so a killed run has lost no vector.
        stats.rows_retained = retain_documents(store, spec.key, table, shard, plan.superseded, now())
        stats.rows_deleted += delete_in(table, "doc_id", plan.orphans, f"shard = {sql_literal(shard)}")
        writers[shard] = _ShardWriter(spec, shard, table, plan.existing_ids, stats)
        remaining += _reuse_stored(store, writers[shard], list(plan.todo))
        held[shard] = list(plan.held)
    shard_for = shard_resolver(shards)
    for entry in _encode_missing(store, writers, encoder, remaining, now, progress, commit_group):
        held[shard_for(entry.doc_id)].append(entry)
    for shard, writer in writers.items():
        _finish(store, writer, held[shard], now)
    if encoder.loaded is not None and hasattr(encoder.loaded, "attach_batch_ledger"):
        ledger.clear()
    seconds = time.monotonic() - started
    for writer in writers.values():
        writer.stats.seconds = seconds
        writer.stats.encoder = encoder.loaded
    return {shard: writer.stats for shard, writer in writers.items()}
