"""Results tables written as CSV and Markdown side by side (every bundle's results table goes through here)."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["save_results_table", "format_markdown_table"]


def _fmt(value: object, precision: int) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{precision}f}"
    return str(value)


def format_markdown_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None,
                          precision: int = 4) -> str:
    """Format ``rows`` (one mapping per row) as a GitHub-flavoured Markdown table.

    Args:
        rows: the table rows; every row must hold every column.
        columns: column order; defaults to the keys of the first row.
        precision: decimals printed for floats.

    Raises:
        ValueError: when ``rows`` is empty or a row lacks a column (the message names both).
    """
    if not rows:
        raise ValueError("rows is empty: a results table needs at least one row.")
    columns = list(columns) if columns is not None else list(rows[0].keys())
    for i, row in enumerate(rows):
        missing = [c for c in columns if c not in row]
        if missing:
            raise ValueError(f"row {i} lacks column(s) {missing}; expected columns {columns}.")
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_fmt(row[c], precision) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def save_results_table(rows: Sequence[Mapping[str, object]], path_stem: str | os.PathLike,
                       columns: Sequence[str] | None = None, precision: int = 4,
                       title: str | None = None) -> tuple[Path, Path]:
    """Write ``rows`` to ``<path_stem>.csv`` and ``<path_stem>.md`` (creating the folder).

    Args:
        rows: the table rows, one mapping per row.
        path_stem: output path without suffix.
        columns: column order; defaults to the keys of the first row.
        precision: decimals printed for floats in the Markdown file (the CSV keeps full precision).
        title: optional Markdown heading and provenance line written above the table.

    Returns:
        The paths of the CSV and the Markdown file.

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> csv_path, md_path = save_results_table([{"method": "pn", "auc": 0.5}], os.path.join(d, "results"))
        >>> open(md_path).read().splitlines()[2]
        '| pn | 0.5000 |'
    """
    markdown = format_markdown_table(rows, columns, precision)
    columns = list(columns) if columns is not None else list(rows[0].keys())
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = stem.with_suffix(".csv"), stem.with_suffix(".md")
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with open(md_path, "w") as f:
        if title:
            f.write(f"# {title}\n\n")
        f.write(markdown)
    return csv_path, md_path
