"""Score any guard's predictions on an exported benchmark: ``python -m sp_assets.evaluate score``.

    python -m sp_assets.evaluate score --benchmark data/export --predictions Qwen2-VL_SafetyPairs_test.xlsx
    python -m sp_assets.evaluate score --benchmark data/export --predictions logs/run.json --add-to data/export

It reads VLMEvalKit's result file, lmms-eval's samples JSONL, an Inspect log, or a CSV / JSONL of (id, rating or
score) (``release.predictions``), matches each prediction to an image of the export's ``items.csv``, and prints
the ``guard_metrics`` figures per category and pooled, each with its 95% interval (``core.scoring``): accuracy
on each half, pair accuracy, ROC-AUC where scores exist, the look-alike false-positive rate, and how many
predictions matched no image, could not be read (counted wrong), or were missing. It writes the rows as JSON and
CSV; ``--add-to`` puts the guard into the export's datasheet (``release.external_guards``).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from sp_assets.core.hashing import sha256_file
from sp_assets.core.scoring import score_predictions, score_table
from sp_assets.release.external_guards import add_to_export, make_record
from sp_assets.release.harness import ITEMS, read_items
from sp_assets.release.predictions import FORMATS, read_predictions

DESCRIPTION = "Score a guard's predictions (VLMEvalKit, lmms-eval, Inspect, CSV/JSONL) on an exported benchmark."


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sp_assets.evaluate", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    score = sub.add_parser("score", help="score a predictions file against an export's items.csv")
    score.add_argument("--benchmark", type=Path, required=True, help="the export folder (holds items.csv)")
    score.add_argument("--predictions", type=Path, required=True, help="the harness's predictions file")
    score.add_argument("--format", default="auto", choices=["auto", *FORMATS], help="default: from the file")
    score.add_argument("--name", help="the guard's name in the results (default: <harness>:<model>)")
    score.add_argument("--model", help="the model's name, when the file does not say it")
    score.add_argument("--split", help="score this split only; also the split a file that names images by "
                                       "VLMEvalKit index alone answered (default: from the file name)")
    score.add_argument("--out", type=Path, default=Path("."),
                       help="folder for safetypairs_scores_<name>.json and .csv (default: the current folder)")
    score.add_argument("--add-to", type=Path, help="an export folder: add the guard to its datasheet")
    return parser


def _file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "guard"


def write_outputs(out: Path, record: Mapping[str, Any]) -> tuple[Path, Path]:
    """``safetypairs_scores_<name>.json`` (the whole record) and ``.csv`` (its rows) under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"safetypairs_scores_{_file_stem(str(record['name']))}"
    json_path, csv_path = stem.with_suffix(".json"), stem.with_suffix(".csv")
    json_path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    rows = record["rows"]
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, list(rows[0]) if rows else ["category"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return json_path, csv_path


def score(args: argparse.Namespace) -> int:
    items = read_items(args.benchmark)
    found = read_predictions(args.predictions, args.format, args.split)
    model = args.model or found.model
    name = args.name or f"{found.harness}:{model or found.path.stem}"
    result = score_predictions(items, found.predictions, name, found.sha256, [args.split] if args.split else None)
    if not result.counts["n_matched"]:
        print(f"error: none of the {result.counts['n_predictions']} predictions in {found.path} ({found.format}) "
              f"names an image of {args.benchmark / ITEMS} (for example: {', '.join(result.unmatched[:3]) or '-'}). "
              "Is it the same export, and the right --format / --split?", file=sys.stderr)
        return 1
    print(f"{name}: {found.harness} predictions {found.path} (sha256 {found.sha256[:16]})\n")
    print(score_table(result))
    provenance = {"harness": found.harness, "format": found.format, "model": model,
                  "predictions_file": found.path.name, "predictions_sha256": found.sha256}
    record = make_record(result, provenance, sha256_file(Path(args.benchmark) / ITEMS))
    written = write_outputs(args.out, record)
    print(f"\nwrote {written[0]} and {written[1]}")
    if args.add_to:
        print(f"added to {add_to_export(args.add_to, record)} and the datasheet {Path(args.add_to) / 'README.md'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return score(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
