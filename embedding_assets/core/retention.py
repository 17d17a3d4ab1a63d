"""Which old version tables to drop.

Never the live or the previous version (rollback needs it), never a version the registry file
names, valid or not (it may be a candidate being backfilled, a rollback target, or an entry with a
typo that is about to be fixed); of the retired rest, the `keep` most recently written stay. A
registry with an entry whose key cannot be read at all drops nothing: that entry may mean any version.
A dropped version's retained table (`core.retained`) goes with it; `retained__*` tables are not
versions (only EMBEDDINGS_TABLE_PREFIX names one).
"""

from dataclasses import dataclass

from embedding_assets.core.aliases import current_alias, previous_version
from embedding_assets.core.retained import drop_retained_table
from embedding_assets.core.schemas import EMBEDDINGS_TABLE_PREFIX, embeddings_table_name
from embedding_assets.core.store import LanceStore
from gpu_ops.registry import ModelRegistry


@dataclass
class RetentionResult:
    kept: list[str]
    dropped: list[str]


def apply_retention(store: LanceStore, registry: ModelRegistry, keep: int) -> RetentionResult:
    versions = [
        name.removeprefix(EMBEDDINGS_TABLE_PREFIX)
        for name in store.table_names()
        if name.startswith(EMBEDDINGS_TABLE_PREFIX)
    ]
    if registry.unnamed_entries:
        return RetentionResult(kept=sorted(versions), dropped=[])
    live = current_alias(store)
    protected = registry.named_keys | {v for v in (live.model_version if live else None, previous_version(store)) if v}
    retired = [v for v in versions if v not in protected]
    last_written = {v: store.open_embeddings_table(v).list_versions()[-1]["timestamp"] for v in retired}
    retired.sort(key=lambda v: (last_written[v], v), reverse=True)
    for version in retired[keep:]:
        store.db.drop_table(embeddings_table_name(version))
        # Its kept vectors of deleted content serve no table any more.
        drop_retained_table(store, version)
    return RetentionResult(kept=sorted(set(versions) - set(retired[keep:])), dropped=sorted(retired[keep:]))
