"""Every docstring example of monai_ext runs: ``doctest`` on each module, one test per module.

Modules are collected with ``pkgutil.walk_packages``; ``monai_ext.label`` is left out (its app imports the optional
``monailabel`` package, tested in its own tox environment). Examples run with ``ELLIPSIS``, pytest's default
``doctest_optionflags``, so ``...`` may stand for the digits of a float or an object's address.
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil

import pytest

import monai_ext

#: Module prefixes left out, and why.
SKIPPED = ("monai_ext.label",)  # needs the optional monailabel package
#: Modules whose examples build full-size networks or encode video (seconds each): marked slow, still run in CI.
SLOW = {
    "monai_ext.networks.nets.video_transformer",
    "monai_ext.networks.nets.video_baselines",
    "monai_ext.data.synthetic.sperm",
}


def _skip_import_error(name: str) -> None:
    """walk_packages imports packages to list their modules: only a skipped package may fail to import."""
    if not name.startswith(SKIPPED):
        raise ImportError(f"cannot import {name} to collect its docstring examples")


def module_names() -> list[str]:
    modules = pkgutil.walk_packages(monai_ext.__path__, "monai_ext.", onerror=_skip_import_error)
    return sorted({"monai_ext"} | {m.name for m in modules if not m.name.startswith(SKIPPED)})


MODULES = module_names()


def test_collection_finds_the_package():
    assert {"monai_ext.transforms.region_histogram", "monai_ext.metrics.pu", "monai_ext.transforms.validation"} <= set(
        MODULES
    )
    assert not any(name.startswith(SKIPPED) for name in MODULES)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in MODULES])
def test_docstring_examples(name):
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report = io.StringIO()
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, name):
        runner.run(test, out=report.write)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} fail:\n" + (
        report.getvalue()
    )
