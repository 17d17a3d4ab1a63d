from datetime import datetime, timezone

from dagster import AssetExecutionContext, MaterializeResult, asset

from embedding_assets.core.export import export_version
from embedding_assets.index import live_index
from partitions import model_version_partitions
from resources.lance_store import LanceDBResource
from resources.parquet_export import ParquetExportResource


@asset(partitions_def=model_version_partitions, group_name="export", kinds={"parquet", "s3"}, deps=[live_index])
def parquet_export(
    context: AssetExecutionContext, lancedb: LanceDBResource, export_target: ParquetExportResource
) -> MaterializeResult:
    """The version's vectors with provenance as Parquet files plus a manifest, for readers outside LanceDB:
    the newest table version whose gates passed (live_index records the verdicts), never unchecked writes."""
    result = export_version(
        lancedb.store(), context.partition_key, export_target.put, export_target.uri, datetime.now(timezone.utc)
    )
    context.log.info(f"{context.partition_key}: {result.rows} rows in {len(result.files)} files, {result.manifest}")
    return MaterializeResult(
        metadata={
            "dagster/row_count": result.rows,
            "files": len(result.files),
            "manifest": result.manifest,
            "table_version": result.table_version,
        }
    )
