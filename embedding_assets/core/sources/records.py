"""What a corpus source yields: documents, and rejections that say why a record is no document.

A JSONL line or Parquet row is a text (`text`) or an image (`image`: a path relative to the file,
or the bytes in a Parquet binary column; `image_base64` in JSONL), and an image with a `caption`
is a pair. Records that cannot become documents are yielded as rejections with a reason, never
dropped silently. A rejection with `whole_source=False` concerns one record whose id is known;
`True` means the read is not provably whole (a file cut short, a line or row that names no id, an
unreadable folder, object or file), so the corpus stage must not treat absent documents as deleted.
"""

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from embedding_assets.core.images import ImageProblem, ImageRefused
from embedding_assets.core.sharding import shard_of


@dataclass(frozen=True)
class SourceDocument:
    doc_id: str
    # The text, or an image's caption ("" for an image without one).
    text: str
    title: str | None
    source_uri: str
    image: bytes | None = None
    # A folder's or prefix's file as its listing described it (size and modification time, or ETag):
    # kept with the document, so the next read can skip the file while the listing says the same.
    version: str | None = None


@dataclass(frozen=True)
class SourceUnchanged:
    """A file whose listing (size and time, or ETag) is the one its live document was read from: not read."""

    doc_id: str
    source_uri: str


@dataclass(frozen=True)
class SourceRejection:
    doc_id: str
    reason: str
    detail: str
    source_uri: str
    whole_source: bool = False


class SourceUnavailable(RuntimeError):
    """The source could not be read at all (an S3 listing failed): the corpus run fails before it writes."""


SourceRecord = SourceDocument | SourceRejection | SourceUnchanged
# doc_id -> the version its live document was read from (SourceDocument.version).
FileVersions = dict[str, str]
# Reads the image a record refers to by path; raises ImageRefused (missing, too large) instead.
ImageReader = Callable[[str], bytes]


def decode_text_file(data: bytes, doc_id: str, source_uri: str, version: str | None = None) -> SourceRecord:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        return SourceRejection(doc_id, "invalid_utf8", f"byte {error.start}: {error.reason}", source_uri)
    return SourceDocument(doc_id, text, Path(doc_id).stem, source_uri, version=version)


def image_document(
    doc_id: str,
    read: Callable[[], bytes],
    source_uri: str,
    title: str | None,
    caption: str = "",
    where: str = "",
    version: str | None = None,
) -> SourceRecord:
    """The image `read` returns, as a document; or its refusal, cited at `where` (a line, a row) if given."""
    try:
        image = read()
    except ImageRefused as refused:
        return SourceRejection(doc_id, refused.problem.reason, refused.problem.detail, where or source_uri)
    return SourceDocument(doc_id, caption, title, source_uri, image, version)


def base64_image(value) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, TypeError, ValueError) as error:
        raise ImageRefused(ImageProblem("corrupt_image", f"image_base64 is not base64: {error}")) from error


def record_from_fields(
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
    another shard (before its image is read). An id's copies all fall in its shard, so `first_seen` holds
    only the shard's ids: what a shard run keeps grows with its shard, not with the whole source."""
    doc_id = fields.get("id")
    if doc_id is None or str(doc_id).strip() == "":
        # Any document may be the one that lost its id: its absence proves no deletion.
        return SourceRejection(fallback_id, "missing_id", "the record has no id", where, whole_source=True)
    doc_id = str(doc_id)
    if shard is not None and shard_of(doc_id) != shard:
        return None
    if doc_id in first_seen:
        return SourceRejection(
            doc_id, "duplicate_id", f"id already used by record {first_seen[doc_id]}; the first one is kept", where
        )
    first_seen[doc_id] = position
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
        read = lambda: base64_image(encoded)
    elif isinstance(image, bytes):
        read = lambda: image
    else:
        read = lambda: read_image(str(image))
    return image_document(doc_id, read, source_uri, title, caption, where)
