"""Published numbers regenerated from results files: ``python -m monai_ext.reports [--check]``.

Every number in ``docs/results.md`` and the bundle READMEs comes from a results file a run wrote (the
``results.json`` / ``*.csv`` files of the bundles and studies, with the run's command, seed, versions and machine in
their provenance). The files of the published runs are kept under ``docs/results/<run name>/`` (copied there with
``python -m monai_ext.reports collect <run output folder> <run name>``), and the documents hold *marked blocks* that
this module renders from them:

- a table::

      <!-- results: source=aneurysm/default/results.csv columns=stage,metric,value precision=3 -->
      | stage | metric | value |
      ...
      <!-- /results -->

  ``source`` is a CSV (or a JSON whose ``metrics`` mapping becomes a two-column table), ``columns`` picks and orders
  columns (default all), ``precision`` rounds floats, ``where=column:value`` keeps matching rows, ``rename=a:b``
  renames headers;
- a single value inside a sentence: ``<!-- value: source=aneurysm/default/results.json key=metrics.val_top1
  precision=3 -->0.931<!-- /value -->`` (``key`` is a dotted path; for a CSV, ``key=row:column`` with ``row`` the
  value of the first column, which may hold ``:`` (the column is what follows the last one), e.g.
  ``key=histogram:mean_jaccard_mean``). Quote an argument that holds spaces:
  ``key="metrics.localise: mean localisation error (mm)"``.

``python -m monai_ext.reports`` rewrites every block; ``--check`` only compares and exits with status 1 naming each
block whose text differs from what its results file gives (CI runs it). A block whose source file is missing is an
error in both modes.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shlex
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Block", "DOCUMENTS", "RESULTS_DIR", "check", "collect", "find_blocks", "render", "update"]

REPO = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO / "docs" / "results"
#: documents holding marked blocks
DOCUMENTS = ("docs/results.md", "README.md", "bundles/*/docs/README.md")
_PATTERN = re.compile(r"<!-- (?P<kind>results|value): (?P<args>[^>]*?) -->(?P<body>.*?)<!-- /(?P=kind) -->", re.S)
_COPIED = (".json", ".csv", ".md", ".txt")


@dataclass
class Block:
    """One marked block of a document: its kind (``results`` / ``value``), arguments, current body and span."""

    path: Path
    kind: str
    args: dict[str, str]
    body: str
    start: int
    end: int

    @property
    def label(self) -> str:
        line = self.path.read_text()[: self.start].count("\n") + 1
        return f"{self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path}:{line}"


def _parse_args(text: str) -> dict[str, str]:
    args = {}
    for part in shlex.split(text):
        if "=" not in part:
            raise ValueError(f"block argument {part!r} is not key=value.")
        k, v = part.split("=", 1)
        args[k] = v
    if "source" not in args:
        raise ValueError(f"block arguments {text!r} lack 'source='.")
    return args


def find_blocks(path: Path) -> list[Block]:
    """The marked blocks of a document, in order."""
    text = path.read_text()
    return [Block(path, m["kind"], _parse_args(m["args"]), m["body"], m.start("body"), m.end("body"))
            for m in _PATTERN.finditer(text)]


def _fmt(value: Any, precision: int | None) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, str):
        try:
            value = float(value) if re.fullmatch(r"[-+]?\d*\.\d+(e[-+]?\d+)?|[-+]?\d+e[-+]?\d+|nan", value) else value
        except ValueError:
            pass
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{precision}f}" if precision is not None else f"{value:g}"
    return str(value)


def _read_rows(source: Path) -> list[dict[str, Any]]:
    if source.suffix == ".csv":
        with open(source, newline="") as f:
            return list(csv.DictReader(f))
    if source.suffix == ".json":
        content = json.loads(source.read_text())
        metrics = content.get("metrics", content)
        return [{"metric": k, "value": v} for k, v in metrics.items() if not isinstance(v, (list, dict))]
    raise ValueError(f"results source '{source}' must be a .csv or .json file.")


def _lookup(source: Path, key: str) -> Any:
    if source.suffix == ".json":
        node: Any = json.loads(source.read_text())
        parts = key.split(".")
        # metric names may contain dots: take the longest key present at each level
        i = 0
        while i < len(parts):
            for j in range(len(parts), i, -1):
                k = ".".join(parts[i:j])
                if isinstance(node, dict) and k in node:
                    node, i = node[k], j
                    break
            else:
                raise KeyError(f"'{key}' not found in '{source}'.")
        return node
    row_key, _, column = key.rpartition(":")  # a row name may hold ":", a column name never does
    for row in _read_rows(source):
        if str(next(iter(row.values()))) == row_key:
            if column not in row:
                raise KeyError(f"column '{column}' not in '{source}' (columns: {list(row)}).")
            return row[column]
    raise KeyError(f"no row '{row_key}' in the first column of '{source}'.")


def render(block: Block, results_dir: Path = RESULTS_DIR) -> str:
    """The text the block should hold, from its source file.

    Raises:
        FileNotFoundError: naming the missing source file.
        KeyError, ValueError: for a key, column or argument that does not fit the source.
    """
    source = results_dir / block.args["source"]
    if not source.is_file():
        raise FileNotFoundError(f"{block.label}: results file '{source}' not found.")
    precision = int(block.args["precision"]) if "precision" in block.args else None
    if block.kind == "value":
        return _fmt(_lookup(source, block.args["key"]), precision)
    rows = _read_rows(source)
    if "where" in block.args:
        col, _, val = block.args["where"].partition(":")
        rows = [r for r in rows if str(r.get(col)) in val.split("|")]
    if not rows:
        raise ValueError(f"{block.label}: no row of '{source}' to show.")
    columns = block.args["columns"].split(",") if "columns" in block.args else list(rows[0])
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise KeyError(f"{block.label}: columns {missing} not in '{source}' (columns: {list(rows[0])}).")
    names = dict(p.split(":", 1) for p in block.args["rename"].split(",")) if "rename" in block.args else {}
    head = [names.get(c, c) for c in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(_fmt(r[c], precision) for c in columns) + " |" for r in rows]
    return "\n" + "\n".join(lines) + "\n"


def documents(root: Path = REPO, patterns: Sequence[str] = DOCUMENTS) -> list[Path]:
    return sorted({p for pattern in patterns for p in root.glob(pattern) if p.is_file()})


def update(paths: Iterable[Path] | None = None, results_dir: Path = RESULTS_DIR) -> list[str]:
    """Rewrite every block of the documents from its results file; returns the labels of changed blocks."""
    changed = []
    for path in paths if paths is not None else documents():
        text = path.read_text()
        blocks = find_blocks(path)
        for b in reversed(blocks):
            new = render(b, results_dir)
            if new != b.body:
                changed.append(b.label)
                text = text[: b.start] + new + text[b.end :]
        path.write_text(text)
    return changed


def check(paths: Iterable[Path] | None = None, results_dir: Path = RESULTS_DIR) -> list[str]:
    """The blocks whose text differs from their results file (``label: published ... != results ...``)."""
    problems = []
    for path in paths if paths is not None else documents():
        for b in find_blocks(path):
            try:
                new = render(b, results_dir)
            except (FileNotFoundError, KeyError, ValueError) as e:
                problems.append(f"{b.label}: {e}")
                continue
            if new != b.body:
                problems.append(f"{b.label}: published {b.body.strip()[:80]!r} != results {new.strip()[:80]!r}")
    return problems


def collect(run_dir: str | Path, name: str, results_dir: Path = RESULTS_DIR,
            patterns: Sequence[str] = ("*.json", "*.csv", "*.md")) -> list[Path]:
    """Copy a finished run's results files (top level of ``run_dir``, small text files only) to
    ``docs/results/<name>/``; returns the copied files.

    Raises:
        FileNotFoundError: when ``run_dir`` holds no results file.
    """
    run_dir = Path(run_dir)
    files = sorted({f for p in patterns for f in run_dir.glob(p) if f.is_file() and f.suffix in _COPIED
                    and f.stat().st_size < 1_000_000})
    if not files:
        raise FileNotFoundError(f"no results file ({', '.join(patterns)}) in '{run_dir}'.")
    out = results_dir / name
    out.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(f, out / f.name)) for f in files]
