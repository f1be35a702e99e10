"""Reviewers' decisions: the decisions file format, its validation and import, and the decisions that count.

Decisions files (CSV or JSONL) have the columns ``candidate_id, category, reviewer, decided_at,
verdict, note``; other columns are ignored. ``decided_at`` is ISO 8601; a time without an offset is
taken as UTC; it may not lie in the future (beyond CLOCK_SKEW) nor before EARLIEST_DECISION.
``verdict`` is ``accept`` or ``reject``. Notes and reviewer names have a length limit. A row whose
verdict and note are both empty (an untouched template row) is skipped. Each row that breaks a rule
is refused and reported (file, row, value, fix); the other rows of the file are stored. CSV cells
the review page neutralised against spreadsheet formulas (see ``spreadsheet``) are restored.
Imports are idempotent: a decision is keyed by (candidate_id, reviewer, decided_at), and a key
already stored with the same verdict, note and category is counted as unchanged and not written again.
Which decision counts is a rule of sp_assets.core.review_rules.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import io
import itertools
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple

from sp_assets.core.review_rules import pick_effective
from sp_assets.review.spreadsheet import restore
from sp_assets.storage import Store, review_queries

DECISION_COLUMNS = ["candidate_id", "category", "reviewer", "decided_at", "verdict", "note"]
VERDICTS = ("accept", "reject")
KEY_COLUMNS = ("candidate_id", "reviewer", "decided_at")  # what identifies a decision
MAX_NOTE_CHARS = 64 * 1024
MAX_REVIEWER_CHARS = 200
# The latest decision counts, so one dated in the future would override every real decision until then;
# a day covers clocks that are off and time zones written wrongly.
CLOCK_SKEW = dt.timedelta(days=1)
# Earlier times are typing slips, or a spreadsheet's empty date cell (1899-12-30 or 1900-01-00).
EARLIEST_DECISION = dt.datetime(2000, 1, 1)
_SHOWN_CHARS = 80  # of a long value, in a report line


class Record(NamedTuple):
    """One row of a decisions file, read but not validated."""

    row: int  # CSV: spreadsheet row (the header is row 1); JSONL: line number
    fields: dict[str, Any] | None  # None: the row could not be read
    problem: str | None = None  # why it could not be read
    raw: str | None = None  # its text, for the report


@dataclass(frozen=True)
class Decision:
    candidate_id: str
    category: str
    reviewer: str
    decided_at: dt.datetime  # naive UTC
    verdict: str  # 'accept' | 'reject'
    note: str | None = None
    decisions_file: str | None = None
    decisions_sha256: str | None = None
    imported_at: dt.datetime | None = None

    @property
    def accepted(self) -> bool:
        return self.verdict == "accept"


@dataclass(frozen=True)
class RowError:
    file: str
    row: int  # CSV: spreadsheet row (the header is row 1); JSONL: line number
    column: str
    value: Any
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.file} row {self.row}: {self.column} {_shown(self.value)}: {self.problem}. Fix: {self.fix}"


def _shown(value: Any) -> str:
    """``repr`` of the value (which escapes line breaks and control characters), cut when long."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= _SHOWN_CHARS:
        return repr(value)
    return f"{text[:_SHOWN_CHARS]!r}... ({len(text):,} characters)"


@dataclass
class ImportReport:
    """Counts add up: ``rows == imported + unchanged + skipped + rejected``.

    ``imported`` counts rows written (new keys, and ``updated`` ones: a stored key whose verdict,
    note or category the file changes); ``unchanged`` rows were already stored exactly so (or
    repeat an earlier row of the file); ``skipped`` rows have neither verdict nor note;
    ``rejected`` rows failed validation (refused, not stored), each with at least one entry in ``errors``.
    """

    file: str
    sha256: str
    rows: int = 0
    imported: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    rejected: int = 0
    errors: list[RowError] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)  # categories that received new decisions

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        lines = [f"{self.file}: {self.rows} rows: {self.imported} imported ({self.updated} of them updated), "
                 f"{self.unchanged} unchanged, {self.skipped} skipped (no verdict), {self.rejected} rejected"]
        if self.errors:
            lines.append(f"Refused {self.rejected} row{'' if self.rejected == 1 else 's'} (not stored); fix "
                         f"{'it' if self.rejected == 1 else 'them'} and import the file again (rows stored now "
                         "will count as unchanged):")
        lines += [f"  {e}" for e in self.errors]
        if self.categories:
            lines.append("Decisions changed for " + ", ".join(self.categories)
                         + ": re-materialize verified_pairs and what follows for them to take effect.")
        return "\n".join(lines)


