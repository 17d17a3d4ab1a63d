"""A JSONL source: one object per line (`id`, `text`, optional `title`; or `image` / `image_base64`
and an optional `caption`).

A line that does not parse could be any document, and a last line cut mid-record means the file was
truncated: either makes the read not provably whole (`whole_source`), as does a file with no record.
"""

import json
from collections.abc import Iterator
from pathlib import Path

from embedding_assets.core.sources.records import ImageReader, SourceRecord, SourceRejection, record_from_fields


def _unparsable(raw_line: bytes, error: Exception, number: int, line_id: str, where: str) -> SourceRejection:
    # Only the last line can lack its newline: one that also fails to parse is a file cut short.
    if not raw_line.endswith(b"\n"):
        detail = (
            f"the file ends mid-record at line {number} ({error}): it was probably cut short (an interrupted copy "
            "or upload); restore the whole file"
        )
        return SourceRejection(line_id, "truncated_file", detail, where, whole_source=True)
    return SourceRejection(line_id, "malformed_json", str(error), where, whole_source=True)


def iter_jsonl(path: Path, name: str, shard: str | None, read_image: ImageReader) -> Iterator[SourceRecord]:
    """Records of a JSONL file; `name` is how to cite it (its S3 URI when downloaded)."""
    first_line_of: dict[str, int] = {}
    records = 0
    with path.open("rb") as lines:
        for number, raw_line in enumerate(lines, start=1):
            where = f"{name}:{number}"
            line_id = f"{name.rsplit('/', 1)[-1]}:line-{number}"
            if not raw_line.strip():
                continue
            records += 1
            try:
                record = json.loads(raw_line)
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                yield _unparsable(raw_line, error, number, line_id, where)
                continue
            if not isinstance(record, dict):
                detail = f"expected an object, got {type(record).__name__}"
                yield SourceRejection(line_id, "malformed_json", detail, where, whole_source=True)
                continue
            record = record_from_fields(record, line_id, where, first_line_of, number, name, read_image, shard)
            if record is not None:
                yield record
    if not records:
        detail = f"{name} holds no record: if the file was emptied by mistake, restore it"
        yield SourceRejection(name.rsplit("/", 1)[-1], "empty_file", detail, name, whole_source=True)
