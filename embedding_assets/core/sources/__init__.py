"""Corpus sources: what `CORPUS_URI` names, read into documents and rejections (see `dispatch`)."""

from embedding_assets.core.sources.dispatch import (
    EMBEDDED_CORPORA,
    belongs_to_shard,
    describe_source,
    iter_source,
    source_fingerprint,
    source_last_modified,
)
from embedding_assets.core.sources.records import (
    FileVersions,
    SourceDocument,
    SourceRecord,
    SourceRejection,
    SourceUnavailable,
    SourceUnchanged,
)

__all__ = [
    "EMBEDDED_CORPORA",
    "FileVersions",
    "SourceDocument",
    "SourceRecord",
    "SourceRejection",
    "SourceUnavailable",
    "SourceUnchanged",
    "belongs_to_shard",
    "describe_source",
    "iter_source",
    "source_fingerprint",
    "source_last_modified",
]
