"""Reading a corpus source into documents, one shard at a time.

A source is one of the embedded corpora (`stdlib`: the Python documentation; `skimage`: the
photographs scikit-image ships, with captions), a directory of `.txt`/`.md` files and images, a
JSONL file, or a Parquet file. A JSONL line or Parquet row is a text (`text`) or an image (`image`:
a path relative to the file, or the bytes in a Parquet binary column; `image_base64` in JSONL),
and an image with a `caption` is a pair. Records that cannot become documents are yielded
as rejections with a reason, never dropped silently. A rejection with `whole_source=False`
concerns one record; `True` means part of the source could not be read at all, so the
corpus stage must not treat absent documents as deleted.
"""

import base64
import binascii
import hashlib
import json
import posixpath
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
from botocore.exceptions import ClientError

from embedding_assets.core.images import IMAGE_FILE_SUFFIXES, ImageProblem, ImageRefused, image_size_problem
from embedding_assets.core.sharding import shard_of
from embedding_assets.core.skimage_corpus import skimage_corpus_path
from embedding_assets.core.skimage_corpus import source_uri as skimage_source_uri
from embedding_assets.core.stdlib_corpus import SOURCE_URI as STDLIB_SOURCE_URI
from embedding_assets.core.stdlib_corpus import stdlib_corpus_path

TEXT_FILE_SUFFIXES = (".txt", ".md")
# The names CORPUS_URI gives the embedded corpora.
EMBEDDED_CORPORA = ("stdlib", "skimage")
# Parquet rows batched together: small where a row may hold a 10 MB image.
PARQUET_BATCH_ROWS = {"text": 4096, "image": 64}


@dataclass(frozen=True)
class SourceDocument:
    doc_id: str
    # The text, or an image's caption ("" for an image without one).
    text: str
    title: str | None
    source_uri: str
    image: bytes | None = None


@dataclass(frozen=True)
class SourceRejection:
    doc_id: str
    reason: str
    detail: str
    source_uri: str
    whole_source: bool = False


SourceRecord = SourceDocument | SourceRejection
# Reads the image a record refers to by path; raises ImageRefused (missing, too large) instead.
ImageReader = Callable[[str], bytes]


def source_fingerprint(uri: str, s3_client=None) -> str:
    """Changes whenever the source may have changed: cheap (sizes, times, ETags), read on every tick.

    A JSONL or Parquet file is watched, not the image files its rows refer to: edit the file to
    have a replaced image read again.
    """
    if uri in EMBEDDED_CORPORA:
        return describe_source(uri)
    if uri.startswith("s3://"):
        return s3_fingerprint(uri, s3_client)
    path = Path(uri)
    if not path.exists():
        return "missing"
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        status = file.stat()
        digest.update(f"{file}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def describe_source(uri: str) -> str:
    if uri == "stdlib":
        return STDLIB_SOURCE_URI
    return skimage_source_uri() if uri == "skimage" else uri


def iter_source(uri: str, cache_dir: Path, shard: str | None = None, s3_client=None) -> Iterator[SourceRecord]:
    """Documents and rejections of `uri` whose doc_id falls in `shard` (all when None).

    A rejection of the whole source goes to every shard: none may then treat absence as deletion.
    """
    if uri == "stdlib":
        records = _iter_parquet(stdlib_corpus_path(cache_dir), STDLIB_SOURCE_URI, shard)
    elif uri == "skimage":
        records = _iter_parquet(skimage_corpus_path(cache_dir), skimage_source_uri(), shard)
    elif uri.startswith("s3://"):
        records = _iter_s3(uri, s3_client, shard)
    else:
        path = Path(uri)
        if not path.exists():
            raise FileNotFoundError(f"CORPUS_URI {uri!r} does not exist")
        if path.is_dir():
            records = _iter_directory(path, shard)
        elif path.suffix == ".jsonl":
            records = _iter_jsonl(path, str(path), shard, _local_image_reader(path.parent))
        elif path.suffix == ".parquet":
            records = _iter_parquet(path, str(path), shard, _local_image_reader(path.parent))
        else:
            raise ValueError(
                f"CORPUS_URI {uri!r}: expected a directory, a .jsonl or a .parquet file, or one of {EMBEDDED_CORPORA}"
            )
    for record in records:
        source_wide = isinstance(record, SourceRejection) and record.whole_source
        if shard is None or source_wide or shard_of(record.doc_id) == shard:
            yield record


def _decode(data: bytes, doc_id: str, source_uri: str) -> SourceRecord:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        return SourceRejection(doc_id, "invalid_utf8", f"byte {error.start}: {error.reason}", source_uri)
    return SourceDocument(doc_id, text, Path(doc_id).stem, source_uri)


def _image_document(
    doc_id: str, read: Callable[[], bytes], source_uri: str, title: str | None, caption: str = "", where: str = ""
) -> SourceRecord:
    """The image `read` returns, as a document; or its refusal, cited at `where` (a line, a row) if given."""
    try:
        image = read()
    except ImageRefused as refused:
        return SourceRejection(doc_id, refused.problem.reason, refused.problem.detail, where or source_uri)
    return SourceDocument(doc_id, caption, title, source_uri, image)


def _read_local_image(path: Path) -> bytes:
    if not path.is_file():
        raise ImageRefused(ImageProblem("missing_image", f"no image file at {path}"))
    problem = image_size_problem(path.stat().st_size)
    if problem:
        raise ImageRefused(problem)
    return path.read_bytes()


def _local_image_reader(base: Path) -> ImageReader:
    """Image paths of a JSONL or Parquet file: absolute, or relative to the file's folder."""
    return lambda reference: _read_local_image(base / reference)


def _iter_directory(root: Path, shard: str | None) -> Iterator[SourceRecord]:
    suffixes = TEXT_FILE_SUFFIXES + IMAGE_FILE_SUFFIXES
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file()):
        doc_id = path.relative_to(root).as_posix()
        if shard is not None and shard_of(doc_id) != shard:
            continue
        if path.suffix.lower() in IMAGE_FILE_SUFFIXES:
            yield _image_document(doc_id, lambda: _read_local_image(path), str(path), path.stem)
        else:
            yield _decode(path.read_bytes(), doc_id, str(path))


