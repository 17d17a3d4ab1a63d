"""The schemas of every table of the pipeline, and how a model version's table is named.

One LanceDB database holds them all (a directory or an `s3://` URI): `documents`, `signatures`,
`lsh_bands`, `quarantine` and `aliases` are fixed; each model version writes its own
`embeddings__<version>` table, so two versions never mix in one table. Vectors of content a
version's table no longer holds wait in `retained__<version>` (see `core.retained`): readers never
open it, and nothing that lists version tables by EMBEDDINGS_TABLE_PREFIX can mistake it for one.
"""

import json

import pyarrow as pa

from embedding_assets.core.minhash import NUM_PERM

# A version's table is this prefix and its key (a slug: LanceDB names allow no `@`).
EMBEDDINGS_TABLE_PREFIX = "embeddings__"
RETAINED_TABLE_PREFIX = "retained__"

TIMESTAMP = pa.timestamp("us", tz="UTC")

DOCUMENTS_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("shard", pa.string()),
        ("modality", pa.string()),
        ("title", pa.string()),
        ("text", pa.string()),
        ("image", pa.binary()),
        ("source_uri", pa.string()),
        ("content_hash", pa.string()),
        ("updated_at", TIMESTAMP),
        ("deleted", pa.bool_()),
    ]
)
SIGNATURES_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("shard", pa.string()),
        ("content_hash", pa.string()),
        ("minhash", pa.list_(pa.uint32(), NUM_PERM)),
        ("representative_hash", pa.string()),
        ("dup_kind", pa.string()),
        ("jaccard", pa.float32()),
    ]
)
# Each banded text's MinHash, by content: a shard's dedup compares its texts with neighbours in shards
# not yet deduplicated (whose signature rows do not exist yet) without signing them again.
CONTENT_MINHASHES_SCHEMA = pa.schema([("content_hash", pa.string()), ("minhash", pa.list_(pa.uint32(), NUM_PERM))])
LSH_BANDS_SCHEMA = pa.schema(
    [("id", pa.string()), ("band", pa.int32()), ("band_hash", pa.int64()), ("content_hash", pa.string())]
)
QUARANTINE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("doc_id", pa.string()),
        ("shard", pa.string()),
        ("stage", pa.string()),
        ("model_version", pa.string()),
        ("content_hash", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("source_uri", pa.string()),
        ("seen_at", TIMESTAMP),
    ]
)
ALIASES_SCHEMA = pa.schema(
    [
        ("alias", pa.string()),
        ("model_version", pa.string()),
        ("table", pa.string()),
        ("table_version", pa.int64()),
        ("switched_at", TIMESTAMP),
        ("switched_by", pa.string()),
    ]
)
# An alias's canary: a candidate version, the table version of it that passed its gates, and the
# share of the alias's traffic (0 < share < 1) routed to it. A table of its own, beside `aliases`:
# existing stores need no migration, and the alias's history (rollback's source) stays the history
# of what was live. No row: no canary.
CANARIES_SCHEMA = pa.schema(
    [
        ("alias", pa.string()),
        ("model_version", pa.string()),
        ("table", pa.string()),
        ("table_version", pa.int64()),
        ("share", pa.float64()),
        ("set_at", TIMESTAMP),
        ("set_by", pa.string()),
    ]
)
# One row per (model version, table version) whose blocking checks ran: what readers may open.
GATE_VERDICTS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("model_version", pa.string()),
        ("table_version", pa.int64()),
        ("passed", pa.bool_()),
        ("reasons", pa.string()),
        ("checked_at", TIMESTAMP),
    ]
)
# The evaluation set derived from the corpus, frozen with its provenance (see core/eval_sets.py).
EVAL_QUERIES_SCHEMA = pa.schema(
    [
        ("set_id", pa.string()),
        ("query", pa.string()),
        ("relevant", pa.list_(pa.string())),
        ("kind", pa.string()),
        ("built_at", TIMESTAMP),
    ]
)
# One row per re-embedding plan made for a model version (see core/reembedding_plan.py): the
# numbers as JSON, and whether they fit the budget, which the embedding stage reads before any call.
REEMBEDDING_PLANS_SCHEMA = pa.schema(
    [
        ("model_version", pa.string()),
        ("planned_at", TIMESTAMP),
        ("within_budget", pa.bool_()),
        ("reason", pa.string()),
        ("plan", pa.string()),
    ]
)
# The version-diff report of a candidate against the live version, per pair of table versions (JSON).
VERSION_DIFFS_SCHEMA = pa.schema([("id", pa.string()), ("report", pa.string())])
# Batch API jobs of hosted versions, kept with their shard until it is embedded: a rerun resumes them.
HOSTED_BATCHES_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("model_version", pa.string()),
        ("shard", pa.string()),
        ("request_key", pa.string()),
        ("batch_id", pa.string()),
        ("created_at", TIMESTAMP),
    ]
)
# Documents written through the serving API (see core/inbox.py): one row per write, only ever appended;
# `applied_by` is the run that brought it into `documents` ("" while pending).
INBOX_SCHEMA = pa.schema(
    [
        ("entry_id", pa.string()),
        ("change_id", pa.string()),
        ("doc_id", pa.string()),
        ("shard", pa.string()),
        ("op", pa.string()),
        ("title", pa.string()),
        ("text", pa.string()),
        ("metadata", pa.string()),
        ("received_at", TIMESTAMP),
        ("applied_by", pa.string()),
        ("applied_at", TIMESTAMP),
    ]
)
# How long each change took to become searchable through the live pin (see core/freshness.py).
FRESHNESS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("origin", pa.string()),
        ("run_id", pa.string()),
        ("seconds", pa.float64()),
        ("table_version", pa.int64()),
        ("searchable_at", TIMESTAMP),
    ]
)
# An evaluation query's vector under one model version (id: "<model_version>:<fingerprint>:<sha256 of the query>"):
# the same weights give the same vector, so the gate of every change does not encode its queries again.
QUERY_VECTORS_SCHEMA = pa.schema([("id", pa.string()), ("vector", pa.list_(pa.float32()))])
# A content's token count under one version's tokenizer (id: "<model_version>:<fingerprint>:<content_hash>";
# tokens null: no text), kept by the count_parity check so that it tokenizes only new content.
CONTENT_TOKENS_SCHEMA = pa.schema([("id", pa.string()), ("tokens", pa.int64())])
# The listing's version (size and modification time, or size and ETag) of the file each document of a folder
# or an S3 prefix was read from: a later read skips files whose listing still says the same.
SOURCE_FILES_SCHEMA = pa.schema([("doc_id", pa.string()), ("shard", pa.string()), ("version", pa.string())])
FIXED_SCHEMAS = {
    "documents": DOCUMENTS_SCHEMA,
    "signatures": SIGNATURES_SCHEMA,
    "lsh_bands": LSH_BANDS_SCHEMA,
    "content_minhashes": CONTENT_MINHASHES_SCHEMA,
    "quarantine": QUARANTINE_SCHEMA,
    "aliases": ALIASES_SCHEMA,
    "canaries": CANARIES_SCHEMA,
    "gate_verdicts": GATE_VERDICTS_SCHEMA,
    "eval_queries": EVAL_QUERIES_SCHEMA,
    "reembedding_plans": REEMBEDDING_PLANS_SCHEMA,
    "version_diffs": VERSION_DIFFS_SCHEMA,
    "hosted_batches": HOSTED_BATCHES_SCHEMA,
    "inbox": INBOX_SCHEMA,
    "freshness": FRESHNESS_SCHEMA,
    "query_vectors": QUERY_VECTORS_SCHEMA,
    "content_tokens": CONTENT_TOKENS_SCHEMA,
    "source_files": SOURCE_FILES_SCHEMA,
}
# Columns the stages look rows up by, with `IN (...)` filters: indexed once the table has rows.
LOOKUP_INDEXES = {
    # doc_id: the serving API and search look hits' documents up by id.
    "documents": ("content_hash", "doc_id"),
    "signatures": ("content_hash", "representative_hash"),
    "lsh_bands": ("content_hash", "band_hash"),
    "content_minhashes": ("content_hash",),
    # doc_id: the status of one document; shard: a corpus run reads its shard's writes.
    "inbox": ("doc_id", "shard"),
}


