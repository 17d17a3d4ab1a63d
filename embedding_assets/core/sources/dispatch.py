"""Reading a corpus source into documents, one shard at a time: which reader a `CORPUS_URI` means.

A source is one of the embedded corpora (`stdlib`: the Python documentation; `skimage`: the
photographs scikit-image ships, with captions), a directory of `.txt`/`.md` files and images, a
JSONL file, a Parquet file, or an `s3://` prefix.
"""

from collections.abc import Iterator
from pathlib import Path

from embedding_assets.core.sharding import shard_of
from embedding_assets.core.sources.jsonl import iter_jsonl
from embedding_assets.core.sources.local_files import (
    iter_directory,
    local_fingerprint,
    local_image_reader,
    local_last_modified,
)
from embedding_assets.core.sources.parquet import iter_parquet
from embedding_assets.core.sources.records import FileVersions, SourceRecord, SourceRejection
from embedding_assets.core.sources.s3 import iter_s3, s3_fingerprint, s3_last_modified
from embedding_assets.core.sources.skimage_corpus import skimage_corpus_path
from embedding_assets.core.sources.skimage_corpus import source_uri as skimage_source_uri
from embedding_assets.core.sources.stdlib_corpus import SOURCE_URI as STDLIB_SOURCE_URI
from embedding_assets.core.sources.stdlib_corpus import stdlib_corpus_path

# The names CORPUS_URI gives the embedded corpora.
EMBEDDED_CORPORA = ("stdlib", "skimage")


def source_fingerprint(uri: str, s3_client=None) -> str:
    """Changes whenever the source may have changed: cheap (sizes, times, ETags), read on every tick.

    A JSONL or Parquet file is watched, not the image files its rows refer to: edit the file to
    have a replaced image read again.
    """
    if uri in EMBEDDED_CORPORA:
        return describe_source(uri)
    if uri.startswith("s3://"):
        return s3_fingerprint(uri, s3_client)
    return local_fingerprint(Path(uri))


def source_last_modified(uri: str, s3_client=None) -> float | None:
    """When the source last changed (epoch seconds), where it can tell: the start of a change's freshness."""
    if uri in EMBEDDED_CORPORA:
        return None
    if uri.startswith("s3://"):
        return s3_last_modified(uri, s3_client)
    return local_last_modified(Path(uri))


def describe_source(uri: str) -> str:
    if uri == "stdlib":
        return STDLIB_SOURCE_URI
    return skimage_source_uri() if uri == "skimage" else uri


def iter_source(
    uri: str, cache_dir: Path, shard: str | None = None, s3_client=None, known: FileVersions | None = None
) -> Iterator[SourceRecord]:
    """Documents and rejections of `uri` whose doc_id falls in `shard` (all when None). A folder's or a
    prefix's file that its listing shows unchanged since its live document was read (`known`) is not read:
    it comes as a SourceUnchanged.

    A rejection of the whole source goes to every shard: none may then treat absence as deletion.
    A source with nothing in it (a missing path, an empty folder or prefix) or an S3 listing that
    fails raises instead, before any write.
    """
    if uri == "stdlib":
        records = iter_parquet(stdlib_corpus_path(cache_dir), STDLIB_SOURCE_URI, shard)
    elif uri == "skimage":
        records = iter_parquet(skimage_corpus_path(cache_dir), skimage_source_uri(), shard)
    elif uri.startswith("s3://"):
        records = iter_s3(uri, s3_client, shard, known)
    else:
        path = Path(uri)
        if not path.exists():
            raise FileNotFoundError(
                f"CORPUS_URI {uri!r} does not exist: nothing was read and no document was marked deleted; "
                "restore it or point CORPUS_URI at the right place"
            )
        if path.is_dir():
            records = iter_directory(path, shard, known)
        elif path.suffix == ".jsonl":
            records = iter_jsonl(path, str(path), shard, local_image_reader(path.parent))
        elif path.suffix == ".parquet":
            records = iter_parquet(path, str(path), shard, local_image_reader(path.parent))
        else:
            raise ValueError(
                f"CORPUS_URI {uri!r}: expected a directory, a .jsonl or a .parquet file, or one of {EMBEDDED_CORPORA}"
            )
    yield from (record for record in records if belongs_to_shard(record, shard))


def belongs_to_shard(record: SourceRecord, shard: str | None) -> bool:
    """A record of `shard` (any, when None); a rejection of the whole source belongs to every shard."""
    source_wide = isinstance(record, SourceRejection) and record.whole_source
    return shard is None or source_wide or shard_of(record.doc_id) == shard
