"""One row of the benchmark table: our figure, the baseline measured in the same run, their ratio."""

from dataclasses import dataclass


@dataclass
class Row:
    name: str
    ours: str
    baseline: str
    ratio: float | None
    goal: str
    verdict: str
    note: str = ""


def markdown(rows: list[Row]) -> str:
    lines = [
        "| row | ours | baseline (same run) | ratio | goal | met | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = f"{row.ratio:.3g}×" if row.ratio is not None else "—"
        lines.append(
            f"| {row.name} | {row.ours} | {row.baseline} | {ratio} | {row.goal} | {row.verdict} | {row.note} |"
        )
    return "\n".join(lines)


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("yes" if ok else "no")
