"""``python -m memvir_pl.data fetch cub|sop|cars|inshop --root DIR``: put a paper dataset in its
official layout under ``DIR`` and print the folder to pass as ``data.root``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from memvir_pl.data.fetch import ARCHIVES, MANUAL, ChecksumError, fetch


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m memvir_pl.data", description=__doc__)
    p.add_argument("action", choices=["fetch"])
    p.add_argument("dataset", choices=sorted([*ARCHIVES, *MANUAL]))
    p.add_argument("--root", type=Path, required=True, help="folder to download and extract into")
    p.add_argument("--url", default=None,
                   help="a mirror of the pinned archive (its size and checksum are still verified)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    archive = replace(ARCHIVES[args.dataset], url=args.url) if args.url and args.dataset in ARCHIVES else None
    try:
        folder = fetch(args.dataset, args.root, archive, progress=not args.no_progress)
    except (FileNotFoundError, FileExistsError, ChecksumError, OSError) as error:
        print(f"memvir_pl.data fetch {args.dataset}: {error}", file=sys.stderr)
        return 1
    print(f"data.root={folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
