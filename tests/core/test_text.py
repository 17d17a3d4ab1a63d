import unicodedata

from embedding_assets.core.text import content_hash, find_text_problem, normalize_text


def test_normalize_applies_nfc_and_collapses_whitespace():
    decomposed = unicodedata.normalize("NFD", "café\n\n  crème\tbrûlée  ")
    assert normalize_text(decomposed) == "café crème brûlée"
    assert normalize_text(decomposed) == normalize_text("café crème brûlée")


def test_content_hash_is_sha256_of_normalized_utf8():
    assert content_hash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert content_hash(normalize_text(" a  b ")) == content_hash("a b")
    assert content_hash(b"\x00\x01") != content_hash("\x00\x01 ")


def test_problems_are_named_with_a_reason():
    assert find_text_problem("").reason == "empty_text"
    assert find_text_problem(" \n\t ").reason == "whitespace_only"
    problem = find_text_problem("ok\x00bad")
    assert problem.reason == "control_characters" and "U+0000" in problem.detail
    assert find_text_problem("a" * 20, max_chars=10).reason == "text_too_large"
    assert find_text_problem("x " + "y" * 100_000).reason == "word_too_long"


def test_other_scripts_emoji_tabs_and_newlines_are_fine():
    assert find_text_problem("Ünïcödé 日本語 ∑ 🎉\tline\nnext\r\n") is None
