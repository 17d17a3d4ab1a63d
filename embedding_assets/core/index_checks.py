"""What must be true of a version's table before anyone may read it.

Each check returns whether it passed and the figures behind the verdict, so the asset
checks, the promotion gate and the tests share one implementation.
"""

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from embedding_assets.core.documents import (
    LIVE_DOCUMENTS,
    doc_ids_by_content,
    live_documents_with_modality,
    texts_by_content,
)
from embedding_assets.core.embedding_run.plan import documents_for
from embedding_assets.core.embedding_run.rows import expected_vector_count
from embedding_assets.core.model_memo import remembered
from embedding_assets.core.sharding import shard_keys
from embedding_assets.core.store import LanceStore, fixed_size_lists, scan, scan_batches, scan_pages, sql_literal
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


def expected_rows(store: LanceStore, spec: ModelSpec, token_spans, shard: str) -> ExpectedRows:
    """doc_id -> (content_hash, row count) for every live document of `shard` the version must hold.

    Mirrors the embedding stage: a document carries its representative's rows (an image's, then
    its text's windows), a document of a modality the version skips has none, and what the stage
    quarantined for this version (with unchanged content) is not expected. One shard at a time, so the
    check's memory is a shard's, whatever the corpus size.
    """
    in_shard = f"shard = {sql_literal(shard)}"
    with_modality = live_documents_with_modality(store, shard)
    documents, skipped = documents_for(spec, with_modality)
    has_image = {content for content, modality in with_modality.values() if modality != "text"}
    representative = {
        row["doc_id"]: row["representative_hash"]
        for row in scan(
            store.table("signatures"), in_shard, ["doc_id", "content_hash", "representative_hash"]
        ).to_pylist()
        if documents.get(row["doc_id"]) == row["content_hash"]
    }
    refused = [
        row
        for row in scan(
            store.table("quarantine"),
            f"{in_shard} AND stage = 'embed' AND model_version = {sql_literal(spec.key)}",
            ["doc_id", "content_hash", "reason"],
        ).to_pylist()
        if documents.get(row["doc_id"]) == row["content_hash"]
    ]
    held = {row["doc_id"] for row in refused}
    model_faults = sum(row["reason"] in MODEL_FAULTS for row in refused)
    sources = {doc_id: representative.get(doc_id, content) for doc_id, content in documents.items()}
    # A representative in another document's content must still be live to lend its rows.
    borrowed = {source for doc_id, source in sources.items() if source != documents[doc_id]}
    live_sources = set(documents.values()) | {content for _, content in doc_ids_by_content(store, borrowed)}
    tokens = content_tokens(store, spec, token_spans, {s for s in sources.values() if s in live_sources})
    counts = {content: expected_vector_count(spec, content in has_image, count) for content, count in tokens.items()}
    rows = {
        doc_id: (documents[doc_id], counts[source])
        for doc_id, source in sources.items()
        if doc_id not in held and source in counts
    }
    return ExpectedRows(rows, len(documents), model_faults, skipped)


@dataclass
class _Parity:
    """What count_parity found, summed over shards: the problem documents, and totals."""

    problems: dict[str, set[str]] = field(
        default_factory=lambda: {name: set() for name in ("missing", "orphans", "stale", "extra", "duplicates")}
    )
    live_documents: int = 0
    skipped_modality: int = 0
    model_faults: int = 0
    expected_documents: int = 0
    expected_rows: int = 0
    rows: int = 0

    def add_shard(self, coverage: ExpectedRows, rows) -> None:
        expected = coverage.rows
        ids = Counter(rows.column("id").to_pylist())
        per_document: Counter = Counter()
        for doc_id, content in zip(rows.column("doc_id").to_pylist(), rows.column("content_hash").to_pylist()):
            per_document[doc_id] += 1
            if doc_id in expected and expected[doc_id][0] != content:
                self.problems["stale"].add(doc_id)
        self.problems["duplicates"] |= {row_id for row_id, count in ids.items() if count > 1}
        self.problems["orphans"] |= per_document.keys() - expected.keys()
        self.problems["missing"] |= {d for d, (_, windows) in expected.items() if per_document[d] < windows}
        self.problems["extra"] |= {d for d, (_, windows) in expected.items() if per_document[d] > windows}
        self.live_documents += coverage.live_documents
        self.skipped_modality += coverage.skipped_modality
        self.model_faults += coverage.model_faults
        self.expected_documents += len(expected)
        self.expected_rows += sum(windows for _, windows in expected.values())
        self.rows += rows.num_rows


def count_parity(store: LanceStore, spec: ModelSpec, token_spans, table_version: int | None = None) -> CheckOutcome:
    """Every live document has exactly its expected rows, and nothing else is in the table: compared shard
    by shard (a row's shard is its document's), plus any row whose shard is none of the corpus's."""
    table = store.open_embeddings_table(spec.key, table_version)
    parity = _Parity()
    for shard in shard_keys():
        rows = scan(table, f"shard = {sql_literal(shard)}", ["id", "doc_id", "content_hash"])
        parity.add_shard(expected_rows(store, spec, token_spans, shard), rows)
    stray = table.count_rows() - parity.rows
    problems = parity.problems
    refused_share = parity.model_faults / parity.live_documents if parity.live_documents else 0.0
    passed = not (any(problems.values()) or stray) and refused_share <= MAX_QUARANTINED_SHARE
    corpus_size = parity.live_documents + parity.skipped_modality
    no_vectors = corpus_size > 0 and parity.expected_rows == 0
    passed = passed and not no_vectors
    if not passed and refused_share > MAX_QUARANTINED_SHARE:
        description = (
            f"the model botched the vectors of {parity.model_faults} of {parity.live_documents} live documents"
        )
    elif no_vectors:
        description = f"no vectors for a corpus of {corpus_size} live documents" + (
            f": {parity.skipped_modality} are of a modality {spec.key} does not embed"
            if parity.skipped_modality
            else ""
        )
    elif not passed:
        description = (
            f"{len(problems['missing'])} incomplete, {len(problems['orphans']) + stray} orphaned, "
            f"{len(problems['stale'])} stale, {len(problems['duplicates'])} duplicated"
        )
    else:
        description = "every live document has its rows, with no orphan, stale or duplicate row"
        if parity.skipped_modality:
            description += f"; {parity.skipped_modality} images without text skipped (a text model)"
    return CheckOutcome(
        passed,
        description,
        {
            "live_documents": parity.live_documents,
            "skipped_modality": parity.skipped_modality,
            "model_faults": parity.model_faults,
            "expected_documents": parity.expected_documents,
            "expected_rows": parity.expected_rows,
            "rows": parity.rows + stray,
            "missing_documents": len(problems["missing"]),
            "orphan_documents": len(problems["orphans"]),
            "rows_outside_shards": stray,
            "stale_documents": len(problems["stale"]),
            "documents_with_extra_rows": len(problems["extra"]),
            "duplicate_ids": len(problems["duplicates"]),
            "examples": _sample(set().union(*problems.values())) or "none",
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
    for batch in scan_pages(table, columns=["vector"]):
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
