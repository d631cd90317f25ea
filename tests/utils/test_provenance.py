"""Provenance of results files: the commit a run came from, and whether the tree differed from it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from monai_ext.utils.provenance import _git_state, provenance

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(root, *args):
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_GLOBAL": os.devnull})


def test_git_state_names_the_commit_and_the_modified_tracked_files(tmp_path):
    assert _git_state(tmp_path) == (None, None)  # not a clone
    _git(tmp_path, "init", "-q")
    for name in ("a.py", "b.py"):
        (tmp_path / name).write_text("x = 1\n")
    _git(tmp_path, "add", "a.py", "b.py")
    _git(tmp_path, "commit", "-q", "-m", "first")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert _git_state(tmp_path) == (head, [])  # a clean tree
    (tmp_path / "b.py").write_text("x = 2\n")  # modified, not staged
    (tmp_path / "new.py").write_text("y = 1\n")  # untracked: not a change of the code that ran
    assert _git_state(tmp_path) == (head, ["b.py"])
    _git(tmp_path, "add", "b.py")  # staged counts too
    assert _git_state(tmp_path) == (head, ["b.py"])


def test_provenance_is_json_and_records_the_tree_state():
    rec = provenance("cpu")
    json.dumps(rec)
    assert {"git_commit", "git_modified", "command", "cpu", "load_average"} <= set(rec)
    # the state of the clone this package is imported from, as _git_state reads it ((None, None) outside a clone)
    assert (rec["git_commit"], rec["git_modified"]) == _git_state()