# The schema metadata key under which a version's table records the settings that shaped its vectors.
MODEL_SETTINGS_METADATA = b"model_settings"


# How a version's table stores its vectors: float16 halves the table and its reads for a rounding
# error far below what retrieval notices (measured in benchmarks/, row 11).
VECTOR_PRECISIONS = {"float32": pa.float32(), "float16": pa.float16()}


def embeddings_schema(dim: int, settings: dict | None = None, precision: str = "float32") -> pa.Schema:
    """A version's table; `settings` (its ModelSpec's vector settings) are recorded in the schema's metadata."""
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("doc_id", pa.string()),
            ("chunk", pa.int32()),
            ("shard", pa.string()),
            ("content_hash", pa.string()),
            ("vector", pa.list_(VECTOR_PRECISIONS[precision], dim)),
            ("model_id", pa.string()),
            ("model_version", pa.string()),
            ("dim", pa.int32()),
            ("generated_at", TIMESTAMP),
            ("origin", pa.string()),
            ("origin_hash", pa.string()),
        ]
    )
    return schema.with_metadata({MODEL_SETTINGS_METADATA: json.dumps(settings, sort_keys=True)}) if settings else schema


def recorded_model_settings(schema: pa.Schema) -> dict | None:
    """The settings a version's table was created with; None for a table made before they were recorded."""
    recorded = (schema.metadata or {}).get(MODEL_SETTINGS_METADATA)
    return json.loads(recorded) if recorded else None


def retained_schema(vector_type: pa.FixedSizeListType) -> pa.Schema:
    """A version's rows as they left its table, stamped with when: the garbage collection's clock.

    `id` is `<origin_hash>#<chunk>` here, not the document's row id: a content is kept once,
    whichever documents carried it, and keeping it again overwrites it.
    """
    precision = next(name for name, value in VECTOR_PRECISIONS.items() if value == vector_type.value_type)
    return embeddings_schema(vector_type.list_size, precision=precision).append(pa.field("retained_at", TIMESTAMP))


def embeddings_table_name(model_version: str) -> str:
    return f"{EMBEDDINGS_TABLE_PREFIX}{model_version}"


def retained_table_name(model_version: str) -> str:
    return f"{RETAINED_TABLE_PREFIX}{model_version}"
