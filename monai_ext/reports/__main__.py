"""``python -m monai_ext.reports [--check]`` and ``python -m monai_ext.reports collect <run dir> <name>``."""

from __future__ import annotations

import argparse
import sys

from . import check, collect, update


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monai_ext.reports", description=__doc__)
    parser.add_argument("command", nargs="?", choices=["update", "collect"], default="update")
    parser.add_argument("args", nargs="*", help="collect: <run output folder> <run name>")
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when a number differs")
    opts = parser.parse_args(argv)
    if opts.command == "collect":
        if len(opts.args) != 2:
            parser.error("collect needs <run output folder> <run name>")
        for f in collect(*opts.args):
            print(f"copied {f}")
        return 0
    if opts.check:
        problems = check()
        for p in problems:
            print(p)
        print(f"{len(problems)} published number(s) differ from their results files" if problems
              else "every published number matches its results file")
        return 1 if problems else 0
    changed = update()
    print(f"updated {len(changed)} block(s)" + (": " + ", ".join(changed) if changed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
