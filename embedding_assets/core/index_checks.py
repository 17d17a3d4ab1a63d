"""What must be true of a version's table before anyone may read it.

Each check returns whether it passed and the figures behind the verdict, so the asset
checks, the promotion gate and the tests share one implementation.
"""

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from embedding_assets.core.documents import LIVE_DOCUMENTS, live_documents_with_modality, texts_by_content
from embedding_assets.core.embedding_run.plan import documents_for
from embedding_assets.core.embedding_run.rows import expected_vector_count
from embedding_assets.core.model_memo import remembered
from embedding_assets.core.store import LanceStore, fixed_size_lists, scan, scan_batches, sql_literal
from gpu_ops.registry import ModelSpec

SAMPLE_LIMIT = 10
NORM_TOLERANCE = 5e-3
# Above this share of live documents whose vectors the model botched, the version is not complete.
MAX_QUARANTINED_SHARE = 0.01
# Refusals that indict the model rather than the input (too_many_tokens is the input's doing).
MODEL_FAULTS = ("wrong_dimension", "non_finite_vector")


@dataclass
class CheckOutcome:
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


def _sample(values) -> str:
    values = sorted(values)
    return ", ".join(values[:SAMPLE_LIMIT]) + (
        f" … (+{len(values) - SAMPLE_LIMIT})" if len(values) > SAMPLE_LIMIT else ""
    )


@dataclass
class ExpectedRows:
    rows: dict[str, tuple[str, int]]
    # Live documents of a modality the version embeds, and those it skips (images, for a text model).
    live_documents: int
    model_faults: int
    skipped_modality: int


def content_tokens(store: LanceStore, spec: ModelSpec, token_spans, contents: set[str]) -> dict[str, int | None]:
    """content -> its text's token count under the version's tokenizer (None: no text), counted once per
    version and content and kept in `content_tokens` (core/model_memo.py): a gate after a 1 % change
    tokenizes 1 % of the corpus, not all of it. The counts are the check's own, never the embedding run's."""

    def count(batch: list[str]) -> dict:
        texts = texts_by_content(store, batch)
        with_text = [content for content in sorted(texts) if texts[content]]
        spans = dict(zip(with_text, token_spans([texts[content] for content in with_text]) if with_text else []))
        return {content: len(spans[content]) if content in spans else None for content in texts}

    return remembered(store, "content_tokens", "tokens", spec, contents, count)


def expected_rows(store: LanceStore, spec: ModelSpec, token_spans) -> ExpectedRows:
    """doc_id -> (content_hash, row count) for every live document the version must hold.

    Mirrors the embedding stage: a document carries its representative's rows (an image's, then
    its text's windows), a document of a modality the version skips has none, and what the stage
    quarantined for this version (with unchanged content) is not expected.
    """
    with_modality = live_documents_with_modality(store)
    documents, skipped = documents_for(spec, with_modality)
    has_image = {content for content, modality in with_modality.values() if modality != "text"}
    representative = {
        row["doc_id"]: row["representative_hash"]
        for row in scan(store.table("signatures"), None, ["doc_id", "content_hash", "representative_hash"]).to_pylist()
        if documents.get(row["doc_id"]) == row["content_hash"]
    }
    refused = [
        row
        for row in scan(
            store.table("quarantine"),
            f"stage = 'embed' AND model_version = {sql_literal(spec.key)}",
            ["doc_id", "content_hash", "reason"],
        ).to_pylist()
        if documents.get(row["doc_id"]) == row["content_hash"]
    ]
    held = {row["doc_id"] for row in refused}
    model_faults = sum(row["reason"] in MODEL_FAULTS for row in refused)
    sources = {doc_id: representative.get(doc_id, content) for doc_id, content in documents.items()}
    live_contents = {content for content, _ in with_modality.values()}
    tokens = content_tokens(store, spec, token_spans, {s for s in sources.values() if s in live_contents})
    counts = {content: expected_vector_count(spec, content in has_image, count) for content, count in tokens.items()}
    rows = {
        doc_id: (documents[doc_id], counts[source])
        for doc_id, source in sources.items()
        if doc_id not in held and source in counts
    }
    return ExpectedRows(rows, len(documents), model_faults, skipped)


