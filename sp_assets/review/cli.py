"""The review command line: ``python -m sp_assets.review export|import ...``.

Round trip::

    python -m sp_assets.review export --category o2_violence        # -> data/review/review_o2_violence.html
    # open the page, enter your name, accept / reject candidates, "Download decisions (CSV)"
    python -m sp_assets.review import ~/Downloads/decisions_o2_violence_alice_....csv
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import duckdb

from sp_assets.review.decisions import import_decisions
from sp_assets.review.page import MAX_SIDE, export_review, page_paths
from sp_assets.storage import ImageStore, Store
from sp_assets.storage.images import images_root

DESCRIPTION = "Human review: export candidates to one self-contained HTML page, import the reviewers' decisions."


def _data_root() -> Path:
    return Path(os.environ.get("SP_DATA_ROOT", "data")).expanduser().resolve()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sp_assets.review", description=DESCRIPTION,
                                     epilog="The database is $SP_DATA_ROOT/safetypairs.duckdb (default data/).")
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="write the review page and a decisions template for a category")
    ex.add_argument("--category", required=True)
    ex.add_argument("--out", type=Path, help="folder for the page (default: $SP_DATA_ROOT/review)")
    ex.add_argument("--include", choices=["all", "accepted", "rejected"], default="all",
                    help="candidates by automatic verdict (default: all)")
    ex.add_argument("--show-unsafe", action="store_true", help="do not blur unsafe images")
    ex.add_argument("--max-side", type=int, default=MAX_SIDE, help=f"embedded image size, pixels (default {MAX_SIDE})")
    im = sub.add_parser("import", help="store the decisions of a CSV or JSONL file")
    im.add_argument("file", type=Path)
    im.add_argument("--reviewer", help="reviewer for rows whose reviewer cell is empty")
    return parser


def _export(args: argparse.Namespace, root: Path, db: Path) -> int:
    start = time.perf_counter()
    out = args.out or root / "review"
    page = export_review(Store.at(db, read_only=True), ImageStore(images_root(root)), args.category, out,
                         include=args.include, show_unsafe=args.show_unsafe, max_side=args.max_side)
    template = page_paths(page.parent, args.category, args.include)[1]
    print(f"review page   {page}  ({page.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s)")
    print(f"template CSV  {template}")
    print(f"open it in a browser (file://{page}), decide, download the CSV, then run:\n"
          f"  python -m sp_assets.review import <downloaded.csv>")
    return 0


def _import(args: argparse.Namespace, db: Path) -> int:
    report = import_decisions(Store.at(db), args.file, reviewer=args.reviewer)
    print(report.summary())
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit status is 0 on success, 1 when rows were refused (the valid rows of the
    file are stored all the same, and every refused one is listed), 2 on an error."""
    args = _parser().parse_args(argv)
    root = _data_root()
    db = root / "safetypairs.duckdb"
    if not db.is_file():
        print(f"error: no database at {db}. Run `make demo`, or set SP_DATA_ROOT to the data folder.", file=sys.stderr)
        return 2
    try:
        return _export(args, root, db) if args.command == "export" else _import(args, db)
    except (ValueError, duckdb.IOException) as exc:  # DecisionsFileError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
