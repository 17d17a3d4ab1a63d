"""The embedded image corpus: the sample photographs that scikit-image ships (`skimage/data`).

Each file becomes a row: a pair when a `skimage.data` loader opens it (its caption is the first
paragraph of that loader's docstring, "Chelsea the cat."), an image alone when none does (the
chessboard, the multipage TIFFs, the GIF). The rows are cached as Parquet per scikit-image version
and read like any Parquet source with an `image` column.
"""

import inspect
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from embedding_assets.core.images import IMAGE_FILE_SUFFIXES

SCHEMA = pa.schema([("id", pa.string()), ("title", pa.string()), ("caption", pa.string()), ("image", pa.binary())])


def source_uri() -> str:
    import skimage

    return f"scikit-image-data:{skimage.__version__}"


def _captions(data_module) -> dict[str, tuple[str, str]]:
    """file name -> (loader name, first docstring paragraph), from the loaders that open each file."""
    found: dict[str, tuple[str, str]] = {}
    for name in sorted(data_module.__all__):
        loader = getattr(data_module, name)
        doc = inspect.getdoc(loader) if callable(loader) else None
        if not doc:
            continue
        source = inspect.getsource(loader)
        for file_name in os.listdir(data_module.data_dir):
            # Several loaders may open one file (`cat` and `chelsea`): the one named like the file wins.
            if f"data/{file_name}" in source and (file_name not in found or Path(file_name).stem == name):
                found[file_name] = (name, " ".join(doc.split("\n\n")[0].split()))
    return found


def skimage_rows() -> pa.Table:
    import skimage.data

    captions = _captions(skimage.data)
    files = sorted(name for name in os.listdir(skimage.data.data_dir) if name.lower().endswith(IMAGE_FILE_SUFFIXES))
    rows = []
    for name in files:
        loader, caption = captions.get(name, (Path(name).stem, None))
        image = (Path(skimage.data.data_dir) / name).read_bytes()
        rows.append({"id": f"skimage:{name}", "title": loader, "caption": caption, "image": image})
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def skimage_corpus_path(cache_dir: Path) -> Path:
    """The cached corpus file, written on first use."""
    path = cache_dir / f"{source_uri().replace(':', '-')}.parquet"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        pq.write_table(skimage_rows(), partial)
        partial.replace(path)
    return path