class DecisionsFileError(ValueError):
    """The file as a whole cannot be read (missing, wrong format, no candidate_id/verdict columns)."""


# ---------------------------------------------------------------------------------------------
# Reading a decisions file


def parse_time(value: str) -> dt.datetime:
    """ISO 8601 to naive UTC. Without an offset the time is taken as UTC. Raises ValueError."""
    text = value.strip()
    if not text:
        raise ValueError("empty")
    if text.endswith(("z", "Z")):
        text = text[:-1] + "+00:00"
    when = dt.datetime.fromisoformat(text)
    if when.tzinfo is None:
        return when
    try:
        return when.astimezone(dt.timezone.utc).replace(tzinfo=None)
    except OverflowError:  # 0001-01-01T00:00+01:00 or 9999-12-31T23:00-05:00 in UTC is outside years 1-9999
        raise ValueError("out of range once converted to UTC") from None


def read_records(path: Path, data: bytes) -> list[Record]:
    """The rows of a decisions file, CSV or JSON Lines (by suffix, else by the first character)."""
    text = data.decode("utf-8-sig")
    suffix = path.suffix.lower()
    jsonl = suffix in (".jsonl", ".ndjson") or (suffix != ".csv" and text.lstrip().startswith("{"))
    return _read_jsonl(path, text) if jsonl else _read_csv(path, text)


def _read_jsonl(path: Path, text: str) -> list[Record]:
    # Only "\n" ends a line: str.splitlines() also splits at U+2028, U+0085 and other characters that
    # JSON allows inside a string, and would cut a valid line in two.
    lines = text.split("\n")
    if any(line.strip() for line in lines) and not any(line.lstrip().startswith("{") for line in lines):
        raise DecisionsFileError(f"{path}: no line is a JSON object; expected JSON Lines with the keys "
                                 f"{', '.join(DECISION_COLUMNS)}")
    return [_json_record(n, line) for n, line in enumerate(lines, start=1) if line.strip()]


def _json_record(n: int, line: str) -> Record:
    line = line.rstrip("\r")
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return Record(n, None, f"not valid JSON ({exc.msg} at column {exc.colno})", line)
    except RecursionError:  # e.g. 100,000 nested [ : the parser recurses once per level
        return Record(n, None, "JSON nested too deeply to read", line)
    except ValueError as exc:  # an integer of more than 4,300 digits
        return Record(n, None, f"not readable JSON ({str(exc).split(':')[0]})", line)
    if not isinstance(obj, dict):
        return Record(n, None, "not a JSON object", line)
    fields_ = {str(k).strip().lower(): v for k, v in obj.items()}
    problem = _not_text(fields_)
    return Record(n, None, problem, line) if problem else Record(n, fields_, None, line)


def _not_text(fields_: Mapping[str, Any]) -> str | None:
    """Why a decision column of a JSON object cannot be stored as text, or None."""
    for name in DECISION_COLUMNS:
        value = fields_.get(name)
        if isinstance(value, (list, dict)):
            return f"{name} is a JSON {'array' if isinstance(value, list) else 'object'}, not text"
        if isinstance(value, str) and not _is_utf8(value):
            return f"{name} holds an unpaired UTF-16 surrogate escape (such as \\ud800), which is not text"
    return None


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@contextlib.contextmanager
def _csv_field_limit(size: int) -> Iterator[None]:
    """Let the csv module read cells up to ``size`` characters (it refuses cells over 128 KiB by default)."""
    old = csv.field_size_limit(max(size, csv.field_size_limit()))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _read_csv(path: Path, text: str) -> list[Record]:
    first_line = text.split("\n", 1)[0]
    # Spreadsheets in some locales save with ';' (or tabs); the header row tells which.
    delimiter = max(",;\t", key=first_line.count) if first_line.count(",") == 0 else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    # The file is in memory already, so no cell is longer than it: the csv module's own limit would stop
    # the whole file at the first long note, where our limits refuse only that row.
    with _csv_field_limit(len(text)):
        rows = list(_csv_rows(reader))
    if not rows:
        return []
    names = _header(path, rows[0][1] or [])
    return [rec for n, values, problem in rows[1:] if (rec := _csv_record(n, names, values, problem))]


