"""The metrics table printed at the end of a run."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def metric_columns(rows: dict[str, dict[str, float]]) -> list[str]:
    """Metric names in display order: recall@K by K, then R-Precision, MAP@R, NMI."""
    names = {name.split("/", 1)[-1] for row in rows.values() for name in row if "/" in name}
    recalls = sorted((n for n in names if n.startswith("recall@")), key=lambda n: int(n.split("@")[1]))
    return recalls + [n for n in ("r_precision", "map@r", "nmi") if n in names]


def run_rows(metrics: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Table rows of a training run's metrics.json: best and final validation epoch, test."""
    rows = {label: metrics.get(key) or {} for label, key in
            (("val best", "best"), ("val final", "final"), ("test", "test"))}
    return {label: row for label, row in rows.items() if row}


def print_metrics_table(rows: dict[str, dict[str, float]], title: str) -> None:
    """One row per entry (label -> {"split/metric": value in [0, 1], "epoch": n}); metrics shown in %."""
    columns = metric_columns(rows)
    table = Table(title=title)
    table.add_column("split")
    table.add_column("epoch", justify="right")
    for name in columns:
        table.add_column(name, justify="right")
    for label, row in rows.items():
        values = {name.split("/", 1)[-1]: value for name, value in row.items()}
        epoch = str(int(row["epoch"])) if "epoch" in row else ""
        table.add_row(label, epoch, *(f"{100 * values[n]:.2f}" if n in values else "" for n in columns))
    Console(width=max(120, Console().width)).print(table)
