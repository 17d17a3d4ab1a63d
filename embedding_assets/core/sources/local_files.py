"""A local folder of `.txt`/`.md` files and images (id = path below the folder), and image paths
that JSONL or Parquet files name relative to themselves."""

import hashlib
from collections.abc import Iterator
from pathlib import Path

from embedding_assets.core.images import IMAGE_FILE_SUFFIXES, ImageProblem, ImageRefused, image_size_problem
from embedding_assets.core.sharding import shard_of
from embedding_assets.core.sources.records import ImageReader, SourceRecord, decode_text_file, image_document

TEXT_FILE_SUFFIXES = (".txt", ".md")


def read_local_image(path: Path) -> bytes:
    if not path.is_file():
        raise ImageRefused(ImageProblem("missing_image", f"no image file at {path}"))
    problem = image_size_problem(path.stat().st_size)
    if problem:
        raise ImageRefused(problem)
    return path.read_bytes()


def local_image_reader(base: Path) -> ImageReader:
    """Image paths of a JSONL or Parquet file: absolute, or relative to the file's folder."""
    return lambda reference: read_local_image(base / reference)


def iter_directory(root: Path, shard: str | None) -> Iterator[SourceRecord]:
    suffixes = TEXT_FILE_SUFFIXES + IMAGE_FILE_SUFFIXES
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file()):
        doc_id = path.relative_to(root).as_posix()
        if shard is not None and shard_of(doc_id) != shard:
            continue
        if path.suffix.lower() in IMAGE_FILE_SUFFIXES:
            yield image_document(doc_id, lambda: read_local_image(path), str(path), path.stem)
        else:
            yield decode_text_file(path.read_bytes(), doc_id, str(path))


def local_fingerprint(path: Path) -> str:
    """Names, sizes and modification times of the file, or of every file below the folder."""
    if not path.exists():
        return "missing"
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        status = file.stat()
        digest.update(f"{file}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
    return digest.hexdigest()
