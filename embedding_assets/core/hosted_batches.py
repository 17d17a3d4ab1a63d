"""Where a hosted version's Batch API jobs are kept with their shard: a rerun resumes them.

`gpu_ops.batch_api` records a batch's id under the hash of its request file before it waits; this
ledger keeps that record in the store, so a run killed while the provider works leaves the id
behind and the next run of the shard polls the same batch instead of paying for a new one. The
shard's records are dropped once it is embedded.
"""

from datetime import datetime, timezone

import pyarrow as pa

from embedding_assets.core.schemas import HOSTED_BATCHES_SCHEMA
from embedding_assets.core.store import LanceStore, scan, sql_literal, upsert


class ShardBatchLedger:
    def __init__(self, store: LanceStore, model_version: str, shard: str):
        self.store = store
        self.model_version = model_version
        self.shard = shard

    def _where(self) -> str:
        return f"model_version = {sql_literal(self.model_version)} AND shard = {sql_literal(self.shard)}"

    def find(self, request_key: str) -> str | None:
        where = f"{self._where()} AND request_key = {sql_literal(request_key)}"
        rows = scan(self.store.table("hosted_batches"), where, ["batch_id"]).to_pylist()
        return rows[0]["batch_id"] if rows else None

    def record(self, request_key: str, batch_id: str) -> None:
        row = {
            "id": f"{self.model_version}|{self.shard}|{request_key}",
            "model_version": self.model_version,
            "shard": self.shard,
            "request_key": request_key,
            "batch_id": batch_id,
            "created_at": datetime.now(timezone.utc),
        }
        upsert(self.store.table("hosted_batches"), pa.Table.from_pylist([row], schema=HOSTED_BATCHES_SCHEMA), on="id")

    def batch_ids(self) -> list[str]:
        return scan(self.store.table("hosted_batches"), self._where(), ["batch_id"]).column("batch_id").to_pylist()

    def clear(self) -> None:
        self.store.table("hosted_batches").delete(self._where())
