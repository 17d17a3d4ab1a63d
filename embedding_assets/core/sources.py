"""Reading a corpus source into documents, one shard at a time.

A source is the embedded Python documentation (`stdlib`), a directory of `.txt`/`.md`
files, a JSONL file, or a Parquet file. Records that cannot become documents are yielded
as rejections with a reason, never dropped silently. A rejection with `whole_source=False`
concerns one record; `True` means part of the source could not be read at all, so the
corpus stage must not treat absent documents as deleted.
"""

import hashlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from embedding_assets.core.stdlib_corpus import SOURCE_URI as STDLIB_SOURCE_URI
from embedding_assets.core.stdlib_corpus import stdlib_corpus_path
from partitions import shard_of

TEXT_FILE_SUFFIXES = (".txt", ".md")
REQUIRED_COLUMNS = ("id", "text")


@dataclass(frozen=True)
class SourceDocument:
    doc_id: str
    text: str
    title: str | None
    source_uri: str


@dataclass(frozen=True)
class SourceRejection:
    doc_id: str
    reason: str
    detail: str
    source_uri: str
    whole_source: bool = False


SourceRecord = SourceDocument | SourceRejection


def source_fingerprint(uri: str, s3_client=None) -> str:
    """Changes whenever the source may have changed: cheap (sizes, times, ETags), read on every tick."""
    if uri == "stdlib":
        return STDLIB_SOURCE_URI
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
    return STDLIB_SOURCE_URI if uri == "stdlib" else uri


def iter_source(uri: str, cache_dir: Path, shard: str | None = None, s3_client=None) -> Iterator[SourceRecord]:
    """Documents and rejections of `uri` whose doc_id falls in `shard` (all when None).

    A rejection of the whole source goes to every shard: none may then treat absence as deletion.
    """
    if uri == "stdlib":
        records = _iter_parquet(stdlib_corpus_path(cache_dir), STDLIB_SOURCE_URI)
    elif uri.startswith("s3://"):
        records = _iter_s3(uri, s3_client, shard)
    else:
        path = Path(uri)
        if not path.exists():
            raise FileNotFoundError(f"CORPUS_URI {uri!r} does not exist")
        if path.is_dir():
            records = _iter_directory(path, shard)
        elif path.suffix == ".jsonl":
            records = _iter_jsonl(path)
        elif path.suffix == ".parquet":
            records = _iter_parquet(path, str(path))
        else:
            raise ValueError(f"CORPUS_URI {uri!r}: expected a directory, a .jsonl or a .parquet file, or 'stdlib'")
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


def _iter_directory(root: Path, shard: str | None) -> Iterator[SourceRecord]:
    for path in sorted(p for p in root.rglob("*") if p.suffix in TEXT_FILE_SUFFIXES and p.is_file()):
        doc_id = path.relative_to(root).as_posix()
        if shard is None or shard_of(doc_id) == shard:
            yield _decode(path.read_bytes(), doc_id, str(path))


def _iter_jsonl(path: Path, name: str | None = None) -> Iterator[SourceRecord]:
    """Records of a JSONL file; `name` is how to cite it (its S3 URI when downloaded)."""
    name = name or str(path)
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
            rejection = _record_problem(record.get("id"), record.get("text"), line_id, where, first_line_of, number)
            if rejection:
                yield rejection
                continue
            doc_id = str(record["id"])
            title = record.get("title")
            yield SourceDocument(doc_id, record["text"], str(title) if title is not None else None, name)


def _record_problem(doc_id, text, fallback_id: str, where: str, first_line_of: dict[str, int], position: int):
    if doc_id is None or str(doc_id).strip() == "":
        return SourceRejection(fallback_id, "missing_id", "the record has no id", where)
    doc_id = str(doc_id)
    if doc_id in first_line_of:
        return SourceRejection(
            doc_id, "duplicate_id", f"id already used by record {first_line_of[doc_id]}; the first one is kept", where
        )
    first_line_of[doc_id] = position
    if not isinstance(text, str):
        return SourceRejection(doc_id, "missing_text", f"text is {type(text).__name__}, expected a string", where)
    return None


def _iter_parquet(path: Path, source_uri: str) -> Iterator[SourceRecord]:
    parquet = pq.ParquetFile(path)
    missing = [column for column in REQUIRED_COLUMNS if column not in parquet.schema_arrow.names]
    name = source_uri.rsplit("/", 1)[-1]
    if missing:
        detail = f"{source_uri} lacks column(s) {', '.join(missing)}"
        yield SourceRejection(name, "missing_columns", detail, source_uri, whole_source=True)
        return

    columns = [*REQUIRED_COLUMNS, *(["title"] if "title" in parquet.schema_arrow.names else [])]
    first_row_of: dict[str, int] = {}
    position = 0
    for batch in parquet.iter_batches(columns=columns, batch_size=4096):
        ids = pc.cast(batch.column("id"), "string").to_pylist()
        texts = batch.column("text").to_pylist()
        titles = batch.column("title").to_pylist() if "title" in columns else [None] * len(ids)
        for doc_id, text, title in zip(ids, texts, titles):
            position += 1
            where = f"{source_uri}#row-{position}"
            rejection = _record_problem(doc_id, text, f"{name}:row-{position}", where, first_row_of, position)
            yield rejection or SourceDocument(doc_id, text, title, source_uri)


def _s3_objects(uri: str, client) -> tuple[str, str, list[dict]]:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return bucket, prefix, sorted((item for page in pages for item in page.get("Contents", [])), key=lambda o: o["Key"])


def _iter_s3(uri: str, client, shard: str | None) -> Iterator[SourceRecord]:
    """An s3:// prefix read like a directory (.txt/.md files, id = key below the prefix), plus any
    .jsonl or .parquet objects in it, each read like a local file of that kind."""
    if client is None:
        raise ValueError(f"CORPUS_URI {uri!r} is on S3 but no S3 client was configured")
    bucket, prefix, objects = _s3_objects(uri, client)
    if not objects:
        raise FileNotFoundError(f"CORPUS_URI {uri!r}: no object under that prefix")
    for item in objects:
        key = item["Key"]
        name = f"s3://{bucket}/{key}"
        doc_id = key[len(prefix) :].lstrip("/") or key.rsplit("/", 1)[-1]
        if key.endswith(TEXT_FILE_SUFFIXES):
            if shard is None or shard_of(doc_id) == shard:
                body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
                yield _decode(body, doc_id, name)
        elif key.endswith((".jsonl", ".parquet")):
            with tempfile.TemporaryDirectory() as scratch:
                local = Path(scratch) / key.rsplit("/", 1)[-1]
                client.download_file(bucket, key, str(local))
                yield from _iter_jsonl(local, name) if key.endswith(".jsonl") else _iter_parquet(local, name)


def s3_fingerprint(uri: str, client) -> str:
    _, _, objects = _s3_objects(uri, client)
    return hashlib.sha256("".join(f"{o['Key']}\0{o['ETag']}\0{o['Size']}\n" for o in objects).encode()).hexdigest()
