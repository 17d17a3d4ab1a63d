"""An `s3://` prefix, read like a folder (`.txt`/`.md` objects and images, id = key below the prefix),
plus any `.jsonl` or `.parquet` objects in it, each read like a local file of that kind."""

import hashlib
import posixpath
import tempfile
from collections.abc import Iterator
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from embedding_assets.core.images import IMAGE_FILE_SUFFIXES, ImageProblem, ImageRefused, image_size_problem
from embedding_assets.core.sharding import shard_of
from embedding_assets.core.sources.jsonl import iter_jsonl
from embedding_assets.core.sources.local_files import TEXT_FILE_SUFFIXES
from embedding_assets.core.sources.parquet import iter_parquet
from embedding_assets.core.sources.records import (
    FileVersions,
    ImageReader,
    SourceRecord,
    SourceRejection,
    SourceUnavailable,
    SourceUnchanged,
    decode_text_file,
    image_document,
)


def _s3_objects(uri: str, client) -> tuple[str, str, list[dict]]:
    """Every object under the prefix; a listing that fails part-way fails as a whole, never as a shorter list."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        objects = [item for page in pages for item in page.get("Contents", [])]
    except (ClientError, BotoCoreError) as error:
        raise SourceUnavailable(
            f"CORPUS_URI {uri!r} could not be listed ({error}): nothing was read and no document was marked "
            "deleted; check the bucket name, the credentials and AWS_ENDPOINT_URL, then rerun"
        ) from error
    return bucket, prefix, sorted(objects, key=lambda o: o["Key"])


def _unreadable_object(doc_id: str, name: str, error: Exception) -> SourceRejection:
    detail = (
        f"{name} could not be read ({error}), so no document was marked deleted: check that the object exists "
        "and that the pipeline's credentials may read it, then rerun"
    )
    return SourceRejection(doc_id, "unreadable_object", detail, name, whole_source=True)


def _read_s3_image(client, bucket: str, key: str) -> bytes:
    try:
        response = client.get_object(Bucket=bucket, Key=key)
    except ClientError as error:
        raise ImageRefused(ImageProblem("missing_image", f"s3://{bucket}/{key}: {error}")) from error
    problem = image_size_problem(response["ContentLength"])
    if problem:
        response["Body"].close()
        raise ImageRefused(problem)
    return response["Body"].read()


def _s3_image_reader(client, bucket: str, key: str) -> ImageReader:
    """Image paths of a JSONL or Parquet object: `s3://bucket/key`, or relative to the object's folder."""

    def read(reference: str) -> bytes:
        if reference.startswith("s3://"):
            other_bucket, _, other_key = reference.removeprefix("s3://").partition("/")
            return _read_s3_image(client, other_bucket, other_key)
        return _read_s3_image(client, bucket, posixpath.normpath(posixpath.join(posixpath.dirname(key), reference)))

    return read


def iter_s3(uri: str, client, shard: str | None, known: FileVersions | None = None) -> Iterator[SourceRecord]:
    """An s3:// prefix read like a directory (.txt/.md files and images, id = key below the prefix),
    plus any .jsonl or .parquet objects in it, each read like a local file of that kind. A text or image
    object whose ETag and size are those its live document was read from (`known`) is not fetched again."""
    if client is None:
        raise ValueError(f"CORPUS_URI {uri!r} is on S3 but no S3 client was configured")
    bucket, prefix, objects = _s3_objects(uri, client)
    if not objects:
        raise FileNotFoundError(
            f"CORPUS_URI {uri!r}: no object under that prefix: nothing was read and no document was marked deleted; "
            "put the documents back or point CORPUS_URI at the right prefix"
        )
    for item in objects:
        key = item["Key"]
        name = f"s3://{bucket}/{key}"
        doc_id = key[len(prefix) :].lstrip("/") or key.rsplit("/", 1)[-1]
        in_shard = shard is None or shard_of(doc_id) == shard
        version = f"{item['Size']}:{item['ETag']}"
        one_document = key.endswith(TEXT_FILE_SUFFIXES) or key.lower().endswith(IMAGE_FILE_SUFFIXES)
        if one_document and in_shard and known and known.get(doc_id) == version:
            yield SourceUnchanged(doc_id, name)
        elif key.endswith(TEXT_FILE_SUFFIXES) and in_shard:
            try:
                body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            except (ClientError, BotoCoreError) as error:
                yield _unreadable_object(doc_id, name, error)
                continue
            yield decode_text_file(body, doc_id, name, version)
        elif key.lower().endswith(IMAGE_FILE_SUFFIXES) and in_shard:
            yield image_document(
                doc_id, lambda: _read_s3_image(client, bucket, key), name, Path(key).stem, version=version
            )
        elif key.endswith((".jsonl", ".parquet")):
            read_image = _s3_image_reader(client, bucket, key)
            with tempfile.TemporaryDirectory() as scratch:
                local = Path(scratch) / key.rsplit("/", 1)[-1]
                try:
                    client.download_file(bucket, key, str(local))
                except (ClientError, BotoCoreError) as error:
                    yield _unreadable_object(key.rsplit("/", 1)[-1], name, error)
                    continue
                if key.endswith(".jsonl"):
                    yield from iter_jsonl(local, name, shard, read_image)
                else:
                    yield from iter_parquet(local, name, shard, read_image)


def s3_fingerprint(uri: str, client) -> str:
    _, _, objects = _s3_objects(uri, client)
    return hashlib.sha256("".join(f"{o['Key']}\0{o['ETag']}\0{o['Size']}\n" for o in objects).encode()).hexdigest()


def s3_last_modified(uri: str, client) -> float | None:
    _, _, objects = _s3_objects(uri, client)
    return max((o["LastModified"].timestamp() for o in objects), default=None)