def _csv_rows(reader: Iterator[list[str]]) -> Iterator[tuple[int, list[str] | None, str | None]]:
    """(spreadsheet row, cells or None, the csv module's complaint); one unreadable row does not end the file."""
    for n in itertools.count(1):
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield n, None, f"not readable CSV ({exc})"
        else:
            yield n, values, None


def _header(path: Path, header: list[str]) -> list[str]:
    names = [h.strip().lower() for h in header]
    missing = [c for c in ("candidate_id", "verdict") if c not in names]
    if missing:
        raise DecisionsFileError(
            f"{path}: the header row has no {' or '.join(missing)} column (found: {', '.join(header) or 'nothing'}). "
            f"Fix: export the decisions from the review page, or start from the template CSV; the columns are "
            f"{', '.join(DECISION_COLUMNS)}")
    return names


def _csv_record(n: int, names: list[str], values: list[str] | None, problem: str | None) -> Record | None:
    """The row as a record; None for a blank line, which is not a row."""
    if values is None:
        return Record(n, None, problem)
    if not any(v.strip() for v in values):
        return None
    raw = ",".join(values)
    if len(values) > len(names) and any(v.strip() for v in values[len(names):]):
        return Record(n, None, f"has {len(values)} cells but the header has {len(names)} (an unquoted comma?)", raw)
    cells = [restore(v) for v in values]
    return Record(n, {name: (cells[i] if i < len(cells) else "") for i, name in enumerate(names)}, None, raw)


