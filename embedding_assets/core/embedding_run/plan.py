"""What one (model version, shard) run has to do, read before anything is written.

The plan is a value: it only reads the shard's documents, signatures, stored rows and quarantine,
so the commit loop decides what to delete and write, and the index checks can ask the same
question (`documents_for`) the run does without importing the runner.
"""

from dataclasses import dataclass

from embedding_assets.core.documents import live_documents_with_modality
from embedding_assets.core.embedding_run.rows import ORIGIN_BY_KIND
from embedding_assets.core.quarantine import QuarantineEntry, quarantined
from embedding_assets.core.store import LanceStore, scan, sql_literal
from gpu_ops.registry import ModelSpec

# Document modalities each model modality embeds: a text model reads a pair's caption, not its image.
EMBEDDED_MODALITIES = {"text": ("text", "pair"), "multimodal": ("text", "image", "pair")}


@dataclass(frozen=True)
class PlannedDocument:
    doc_id: str
    content_hash: str
    representative_hash: str
    dup_kind: str


@dataclass(frozen=True)
class EmbeddingPlan:
    # Live documents of a modality the version embeds.
    documents: int
    # Those whose rows must be (re)written, sorted by doc_id.
    todo: tuple[PlannedDocument, ...]
    up_to_date: int
    # Quarantine entries whose content has not changed: still held, not retried.
    held: tuple[QuarantineEntry, ...]
    skipped_modality: int
    # Documents with no current signature: each is its own representative.
    undeduplicated: int
    # doc_id -> ids of its rows in the table now, so a rewrite can drop the rows it no longer has.
    existing_ids: dict[str, set[str]]
    # Documents with rows in the table that are no longer live (or no longer embedded by the version).
    orphans: tuple[str, ...]
    # Documents whose rows embed a content they will no longer carry (the orphans among them): the
    # run keeps those rows in the retained table before it deletes or overwrites them.
    superseded: tuple[str, ...]


def documents_for(spec: ModelSpec, documents: dict[str, tuple[str, str]]) -> tuple[dict[str, str], int]:
    """doc_id -> content_hash of the documents (doc_id -> (content_hash, modality)) the version embeds,
    and how many it skips for their modality."""
    wanted = EMBEDDED_MODALITIES[spec.modality]
    kept = {doc_id: content for doc_id, (content, modality) in documents.items() if modality in wanted}
    return kept, len(documents) - len(kept)


def by_representative(documents: list[PlannedDocument]) -> dict[str, list[PlannedDocument]]:
    """Documents grouped by the content whose vectors they carry: one lookup or encode serves them all."""
    grouped: dict[str, list[PlannedDocument]] = {}
    for planned in documents:
        grouped.setdefault(planned.representative_hash, []).append(planned)
    return grouped


def plan_shard(store: LanceStore, spec: ModelSpec, table, shard: str) -> EmbeddingPlan:
    in_shard = f"shard = {sql_literal(shard)}"
    documents, skipped_modality = documents_for(spec, live_documents_with_modality(store, shard))
    signatures = {
        row["doc_id"]: row
        for row in scan(
            store.table("signatures"), in_shard, ["doc_id", "content_hash", "representative_hash", "dup_kind"]
        ).to_pylist()
    }
    rows_by_doc: dict[str, list[dict]] = {}
    for row in scan(table, in_shard, ["id", "doc_id", "content_hash", "origin", "origin_hash"]).to_pylist():
        rows_by_doc.setdefault(row["doc_id"], []).append(row)
    quarantine = quarantined(store, "embed", shard, spec.key)

    todo, held, up_to_date, undeduplicated, superseded = [], [], 0, 0, []
    for doc_id, content in sorted(documents.items()):
        signature = signatures.get(doc_id)
        if signature is None or signature["content_hash"] != content:
            undeduplicated += 1
            planned = PlannedDocument(doc_id, content, content, "self")
        else:
            planned = PlannedDocument(doc_id, content, signature["representative_hash"], signature["dup_kind"])
        if any(row["origin_hash"] != planned.representative_hash for row in rows_by_doc.get(doc_id, [])):
            superseded.append(doc_id)
        if doc_id in quarantine and quarantine[doc_id].content_hash == content:
            held.append(quarantine[doc_id])
        elif _up_to_date(planned, rows_by_doc.get(doc_id, [])):
            up_to_date += 1
        else:
            todo.append(planned)
    orphans = tuple(doc_id for doc_id in rows_by_doc if doc_id not in documents)
    return EmbeddingPlan(
        documents=len(documents),
        todo=tuple(todo),
        up_to_date=up_to_date,
        held=tuple(held),
        skipped_modality=skipped_modality,
        undeduplicated=undeduplicated,
        existing_ids={doc_id: {row["id"] for row in rows} for doc_id, rows in rows_by_doc.items()},
        orphans=orphans,
        superseded=(*superseded, *orphans),
    )


def _up_to_date(planned: PlannedDocument, rows: list[dict]) -> bool:
    """Every row the document has names its current content and representative, with the origin its
    dedup kind gives (a representative's own rows: computed here or found stored)."""
    expected = ORIGIN_BY_KIND.get(planned.dup_kind)
    return bool(rows) and all(
        row["content_hash"] == planned.content_hash
        and row["origin_hash"] == planned.representative_hash
        and (row["origin"] == expected if expected else row["origin"] in ("computed", "cache"))
        for row in rows
    )
