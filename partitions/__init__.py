"""Partition definitions shared by every asset, sensor and job.

Shards split the corpus by a stable hash of `doc_id` (`core.sharding`), so a document always
lands in the same shard whatever the source order; model versions are dynamic because the
registry grows at run time.
"""

from dagster import (
    DynamicPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
)

from embedding_assets.core.sharding import shard_keys

shard_partitions = StaticPartitionsDefinition(shard_keys())
model_version_partitions = DynamicPartitionsDefinition(name="model_versions")
embedding_partitions = MultiPartitionsDefinition({"model_version": model_version_partitions, "shard": shard_partitions})


def embedding_partition_key(model_version: str, shard: str) -> MultiPartitionKey:
    return MultiPartitionKey({"model_version": model_version, "shard": shard})
