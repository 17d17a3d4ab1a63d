"""Operational jobs on the live alias: rollback and retention. Each reports on `live_index`."""

import time
from datetime import datetime, timezone

from dagster import AssetMaterialization, Config, Failure, OpExecutionContext, job, op

from embedding_assets.core.aliases import LIVE, current_alias, previous_version, switch_alias
from embedding_assets.core.retention import apply_retention
from resources.lance_store import LanceDBResource, embeddings_table_name
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
    alias = current_alias(store, LIVE)
    target = config.to_version or previous_version(store, LIVE)
    if alias is None or target is None:
        raise Failure("nothing to roll back to: the live alias has no earlier version")
    if embeddings_table_name(target) not in store.table_names():
        raise Failure(f"cannot roll back to {target}: its table was dropped")
    switched = switch_alias(store, target, "rollback", datetime.now(timezone.utc), LIVE)
    seconds = time.monotonic() - started
    context.log.info(f"{LIVE} rolled back from {alias.model_version} to {target} in {seconds:.2f}s")
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


@job(description="Switch the live alias back to the version that served before (or to_version).")
def rollback_job():
    switch_live_alias_back()


@op
def drop_retired_tables(
    context: OpExecutionContext,
    lancedb: LanceDBResource,
    model_registry: ModelRegistryResource,
    promotion_policy: PromotionPolicyResource,
) -> None:
    result = apply_retention(
        lancedb.store(), set(model_registry.registry().specs), promotion_policy.keep_retired_versions
    )
    context.log.info(f"retention kept {result.kept}, dropped {result.dropped or 'nothing'}")


@job(description="Drop version tables that are neither live, previous, registered, nor among the newest retired.")
def retention_job():
    drop_retired_tables()
