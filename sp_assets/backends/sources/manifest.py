"""Reading a manifest (CSV, JSONL or Parquet) one row at a time.

A row that cannot be used (bad JSON, a wrong field count, a value of the wrong type, no path) comes
back with a ``problem`` that names its line and the fix, and the rows after it are still read. Only a
file that cannot be read at all (missing, no 'path' column, not the format its name says) raises.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import polars as pl

MANIFEST_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
FIELDS = ("path", "rating", "category", "rationale", "photo")
# A human label under a policy variant: a column ``rating@<variant policy name>`` (e.g. ``rating@family``).
VARIANT_RATING = "rating@"
_SHORT = 60
MAX_CELL_CHARS = 64 * 1024  # a path, a label or a rationale; anything longer is a quoting mistake
_JSONL_EXAMPLE = '{"path": "a.png", "rating": "unsafe"}'


class ManifestError(ValueError):
    """A manifest that cannot be read at all (as opposed to a bad row, which is rejected)."""


@dataclass
class ManifestRow:
    """One row: where it is in the file, its values, and why it cannot be used (empty when it can)."""

    at: str  # "line 5" (CSV, JSONL: the physical line, header counted) or "row index 3" (Parquet, from 0)
    values: dict[str, Any] = field(default_factory=dict)  # lower-case column -> value; cleaned when usable
    problem: str = ""


def read_rows(path: Path) -> Iterator[ManifestRow]:
    """Every row of the manifest at ``path``, in file order; raises ManifestError for an unreadable file."""
    kind = MANIFEST_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ManifestError(f"{path}: manifest type {path.suffix!r} is not supported; use .csv, .jsonl or .parquet.")
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found; fix SP_MANIFEST or the 'manifest' setting.")
    reader = {"csv": _csv_rows, "jsonl": _jsonl_rows, "parquet": _parquet_rows}[kind]
    try:
        for row in reader(path):
            yield _checked(row) if not row.problem else row
    except (OSError, csv.Error, pl.exceptions.PolarsError) as exc:
        raise ManifestError(f"{path}: could not read the manifest ({exc}); check that it is valid {kind}.") from exc


def short(value: Any) -> str:
    """A value as a user would recognise it, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= _SHORT else text[: _SHORT - 3] + "..."


def _no_path_column(path: Path, columns: list[str]) -> ManifestError:
    return ManifestError(f"{path}: manifest has no 'path' column (columns: {', '.join(columns) or 'none'}); "
                         "add one with image paths relative to the source folder.")


def _csv_rows(path: Path) -> Iterator[ManifestRow]:
    # Undecodable bytes become U+FFFD so that one badly encoded line is rejected, not the file.
    # The csv module's field limit (128 KiB) would refuse the whole file over one long cell; it is raised
    # to the manifest's size so that such a row is read, and refused on its own by _csv_row.
    csv.field_size_limit(max(csv.field_size_limit(), path.stat().st_size + 1))
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
        reader = csv.reader(fh)
        header: list[str] | None = None
        start = 1
        for record in reader:
            line, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in record):
                continue  # a blank line is not a row
            if header is None:
                header = [cell.strip().lower() for cell in record]
                if "path" not in header:
                    raise _no_path_column(path, record)
                continue
            yield _csv_row(f"line {line}", header, record)
    if header is None:
        raise _no_path_column(path, [])


def _csv_row(at: str, header: list[str], record: list[str]) -> ManifestRow:
    text = ",".join(record)
    if len(record) != len(header):
        return ManifestRow(at, {}, f"has {len(record)} fields where the header has {len(header)}: {short(text)}; "
                                   'quote values that contain commas ("a, b") or fix the line.')
    if "\ufffd" in text:
        return ManifestRow(at, {}, f"is not valid UTF-8 text: {short(text)}; save the manifest as UTF-8.")

    return ManifestRow(at, dict(zip(header, record)))


def _jsonl_rows(path: Path) -> Iterator[ManifestRow]:
    objects = with_path = 0
    keys: set[str] = set()
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            row = _jsonl_row(f"line {number}", raw[3:] if number == 1 and raw.startswith(b"\xef\xbb\xbf") else raw)
            if row is None:
                continue
            if row.values or not row.problem:
                objects += 1
                with_path += "path" in row.values
                keys.update(row.values)
            yield row
    if not objects:
        raise ManifestError(f"{path}: no line is a JSON object; a JSONL manifest has one object per line, "
                            f"e.g. {_JSONL_EXAMPLE}.")
    if not with_path:
        raise _no_path_column(path, sorted(keys))


