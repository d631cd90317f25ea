from __future__ import annotations

import csv

import pytest

from monai_ext.utils import format_markdown_table, save_results_table

ROWS = [{"method": "pn", "auc": 0.57412, "n": 5}, {"method": "auc_nnpu", "auc": float("nan"), "n": 5}]


@pytest.mark.parametrize("precision, expected", [(2, "| pn | 0.57 | 5 |"), (4, "| pn | 0.5741 | 5 |")])
def test_markdown_precision(precision, expected):
    lines = format_markdown_table(ROWS, precision=precision).splitlines()
    assert lines[0] == "| method | auc | n |"
    assert lines[1] == "|---|---|---|"
    assert lines[2] == expected
    assert lines[3] == "| auc_nnpu | nan | 5 |"


def test_save_writes_csv_and_markdown(tmp_path):
    csv_path, md_path = save_results_table(ROWS, tmp_path / "sub" / "results", columns=["n", "method"], title="T")
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["pn", "auc_nnpu"]
    assert list(rows[0]) == ["n", "method"]
    md = md_path.read_text().splitlines()
    assert md[0] == "# T" and md[2] == "| n | method |"


@pytest.mark.parametrize(
    "rows, columns, match",
    [([], None, "rows is empty"), ([{"a": 1}, {"b": 2}], None, r"row 1 lacks column\(s\) \['a'\]")],
)
def test_bad_rows(rows, columns, match):
    with pytest.raises(ValueError, match=match):
        format_markdown_table(rows, columns)
