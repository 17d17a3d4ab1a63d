from datetime import datetime, timezone
from typing import Literal

from dagster import AssetExecutionContext, Config, Failure, MaterializeResult, asset

from embedding_assets.core.aliases import LIVE, current_alias, switch_alias
from embedding_assets.core.index_build import build_index
from embedding_assets.core.index_checks import count_parity, single_model_version, vector_sanity
from embedding_assets.embeddings import embeddings
from partitions import model_version_partitions
from resources.lance_store import LanceDBResource
from resources.model_registry import ModelRegistryResource


class IndexConfig(Config):
    # Below this many rows exact search beats any ANN index (see benchmarks/), so none is built.
    ann_min_rows: int = 100_000
    ann_index_type: Literal["IVF_HNSW_SQ", "IVF_HNSW_PQ", "IVF_PQ", "IVF_SQ", "IVF_FLAT"] = "IVF_HNSW_SQ"


@asset(partitions_def=model_version_partitions, group_name="index", kinds={"lancedb"}, deps=[embeddings])
def lance_index(context: AssetExecutionContext, config: IndexConfig, lancedb: LanceDBResource) -> MaterializeResult:
    """The version's table, compacted, with scalar indexes and (when large enough) an ANN index."""
    stats = build_index(lancedb.store(), context.partition_key, config.ann_min_rows, config.ann_index_type)
    context.log.info(f"{context.partition_key}: {stats.rows} rows, search {stats.search_mode}")
    return MaterializeResult(
        metadata={
            "dagster/row_count": stats.rows,
            "table_version": stats.table_version,
            "ann_index": stats.ann_index,
            "search_mode": stats.search_mode,
            "scalar_indexes": ", ".join(stats.scalar_indexes),
        }
    )


class LiveIndexConfig(Config):
    # Empty keeps the current live version (or, with none yet, takes the registry's first).
    model_version: str = ""
    switched_by: str = "live_index"


@asset(group_name="index", kinds={"lancedb"}, deps=[lance_index])
def live_index(
    context: AssetExecutionContext,
    config: LiveIndexConfig,
    lancedb: LanceDBResource,
    model_registry: ModelRegistryResource,
) -> MaterializeResult:
    """The `live` alias that readers resolve; it moves only to a complete, sane table."""
    store = lancedb.store()
    alias = current_alias(store, LIVE)
    registry = model_registry.registry()
    target = config.model_version or (alias.model_version if alias else next(iter(registry.specs), ""))
    if not target:
        raise Failure("no model version is registered: nothing can go live")
    spec = registry.spec(target)
    gates = {
        "count_parity": count_parity(store, spec, model_registry.encoder(spec).token_spans),
        "single_model_version": single_model_version(store, spec),
        "vector_sanity": vector_sanity(store, spec),
    }
    failed = {name: outcome.description for name, outcome in gates.items() if not outcome.passed}
    if failed:
        raise Failure(
            f"{target} cannot go live: " + "; ".join(f"{name}: {why}" for name, why in failed.items()),
            metadata={"model_version": target, **{f"gate {name}": why for name, why in failed.items()}},
        )
    if alias and alias.model_version == target:
        context.log.info(f"{LIVE} already serves {target}")
        switched = alias
    else:
        switched = switch_alias(store, target, config.switched_by, datetime.now(timezone.utc), LIVE)
        context.log.info(f"{LIVE} switched to {target} (was {alias.model_version if alias else 'unset'})")
    return MaterializeResult(
        metadata={
            "alias": LIVE,
            "model_version": switched.model_version,
            "table": switched.table,
            "table_version": switched.table_version,
            "switched_at": switched.switched_at.isoformat(),
            "switched_by": switched.switched_by,
            "previous_model_version": alias.model_version if alias else "none",
        }
    )
