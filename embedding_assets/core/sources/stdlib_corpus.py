"""The embedded default corpus: documentation that every Python installation carries.

`pydoc_data.topics` (the language reference topics behind `help()`) plus the docstrings of
the standard library's public modules, classes, functions and methods, with inherited and
re-exported docstrings kept: they are the exact and near duplicates that dedup must handle.

Importing hundreds of modules has side effects (some print, some register handlers), so the
extraction runs in a child interpreter and its result is cached as Parquet per Python version.
"""

import contextlib
import importlib
import inspect
import io
import os
import pkgutil
import subprocess
import sys
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# Modules that open windows, browsers or test harnesses, or exist only on Windows.
_SKIPPED_MODULES = {
    "antigravity",
    "this",
    "idlelib",
    "tkinter",
    "turtle",
    "turtledemo",
    "test",
    "lib2to3",
    "ensurepip",
    "venv",
    "pydoc_data",
    "msilib",
    "winreg",
    "winsound",
    "nt",
    "msvcrt",
}
SOURCE_URI = f"python-stdlib:{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
_SCHEMA = pa.schema([("id", pa.string()), ("title", pa.string()), ("text", pa.string())])


def _public(name: str) -> bool:
    return not any(part.startswith("_") or part in ("test", "tests") for part in name.split("."))


def _import_quietly(name: str):
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - a module that cannot import here is simply not part of the corpus
            return None


def _public_module_names():
    for top in sorted(sys.stdlib_module_names):
        if not _public(top) or top in _SKIPPED_MODULES:
            continue
        module = _import_quietly(top)
        if module is None:
            continue
        yield top
        if hasattr(module, "__path__"):
            for info in pkgutil.walk_packages(module.__path__, top + ".", onerror=lambda _name: None):
                if _public(info.name):
                    yield info.name


def _documented_members(module_name: str, module):
    names = getattr(module, "__all__", None) or [name for name in dir(module) if not name.startswith("_")]
    for name in sorted(set(names)):
        member = getattr(module, name, None)
        if not (inspect.isclass(member) or inspect.isroutine(member)):
            continue
        yield f"{module_name}.{name}", member
        if inspect.isclass(member):
            for attribute in sorted(vars(member)):
                raw = vars(member)[attribute]
                if attribute.startswith("_") or not (inspect.isroutine(raw) or isinstance(raw, property)):
                    continue
                with contextlib.suppress(Exception):
                    yield f"{module_name}.{name}.{attribute}", getattr(member, attribute)


def extract_stdlib_documents() -> dict[str, tuple[str, str]]:
    """doc_id -> (title, text) for the running interpreter's standard library."""
    from pydoc_data.topics import topics

    documents = {f"topic:{name}": (name, text) for name, text in topics.items()}
    for module_name in _public_module_names():
        module = _import_quietly(module_name)
        if module is None:
            continue
        for qualified_name, member in [(module_name, module), *_documented_members(module_name, module)]:
            doc = inspect.getdoc(member)
            if doc and doc.strip():
                documents[f"py:{qualified_name}"] = (qualified_name, doc)
    return documents


def write_stdlib_corpus(path: Path) -> None:
    documents = extract_stdlib_documents()
    ids = sorted(documents)
    table = pa.table(
        {"id": ids, "title": [documents[i][0] for i in ids], "text": [documents[i][1] for i in ids]},
        schema=_SCHEMA,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    pq.write_table(table, partial)
    partial.replace(path)


def stdlib_corpus_path(cache_dir: Path) -> Path:
    """The cached corpus file, extracted in a child interpreter on first use."""
    path = cache_dir / f"{SOURCE_URI.replace(':', '-')}.parquet"
    if not path.exists():
        subprocess.run(
            [sys.executable, "-m", "embedding_assets.core.sources.stdlib_corpus", str(path)],
            check=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
        )
    return path


if __name__ == "__main__":
    write_stdlib_corpus(Path(sys.argv[1]))
