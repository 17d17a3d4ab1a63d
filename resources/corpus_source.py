"""The corpus source as a resource: where documents come from."""

from collections.abc import Iterator
from pathlib import Path

from dagster import ConfigurableResource
from dagster_aws.s3 import S3Resource

from embedding_assets.core.corpus_sync import MassDeleteGuard
from embedding_assets.core.sources import (
    FileVersions,
    SourceRecord,
    describe_source,
    iter_source,
    source_fingerprint,
    source_last_modified,
)


class CorpusSourceResource(ConfigurableResource):
    """`stdlib` (the embedded Python documentation), `skimage` (the embedded photographs), a directory,
    a JSONL or Parquet file, or an s3:// prefix."""

    uri: str = "stdlib"
    cache_dir: str
    # Used for s3:// sources only; its settings follow the standard AWS environment variables.
    s3: S3Resource
    # One corpus run may mark at most this share of a shard's live documents deleted (or
    # `mass_delete_floor` documents, whichever is more) unless run with `allow_mass_delete`.
    mass_delete_max_share: float = MassDeleteGuard.max_share
    mass_delete_floor: int = MassDeleteGuard.floor

    def _client(self):
        return self.s3.get_client() if self.uri.startswith("s3://") else None

    def read(self, shard: str | None, known: FileVersions | None = None) -> Iterator[SourceRecord]:
        """The source's records of `shard` (all when None); files `known` to be unchanged are not read."""
        return iter_source(self.uri, Path(self.cache_dir), shard, self._client(), known)

    def fingerprint(self) -> str:
        return source_fingerprint(self.uri, self._client())

    def last_modified(self) -> float | None:
        return source_last_modified(self.uri, self._client())

    def describe(self) -> str:
        return describe_source(self.uri)

    def mass_delete_guard(self, allow_mass_delete: bool) -> MassDeleteGuard | None:
        """The limit on deletions per run; None when the run was explicitly allowed to delete more."""
        return None if allow_mass_delete else MassDeleteGuard(self.mass_delete_max_share, self.mass_delete_floor)
