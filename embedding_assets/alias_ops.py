"""Operations on the live alias outside the asset graph: rollback and retention (jobs in `jobs.py`).

Rollback reports on `live_index`, so the asset's history in the UI shows every switch."""

import time
from datetime import datetime, timezone

from dagster import AssetMaterialization, Config, Failure, OpExecutionContext, op

from embedding_assets.core.aliases import LIVE_ALIAS, current_alias, previous_pin, switch_alias
from embedding_assets.core.gates import readable_table_version
from embedding_assets.core.retention import apply_retention
from embedding_assets.core.schemas import embeddings_table_name
from resources.lance_store import LanceDBResource
from resources.model_registry import ModelRegistryResource
from resources.promotion_policy import PromotionPolicyResource


class RollbackConfig(Config):
    # Empty: the version that was live before the current one.
    to_version: str = ""


@op
def switch_live_alias_back(context: OpExecutionContext, config: RollbackConfig, lancedb: LanceDBResource) -> None:
    """The emergency brake: no gate runs, the previous table already served readers."""
    started = time.monotonic()
    store = lancedb.store()
    alias = current_alias(store, LIVE_ALIAS)
    pin = previous_pin(store, LIVE_ALIAS, config.to_version or None)
    target = config.to_version or (pin.model_version if pin else None)
    if alias is None or target is None:
        raise Failure("nothing to roll back to: the live alias has no earlier version")
    if embeddings_table_name(target) not in store.table_names():
        raise Failure(f"cannot roll back to {target}: its table was dropped")
    # The table version readers saw when it was last live; else the newest that passed its gates.
    table_version = pin.table_version if pin else readable_table_version(store, target)
    if table_version is None:
        raise Failure(f"cannot roll back to {target}: no table version of it ever passed its gates")
    switched = switch_alias(store, target, table_version, "rollback", datetime.now(timezone.utc), LIVE_ALIAS)
    seconds = time.monotonic() - started
    context.log.info(f"{LIVE_ALIAS} rolled back from {alias.model_version} to {target} in {seconds:.2f}s")
    context.log_event(
        AssetMaterialization(
            asset_key="live_index",
            metadata={
                "decision": "rolled back",
                "model_version": target,
                "live_before": alias.model_version,
                "table_version": switched.table_version,
                "switch_seconds": round(seconds, 3),
            },
        )
    )


@op
def drop_retired_tables(
    context: OpExecutionContext,
    lancedb: LanceDBResource,
    model_registry: ModelRegistryResource,
    promotion_policy: PromotionPolicyResource,
) -> None:
    result = apply_retention(lancedb.store(), model_registry.registry(), promotion_policy.keep_retired_versions)
    context.log.info(f"retention kept {result.kept}, dropped {result.dropped or 'nothing'}")
