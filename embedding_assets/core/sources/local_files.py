"""A local folder of `.txt`/`.md` files and images (id = path below the folder), and image paths
that JSONL or Parquet files name relative to themselves."""

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from embedding_assets.core.images import IMAGE_FILE_SUFFIXES, ImageProblem, ImageRefused, image_size_problem
from embedding_assets.core.sharding import shard_of
from embedding_assets.core.sources.records import (
    FileVersions,
    ImageReader,
    SourceRecord,
    SourceRejection,
    SourceUnchanged,
    decode_text_file,
    image_document,
)

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


def _walk(root: Path) -> tuple[list[Path], list[OSError]]:
    """Every file below `root`, and the folders that could not be listed (`rglob` would skip them silently)."""
    files, errors = [], []
    for folder, _, names in os.walk(root, onerror=errors.append):
        files += [Path(folder) / name for name in names]
    return sorted(files), errors


def _unreadable(root: Path, error: OSError, reason: str) -> SourceRejection:
    path = Path(error.filename)
    detail = (
        f"{path}: {error.strerror or error}; its documents could not be read, so no document was marked deleted: "
        "make it readable by the user that runs the pipeline"
    )
    return SourceRejection(path.relative_to(root).as_posix(), reason, detail, str(path), whole_source=True)


def iter_directory(root: Path, shard: str | None, known: FileVersions | None = None) -> Iterator[SourceRecord]:
    """The folder's files as documents; a file whose size and modification time are those its live document
    was read from (`known`) is not read again (like rsync's quick check: an edit that keeps both is missed)."""
    suffixes = TEXT_FILE_SUFFIXES + IMAGE_FILE_SUFFIXES
    files, errors = _walk(root)
    documents = [path for path in files if path.suffix.lower() in suffixes and path.is_file()]
    if not documents and not errors:
        raise FileNotFoundError(
            f"CORPUS_URI {str(root)!r} holds no .txt, .md or image file: nothing was read and no document was "
            "marked deleted; put the documents back or point CORPUS_URI at the right folder"
        )
    for error in errors:
        yield _unreadable(root, error, "unreadable_directory")
    for path in documents:
        doc_id = path.relative_to(root).as_posix()
        if shard is not None and shard_of(doc_id) != shard:
            continue
        try:
            status = path.stat()
        except OSError as error:
            yield _unreadable(root, error, "unreadable_file")
            continue
        version = f"{status.st_size}:{status.st_mtime_ns}"
        if known and known.get(doc_id) == version:
            yield SourceUnchanged(doc_id, str(path))
            continue
        if path.suffix.lower() in IMAGE_FILE_SUFFIXES:
            yield image_document(doc_id, lambda: read_local_image(path), str(path), path.stem, version=version)
            continue
        try:
            data = path.read_bytes()
        except OSError as error:
            yield _unreadable(root, error, "unreadable_file")
            continue
        yield decode_text_file(data, doc_id, str(path), version)


def local_last_modified(path: Path) -> float | None:
    """The newest modification time (epoch seconds) of the file or of any file below the folder."""
    if not path.exists():
        return None
    files = [file for file in _walk(path)[0] if file.is_file()] if path.is_dir() else [path]
    return max((file.stat().st_mtime for file in files), default=None)


def local_fingerprint(path: Path) -> str:
    """Names, sizes and modification times of the file, or of every file below the folder."""
    if not path.exists():
        return "missing"
    files = [file for file in _walk(path)[0] if file.is_file()] if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        status = file.stat()
        digest.update(f"{file}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
    return digest.hexdigest()
