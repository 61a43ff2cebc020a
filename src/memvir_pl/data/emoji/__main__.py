"""``python -m memvir_pl.data.emoji {fetch,build}``: fetch the packages (npm), or build and cache
the set. (The data report: ``python benchmarks/quality.py --data-report emoji``.)"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from memvir_pl.data.emoji.build import load_emoji_set
from memvir_pl.data.emoji.sources import fetch

DEFAULT_ROOT = Path("data/emoji/packages")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m memvir_pl.data.emoji", description=__doc__)
    p.add_argument("action", choices=["fetch", "build"])
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder of the package tarballs")
    p.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    p.add_argument("--npm", default="npm", help="fetch: the npm executable")
    args = p.parse_args(argv)
    if args.action == "fetch":
        for path in fetch(args.root, npm=args.npm):
            print(path)
    else:
        emoji = load_emoji_set(args.root, cache_dir=args.cache_dir)
        print(json.dumps(emoji.summary, indent=1))


if __name__ == "__main__":
    main()
