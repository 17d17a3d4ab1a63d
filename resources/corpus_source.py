"""The corpus source as a resource: where documents come from."""

from collections.abc import Iterator
from pathlib import Path

from dagster import ConfigurableResource
from dagster_aws.s3 import S3Resource

from embedding_assets.core.sources import SourceRecord, describe_source, iter_source, source_fingerprint


class CorpusSourceResource(ConfigurableResource):
    """`stdlib` (the embedded Python documentation), `skimage` (the embedded photographs), a directory,
    a JSONL or Parquet file, or an s3:// prefix."""

    uri: str = "stdlib"
    cache_dir: str
    # Used for s3:// sources only; its settings follow the standard AWS environment variables.
    s3: S3Resource

    def _client(self):
        return self.s3.get_client() if self.uri.startswith("s3://") else None

    def read(self, shard: str | None) -> Iterator[SourceRecord]:
        return iter_source(self.uri, Path(self.cache_dir), shard, self._client())

    def fingerprint(self) -> str:
        return source_fingerprint(self.uri, self._client())

    def describe(self) -> str:
        return describe_source(self.uri)
