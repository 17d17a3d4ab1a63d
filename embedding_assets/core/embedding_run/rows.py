"""The rows a version's table holds for a document, and how many it should hold.

A document gives one row per vector: its representative's image (multimodal models), then the
windows of its text, each row naming the content it embeds (`origin_hash`) so any document with
the same content can reuse it. The index checks count rows with the same rule the run writes them by.
"""

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa

from embedding_assets.core.schemas import embeddings_schema
from embedding_assets.core.store import fixed_size_lists
from gpu_ops.registry import ModelSpec
from gpu_ops.windows import window_count

ORIGIN_BY_KIND = {"exact": "exact_dup", "near": "near_dup"}


@dataclass(frozen=True)
class VectorRow:
    """One written vector: a document's image or one window of its text."""

    id: str
    doc_id: str
    chunk: int
    content_hash: str
    vector: np.ndarray
    origin: str
    origin_hash: str
    generated_at: datetime


def row_id(doc_id: str, chunk: int, chunks: int) -> str:
    return doc_id if chunks == 1 else f"{doc_id}#{chunk}"


def origin_of(dup_kind: str, computed: bool) -> str:
    """A duplicate's rows say which kind of duplicate lent them; a representative's own rows say whether
    this run computed its vectors or found them stored."""
    return ORIGIN_BY_KIND.get(dup_kind) or ("computed" if computed else "cache")


def document_rows(
    doc_id: str, content_hash: str, origin: str, origin_hash: str, vectors: np.ndarray, generated_at: datetime
) -> list[VectorRow]:
    """A document's rows, in chunk order, from its representative's vectors."""
    return [
        VectorRow(
            row_id(doc_id, chunk, len(vectors)), doc_id, chunk, content_hash, vector, origin, origin_hash, generated_at
        )
        for chunk, vector in enumerate(vectors)
    ]


def arrow_rows(rows: list[VectorRow], spec: ModelSpec, shard: str) -> pa.Table:
    """The rows as the version's table stores them (the vectors as fixed-size lists of `spec.dim`, in the
    version's stored precision)."""
    flat = np.concatenate([row.vector for row in rows]).astype(spec.vector_precision, copy=False).reshape(-1)
    count = len(rows)
    return pa.table(
        {
            "id": [row.id for row in rows],
            "doc_id": [row.doc_id for row in rows],
            "chunk": pa.array([row.chunk for row in rows], pa.int32()),
            "shard": [shard] * count,
            "content_hash": [row.content_hash for row in rows],
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(flat), spec.dim),
            "model_id": [spec.model_id] * count,
            "model_version": [spec.key] * count,
            "dim": pa.array([spec.dim] * count, pa.int32()),
            "generated_at": [row.generated_at for row in rows],
            "origin": [row.origin for row in rows],
            "origin_hash": [row.origin_hash for row in rows],
        },
        schema=embeddings_schema(spec.dim, precision=spec.vector_precision),
    )


def complete_vector_sets(rows: pa.Table) -> dict[str, tuple[np.ndarray, datetime]]:
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


def expected_window_count(token_count: int, spec: ModelSpec) -> int:
    return window_count(token_count, spec.window_tokens, spec.window_overlap)


def expected_vector_count(spec: ModelSpec, has_image: bool, token_count: int | None) -> int:
    """Rows a content gives the version: its image's (multimodal models), then its text's windows
    (`token_count` None: no text)."""
    image = 1 if has_image and spec.modality == "multimodal" else 0
    return image + (expected_window_count(token_count, spec) if token_count is not None else 0)
