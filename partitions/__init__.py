"""Partition definitions shared by every asset, sensor and job.

Shards split the corpus by a stable hash of `doc_id`, so a document always lands in the
same shard whatever the source order; model versions are dynamic because the registry
grows at run time.
"""

import hashlib

from dagster import (
    DynamicPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
)

SHARD_COUNT = 16

shard_partitions = StaticPartitionsDefinition([f"{index:03d}" for index in range(SHARD_COUNT)])
model_version_partitions = DynamicPartitionsDefinition(name="model_versions")
embedding_partitions = MultiPartitionsDefinition({"model_version": model_version_partitions, "shard": shard_partitions})


def shard_of(doc_id: str) -> str:
    """The shard key of a document: the first 8 bytes of sha256(doc_id) modulo SHARD_COUNT."""
    digest = hashlib.sha256(doc_id.encode("utf-8")).digest()
    return f"{int.from_bytes(digest[:8], 'big') % SHARD_COUNT:03d}"


def embedding_partition_key(model_version: str, shard: str) -> MultiPartitionKey:
    return MultiPartitionKey({"model_version": model_version, "shard": shard})
