"""The corpus source as a resource: where documents come from."""

from collections.abc import Iterator
from pathlib import Path

from dagster import ConfigurableResource

from embedding_assets.core.sources import SourceRecord, describe_source, iter_source, source_fingerprint


class CorpusSourceResource(ConfigurableResource):
    """`stdlib` (the embedded Python documentation), a directory, a JSONL or a Parquet file."""

    uri: str = "stdlib"
    cache_dir: str

    def read(self, shard: str) -> Iterator[SourceRecord]:
        return iter_source(self.uri, Path(self.cache_dir), shard)

    def fingerprint(self) -> str:
        return source_fingerprint(self.uri)

    def describe(self) -> str:
        return describe_source(self.uri)
