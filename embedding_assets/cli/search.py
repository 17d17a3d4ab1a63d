"""`make search q="..." [v=<version>]`: the top hits of a query against the live index, or a given version.

The query is text whatever the version embeds: on an open_clip version it finds images too.
"""

import argparse

from dagster import Definitions

from embedding_assets.core.aliases import LIVE_ALIAS, current_alias
from embedding_assets.core.gates import readable_table_version
from embedding_assets.core.schemas import embeddings_table_name
from embedding_assets.core.vector_search import Hit, search


def search_version(defs: Definitions, model_version: str, query: str, k: int = 5, table_version: int | None = None):
    """Hits for `query` in a registered version's table, at `table_version` or else the newest one whose
    gates passed: what the serving API would answer."""
    store = defs.resources["lancedb"].store()
    registry = defs.resources["model_registry"]
    try:
        spec = registry.spec(model_version)
    except KeyError as error:
        raise SystemExit(error.args[0]) from error
    if not store.has_table(embeddings_table_name(model_version)):
        raise SystemExit(f"{model_version} has no table yet: run `make demo` (or materialize its embeddings) first")
    if table_version is None:
        table_version = readable_table_version(store, model_version)
    if table_version is None:
        raise SystemExit(f"{model_version} has no table version that passed its gates yet: materialize live_index")
    return search(store, model_version, table_version, registry.encoder(spec), query, k)


def search_live(defs: Definitions, query: str, k: int = 5) -> tuple[str, list[Hit]]:
    """(model version, hits) for `query` on the table version the `live` alias pins now."""
    alias = current_alias(defs.resources["lancedb"].store(), LIVE_ALIAS)
    if alias is None:
        raise SystemExit("nothing is live yet: run `make demo` (or materialize live_index) first")
    return alias.model_version, search_version(defs, alias.model_version, query, k, alias.table_version)


def format_hits(hits: list[Hit]) -> str:
    return "\n".join(
        f"  {rank}. {hit.score:.3f}  {hit.title or hit.doc_id}  [{hit.doc_id}, {hit.modality}, {hit.origin}]\n"
        f"     {hit.snippet or '(an image without a caption)'}"
        for rank, hit in enumerate(hits, start=1)
    )


def main() -> None:
    from embedding_assets.definitions import defs

    parser = argparse.ArgumentParser(prog="make search", description="Search the live index or a given version.")
    parser.add_argument("--version", help="a registered model version to search instead of the live one")
    parser.add_argument("query", nargs="*")
    arguments = parser.parse_args()
    query = " ".join(arguments.query).strip()
    if not query:
        raise SystemExit('usage: make search q="how do I parse JSON?" [v=<model version>]')
    if arguments.version:
        label, hits = arguments.version, search_version(defs, arguments.version, query)
    else:
        version, hits = search_live(defs, query)
        label = f"live = {version}"
    print(f"{label}; top {len(hits)} for {query!r}:\n{format_hits(hits)}")


if __name__ == "__main__":
    main()
