"""The embedding stage for one (model version, shard): plan → reuse stored vectors → encode the rest → finish.

`run` is the commit loop; `plan`, `encode` and `rows` are its parts. The index checks import the
plan's and the rows' rules from those modules, so they count rows the way the run writes them.
"""

from embedding_assets.core.embedding_run.plan import documents_for
from embedding_assets.core.embedding_run.rows import expected_vector_count
from embedding_assets.core.embedding_run.run import (
    COMMIT_GROUP_CONTENTS,
    EmbedStats,
    Progress,
    VersionSettingsChanged,
    embed_shard,
    embed_shards,
)

__all__ = [
    "COMMIT_GROUP_CONTENTS",
    "EmbedStats",
    "Progress",
    "VersionSettingsChanged",
    "documents_for",
    "embed_shard",
    "embed_shards",
    "expected_vector_count",
]