def _jsonl_row(at: str, raw: bytes) -> ManifestRow | None:
    """One line of a JSONL manifest; None for a blank line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return ManifestRow(at, {}, f"is not valid UTF-8 text: {short(raw.strip())}; save the manifest as UTF-8.")
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return ManifestRow(at, {}, f"is not valid JSON ({exc.msg} at column {exc.colno}): {short(text.strip())}; "
                                   f"write one JSON object per line, e.g. {_JSONL_EXAMPLE}, or delete the line.")
    except RecursionError:
        return ManifestRow(at, {}, f"nests too deeply to read: {short(text.strip())}; a manifest row is one flat "
                                   f"object, e.g. {_JSONL_EXAMPLE}.")
    except ValueError as exc:  # e.g. an integer of more digits than Python converts (int_max_str_digits)
        return ManifestRow(at, {}, f"holds a value that cannot be read ({exc}): {short(text.strip())}; write "
                                   "numbers as text or delete the line.")
    if not isinstance(value, dict):
        return ManifestRow(at, {}, f"is a JSON {_kind_of(value)}, not an object: {short(text.strip())}; "
                                   f"write one JSON object per line, e.g. {_JSONL_EXAMPLE}.")
    return ManifestRow(at, {str(k).strip().lower(): v for k, v in value.items()})


def _parquet_rows(path: Path) -> Iterator[ManifestRow]:
    frame = pl.read_parquet(path)
    columns = {c.strip().lower(): c for c in frame.columns}
    if "path" not in columns:
        raise _no_path_column(path, frame.columns)
    frame = frame.select([pl.col(columns[name]).alias(name) for name in FIELDS if name in columns])
    for index, values in enumerate(frame.iter_rows(named=True)):
        yield ManifestRow(f"row index {index}", values)


def _checked(row: ManifestRow) -> ManifestRow:
    """The row with its values cleaned, or with a problem when one has the wrong type or the path is missing."""
    values = {name: row.values.get(name) for name in FIELDS}
    for name, value in values.items():
        if value is None or isinstance(value, str) or (name == "photo" and _is_int(value)):
            continue
        fix = "the image's path relative to the source folder" if name == "path" else "or leave it empty"
        return ManifestRow(row.at, row.values, f"has {name!r} = {short(value)} (a {_kind_of(value)}), which must be "
                                               f"text; write it as a string (\"{name}\": \"...\"), {fix}.")
    for name, value in values.items():
        if isinstance(value, str) and len(value) > MAX_CELL_CHARS:
            return ManifestRow(row.at, {k: v for k, v in values.items() if k != name},
                               f"has a {name!r} of {len(value)} characters (at most {MAX_CELL_CHARS}): {short(value)}; "
                               "check the quoting of that line, or shorten the value.")
    if isinstance(values["path"], str) and "\x00" in values["path"]:
        return ManifestRow(row.at, {}, f"has a 'path' holding a NUL character: {short(values['path'])}; "
                                       "write the image's path relative to the source folder.")
    clean = {name: (str(v).strip() or None) if v is not None else None for name, v in values.items()}
    if clean["path"] is None:
        return ManifestRow(row.at, row.values, f"has no 'path' ({short(row.values)}); give the image's path "
                                               "relative to the source folder, or delete the row.")
    variants = {k[len(VARIANT_RATING):]: v for k, v in row.values.items() if k.startswith(VARIANT_RATING)}
    for name, value in variants.items():
        if value is not None and not isinstance(value, str):
            return ManifestRow(row.at, row.values, f"has {VARIANT_RATING}{name} = {short(value)} (a "
                                                   f"{_kind_of(value)}), which must be text ('unsafe' or 'safe'), or "
                                                   "leave it empty.")
    clean["variant_ratings"] = {k: v.strip() for k, v in sorted(variants.items()) if v and v.strip()}
    return ManifestRow(row.at, clean)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # a photo id may be a number


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "null" if value is None else type(value).__name__
