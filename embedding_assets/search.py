"""`make search q="..."`: the top hits of a query against the live index."""

import sys

from dagster import Definitions

from embedding_assets.core.aliases import LIVE, current_alias
from embedding_assets.core.search import Hit, search


def search_live(defs: Definitions, query: str, k: int = 5) -> tuple[str, list[Hit]]:
    """(model version, hits) for `query` on whatever the `live` alias serves now."""
    store = defs.resources["lancedb"].store()
    alias = current_alias(store, LIVE)
    if alias is None:
        raise SystemExit("nothing is live yet: run `make demo` (or materialize live_index) first")
    registry = defs.resources["model_registry"]
    spec = registry.spec(alias.model_version)
    return alias.model_version, search(store, alias.model_version, registry.encoder(spec), query, k)


def format_hits(hits: list[Hit]) -> str:
    return "\n".join(
        f"  {rank}. {hit.score:.3f}  {hit.title or hit.doc_id}  [{hit.doc_id}, {hit.origin}]\n     {hit.snippet}"
        for rank, hit in enumerate(hits, start=1)
    )


def main() -> None:
    from embedding_assets.definitions import defs

    query = " ".join(sys.argv[1:]).strip()
    if not query:
        raise SystemExit('usage: make search q="how do I parse JSON?"')
    version, hits = search_live(defs, query)
    print(f"live = {version}; top {len(hits)} for {query!r}:\n{format_hits(hits)}")


if __name__ == "__main__":
    main()
