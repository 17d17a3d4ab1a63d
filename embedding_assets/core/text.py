"""Normalization and content addressing of text.

The content hash is the cache key of every vector, so normalization must be stable:
NFC first (so visually identical strings hash alike), then whitespace collapsed.
"""

import hashlib
import re
import unicodedata
from dataclasses import dataclass

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# Defaults for what the corpus stage accepts; larger inputs go to quarantine, not to the model.
MAX_TEXT_CHARS = 1_000_000
MAX_WORD_CHARS = 10_000


def normalize_text(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def content_hash(normalized: str | bytes) -> str:
    data = normalized.encode("utf-8") if isinstance(normalized, str) else normalized
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class TextProblem:
    reason: str
    detail: str


def find_text_problem(
    raw: str, max_chars: int = MAX_TEXT_CHARS, max_word_chars: int = MAX_WORD_CHARS
) -> TextProblem | None:
    """Why a raw text must not be embedded, or None when it is fine.

    Checked on the raw text: control characters vanish in normalization, but their presence
    usually means a binary file or a broken export, which a user wants to hear about.
    """
    if not raw:
        return TextProblem("empty_text", "the text is empty")
    if not raw.strip():
        return TextProblem("whitespace_only", f"the text holds only {len(raw)} whitespace characters")
    control = _CONTROL_CHARACTERS.search(raw)
    if control:
        return TextProblem(
            "control_characters",
            f"control character U+{ord(control.group()):04X} at offset {control.start()}",
        )
    if len(raw) > max_chars:
        return TextProblem("text_too_large", f"{len(raw):,} characters, limit {max_chars:,}")
    longest = max((len(word) for word in raw.split()), default=0)
    if longest > max_word_chars:
        return TextProblem("word_too_long", f"a single token of {longest:,} characters, limit {max_word_chars:,}")
    return None
