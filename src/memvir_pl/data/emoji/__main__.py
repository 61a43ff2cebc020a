"""``python -m memvir_pl.data.emoji {fetch,build,report}``: fetch the packages (npm), build and
cache the set, or write the data report and contact sheet."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from memvir_pl.data.emoji.build import load_emoji_set
from memvir_pl.data.emoji.report import data_report
from memvir_pl.data.emoji.sources import fetch

DEFAULT_ROOT = Path("data/emoji/packages")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m memvir_pl.data.emoji", description=__doc__)
    p.add_argument("action", choices=["fetch", "build", "report"])
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder of the package tarballs")
    p.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"),
                   help="report: folder of emoji_data.md and emoji_contact_sheet.png")
    p.add_argument("--npm", default="npm", help="fetch: the npm executable")
    args = p.parse_args(argv)
    if args.action == "fetch":
        for path in fetch(args.root, npm=args.npm):
            print(path)
    elif args.action == "build":
        emoji = load_emoji_set(args.root, cache_dir=args.cache_dir)
        print(json.dumps(emoji.summary, indent=1))
    else:
        command = "python -m memvir_pl.data.emoji " + " ".join(
            shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
        text = data_report(args.root, args.out, args.cache_dir, command)
        (args.out / "emoji_data.md").write_text(text)
        print(text)


if __name__ == "__main__":
    main()
