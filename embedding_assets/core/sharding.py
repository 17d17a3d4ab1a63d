"""Which shard a document belongs to: a stable hash of its id, whatever the source order.

Plain code, so the corpus readers and the change planner shard exactly as the `shard`
partitions do (`partitions` builds its keys from `SHARD_COUNT`).
"""

import hashlib
from collections.abc import Callable

SHARD_COUNT = 16


def shard_keys() -> list[str]:
    return [f"{index:03d}" for index in range(SHARD_COUNT)]


def shard_of(doc_id: str) -> str:
    """The shard key of a document: the first 8 bytes of sha256(doc_id) modulo SHARD_COUNT."""
    digest = hashlib.sha256(doc_id.encode("utf-8")).digest()
    return f"{int.from_bytes(digest[:8], 'big') % SHARD_COUNT:03d}"


def shard_resolver(shards: list[str]) -> Callable[[str], str]:
    """doc_id -> its shard among `shards`. One shard's documents were read for it (a source's or a table's
    shard filter), so they are all its own; several are told apart by their ids."""
    return (lambda _: shards[0]) if len(shards) == 1 else shard_of
