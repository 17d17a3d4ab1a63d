"""The embedding stage for one (model version, shard).

Vectors are content-addressed: a row's `origin_hash` names the content its vector embeds,
so any row anywhere in the version's table with that origin_hash can be reused. Only
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
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np
import pyarrow as pa

from embedding_assets.core.documents import (
    images_by_content,
    iter_texts_by_content,
    live_documents_with_modality,
    texts_by_content,
)
from embedding_assets.core.images import ImageRefused, open_image
from embedding_assets.core.quarantine import QuarantineEntry, quarantined, replace_quarantine
from embedding_assets.core.schemas import embeddings_schema
from embedding_assets.core.store import LanceStore, delete_in, fixed_size_lists, scan, scan_in, sql_literal, upsert
from gpu_ops.encoder import EncodedBatch
from gpu_ops.registry import ModelSpec
from gpu_ops.windows import window_count

# Representatives encoded and committed together: the unit of progress a crash can lose.
COMMIT_GROUP_CONTENTS = 256
ORIGIN_BY_KIND = {"exact": "exact_dup", "near": "near_dup"}
# Document modalities each model modality embeds: a text model reads a pair's caption, not its image.
EMBEDDED_MODALITIES = {"text": ("text", "pair"), "multimodal": ("text", "image", "pair")}


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


@dataclass(frozen=True)
class PlannedDocument:
    doc_id: str
    content_hash: str
    representative_hash: str
    dup_kind: str


def row_id(doc_id: str, chunk: int, chunks: int) -> str:
    return doc_id if chunks == 1 else f"{doc_id}#{chunk}"


def documents_for(spec: ModelSpec, documents: dict[str, tuple[str, str]]) -> tuple[dict[str, str], int]:
    """doc_id -> content_hash of the documents (doc_id -> (content_hash, modality)) the version embeds,
    and how many it skips for their modality."""
    wanted = EMBEDDED_MODALITIES[spec.modality]
    kept = {doc_id: content for doc_id, (content, modality) in documents.items() if modality in wanted}
    return kept, len(documents) - len(kept)


def _joined(parts: list[EncodedBatch]) -> EncodedBatch:
    """Several encoder calls' results as one, in order (refused inputs' indices shifted to match)."""
    parts = [part for part in parts if len(part.vectors)]
    failures, offset = {}, 0
    for part in parts:
        failures |= {offset + index: failure for index, failure in part.failures.items()}
        offset += len(part.vectors)
    vectors = np.concatenate([part.vectors for part in parts])
    return EncodedBatch(vectors, sum(part.batches for part in parts), sum(part.tokens for part in parts), failures)


class ShardEmbedder:
    def __init__(
        self,
        store: LanceStore,
        spec: ModelSpec,
        load_encoder: Callable,
        shard: str,
        now: Callable[[], datetime],
        commit_group: int = COMMIT_GROUP_CONTENTS,
    ):
        self.store = store
        self.spec = spec
        self._load_encoder = load_encoder
        self._encoder = None
        self.shard = shard
        self.now = now
        self.commit_group = commit_group
        self.table = store.embeddings_table(spec.key, spec.dim)
        table_dim = self.table.schema.field("vector").type.list_size
        if table_dim != spec.dim:
            raise ValueError(
                f"table {self.table.name} holds {table_dim}-d vectors but {spec.key} declares dim {spec.dim}"
            )
        self.stats = EmbedStats()
        self.quarantine: list[QuarantineEntry] = []
        self.existing_ids: dict[str, set[str]] = {}

    @property
    def encoder(self):
        """Loaded on first use: a shard with nothing new to embed never loads the model."""
        if self._encoder is None:
            self._encoder = self._load_encoder()
        return self._encoder

    # -- planning ---------------------------------------------------------------------------
    def plan(self) -> list[PlannedDocument]:
        in_shard = f"shard = {sql_literal(self.shard)}"
        documents, self.stats.skipped_modality = documents_for(
            self.spec, live_documents_with_modality(self.store, self.shard)
        )
        signatures = {
            row["doc_id"]: row
            for row in scan(
                self.store.table("signatures"), in_shard, ["doc_id", "content_hash", "representative_hash", "dup_kind"]
            ).to_pylist()
        }
        rows_by_doc: dict[str, list[dict]] = {}
        for row in scan(self.table, in_shard, ["id", "doc_id", "content_hash", "origin", "origin_hash"]).to_pylist():
            rows_by_doc.setdefault(row["doc_id"], []).append(row)
        self.existing_ids = {doc_id: {row["id"] for row in rows} for doc_id, rows in rows_by_doc.items()}
        held = quarantined(self.store, "embed", self.shard, self.spec.key)

        self.stats.documents = len(documents)
        orphans = [doc_id for doc_id in rows_by_doc if doc_id not in documents]
        self.stats.rows_deleted += delete_in(self.table, "doc_id", orphans, in_shard)
        todo = []
        for doc_id, content in sorted(documents.items()):
            signature = signatures.get(doc_id)
            if signature is None or signature["content_hash"] != content:
                self.stats.undeduplicated += 1
                planned = PlannedDocument(doc_id, content, content, "self")
            else:
                planned = PlannedDocument(doc_id, content, signature["representative_hash"], signature["dup_kind"])
            if doc_id in held and held[doc_id].content_hash == content:
                self.quarantine.append(held[doc_id])
            elif self._up_to_date(planned, rows_by_doc.get(doc_id, [])):
                self.stats.up_to_date += 1
            else:
                todo.append(planned)
        return todo

    @staticmethod
    def _up_to_date(planned: PlannedDocument, rows: list[dict]) -> bool:
        expected = ORIGIN_BY_KIND.get(planned.dup_kind)
        return bool(rows) and all(
            row["content_hash"] == planned.content_hash
            and row["origin_hash"] == planned.representative_hash
            and (row["origin"] == expected if expected else row["origin"] in ("computed", "cache"))
            for row in rows
        )

    def _hold(self, planned: PlannedDocument, reason: str, detail: str) -> None:
        self.quarantine.append(QuarantineEntry(planned.doc_id, reason, detail, planned.content_hash))

    # -- writing ----------------------------------------------------------------------------
    def _write(
        self,
        documents: list[PlannedDocument],
        vectors_of: dict[str, np.ndarray],
        origin_times: dict[str, datetime],
        computed: set[str],
    ) -> None:
        ids, doc_ids, chunks, contents, origins, origin_hashes, generated, blocks = [], [], [], [], [], [], [], []
        stale: set[str] = set()
        for planned in documents:
            vectors = vectors_of[planned.representative_hash]
            origin = ORIGIN_BY_KIND.get(planned.dup_kind) or (
                "computed" if planned.representative_hash in computed else "cache"
            )
            if origin != "computed":
                self.stats.reused[origin] += 1
            new_ids = [row_id(planned.doc_id, k, len(vectors)) for k in range(len(vectors))]
            ids += new_ids
            doc_ids += [planned.doc_id] * len(vectors)
            chunks += list(range(len(vectors)))
            contents += [planned.content_hash] * len(vectors)
            origins += [origin] * len(vectors)
            origin_hashes += [planned.representative_hash] * len(vectors)
            generated += [origin_times[planned.representative_hash]] * len(vectors)
            blocks.append(vectors)
            stale |= self.existing_ids.get(planned.doc_id, set()) - set(new_ids)
        if not ids:
            return
        flat = np.concatenate(blocks).astype(np.float32, copy=False).reshape(-1)
        count = len(ids)
        rows = pa.table(
            {
                "id": ids,
                "doc_id": doc_ids,
                "chunk": pa.array(chunks, pa.int32()),
                "shard": [self.shard] * count,
                "content_hash": contents,
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(flat), self.spec.dim),
                "model_id": [self.spec.model_id] * count,
                "model_version": [self.spec.key] * count,
                "dim": pa.array([self.spec.dim] * count, pa.int32()),
                "generated_at": generated,
                "origin": origins,
                "origin_hash": origin_hashes,
            },
            schema=embeddings_schema(self.spec.dim),
        )
        upsert(self.table, rows, on="id")
        # Rows a document no longer has (fewer windows than before): removed once its new rows are in.
        self.stats.rows_deleted += delete_in(self.table, "id", stale)
        self.stats.documents_written += len(documents)
        self.stats.vectors_written += count

    # -- reuse ------------------------------------------------------------------------------
    def reuse_stored(self, todo: list[PlannedDocument]) -> list[PlannedDocument]:
        """Write every document whose representative already has vectors; return the rest."""
        by_representative: dict[str, list[PlannedDocument]] = {}
        for planned in todo:
            by_representative.setdefault(planned.representative_hash, []).append(planned)
        for part in scan_in(
            self.table, "origin_hash", by_representative, ["doc_id", "chunk", "origin_hash", "vector", "generated_at"]
        ):
            found = _complete_vector_sets(part)
            self._write(
                [p for content in found for p in by_representative.pop(content)],
                {content: vectors for content, (vectors, _) in found.items()},
                {content: generated_at for content, (_, generated_at) in found.items()},
                computed=set(),
            )
        return [p for documents in by_representative.values() for p in documents]

    # -- encoding ---------------------------------------------------------------------------
    def encode_missing(self, todo: list[PlannedDocument], progress: Callable[[Progress], None]) -> None:
        by_representative: dict[str, list[PlannedDocument]] = {}
        for planned in todo:
            by_representative.setdefault(planned.representative_hash, []).append(planned)
        lengths = {
            content: len(text)
            for part in iter_texts_by_content(self.store, by_representative)
            for content, text in part.items()
        }
        # A representative that left the corpus since dedup ran: its documents embed their own content.
        orphaned = [p for content in by_representative.keys() - lengths.keys() for p in by_representative.pop(content)]
        for planned in orphaned:
            by_representative.setdefault(planned.content_hash, []).append(
                replace(planned, representative_hash=planned.content_hash, dup_kind="self")
            )
        own = texts_by_content(self.store, {p.content_hash for p in orphaned} - lengths.keys())
        lengths.update({content: len(text) for content, text in own.items()})
        ordered = sorted(lengths, key=lambda content: (lengths[content], content))
        started, total = time.monotonic(), len(todo)
        done = 0
        for start in range(0, len(ordered), self.commit_group):
            group = ordered[start : start + self.commit_group]
            vectors_of = self._encode_group(group, by_representative)
            now = self.now()
            written = [p for content in vectors_of for p in by_representative[content]]
            self._write(written, vectors_of, dict.fromkeys(vectors_of, now), computed=set(vectors_of))
            done += sum(len(by_representative[content]) for content in group)
            elapsed = time.monotonic() - started
            rate = done / elapsed if elapsed else 0.0
            progress(Progress(self.shard, done, total, rate, (total - done) / rate if rate else 0.0))

    def _encode_group(
        self, group: list[str], by_representative: dict[str, list[PlannedDocument]]
    ) -> dict[str, np.ndarray]:
        texts = texts_by_content(self.store, group)
        with_text = [content for content in group if texts.get(content)]
        spans = self.encoder.token_spans([texts[content] for content in with_text]) if with_text else []
        windows, counts, window_owners, too_long = [], [], [], set()
        limit = self.spec.max_document_tokens
        for content, token_spans in zip(with_text, spans):
            if limit is not None and len(token_spans) > limit:
                for planned in by_representative[content]:
                    self._hold(planned, "too_many_tokens", f"{len(token_spans):,} tokens, limit {limit:,}")
                too_long.add(content)
                continue
            pieces = self.encoder.windows(texts[content], token_spans)
            stride = self.spec.window_tokens - self.spec.window_overlap
            windows += pieces
            counts += [min(self.spec.window_tokens, len(token_spans) - k * stride) for k in range(len(pieces))]
            window_owners += [content] * len(pieces)
        parts, image_owners = [], []
        if self.spec.modality == "multimodal":
            images = images_by_content(self.store, [c for c in group if c in texts and c not in too_long])
            parts.append(self.encoder.encode_images(self._opened(images, image_owners, by_representative)))
            # A pair whose image would not open is held whole: its caption alone is not the document.
            refused = images.keys() - set(image_owners)
            kept = [index for index, content in enumerate(window_owners) if content not in refused]
            windows, counts = [windows[i] for i in kept], [counts[i] for i in kept]
            window_owners = [window_owners[i] for i in kept]
        if windows:
            parts.append(self.encoder.encode_texts(windows, counts))
        owners = image_owners + window_owners
        if not owners:
            return {}
        encoded = _joined(parts)
        self.stats.model_calls += len(set(owners))
        self.stats.windows_encoded += len(windows)
        self.stats.images_encoded += len(image_owners)
        self.stats.batches += encoded.batches
        self.stats.tokens += encoded.tokens
        return self._validated(encoded.vectors, owners, by_representative, encoded.failures)

    def _opened(self, images: dict[str, bytes], owners: list[str], by_representative):
        """Each image opened (upright, RGB) as the encoder asks for it, so one decoded photo is in memory
        at a time; `owners` gets the content of each image yielded, and one that no longer opens is held."""
        for content, data in images.items():
            try:
                image = open_image(data)
            except ImageRefused as refused:
                for planned in by_representative[content]:
                    self._hold(planned, refused.problem.reason, refused.problem.detail)
                continue
            owners.append(content)
            yield image

    def _validated(
        self,
        vectors: np.ndarray,
        owners: list[str],
        by_representative,
        failures: dict[int, tuple[str, str]] | None = None,
    ) -> dict[str, np.ndarray]:
        """Vectors by content; a content with a refused window (`failures`) or a botched vector is held."""
        grouped: dict[str, list[int]] = {}
        for index, content in enumerate(owners):
            grouped.setdefault(content, []).append(index)
        accepted = {}
        for content, indices in grouped.items():
            block = vectors[indices]
            refused = [failures[i] for i in indices if i in failures] if failures else []
            if refused:
                reason, detail = refused[0]
            elif block.shape[1] != self.spec.dim:
                reason, detail = (
                    "wrong_dimension",
                    f"the model returned {block.shape[1]}-d vectors, registry dim {self.spec.dim}",
                )
            elif not np.isfinite(block).all():
                reason, detail = "non_finite_vector", f"{int((~np.isfinite(block)).sum())} NaN or infinite values"
            else:
                accepted[content] = block
                continue
            for planned in by_representative[content]:
                self._hold(planned, reason, detail)
        return accepted

    def finish(self) -> None:
        held = {entry.doc_id for entry in self.quarantine}
        self.stats.rows_deleted += delete_in(self.table, "doc_id", held, f"shard = {sql_literal(self.shard)}")
        replace_quarantine(self.store, "embed", self.shard, self.quarantine, self.now(), self.spec.key)
        self.stats.quarantined = len(self.quarantine)
        self.stats.quarantine_reasons = Counter(entry.reason for entry in self.quarantine)


def _complete_vector_sets(rows: pa.Table) -> dict[str, tuple[np.ndarray, datetime]]:
    """origin_hash -> (vectors in chunk order, generated_at) from one document's complete set of rows."""
    vectors = fixed_size_lists(rows.column("vector"))
    groups: dict[tuple[str, str], list[int]] = {}
    for index, (content, doc_id) in enumerate(
        zip(rows.column("origin_hash").to_pylist(), rows.column("doc_id").to_pylist())
    ):
        groups.setdefault((content, doc_id), []).append(index)
    chunks = rows.column("chunk").to_pylist()
    generated = rows.column("generated_at").to_pylist()
    found = {}
    for (content, _doc_id), indices in sorted(groups.items()):
        ordered = sorted(indices, key=chunks.__getitem__)
        if content not in found and [chunks[i] for i in ordered] == list(range(len(ordered))):
            found[content] = (vectors[ordered], generated[ordered[0]])
    return found


def embed_shard(
    store: LanceStore,
    spec: ModelSpec,
    load_encoder: Callable,
    shard: str,
    now: Callable[[], datetime],
    progress: Callable[[Progress], None] = lambda _: None,
    commit_group: int = COMMIT_GROUP_CONTENTS,
) -> EmbedStats:
    started = time.monotonic()
    embedder = ShardEmbedder(store, spec, load_encoder, shard, now, commit_group)
    todo = embedder.plan()
    remaining = embedder.reuse_stored(todo)
    embedder.encode_missing(remaining, progress)
    embedder.finish()
    embedder.stats.seconds = time.monotonic() - started
    embedder.stats.encoder = embedder._encoder
    return embedder.stats


def expected_window_count(token_count: int, spec: ModelSpec) -> int:
    return window_count(token_count, spec.window_tokens, spec.window_overlap)


def expected_vector_count(spec: ModelSpec, has_image: bool, token_count: int | None) -> int:
    """Rows a content gives the version: its image's (multimodal models), then its text's windows
    (`token_count` None: no text)."""
    image = 1 if has_image and spec.modality == "multimodal" else 0
    return image + (expected_window_count(token_count, spec) if token_count is not None else 0)