def _load(path: Path) -> tuple[bytes, list[Record]]:
    """The file's bytes (for its hash) and its records; a file that cannot be read at all raises."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DecisionsFileError(f"{path}: cannot read the decisions file ({exc.strerror or exc})") from exc
    try:
        return data, read_records(path, data)
    except UnicodeDecodeError as exc:
        raise DecisionsFileError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}). Fix: save it as "
                                 "CSV UTF-8 (or JSON Lines)") from exc


# ---------------------------------------------------------------------------------------------
# Validating one record


class _RowErrors:
    """The problems found in one row of the file."""

    def __init__(self, file: str, row: int):
        self.file, self.row = file, row
        self.errors: list[RowError] = []

    def add(self, column: str, value: Any, problem: str, fix: str) -> None:
        self.errors.append(RowError(self.file, self.row, column, value, problem, fix))


def _text(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    return "" if value is None else str(value).strip()


def _is_untouched(record: Mapping[str, Any]) -> bool:
    """A template row nobody filled in: neither verdict nor note."""
    return not _text(record, "verdict") and not _text(record, "note")


def _candidate(record: Mapping[str, Any], known: Mapping[str, set[str]], errors: _RowErrors) -> tuple[str, str]:
    """(candidate_id, category); an empty category is filled in when the candidate has only one."""
    cid = _text(record, "candidate_id").lower()
    category = _text(record, "category")
    if not cid:
        errors.add("candidate_id", record.get("candidate_id"), "missing",
                   "copy the candidate_id from the review page or template")
    elif cid not in known:
        hits = [k for k in known if k.startswith(cid)] if len(cid) >= 8 else []
        hint = (f"did you mean {hits[0]}? (ids are 64 hex characters; a spreadsheet may have cut it)" if len(hits) == 1
                else "use an id from the review page or template exported from this database")
        errors.add("candidate_id", record.get("candidate_id"), "no such candidate in verified_pairs", hint)
    elif category and category not in known[cid]:
        errors.add("category", category, f"candidate {cid[:12]}... belongs to {', '.join(sorted(known[cid]))}",
                   f"set category to {sorted(known[cid])[0]} or leave it empty")
    elif not category:
        if len(known[cid]) > 1:
            errors.add("category", "", f"candidate is in several categories ({', '.join(sorted(known[cid]))})",
                       "set the category column")
        else:
            category = next(iter(known[cid]))
    return cid, category


def _verdict(record: Mapping[str, Any], errors: _RowErrors) -> str:
    verdict = _text(record, "verdict").lower()
    verdict = {"accepted": "accept", "rejected": "reject"}.get(verdict, verdict)
    if verdict not in VERDICTS:
        errors.add("verdict", record.get("verdict"), "not a verdict" if verdict else "missing (the row has a note)",
                   "write accept or reject")
    return verdict


def _reviewer(record: Mapping[str, Any], default: str | None, errors: _RowErrors) -> str:
    who = _text(record, "reviewer") or (default or "").strip()
    if not who:
        errors.add("reviewer", record.get("reviewer"), "missing", "write who decided in the reviewer column "
                   "(or pass --reviewer NAME to fill empty cells)")
    elif len(who) > MAX_REVIEWER_CHARS:
        errors.add("reviewer", who, f"is {len(who):,} characters, over the limit of {MAX_REVIEWER_CHARS}",
                   "write the reviewer's name or a short handle")
    return who


def _note(record: Mapping[str, Any], errors: _RowErrors) -> str | None:
    note = _text(record, "note")
    if len(note) > MAX_NOTE_CHARS:
        # Refused rather than cut: a cut note would be stored as if it were what the reviewer wrote.
        hint = " (if it holds other rows, a quote \" in the note is not closed)" if "\n" in note else ""
        errors.add("note", note, f"is {len(note):,} characters, over the limit of {MAX_NOTE_CHARS:,}",
                   f"shorten the note, for instance to a summary and the name of a file with the rest{hint}")
    return note or None


_TIME_FIX = "write the time of the decision like 2025-01-31T14:05:00Z (UTC) or 2025-01-31T15:05:00+01:00"


def _decided_at(record: Mapping[str, Any], now: dt.datetime, errors: _RowErrors) -> dt.datetime | None:
    """The decision's time (naive UTC), if it is a time between EARLIEST_DECISION and now + CLOCK_SKEW."""
    raw = record.get("decided_at")
    when = _parsed_time(raw, errors)
    if when is not None and when > now + CLOCK_SKEW:
        errors.add("decided_at", raw, f"is in the future (it is now {now:%Y-%m-%dT%H:%M}Z); the latest decision "
                   "counts, so it would override every real one", "write when the decision was made; check the "
                   "year and the UTC offset")
        return None
    if when is not None and when < EARLIEST_DECISION:
        errors.add("decided_at", raw, f"is before {EARLIEST_DECISION:%Y}", "write when the decision was made "
                   "(a spreadsheet may show an empty date cell as 1899-12-30 or 1900-01-00)")
        return None
    return when


def _parsed_time(raw: Any, errors: _RowErrors) -> dt.datetime | None:
    try:
        if not isinstance(raw, str):
            raise ValueError("not text")
        return parse_time(raw)
    except ValueError as exc:
        # fromisoformat's "Invalid isoformat string: ..." only repeats the value; "year 0 is out of range" helps.
        detail = "" if str(exc).startswith("Invalid isoformat") else f" ({exc})"
        errors.add("decided_at", raw, "not a valid ISO 8601 time" + detail, _TIME_FIX)
        return None


def _validate(record: Mapping[str, Any], known: Mapping[str, set[str]], default_reviewer: str | None,
              now: dt.datetime, errors: _RowErrors) -> dict[str, Any] | None:
    """The decision as a review_decisions row, or None when ``errors`` holds why not."""
    cid, category = _candidate(record, known, errors)
    verdict = _verdict(record, errors)
    who = _reviewer(record, default_reviewer, errors)
    when = _decided_at(record, now, errors)
    note = _note(record, errors)
    if errors.errors or when is None:
        return None
    return {"candidate_id": cid, "category": category, "reviewer": who, "decided_at": when,
            "verdict": verdict, "note": note}


# ---------------------------------------------------------------------------------------------
# Importing a file


def _key(row: Mapping[str, Any]) -> tuple:
    return tuple(row[k] for k in KEY_COLUMNS)


def _content(row: Mapping[str, Any]) -> tuple:
    return row["category"], row["verdict"], row["note"]