def _iter_jsonl(path: Path, name: str, shard: str | None, read_image: ImageReader) -> Iterator[SourceRecord]:
    """Records of a JSONL file; `name` is how to cite it (its S3 URI when downloaded)."""
    first_line_of: dict[str, int] = {}
    with path.open("rb") as lines:
        for number, raw_line in enumerate(lines, start=1):
            where = f"{name}:{number}"
            line_id = f"{name.rsplit('/', 1)[-1]}:line-{number}"
            if not raw_line.strip():
                continue
            try:
                record = json.loads(raw_line)
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                yield SourceRejection(line_id, "malformed_json", str(error), where)
                continue
            if not isinstance(record, dict):
                yield SourceRejection(
                    line_id, "malformed_json", f"expected an object, got {type(record).__name__}", where
                )
                continue
            record = _to_record(record, line_id, where, first_line_of, number, name, read_image, shard)
            if record is not None:
                yield record


def _base64_image(value) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, TypeError, ValueError) as error:
        raise ImageRefused(ImageProblem("corrupt_image", f"image_base64 is not base64: {error}")) from error


def _to_record(
    fields: dict,
    fallback_id: str,
    where: str,
    first_seen: dict[str, int],
    position: int,
    source_uri: str,
    read_image: ImageReader | None,
    shard: str | None,
) -> SourceRecord | None:
    """A JSONL line's or Parquet row's fields as a document or a rejection; None when it belongs to
    another shard (after its id is checked, so duplicates are still found, and before its image is read)."""
    doc_id = fields.get("id")
    if doc_id is None or str(doc_id).strip() == "":
        return SourceRejection(fallback_id, "missing_id", "the record has no id", where)
    doc_id = str(doc_id)
    if doc_id in first_seen:
        return SourceRejection(
            doc_id, "duplicate_id", f"id already used by record {first_seen[doc_id]}; the first one is kept", where
        )
    first_seen[doc_id] = position
    if shard is not None and shard_of(doc_id) != shard:
        return None
    title = fields.get("title")
    title = str(title) if title is not None else None
    image, encoded = fields.get("image"), fields.get("image_base64")
    if image is None and encoded is None:
        text = fields.get("text")
        if not isinstance(text, str):
            return SourceRejection(doc_id, "missing_text", f"text is {type(text).__name__}, expected a string", where)
        return SourceDocument(doc_id, text, title, source_uri)
    # An image's caption makes it a pair; `text` is accepted as the caption too.
    caption = next((fields[key] for key in ("caption", "text") if fields.get(key) is not None), "")
    if not isinstance(caption, str):
        return SourceRejection(doc_id, "missing_text", f"caption is {type(caption).__name__}, expected a string", where)
    if encoded is not None:
        read = lambda: _base64_image(encoded)
    elif isinstance(image, bytes):
        read = lambda: image
    else:
        read = lambda: read_image(str(image))
    return _image_document(doc_id, read, source_uri, title, caption, where)


