"""monai_ext.reports: marked blocks rendered from results files, --check fails on a number that differs."""

from __future__ import annotations

import csv
import json

import pytest

from monai_ext.reports import check, collect, find_blocks, update
from monai_ext.reports.__main__ import main


@pytest.fixture
def tree(tmp_path):
    results = tmp_path / "results" / "run1"
    results.mkdir(parents=True)
    with open(results / "table.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "auc", "n"])
        w.writerow(["pn", "0.71234", "5"])
        w.writerow(["auc_nnpu", "0.75678", "5"])
        w.writerow(["dev: whole head", "0.61111", "4"])
    (results / "results.json").write_text(json.dumps({"metrics": {"val_top1": 0.93125, "stage: a.b": 1.5},
                                                      "provenance": {"cpu": "x"}}))
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Results\n\n"
        "<!-- results: source=run1/table.csv columns=method,auc precision=3 -->\nstale\n<!-- /results -->\n\n"
        "Top-1 is <!-- value: source=run1/results.json key=metrics.val_top1 precision=2 -->0.5<!-- /value -->; "
        "dotted <!-- value: source=run1/results.json key=\"metrics.stage: a.b\" -->x<!-- /value -->; "
        "row <!-- value: source=run1/table.csv key=auc_nnpu:auc precision=2 -->y<!-- /value -->; "
        "colon <!-- value: source=run1/table.csv key=\"dev: whole head:n\" -->z<!-- /value -->.\n"
    )
    return tmp_path, doc


def test_update_renders_tables_and_values_then_check_passes(tree):
    root, doc = tree
    results = root / "results"
    assert len(check([doc], results)) == 5
    assert len(update([doc], results)) == 5
    text = doc.read_text()
    assert "| method | auc |\n|---|---|\n| pn | 0.712 |\n| auc_nnpu | 0.757 |\n| dev: whole head | 0.611 |" in text
    top1 = "<!-- value: source=run1/results.json key=metrics.val_top1 precision=2 -->0.93<!-- /value -->"
    assert f"Top-1 is {top1}" in text
    assert "-->1.5<!-- /value -->" in text and "-->0.76<!-- /value -->" in text
    assert "colon <!-- value: source=run1/table.csv key=\"dev: whole head:n\" -->4<!-- /value -->" in text
    assert check([doc], results) == []
    assert update([doc], results) == []  # idempotent


def test_check_names_a_number_that_differs_and_a_missing_source(tree):
    root, doc = tree
    results = root / "results"
    update([doc], results)
    doc.write_text(doc.read_text().replace("0.93<!-- /value -->", "0.95<!-- /value -->"))
    problems = check([doc], results)
    assert len(problems) == 1 and "doc.md" in problems[0] and "'0.95' != results '0.93'" in problems[0]
    (results / "run1" / "table.csv").unlink()
    problems = check([doc], results)
    assert any("table.csv' not found" in p for p in problems)


def test_block_arguments_and_filters(tree):
    root, doc = tree
    doc.write_text("<!-- results: source=run1/table.csv where=method:pn rename=auc:AUC -->\n<!-- /results -->\n")
    update([doc], root / "results")
    assert "| method | AUC | n |\n|---|---|---|\n| pn | 0.71234 | 5 |" in doc.read_text()
    assert [b.kind for b in find_blocks(doc)] == ["results"]
    doc.write_text("<!-- results: columns=a -->\n<!-- /results -->\n")
    with pytest.raises(ValueError, match="lack 'source='"):
        find_blocks(doc)


def test_collect_copies_results_files(tree, tmp_path):
    root, _ = tree
    run = tmp_path / "run_out"
    run.mkdir()
    (run / "results.json").write_text("{}")
    (run / "model.pt").write_bytes(b"x")
    copied = collect(run, "new_run", root / "results")
    assert [p.name for p in copied] == ["results.json"]
    with pytest.raises(FileNotFoundError, match="no results file"):
        collect(tmp_path / "empty_missing", "x", root / "results")


def test_repository_documents_match_their_results_files():
    """What CI checks: every published number in the repository's documents equals its results file."""
    assert main(["--check"]) == 0