class _Batch:
    """The rows of one file sorted into new, updated, unchanged, skipped and rejected."""

    def __init__(self, store: Store, path: Path, report: ImportReport, default_reviewer: str | None):
        self.path, self.report, self.default_reviewer = path, report, default_reviewer
        self.known: dict[str, set[str]] = {}
        for cid, category in review_queries.known_candidates(store):
            self.known.setdefault(cid, set()).add(category)
        self.stored = {_key(d): d for d in review_queries.review_decisions(store)}
        self.imported_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        self.in_file: dict[tuple, tuple[int, dict[str, Any]]] = {}  # key -> (row number, row)
        self.new_rows: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []

    def add(self, rec: Record) -> None:
        errors = _RowErrors(self.report.file, rec.row)
        record = rec.fields
        if record is None:
            errors.add("row", rec.raw, rec.problem or "unreadable",
                       "write one decision per line with the columns " + ", ".join(DECISION_COLUMNS))
            self._reject(errors)
        elif _is_untouched(record):
            self.report.skipped += 1
        elif (row := _validate(record, self.known, self.default_reviewer, self.imported_at, errors)) is None:
            self._reject(errors)
        else:
            self._place(rec.row, row, record.get("decided_at"))

    def _reject(self, errors: _RowErrors) -> None:
        self.report.rejected += 1
        self.report.errors += errors.errors

    def _place(self, n: int, row: dict[str, Any], raw_when: Any) -> None:
        """A valid row: a repeat of an earlier row, already stored, an update, or new."""
        key = _key(row)
        if key in self.in_file:
            first_n, first = self.in_file[key]
            if _content(first) == _content(row):
                self.report.unchanged += 1
                return
            errors = _RowErrors(self.report.file, n)
            errors.add("decided_at", raw_when, f"same candidate, reviewer and time as row {first_n} but a different "
                       "verdict or note", "keep one of the two rows, or give each its own decided_at")
            self._reject(errors)
            return
        self.in_file[key] = (n, row)
        stored = self.stored.get(key)
        if stored is not None and _content(stored) == _content(row):
            self.report.unchanged += 1
            return
        full = {**row, "decisions_file": str(self.path.resolve()), "decisions_sha256": self.report.sha256,
                "imported_at": self.imported_at}
        (self.updates if stored is not None else self.new_rows).append(full)
        self.report.imported += 1
        if row["category"] not in self.report.categories:
            self.report.categories.append(row["category"])

    def write(self, store: Store) -> None:
        if self.new_rows:
            store.append("review_decisions", self.new_rows)
        for row in self.updates:  # a corrected file: the stored decision with this key takes the file's content
            store.replace_slice("review_decisions", {k: row[k] for k in KEY_COLUMNS}, [row])


def import_decisions(store: Store, path: Path, reviewer: str | None = None) -> ImportReport:
    """Validate every row of a decisions file (CSV or JSONL) and store the valid ones.

    ``reviewer`` fills rows whose reviewer cell is empty. Raises :class:`DecisionsFileError` when
    the file as a whole is unusable; row problems go to ``report.errors`` and the other rows still
    import. Idempotent: importing the same file again writes nothing.
    """
    if store.read_only:
        raise ValueError("import_decisions needs a writable Store (Store.at(path) without read_only)")
    path = Path(path)
    data, records = _load(path)
    report = ImportReport(file=str(path), sha256=hashlib.sha256(data).hexdigest(), rows=len(records))
    batch = _Batch(store, path, report, reviewer)
    for record in records:
        batch.add(record)
    batch.write(store)
    report.updated = len(batch.updates)
    report.categories.sort()
    assert report.rows == report.imported + report.unchanged + report.skipped + report.rejected
    return report


# ---------------------------------------------------------------------------------------------
# The decisions that count


def effective_decisions(store: Store, category: str) -> dict[str, Decision]:
    """candidate_id -> the decision that counts: the latest ``decided_at``; on a tie 'reject', then
    the alphabetically first reviewer. Empty when nothing was reviewed (or the table is missing)."""
    if not review_queries.table_exists(store, "review_decisions"):
        return {}
    names = [f.name for f in fields(Decision)]
    decisions = [Decision(**{k: r.get(k) for k in names}) for r in review_queries.review_decisions(store, category)]
    return pick_effective(decisions)
