"""Human review round trip: export a self-contained page, import decisions, the latest decision counts."""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sp_assets.review import (
    Decision, DecisionsFileError, apply_review, effective_decisions, export_review, import_decisions, page_paths,
)
from sp_assets.core.review_rules import pick_effective
from sp_assets.review import main as review_main
from sp_assets.storage import ImageStore, Store
from tests.conftest import run_graph

CATEGORY = "o2_violence"
UPTO_VERIFIED = ["source_pool", "policy_labels", "edit_instructions", "edited_images", "verified_pairs"]
CHROMIUM = Path("/usr/bin/chromium")
HEADER = ["candidate_id", "category", "reviewer", "decided_at", "verdict", "note"]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A real database with verified candidates for one category (never written to by the tests)."""
    data = tmp_path_factory.mktemp("review") / "data"
    run_graph(data, CATEGORY, CATEGORY, selection=UPTO_VERIFIED, demo_unsafe_per_category=2, demo_safe_per_category=0)
    return data


@pytest.fixture
def data(built: Path, tmp_path: Path) -> Path:
    """A private copy of the built data folder, for tests that write decisions."""
    copy = tmp_path / "data"
    shutil.copytree(built, copy)
    return copy


@pytest.fixture(scope="module")
def candidate_ids(built: Path) -> list[str]:
    ids = Store.at(built / "safetypairs.duckdb", read_only=True).query(
        "SELECT DISTINCT candidate_id FROM verified_pairs WHERE category = ? ORDER BY 1", [CATEGORY])
    ids = ids["candidate_id"].to_list()
    assert len(ids) >= 2
    return ids


@pytest.fixture(scope="module")
def pages(built: Path, tmp_path_factory) -> dict[str, Path]:
    store = Store.at(built / "safetypairs.duckdb", read_only=True)
    out = tmp_path_factory.mktemp("pages")
    return {
        "blurred": export_review(store, ImageStore(built), CATEGORY, out / "blurred"),
        "shown": export_review(store, ImageStore(built), CATEGORY, out / "shown", show_unsafe=True),
    }


def _cards(page: str) -> dict[str, str]:
    parts = re.split(r'<article class="cand" id="c-', page)[1:]
    return {p.split('"', 1)[0]: p.split("</article>", 1)[0] for p in parts}


def _imgs(fragment: str) -> list[str]:
    return re.findall(r"<img\b[^>]*>", fragment)


def _write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([HEADER, *rows])
    return path


def _table(data: Path) -> list[dict]:
    return Store.at(data / "safetypairs.duckdb", read_only=True).query(
        "SELECT * FROM review_decisions ORDER BY candidate_id, reviewer, decided_at").to_dicts()


def test_page_is_self_contained_and_shows_both_halves(pages, candidate_ids):
    page = pages["blurred"].read_text(encoding="utf-8")
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert not re.search(r"<(link|iframe|object|embed)\b", page, re.I)
    assert "<script src" not in page and "@import" not in page and "url(" not in page
    assert "Content-Security-Policy" in page
    cards = _cards(page)
    assert sorted(cards) == candidate_ids
    for cid, card in cards.items():
        imgs = _imgs(card)
        assert len(imgs) == 2, cid  # source and edit, side by side in one .pair row
        assert all('src="data:image/' in img for img in imgs)
        assert 'class="pair"' in card and "instruction:" in card
        assert re.search(r"SSIM out.*PSNR out.*cosine", card)
        assert 'value="accept"' in card and 'value="reject"' in card and 'class="note"' in card
    assert 'id="reviewer"' in page and 'id="download"' in page and "new Blob(" in page


def test_unsafe_halves_are_blurred_unless_shown(pages):
    blurred = _cards(pages["blurred"].read_text(encoding="utf-8"))
    shown = _cards(pages["shown"].read_text(encoding="utf-8"))
    for cid, card in blurred.items():
        source, edit = _imgs(card)
        assert re.search(r'class="[^"]*\bunsafe\b[^"]*\bblurred\b', source), cid
        if 'data-kind="null"' in card:  # a control edit is meant to stay unsafe: blurred too
            assert "blurred" in edit, cid
    for card in shown.values():
        assert not any("blurred" in img for img in _imgs(card))
        assert "unsafe" in _imgs(card)[0]  # still clickable to blur
    assert 'id="reveal-all"' in pages["blurred"].read_text() and 'id="reveal-all"' not in pages["shown"].read_text()


def test_template_lists_every_candidate_without_verdicts(pages, candidate_ids, data):
    _, template = page_paths(pages["blurred"].parent, CATEGORY)
    rows = list(csv.DictReader(template.open(encoding="utf-8")))
    assert sorted(r["candidate_id"] for r in rows) == candidate_ids
    assert all(r["verdict"] == "" and r["category"] == CATEGORY for r in rows)
    assert {r["kind"] for r in rows} <= {"flip", "null"} and "flip" in {r["kind"] for r in rows}
    report = import_decisions(Store.at(data / "safetypairs.duckdb"), template)
    assert (report.rows, report.skipped, report.imported, report.errors) == (len(rows), len(rows), 0, [])
    assert _table(data) == []


def test_include_filter_partitions_candidates(built, tmp_path, candidate_ids):
    store = Store.at(built / "safetypairs.duckdb", read_only=True)
    seen = []
    for include in ("accepted", "rejected"):
        page = export_review(store, ImageStore(built), CATEGORY, tmp_path, include=include)
        assert page.name == f"review_{CATEGORY}_{include}.html"
        cards = _cards(page.read_text(encoding="utf-8"))
        assert all(f'data-auto="{include}"' in c for c in cards.values())
        seen += list(cards)
    assert sorted(seen) == candidate_ids
    with pytest.raises(ValueError, match="o2_violence"):
        export_review(store, ImageStore(built), "o9_nothing", tmp_path)


def test_import_validates_rows_and_is_idempotent(data, candidate_ids, tmp_path):
    a, b = candidate_ids[:2]
    store = Store.at(data / "safetypairs.duckdb")
    path = _write_csv(tmp_path / "decisions.csv", [
        [a, CATEGORY, "alice", "2025-01-31T14:05:00Z", "accept", ""],                       # row 2
        [b, CATEGORY, "alice", "2025-01-31T14:06:00.123Z", "reject", "edit, still \"violent\""],  # row 3
        ["deadbeef" * 8, CATEGORY, "alice", "2025-01-31T14:07:00Z", "accept", ""],          # row 4
        [a, CATEGORY, "alice", "2025-01-31T14:08:00Z", "maybe", ""],                        # row 5
        [b, CATEGORY, "", "yesterday", "accept", ""],                                       # row 6
        [a, CATEGORY, "", "", "", ""],                                                      # row 7: untouched
    ])
    report = import_decisions(store, path)
    assert (report.rows, report.imported, report.unchanged, report.skipped, report.rejected) == (6, 2, 0, 1, 3)
    assert report.rows == report.imported + report.unchanged + report.skipped + report.rejected
    text = [str(e) for e in report.errors]
    assert any("row 4" in t and "deadbeef" in t and "no such candidate" in t and "Fix:" in t for t in text), text
    assert any("row 5" in t and "'maybe'" in t and "accept or reject" in t for t in text), text
    assert any("row 6" in t and "reviewer" in t for t in text) and any("row 6" in t and "'yesterday'" in t for t in text)
    assert all(str(path) in t for t in text)
    rows = _table(data)
    assert [(r["candidate_id"], r["verdict"], r["note"]) for r in rows] == sorted(
        [(a, "accept", None), (b, "reject", 'edit, still "violent"')])
    assert {r["decisions_sha256"] for r in rows} == {report.sha256}
    assert {r["decisions_file"] for r in rows} == {str(path.resolve())}
    assert str(rows[0]["decided_at"]) in ("2025-01-31 14:05:00", "2025-01-31 14:06:00.123000")

    again = import_decisions(store, path)
    assert (again.imported, again.unchanged, again.skipped, again.rejected) == (0, 2, 1, 3)
    assert _table(data) == rows  # byte for byte: imported_at and file are not rewritten

    # A corrected copy of the file (same key, other verdict) updates that decision in place.
    fixed = _write_csv(tmp_path / "fixed.csv", [[a, CATEGORY, "alice", "2025-01-31T15:05:00+01:00", "reject", "on second look"]])
    report = import_decisions(store, fixed)
    assert (report.imported, report.updated) == (1, 1)
    assert len(_table(data)) == 2 and effective_decisions(store, CATEGORY)[a].verdict == "reject"


def test_latest_decision_wins_and_jsonl_imports(data, candidate_ids, tmp_path):
    a, b = candidate_ids[:2]
    store = Store.at(data / "safetypairs.duckdb")
    assert effective_decisions(store, CATEGORY) == {}
    lines = [
        {"candidate_id": a, "category": CATEGORY, "reviewer": "alice", "decided_at": "2025-02-01T10:00:00Z", "verdict": "accept"},
        {"candidate_id": a, "reviewer": "bob", "decided_at": "2025-02-01T12:00:00+02:00", "verdict": "reject", "note": "knife"},
        {"candidate_id": a, "reviewer": "carol", "decided_at": "2025-02-01T09:59:59", "verdict": "reject"},
        {"candidate_id": b, "reviewer": "alice", "decided_at": "2025-02-01T08:00:00Z", "verdict": "Accept"},
        {"candidate_id": b, "reviewer": "bob", "decided_at": "2025-02-01T08:00:00Z", "verdict": "reject"},
        "not json",
    ]
    path = tmp_path / "decisions.jsonl"
    path.write_text("\n".join(l if isinstance(l, str) else json.dumps(l) for l in lines) + "\n\n")
    report = import_decisions(store, path)
    assert (report.rows, report.imported, report.rejected) == (6, 5, 1)
    assert "row 6" in str(report.errors[0]) and "JSON" in str(report.errors[0])
    eff = effective_decisions(store, CATEGORY)
    # a: alice 10:00Z vs bob 12:00+02:00 (= 10:00Z) tie -> reject wins; carol is earlier.
    assert (eff[a].reviewer, eff[a].verdict, eff[a].note) == ("bob", "reject", "knife")
    assert (eff[b].verdict, eff[b].reviewer) == ("reject", "bob")  # same time: reject wins
    later = tmp_path / "later.csv"
    _write_csv(later, [[a, CATEGORY, "alice", "2025-02-02T00:00:00Z", "accept", "fine after all"]])
    import_decisions(store, later)
    eff = effective_decisions(store, CATEGORY)
    assert (eff[a].verdict, eff[a].reviewer, eff[a].decisions_file) == ("accept", "alice", str(later.resolve()))
    assert effective_decisions(store, "o1_hate") == {}


def test_apply_review_overrides_the_automatic_verdict():
    base = {"accepted": False, "reject_reason": "edit_still_unsafe", "quality_score": None,
            "edit_score": 0.6, "ssim_outside": 1.0, "embedding_cosine": 0.9}
    accept = Decision("c", CATEGORY, "alice", dt.datetime(2025, 1, 1), "accept")
    reject = Decision("c", CATEGORY, "alice", dt.datetime(2025, 1, 1), "reject")
    out = apply_review(base, accept)
    assert out["accepted"] and out["reject_reason"] is None and out["quality_score"] is not None
    assert apply_review({**base, "accepted": True, "reject_reason": None}, reject)["reject_reason"] == "human_rejected"
    hard = apply_review({**base, "reject_reason": "edit_failed"}, accept)
    assert not hard["accepted"] and hard["reject_reason"] == "edit_failed;human_accept_ignored"
    assert apply_review(base, None) == base


def test_effective_decision_is_latest_then_reject_then_first_reviewer():
    noon = dt.datetime(2025, 1, 1, 12)

    def decision(reviewer: str, verdict: str, when: dt.datetime = noon) -> Decision:
        return Decision("c", CATEGORY, reviewer, when, verdict)

    cases = [
        ([decision("amy", "accept", noon + dt.timedelta(seconds=1)), decision("bob", "reject")], ("amy", "accept")),
        ([decision("amy", "accept"), decision("zed", "reject")], ("zed", "reject")),
        ([decision("bob", "accept"), decision("carol", "reject"), decision("al", "reject")], ("al", "reject")),
    ]
    for decisions, (reviewer, verdict) in cases:
        for order in itertools.permutations(decisions):  # the input order never matters
            chosen = pick_effective(order)["c"]
            assert (chosen.reviewer, chosen.verdict) == (reviewer, verdict)


def test_spreadsheet_csv_with_bom_and_semicolons_imports(data, candidate_ids, tmp_path):
    path = tmp_path / "from_excel.csv"
    path.write_bytes(("\ufeffcandidate_id;category;reviewer;decided_at;verdict;note;auto_verdict\r\n"
                      f"{candidate_ids[0]};{CATEGORY};frank;2025-01-31 14:05;Reject;blurry edit;accepted\r\n"
                      f"{candidate_ids[1][:20]};{CATEGORY};frank;2025-01-31 14:06;accept;;accepted\r\n").encode())
    report = import_decisions(Store.at(data / "safetypairs.duckdb"), path)
    assert (report.imported, report.rejected) == (1, 1)
    assert candidate_ids[1] in str(report.errors[0]) and "did you mean" in str(report.errors[0])
    eff = effective_decisions(Store.at(data / "safetypairs.duckdb", read_only=True), CATEGORY)
    assert eff[candidate_ids[0]].verdict == "reject" and eff[candidate_ids[0]].decided_at == dt.datetime(2025, 1, 31, 14, 5)


def test_bad_files_fail_whole(data, tmp_path):
    store = Store.at(data / "safetypairs.duckdb")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("id,decision\nx,accept\n")
    with pytest.raises(DecisionsFileError, match="candidate_id.*verdict|template"):
        import_decisions(store, wrong)
    with pytest.raises(DecisionsFileError, match="cannot read"):
        import_decisions(store, tmp_path / "missing.csv")


def test_cli_round_trip(data, candidate_ids, tmp_path, monkeypatch, capsys):
    env = {**os.environ, "SP_DATA_ROOT": str(data)}
    done = subprocess.run([sys.executable, "-m", "sp_assets.review", "export", "--category", CATEGORY, "--out",
                           str(tmp_path / "out")], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert str(tmp_path / "out" / f"review_{CATEGORY}.html") in done.stdout
    assert (tmp_path / "out" / f"review_{CATEGORY}_decisions.csv").is_file()

    monkeypatch.setenv("SP_DATA_ROOT", str(data))  # the rest in-process: the same main(), without a slow start

    def run(*args: str) -> tuple[int, str, str]:
        code = review_main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    decisions = _write_csv(tmp_path / "d.csv", [[candidate_ids[0], "", "", "2025-01-31T14:05:00Z", "reject", "no"]])
    code, out, _ = run("import", str(decisions), "--reviewer", "dana")
    assert code == 0 and "1 imported" in out and "re-materialize verified_pairs" in out
    code, out, _ = run("import", str(decisions), "--reviewer", "dana")
    assert code == 0 and "0 imported" in out and "1 unchanged" in out
    bad = _write_csv(tmp_path / "bad.csv", [[candidate_ids[0], "", "dana", "2025-01-31", "nope", ""]])
    code, out, _ = run("import", str(bad))
    assert code == 1 and "row 2" in out and "'nope'" in out
    code, _, err = run("export", "--category", "o9_nothing")
    assert code == 2 and "o2_violence" in err
    monkeypatch.setenv("SP_DATA_ROOT", str(tmp_path / "nowhere"))
    code, _, err = run("import", str(decisions))
    assert code == 2 and "no database" in err and not (tmp_path / "nowhere").exists()


@pytest.mark.full
@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless chromium (/usr/bin/chromium) is not installed")
def test_browser_toggles_blur_and_downloads_importable_csv(pages, data, candidate_ids, tmp_path):
    """Click in a real browser: the blur toggles, and the CSV the page builds imports cleanly."""
    page = pages["blurred"].read_text(encoding="utf-8")
    a, b = candidate_ids[:2]
    probe = f"""<script>
    (function () {{
      var img = document.querySelector("img.unsafe"), out = document.createElement("pre");
      var seen = [img.classList.contains("blurred")];
      img.click(); seen.push(img.classList.contains("blurred"));
      img.click(); seen.push(img.classList.contains("blurred"));
      document.getElementById("reviewer").value = "erin";
      function decide(cid, verdict, note) {{
        var card = document.getElementById("c-" + cid);
        card.querySelector(".note").value = note;
        var radio = card.querySelector("input[value=" + verdict + "]");
        radio.checked = true; radio.dispatchEvent(new Event("change", {{bubbles: true}}));
      }}
      decide("{a}", "accept", ""); decide("{b}", "reject", 'says "kill", sadly');
      out.id = "probe"; out.setAttribute("data-blur", JSON.stringify(seen));
      out.textContent = window.reviewCsv(); document.body.appendChild(out);
    }})();
    </script></body>"""
    harness = tmp_path / "harness.html"
    harness.write_text(page.replace("</body>", probe), encoding="utf-8")
    done = subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
                           "--dump-dom", harness.as_uri()], capture_output=True, text=True, timeout=120)
    match = re.search(r'<pre id="probe" data-blur="([^"]*)">(.*?)</pre>', done.stdout, re.S)
    assert match, done.stderr[-2000:]
    assert json.loads(match.group(1).replace("&quot;", '"')) == [True, False, True]
    csv_text = match.group(2).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    rows = list(csv.DictReader(csv_text.splitlines()))
    assert sorted((r["candidate_id"], r["category"], r["reviewer"], r["verdict"]) for r in rows) == [
        (a, CATEGORY, "erin", "accept"), (b, CATEGORY, "erin", "reject")]
    assert all(r["decided_at"].endswith("Z") for r in rows)
    path = tmp_path / "from_browser.csv"
    path.write_text(csv_text, encoding="utf-8")
    report = import_decisions(Store.at(data / "safetypairs.duckdb"), path)
    assert (report.imported, report.rejected) == (2, 0), report.summary()
    eff = effective_decisions(Store.at(data / "safetypairs.duckdb", read_only=True), CATEGORY)
    assert eff[b].note == 'says "kill", sadly' and eff[a].verdict == "accept"
