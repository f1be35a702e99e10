"""Guards scored outside the pipeline, kept in the export: ``external_guards/<name>.json``.

``python -m sp_assets.evaluate score ... --add-to <export>`` writes one record per guard (its rows, counts and
provenance: harness, model, the predictions file's name and sha256, and the sha256 of the ``items.csv`` it
was matched against), rewrites the datasheet's external-guard table and updates ``export_manifest.json``.
Exporting the benchmark again keeps every record whose ``items_sha256`` still matches the new ``items.csv``
(the same images, ids and order), so re-generating the datasheet keeps them; the others are dropped with a
warning, since their figures describe other images.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from sp_assets.core.hashing import sha256_file
from sp_assets.core.scoring import Scored
from sp_assets.release.datasheet import replace_external_block
from sp_assets.release.harness import ITEMS
from sp_assets.storage.files import atomic_write_bytes

DIRECTORY = "external_guards"
RECORD_VERSION = 1


def record_file(name: str) -> str:
    """``external_guards/<name>.json``, the name made safe for a file name."""
    return f"{DIRECTORY}/{re.sub(r'[^A-Za-z0-9._-]+', '_', name).strip('._') or 'guard'}.json"


def make_record(result: Scored, provenance: Mapping[str, Any], items_sha256: str) -> dict[str, Any]:
    """What is kept of a scored guard: ``provenance`` holds harness, model, format, predictions_file and
    predictions_sha256."""
    return {"version": RECORD_VERSION, "name": result.guard, **provenance, "items_sha256": items_sha256,
            "splits": result.splits, "counts": result.counts, "rows": result.rows}


def read_records(export_dir: Path) -> list[dict[str, Any]]:
    """The external guards an export holds, by name (unreadable files are skipped: the export is theirs to fix)."""
    records = []
    for path in sorted((Path(export_dir) / DIRECTORY).glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("version") == RECORD_VERSION and "rows" in record:
            records.append(record)
    return sorted(records, key=lambda r: str(r["name"]))


def write_records(root: Path, records: Sequence[Mapping[str, Any]]) -> list[Path]:
    paths = []
    for record in records:
        path = root / record_file(str(record["name"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def carry_over(records: Sequence[Mapping[str, Any]], items_sha256: str) -> tuple[list[Mapping[str, Any]], list[str]]:
    """The records scored on these very items, and a warning for each one dropped."""
    kept = [r for r in records if r.get("items_sha256") == items_sha256]
    dropped = [f"external guard {r['name']!r} was scored on other images (items.csv changed) and is left out; "
               "score its predictions again with --add-to" for r in records if r not in kept]
    return kept, dropped


def add_to_export(export_dir: Path, record: Mapping[str, Any]) -> Path:
    """Put ``record`` into the export: its JSON file, the datasheet's table and the manifest's file hashes."""
    export_dir = Path(export_dir)
    items = export_dir / ITEMS
    if record["items_sha256"] != sha256_file(items):
        raise ValueError(f"the predictions were matched against another items.csv than {items}: score them "
                         "with --benchmark and --add-to naming the same export")
    rel = record_file(str(record["name"]))
    data = (json.dumps(record, indent=1, sort_keys=True) + "\n").encode("utf-8")
    (export_dir / DIRECTORY).mkdir(exist_ok=True)
    atomic_write_bytes(export_dir / rel, data)
    card = export_dir / "README.md"
    atomic_write_bytes(card, replace_external_block(card.read_text(encoding="utf-8"),
                                                    read_records(export_dir)).encode("utf-8"))
    _update_manifest(export_dir, [rel, "README.md"])
    return export_dir / rel


def _update_manifest(export_dir: Path, changed: Sequence[str]) -> None:
    path = export_dir / "export_manifest.json"
    if not path.is_file():
        return
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest.setdefault("files", {}).update({rel: sha256_file(export_dir / rel) for rel in changed})
    atomic_write_bytes(path, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode("utf-8"))
