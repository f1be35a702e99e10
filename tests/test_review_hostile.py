"""Hostile decisions files: a bad row is refused and reported, the good rows of the same file still import.

Each test uses the smallest file that shows one finding of issue 20, against a tiny database that holds
nothing but two candidates (no graph run).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from sp_assets.review import effective_decisions, import_decisions
from sp_assets.review import main as review_main
from sp_assets.review.decisions import MAX_NOTE_CHARS, MAX_REVIEWER_CHARS
from sp_assets.review.spreadsheet import neutralise, restore
from sp_assets.storage import Store

A, B = "a" * 64, "b" * 64
CATEGORY = "o2_violence"
HEADER = "candidate_id,category,reviewer,decided_at,verdict,note\n"
GOOD = f"{B},{CATEGORY},alice,2025-01-31T14:05:00Z,accept,fine\n"
CSV_CELL_JS = Path(__file__).parents[1] / "sp_assets" / "review" / "static" / "csv_cell.js"
# Values a reviewer might type that a spreadsheet would run, and near misses that must come back unchanged.
CELLS = ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "'=1+1", "''-x", "'", "'plain", "plain", "", "a=b"]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store.at(tmp_path / "data" / "safetypairs.duckdb")
    store.append("verified_pairs", [{"candidate_id": A, "category": CATEGORY}, {"candidate_id": B, "category": CATEGORY}])
    return store


def _jsonl(candidate_id: str, **extra) -> str:
    row = {"candidate_id": candidate_id, "reviewer": "alice", "decided_at": "2025-01-31T14:05:00Z", "verdict": "accept"}
    return json.dumps({**row, **extra}, ensure_ascii=False) + "\n"


def _import(store: Store, path: Path, text: str):
    path.write_text(text, encoding="utf-8")
    report = import_decisions(store, path)
    assert report.rows == report.imported + report.unchanged + report.skipped + report.rejected
    return report


def _stored(store: Store) -> dict[str, dict]:
    return {r["candidate_id"]: r for r in store.query("SELECT * FROM review_decisions").to_dicts()}


def _only_error(report) -> str:
    assert len(report.errors) == 1, report.summary()
    return str(report.errors[0])


def test_note_over_the_csv_modules_limit_refuses_only_its_row(store, tmp_path):
    note = "x" * 140_000  # over the csv module's own 128 KiB cell limit, which used to stop the file
    report = _import(store, tmp_path / "d.csv", HEADER + f"{A},{CATEGORY},alice,2025-01-31T14:05:00Z,accept,{note}\n" + GOOD)
    assert (report.imported, report.rejected) == (1, 1)
    error = _only_error(report)
    assert "d.csv row 2: note 'xxx" in error and "140,000 characters" in error and f"{MAX_NOTE_CHARS:,}" in error
    assert "Fix: shorten the note" in error and len(error) < 400  # the value is shown cut, not whole
    assert list(_stored(store)) == [B]


def test_note_at_the_limit_imports_and_one_over_is_refused(store, tmp_path):
    rows = (f"{A},{CATEGORY},alice,2025-01-31T14:05:00Z,accept,{'n' * MAX_NOTE_CHARS}\n"
            f"{B},{CATEGORY},alice,2025-01-31T14:05:00Z,accept,{'n' * (MAX_NOTE_CHARS + 1)}\n")
    report = _import(store, tmp_path / "d.csv", HEADER + rows)
    assert (report.imported, report.rejected) == (1, 1) and "row 3: note" in _only_error(report)


def test_long_reviewer_name_is_refused_with_the_limit(store, tmp_path):
    who = "r" * (MAX_REVIEWER_CHARS + 1)
    report = _import(store, tmp_path / "d.csv", HEADER + f"{A},{CATEGORY},{who},2025-01-31T14:05:00Z,accept,\n" + GOOD)
    assert (report.imported, report.rejected) == (1, 1)
    error = _only_error(report)
    assert "row 2: reviewer" in error and str(MAX_REVIEWER_CHARS) in error and "Fix:" in error


@pytest.mark.parametrize("when, reason", [
    ("0001-01-01T00:00:00+01:00", "out of range once converted to UTC"),  # used to raise OverflowError
    ("9999-12-31T23:00:00-05:00", "out of range once converted to UTC"),
    ("0000-01-01T00:00:00Z", "year 0 is out of range"),
    ("2025-13-01", "month must be in 1..12"),
    ("1899-12-30", "before 2000"),  # a spreadsheet's empty date cell
])
def test_out_of_range_time_refuses_only_its_row(store, tmp_path, when, reason):
    report = _import(store, tmp_path / "d.csv", HEADER + f"{A},{CATEGORY},alice,{when},accept,\n" + GOOD)
    assert (report.imported, report.rejected) == (1, 1)
    error = _only_error(report)
    assert f"row 2: decided_at {when!r}" in error and reason in error and "Fix: write" in error


def test_decision_dated_in_the_future_is_refused_and_does_not_override(store, tmp_path):
    _import(store, tmp_path / "real.csv", HEADER + f"{A},{CATEGORY},alice,2025-01-31T14:05:00Z,reject,knife\n")
    report = _import(store, tmp_path / "future.csv", HEADER + f"{A},{CATEGORY},mallory,9999-01-01T00:00:00Z,accept,\n")
    assert (report.imported, report.rejected) == (0, 1)
    error = _only_error(report)
    assert "future.csv row 2: decided_at '9999-01-01T00:00:00Z': is in the future" in error and "Fix:" in error
    assert effective_decisions(store, CATEGORY)[A].reviewer == "alice"


def test_clock_a_few_hours_ahead_is_still_accepted(store, tmp_path):
    soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    report = _import(store, tmp_path / "d.csv", HEADER + f"{A},{CATEGORY},alice,{soon},accept,\n")
    assert (report.imported, report.rejected) == (1, 0), report.summary()


@pytest.mark.parametrize("bad, reason", [
    ("[" * 100_000, "nested too deeply"),  # used to raise RecursionError
    ('{"candidate_id": ' + "1" * 5_000 + "}", "4300 digits"),  # used to raise ValueError
    ('{"candidate_id": "' + A + '", "verdict": "accept", "note": "\\ud800"}', "surrogate"),  # not storable as text
    ('{"candidate_id": "' + A + '", "verdict": "accept", "note": ' + "[" * 50 + "]" * 50 + "}", "JSON array"),
])
def test_unreadable_json_line_refuses_only_its_line(store, tmp_path, bad, reason):
    report = _import(store, tmp_path / "d.jsonl", bad + "\n" + _jsonl(B))
    assert (report.rows, report.imported, report.rejected) == (2, 1, 1)
    error = _only_error(report)
    assert error.startswith(f"{tmp_path / 'd.jsonl'} row 1: row ") and reason in error and "Fix:" in error
    assert len(error) < 600
    assert list(_stored(store)) == [B]


def test_unicode_line_separators_inside_a_json_note_survive(store, tmp_path):
    note = "first\u2028second\u2029third\x85fourth\x1cfifth"  # str.splitlines() splits at each of these
    report = _import(store, tmp_path / "d.jsonl", _jsonl(A, note=note) + _jsonl(B))
    assert (report.rows, report.imported, report.rejected) == (2, 2, 0), report.summary()
    assert _stored(store)[A]["note"] == note


def test_crlf_json_lines_import(store, tmp_path):
    report = _import(store, tmp_path / "d.jsonl", (_jsonl(A) + _jsonl(B)).replace("\n", "\r\n"))
    assert (report.imported, report.rejected) == (2, 0), report.summary()


def test_neutralised_cells_are_safe_and_restore_exactly():
    for value in CELLS:
        cell = neutralise(value)
        assert not cell[:1] in ("=", "+", "-", "@", "\t", "\r"), value
        assert restore(cell) == value
    assert neutralise("=1+1") == "'=1+1" and neutralise("a=b") == "a=b"


def test_neutralised_csv_from_the_page_imports_the_values_typed(store, tmp_path):
    text = HEADER + f"{A},{CATEGORY},'@alice,2025-01-31T14:05:00Z,reject,'=HYPERLINK(\"x\")\n" \
                    f"{B},{CATEGORY},bob,2025-01-31T14:05:00Z,accept,'plain quote\n"
    report = _import(store, tmp_path / "d.csv", text)
    assert (report.imported, report.rejected) == (2, 0), report.summary()
    stored = _stored(store)
    assert (stored[A]["reviewer"], stored[A]["note"]) == ("@alice", '=HYPERLINK("x")')
    assert stored[B]["note"] == "'plain quote"  # not added by the page: kept


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_page_csv_cells_match_the_python_rule():
    """csv_cell.js, run by node: each cell reads back (csv module) as neutralise(value)."""
    script = (f"const cell = require({json.dumps(str(CSV_CELL_JS))});"
              f"process.stdout.write(JSON.stringify({json.dumps(CELLS)}.map(cell)));")
    done = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    cells = json.loads(done.stdout)
    read = [next(csv.reader(io.StringIO(c, newline="")), [""])[0] for c in cells]
    assert read == [neutralise(v) for v in CELLS]


def test_cli_lists_refused_rows_and_stores_the_rest(store, tmp_path, monkeypatch, capsys):
    path = tmp_path / "d.jsonl"
    path.write_text("[" * 100_000 + "\n" + _jsonl(A, decided_at="9999-01-01T00:00:00Z") + _jsonl(B), encoding="utf-8")
    monkeypatch.setenv("SP_DATA_ROOT", str(tmp_path / "data"))
    code = review_main(["import", str(path)])
    out = capsys.readouterr()
    assert code == 1 and "Traceback" not in out.out + out.err
    assert "3 rows: 1 imported" in out.out and "2 rejected" in out.out and "Refused 2 rows" in out.out
    assert "row 1: row '[[[" in out.out and "row 2: decided_at '9999-01-01T00:00:00Z'" in out.out
    assert list(_stored(store)) == [B]
