"""The one place that imports Dagster's private modules, and why.

Dagster 1.13 has no public API to read or cancel backfills (`BulkActionStatus`,
`PartitionBackfill`): `model_registry_sensor` needs both to cancel the pending backfills of a
version removed from the registry, and the tests to create one. Check these names on every Dagster
upgrade; nothing else of the project reaches into `dagster._core`.
"""

from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill

__all__ = ["BulkActionStatus", "PartitionBackfill"]
