"""A JSONL source: one object per line (`id`, `text`, optional `title`; or `image` / `image_base64`
and an optional `caption`)."""

import json
from collections.abc import Iterator
from pathlib import Path

from embedding_assets.core.sources.records import ImageReader, SourceRecord, SourceRejection, record_from_fields


def iter_jsonl(path: Path, name: str, shard: str | None, read_image: ImageReader) -> Iterator[SourceRecord]:
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
            record = record_from_fields(record, line_id, where, first_line_of, number, name, read_image, shard)
            if record is not None:
                yield record