def _iter_parquet(
    path: Path, source_uri: str, shard: str | None = None, read_image: ImageReader | None = None
) -> Iterator[SourceRecord]:
    parquet = pq.ParquetFile(path)
    present = parquet.schema_arrow.names
    name = source_uri.rsplit("/", 1)[-1]
    missing = [] if "id" in present else ["id"]
    if "text" not in present and "image" not in present:
        missing.append("text (or image)")
    if missing:
        detail = f"{source_uri} lacks column(s) {', '.join(missing)}"
        yield SourceRejection(name, "missing_columns", detail, source_uri, whole_source=True)
        return

    columns = [column for column in ("id", "text", "title", "image", "caption") if column in present]
    batch_rows = PARQUET_BATCH_ROWS["image" if "image" in columns else "text"]
    first_row_of: dict[str, int] = {}
    position = 0
    for batch in parquet.iter_batches(columns=columns, batch_size=batch_rows):
        values = {column: batch.column(column).to_pylist() for column in columns}
        values["id"] = pc.cast(batch.column("id"), "string").to_pylist()
        for row in range(batch.num_rows):
            position += 1
            fields = {column: values[column][row] for column in columns}
            where = f"{source_uri}#row-{position}"
            record = _to_record(
                fields, f"{name}:row-{position}", where, first_row_of, position, source_uri, read_image, shard
            )
            if record is not None:
                yield record


def _s3_objects(uri: str, client) -> tuple[str, str, list[dict]]:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return bucket, prefix, sorted((item for page in pages for item in page.get("Contents", [])), key=lambda o: o["Key"])


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


def _iter_s3(uri: str, client, shard: str | None) -> Iterator[SourceRecord]:
    """An s3:// prefix read like a directory (.txt/.md files and images, id = key below the prefix),
    plus any .jsonl or .parquet objects in it, each read like a local file of that kind."""
    if client is None:
        raise ValueError(f"CORPUS_URI {uri!r} is on S3 but no S3 client was configured")
    bucket, prefix, objects = _s3_objects(uri, client)
    if not objects:
        raise FileNotFoundError(f"CORPUS_URI {uri!r}: no object under that prefix")
    for item in objects:
        key = item["Key"]
        name = f"s3://{bucket}/{key}"
        doc_id = key[len(prefix) :].lstrip("/") or key.rsplit("/", 1)[-1]
        in_shard = shard is None or shard_of(doc_id) == shard
        if key.endswith(TEXT_FILE_SUFFIXES) and in_shard:
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            yield _decode(body, doc_id, name)
        elif key.lower().endswith(IMAGE_FILE_SUFFIXES) and in_shard:
            yield _image_document(doc_id, lambda: _read_s3_image(client, bucket, key), name, Path(key).stem)
        elif key.endswith((".jsonl", ".parquet")):
            read_image = _s3_image_reader(client, bucket, key)
            with tempfile.TemporaryDirectory() as scratch:
                local = Path(scratch) / key.rsplit("/", 1)[-1]
                client.download_file(bucket, key, str(local))
                if key.endswith(".jsonl"):
                    yield from _iter_jsonl(local, name, shard, read_image)
                else:
                    yield from _iter_parquet(local, name, shard, read_image)


def s3_fingerprint(uri: str, client) -> str:
    _, _, objects = _s3_objects(uri, client)
    return hashlib.sha256("".join(f"{o['Key']}\0{o['ETag']}\0{o['Size']}\n" for o in objects).encode()).hexdigest()