def count_parity(store: LanceStore, spec: ModelSpec, token_spans, table_version: int | None = None) -> CheckOutcome:
    coverage = expected_rows(store, spec, token_spans)
    expected = coverage.rows
    table = store.open_embeddings_table(spec.key, table_version)
    rows = scan(table, None, ["id", "doc_id", "content_hash"])
    ids = Counter(rows.column("id").to_pylist())
    duplicates = {row_id for row_id, count in ids.items() if count > 1}
    per_document: Counter = Counter()
    stale = set()
    for doc_id, content in zip(rows.column("doc_id").to_pylist(), rows.column("content_hash").to_pylist()):
        per_document[doc_id] += 1
        if doc_id in expected and expected[doc_id][0] != content:
            stale.add(doc_id)
    orphans = per_document.keys() - expected.keys()
    missing = {doc_id for doc_id, (_, windows) in expected.items() if per_document[doc_id] < windows}
    extra = {doc_id for doc_id, (_, windows) in expected.items() if per_document[doc_id] > windows}
    expected_total = sum(windows for _, windows in expected.values())
    refused_share = coverage.model_faults / coverage.live_documents if coverage.live_documents else 0.0
    passed = not (duplicates or orphans or missing or extra or stale) and refused_share <= MAX_QUARANTINED_SHARE
    corpus_size = coverage.live_documents + coverage.skipped_modality
    no_vectors = corpus_size > 0 and expected_total == 0
    passed = passed and not no_vectors
    if not passed and refused_share > MAX_QUARANTINED_SHARE:
        faults, live = coverage.model_faults, coverage.live_documents
        description = f"the model botched the vectors of {faults} of {live} live documents"
    elif no_vectors:
        description = f"no vectors for a corpus of {corpus_size} live documents" + (
            f": {coverage.skipped_modality} are of a modality {spec.key} does not embed"
            if coverage.skipped_modality
            else ""
        )
    elif not passed:
        description = (
            f"{len(missing)} incomplete, {len(orphans)} orphaned, {len(stale)} stale, {len(duplicates)} duplicated"
        )
    else:
        description = "every live document has its rows, with no orphan, stale or duplicate row"
        if coverage.skipped_modality:
            description += f"; {coverage.skipped_modality} images without text skipped (a text model)"
    return CheckOutcome(
        passed,
        description,
        {
            "live_documents": coverage.live_documents,
            "skipped_modality": coverage.skipped_modality,
            "model_faults": coverage.model_faults,
            "expected_documents": len(expected),
            "expected_rows": expected_total,
            "rows": rows.num_rows,
            "missing_documents": len(missing),
            "orphan_documents": len(orphans),
            "stale_documents": len(stale),
            "documents_with_extra_rows": len(extra),
            "duplicate_ids": len(duplicates),
            "examples": _sample(missing | orphans | stale | extra | duplicates) or "none",
        },
    )


def single_model_version(store: LanceStore, spec: ModelSpec, table_version: int | None = None) -> CheckOutcome:
    table = store.open_embeddings_table(spec.key, table_version)
    seen = {column: set() for column in ("model_version", "model_id", "dim")}
    for batch in scan_batches(table, None, list(seen)):
        for column in seen:
            seen[column].update(batch.column(column).to_pylist())
    expected = {"model_version": {spec.key}, "model_id": {spec.model_id}, "dim": {spec.dim}}
    wrong = {column for column, values in seen.items() if values - expected[column]}
    return CheckOutcome(
        not wrong,
        f"only {spec.key} ({spec.model_id}, {spec.dim}-d) in {table.name}"
        if not wrong
        else f"foreign {', '.join(sorted(wrong))} in {table.name}",
        {
            "model_versions": ", ".join(sorted(seen["model_version"])) or "none",
            "model_ids": ", ".join(sorted(seen["model_id"])) or "none",
            "dims": ", ".join(map(str, sorted(seen["dim"]))) or "none",
        },
    )


def vector_sanity(store: LanceStore, spec: ModelSpec, table_version: int | None = None) -> CheckOutcome:
    table = store.open_embeddings_table(spec.key, table_version)
    table_dim = table.schema.field("vector").type.list_size
    rows = non_finite = zero = off_norm = 0
    norm_min, norm_max, norm_sum = float("inf"), 0.0, 0.0
    for batch in scan_batches(table, None, ["vector"]):
        # float16 tables: norms summed in float32, or the sum's own rounding looks like an off-norm vector.
        vectors = fixed_size_lists(batch.column("vector")).astype(np.float32, copy=False)
        finite = np.isfinite(vectors).all(axis=1)
        norms = np.linalg.norm(np.where(np.isfinite(vectors), vectors, 0.0), axis=1)
        rows += len(vectors)
        non_finite += int((~finite).sum())
        zero += int((norms == 0).sum())
        if spec.normalize:
            off_norm += int((np.abs(norms - 1.0) > NORM_TOLERANCE)[finite].sum())
        if len(norms):
            norm_min, norm_max, norm_sum = (
                min(norm_min, norms.min()),
                max(norm_max, norms.max()),
                norm_sum + norms.sum(),
            )
    # No vectors at all is no evidence of sanity: it fails whenever the corpus is not empty.
    live = store.table("documents").count_rows(LIVE_DOCUMENTS)
    passed = table_dim == spec.dim and not non_finite and not zero and not off_norm and (rows > 0 or live == 0)
    if passed:
        description = f"{rows:,} vectors of dim {table_dim}: finite, non-zero{', unit norm' if spec.normalize else ''}"
    elif rows == 0:
        description = f"0 vectors for {live:,} live documents: nothing to serve"
    else:
        description = (
            f"dim {table_dim} (registry {spec.dim}), {non_finite} non-finite, {zero} zero, {off_norm} off unit norm"
        )
    return CheckOutcome(
        passed,
        description,
        {
            "rows": rows,
            "dim": table_dim,
            "registry_dim": spec.dim,
            "non_finite_vectors": non_finite,
            "zero_vectors": zero,
            "off_unit_norm": off_norm,
            "norm_min": float(norm_min) if rows else 0.0,
            "norm_max": float(norm_max),
            "norm_mean": float(norm_sum / rows) if rows else 0.0,
        },
    )


def quarantine_report(store: LanceStore, model_version: str) -> CheckOutcome:
    rows = scan(
        store.table("quarantine"),
        f"stage = 'corpus' OR model_version = {sql_literal(model_version)}",
        ["stage", "reason"],
    ).to_pylist()
    by_reason = Counter(f"{row['stage']}/{row['reason']}" for row in rows)
    return CheckOutcome(
        not rows,
        "nothing in quarantine" if not rows else f"{len(rows)} input(s) in quarantine",
        {"quarantined": len(rows), **{f"quarantined {key}": count for key, count in sorted(by_reason.items())}},
    )
