"""Operations on the live alias outside the asset graph: canary, rollback and retention (jobs in `jobs.py`).

Canary moves and rollbacks report on `live_index`, so the asset's history in the UI shows every switch."""

import time
from datetime import datetime, timezone

from dagster import AssetMaterialization, Config, Failure, OpExecutionContext, op

from embedding_assets.core.aliases import LIVE_ALIAS, current_alias, previous_pin, switch_alias
from embedding_assets.core.canary import clear_canary, current_canary, set_canary
from embedding_assets.core.gates import check_table_version, readable_table_version, record_verdict
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
    canary = current_canary(store, LIVE_ALIAS)
    if canary is not None and not config.to_version:
        # A canary is what goes wrong first: pulling it is the rollback, and live stays as it is.
        clear_canary(store, LIVE_ALIAS)
        _report(context, "canary cleared", canary.model_version, 0.0, started, "rollback")
        return
    if canary is not None:
        clear_canary(store, LIVE_ALIAS)
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


class CanaryConfig(Config):
    model_version: str
    # Percent of the live alias's traffic routed to model_version: 0 clears the canary, 100 makes it live.
    percent: float


def _report(context: OpExecutionContext, decision: str, version: str, percent: float, started: float, by: str):
    seconds = time.monotonic() - started
    context.log.info(f"canary of {LIVE_ALIAS}: {decision} ({version}, {percent:g} %) in {seconds:.2f}s by {by}")
    context.log_event(
        AssetMaterialization(
            asset_key="live_index",
            metadata={
                "decision": decision,
                "canary_version": version,
                "canary_percent": percent,
                "switch_seconds": round(seconds, 3),
            },
        )
    )


@op
def move_canary(
    context: OpExecutionContext, config: CanaryConfig, lancedb: LanceDBResource, model_registry: ModelRegistryResource
) -> None:
    """Set the share of live traffic a candidate version serves, only at a table version whose blocking
    checks pass now (the verdict is recorded); 0 clears the canary at once, with no check."""
    started = time.monotonic()
    store = lancedb.store()
    if not 0 <= config.percent <= 100:
        raise Failure(f"percent is between 0 and 100, not {config.percent}")
    if config.percent == 0:
        cleared = clear_canary(store, LIVE_ALIAS)
        _report(context, "canary cleared" if cleared else "no canary", config.model_version, 0.0, started, "canary")
        return
    alias = current_alias(store, LIVE_ALIAS)
    if alias is None:
        raise Failure("no live alias yet: a canary shares the live alias's traffic; run `make demo` first")
    if config.model_version == alias.model_version:
        raise Failure(f"{config.model_version} is already live")
    if embeddings_table_name(config.model_version) not in store.table_names():
        raise Failure(f"{config.model_version} has no table: materialize its embeddings and lance_index first")
    spec, encoder = model_registry.loaded(config.model_version)
    table_version = store.open_embeddings_table(config.model_version).version
    verdict = check_table_version(store, spec, encoder.token_spans, table_version)
    record_verdict(store, verdict, datetime.now(timezone.utc))
    if not verdict.passed:
        raise Failure(
            f"the canary of {config.model_version} stays where it was: table version {table_version} failed "
            "its gates: " + "; ".join(verdict.reasons)
        )
    now = datetime.now(timezone.utc)
    if config.percent == 100:
        switch_alias(store, config.model_version, table_version, "canary (100 %)", now, LIVE_ALIAS)
        clear_canary(store, LIVE_ALIAS)
        _report(context, "promoted", config.model_version, 100.0, started, "canary")
        return
    set_canary(store, LIVE_ALIAS, config.model_version, table_version, config.percent / 100, "canary", now)
    _report(context, "canary moved", config.model_version, config.percent, started, "canary")


@op
def drop_retired_tables(
    context: OpExecutionContext,
    lancedb: LanceDBResource,
    model_registry: ModelRegistryResource,
    promotion_policy: PromotionPolicyResource,
) -> None:
    result = apply_retention(lancedb.store(), model_registry.registry(), promotion_policy.keep_retired_versions)
    context.log.info(f"retention kept {result.kept}, dropped {result.dropped or 'nothing'}")
