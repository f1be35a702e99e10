"""Human review: export candidates to one self-contained HTML page, import the reviewers' decisions.

Round trip::

    python -m sp_assets.review export --category o2_violence        # -> data/review/review_o2_violence.html
    # open the page, enter your name, accept / reject candidates, "Download decisions (CSV)"
    python -m sp_assets.review import ~/Downloads/decisions_o2_violence_alice_....csv

The page embeds every image as a data URI (no network, no JavaScript library; a Content-Security-Policy
forbids any fetch) and shows each candidate's source and edit side by side with the instruction and
the automatic verdict. Unsafe halves (every source, every control edit, and every flip edit the
verifier did not rate safe) are blurred until clicked, unless ``show_unsafe``. Next to the page, a decisions template CSV lists
the candidate ids for reviewers who prefer a spreadsheet.

Decisions files (CSV or JSONL) have the columns ``candidate_id, category, reviewer, decided_at,
verdict, note``; other columns are ignored. ``decided_at`` is ISO 8601; a time without an offset is
taken as UTC. ``verdict`` is ``accept`` or ``reject``. A row whose verdict and note are both empty
(an untouched template row) is skipped. Imports are idempotent: a decision is keyed by
(candidate_id, reviewer, decided_at), and a key already stored with the same verdict, note and
category is counted as unchanged and not written again.

Which decision counts (:func:`effective_decisions`): per candidate, the decision with the latest
``decided_at`` wins, whoever made it. On a tie, ``reject`` wins over ``accept`` (the conservative
choice), then the reviewer name (alphabetical) decides, so the rule is deterministic.
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime as dt
import hashlib
import html
import io
import json
import os
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from PIL import Image

from sp_assets.core.verification import quality_score
from sp_assets.storage import ImageStore, Store

DECISION_COLUMNS = ["candidate_id", "category", "reviewer", "decided_at", "verdict", "note"]
VERDICTS = ("accept", "reject")
Include = Literal["all", "accepted", "rejected"]
MAX_SIDE = 512  # longest side of an embedded image, pixels
JPEG_QUALITY = 85

# One row per candidate: the decision that counts (see the module docstring). Usable in a view.
EFFECTIVE_SQL = """
SELECT * FROM review_decisions
WHERE category = ?
QUALIFY row_number() OVER (
    PARTITION BY category, candidate_id
    ORDER BY decided_at DESC, (verdict = 'reject') DESC, reviewer ASC) = 1
"""

# Verification results a human accept cannot override: the pair does not physically exist.
HARD_REASONS = frozenset({"edit_failed", "size_mismatch"})


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
        return f"{self.file} row {self.row}: {self.column} {self.value!r}: {self.problem}. Fix: {self.fix}"


@dataclass
class ImportReport:
    """Counts add up: ``rows == imported + unchanged + skipped + rejected``.

    ``imported`` counts rows written (new keys, and ``updated`` ones: a stored key whose verdict,
    note or category the file changes); ``unchanged`` rows were already stored exactly so (or
    repeat an earlier row of the file); ``skipped`` rows have neither verdict nor note;
    ``rejected`` rows failed validation, each with at least one entry in ``errors``.
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
        lines += [f"  {e}" for e in self.errors]
        if self.categories:
            lines.append("Decisions changed for " + ", ".join(self.categories)
                         + ": re-materialize verified_pairs and what follows for them to take effect.")
        return "\n".join(lines)


class DecisionsFileError(ValueError):
    """The file as a whole cannot be read (missing, wrong format, no candidate_id/verdict columns)."""


# ---------------------------------------------------------------------------------------------
# Export


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)


def _has_table(store: Store, table: str) -> bool:
    return bool(store.query("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]).item())


def _candidates(store: Store, category: str) -> list[dict[str, Any]]:
    """Every verification row of the category with its edit, instruction and source, all profiles."""
    rows = store.query(
        "SELECT v.*, e.edited_path, e.seed, e.status AS edit_status, e.error AS edit_error, "
        "  e.instruction_id, i.instruction, i.variant, i.kind AS instruction_kind, s.image_path AS source_path, s.origin_ref "
        "FROM verified_pairs v "
        "LEFT JOIN edited_images e ON e.candidate_id = v.candidate_id AND e.category = v.category "
        "  AND e.judge_profile = v.judge_profile AND e.writer_profile = v.writer_profile "
        "  AND e.editor_profile = v.editor_profile "
        "LEFT JOIN edit_instructions i ON i.instruction_id = e.instruction_id AND i.category = v.category "
        "  AND i.judge_profile = e.judge_profile AND i.writer_profile = e.writer_profile "
        "LEFT JOIN source_images s ON s.category = v.category AND s.image_sha256 = v.image_sha256 "
        "WHERE v.category = ? "
        "ORDER BY s.origin_ref, v.image_sha256, v.candidate_id, v.judge_profile, v.writer_profile, "
        "  v.editor_profile, v.verifier_profile",
        [category]).to_dicts()
    seen: set[tuple] = set()
    out = []
    for r in rows:  # a join that matched twice must not show a verification twice
        # kind: on verified_pairs since control edits; older databases have it on the instruction only
        r["kind"] = r.get("kind") or r.get("instruction_kind") or "flip"
        key = (r["candidate_id"], r["judge_profile"], r["writer_profile"], r["editor_profile"], r["verifier_profile"])
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def _group(rows: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["candidate_id"], []).append(r)
    # By source, its flip edits before its control edit, so related candidates sit together.
    return sorted(groups.items(), key=lambda g: (g[1][0]["origin_ref"] or "", g[1][0]["image_sha256"],
                                                 g[1][0]["kind"] != "flip", g[0]))


class _Encoder:
    """Images as data URIs, each file encoded once."""

    def __init__(self, images: ImageStore, max_side: int):
        self.images, self.max_side = images, max_side
        self.cache: dict[str, str | None] = {}

    def uri(self, rel: str | None) -> str | None:
        if not rel:
            return None
        if rel not in self.cache:
            try:
                im = self.images.open(rel)
            except (OSError, ValueError):
                self.cache[rel] = None
                return None
            im.thumbnail((self.max_side, self.max_side), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
            self.cache[rel] = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        return self.cache[rel]


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _figure(uri: str | None, label: str, caption: str, unsafe: bool, show_unsafe: bool, missing: str) -> str:
    if uri is None:
        return f'<figure class="half missing"><div class="placeholder">{_e(missing)}</div><figcaption>{caption}</figcaption></figure>'
    classes = ["shot"] + (["unsafe"] if unsafe else []) + (["blurred"] if unsafe and not show_unsafe else [])
    extra = ' tabindex="0" title="click to blur or reveal"' if unsafe else ""
    hint = ' <span class="hint">(unsafe, blurred: click the image to reveal or blur it)</span>' if unsafe and not show_unsafe else ""
    return (f'<figure class="half"><div class="frame"><img class="{" ".join(classes)}" src="{uri}" '
            f'alt="{_e(label)}"{extra}></div><figcaption>{caption}{hint}</figcaption></figure>')


def _verification_rows(rows: list[dict[str, Any]]) -> str:
    out = ['<table class="metrics"><tr><th>profiles (judge / writer / editor / verifier / embedder)</th>'
           "<th>automatic verdict</th><th>edit rated</th><th>P(unsafe) edit</th><th>SSIM out</th>"
           "<th>PSNR out</th><th>cosine</th><th>changed</th><th>quality</th></tr>"]
    for r in rows:
        verdict = ('<span class="badge acc">accepted</span>' if r["accepted"] else
                   '<span class="badge rej">rejected</span> ' + _e((r["reject_reason"] or "").replace(";", ", ")))
        profiles = " / ".join(_e(r.get(k)) for k in ("judge_profile", "writer_profile", "editor_profile",
                                                      "verifier_profile", "embedder_profile"))
        out.append(
            f"<tr><td>{profiles}</td><td>{verdict}</td><td>{_e(r['edit_rating'] or '-')}</td>"
            f"<td>{_fmt(r['edit_score'], 2)}</td><td>{_fmt(r['ssim_outside'])}</td>"
            f"<td>{_fmt(r['psnr_outside'], 1)}</td><td>{_fmt(r['embedding_cosine'])}</td>"
            f"<td>{_fmt(r['changed_fraction'])}</td><td>{_fmt(r['quality_score'])}</td></tr>")
        if r.get("edit_rationale"):
            out.append(f'<tr class="why"><td colspan="9">verifier: {_e(r["edit_rationale"])}</td></tr>')
    out.append("</table>")
    return "".join(out)


def _card(cid: str, rows: list[dict[str, Any]], enc: _Encoder, show_unsafe: bool,
          human: Decision | None) -> str:
    first = rows[0]
    auto_ok = any(r["accepted"] for r in rows)
    # Blur the edit too unless it is a flip every verifier rated safe: a failed flip is still
    # unsafe, and a control (null) edit is meant to stay unsafe.
    edit_unsafe = first["kind"] != "flip" or not all(r["edit_rating"] == "safe" for r in rows)
    src_cap = (f"<b>source</b> &middot; {_e(first['origin_ref'])} &middot; rated {_e(first['source_rating'])}"
               f" (P(unsafe) {_fmt(first['source_score'], 2)})")
    edit_cap = (f"<b>edit</b> &middot; seed {_e(first.get('seed'))} &middot; rated {_e(first['edit_rating'] or '-')}"
                f" (P(unsafe) {_fmt(first['edit_score'], 2)})")
    failed = f"no edited image ({first.get('edit_error') or first.get('reject_reason') or 'missing file'})"
    human_html = ""
    if human is not None:
        cls = "acc" if human.accepted else "rej"
        human_html = (f' <span class="badge {cls}" title="{_e(human.note)}">reviewed: {_e(human.verdict)} by '
                      f"{_e(human.reviewer)}, {_e(human.decided_at.isoformat())}Z</span>")
    auto = '<span class="badge acc">auto: accepted</span>' if auto_ok else '<span class="badge rej">auto: rejected</span>'
    kind = first["kind"]
    kind_html = ('<span class="badge flip" title="accept = the edit removes the violation and keeps the rest">flip edit</span>'
                 if kind == "flip" else
                 f'<span class="badge null" title="accept = the edit changes nothing the policy cares about: it must '
                 f'stay unsafe, and keep the rest">{"control (null edit)" if kind == "null" else _e(kind)}</span>')
    name = f"v-{cid}"
    meaning = ("accept = the edit removes the violation and keeps everything else" if kind == "flip" else
               "accept = a faithful control: still violates the policy, nothing else changed")
    return f"""
<article class="cand" id="c-{_e(cid)}" data-candidate-id="{_e(cid)}" data-category="{_e(first['category'])}" data-auto="{'accepted' if auto_ok else 'rejected'}" data-kind="{_e(kind)}">
<h2>{kind_html}{auto}{human_html} <code class="cid">{_e(cid)}</code></h2>
<div class="pair">
{_figure(enc.uri(first['source_path']), 'source (unsafe half)', src_cap, True, show_unsafe, 'source image missing')}
{_figure(enc.uri(first['edited_path']), 'edit (candidate safe half)', edit_cap, edit_unsafe, show_unsafe, failed)}
</div>
<p class="instruction"><b>instruction:</b> {_e(first.get('instruction') or '(not found)')}</p>
{_verification_rows(rows)}
<fieldset class="decision"><legend>your decision: {meaning}</legend>
<label><input type="radio" name="{_e(name)}" value="accept"> accept</label>
<label><input type="radio" name="{_e(name)}" value="reject"> reject</label>
<input type="text" class="note" placeholder="note: why (optional)" aria-label="note">
<span class="when"></span>
</fieldset>
</article>"""


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f4f4;color:#222}
header{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid #ccc;padding:.6em 1em}
header h1{font-size:1.2em;margin:0 0 .3em}
.warn{color:#8a1c00;margin:.2em 0}
main{padding:1em;display:flex;flex-direction:column;gap:1em}
.cand{background:#fff;border:1px solid #ccc;border-radius:6px;padding:.6em 1em}
.cand.done-accept{border-left:6px solid #2a7d2a}.cand.done-reject{border-left:6px solid #b3261e}
.cand h2{font-size:1em;margin:0 0 .5em;font-weight:normal}
.cid{font-size:.85em;word-break:break-all;color:#555}
.pair{display:flex;gap:1em;flex-wrap:wrap}
.half{margin:0;flex:1 1 300px;max-width:520px}
.frame{display:inline-block;overflow:hidden;line-height:0;border:1px solid #999;max-width:100%}
.half img{display:block;max-width:100%;height:auto}
.hint{color:#8a1c00}
img.unsafe{cursor:pointer}
img.blurred{filter:blur(22px) grayscale(.6)}
.placeholder{height:200px;display:flex;align-items:center;justify-content:center;background:#eee;color:#666;border:1px dashed #999;padding:1em}
figcaption{font-size:.85em;color:#444;margin-top:.3em}
.badge{display:inline-block;padding:0 .5em;border-radius:3px;color:#fff;font-size:.85em;margin-right:.3em}
.badge.acc{background:#2a7d2a}.badge.rej{background:#b3261e}.badge.flip{background:#35567d}.badge.null{background:#6b4f8a}
table.metrics{border-collapse:collapse;font-size:.82em;margin:.4em 0}
table.metrics td,table.metrics th{border:1px solid #ddd;padding:.15em .4em;text-align:left}
tr.why td{color:#555}
fieldset.decision{border:1px solid #bbb;border-radius:4px}
fieldset.decision .note{width:45%;min-width:14em}
.when{font-size:.8em;color:#666;margin-left:.5em}
"""

_JS = r"""
(function () {
  "use strict";
  var body = document.body, KEY = body.getAttribute("data-storage-key");
  var category = body.getAttribute("data-category");
  var state = {};
  try { state = JSON.parse(localStorage.getItem(KEY) || "{}") || {}; } catch (e) { state = {}; }
  function save() { try { localStorage.setItem(KEY, JSON.stringify(state)); } catch (e) {} }
  function cards() { return Array.prototype.slice.call(document.querySelectorAll("article.cand")); }
  var reviewer = document.getElementById("reviewer");
  if (state.__reviewer) reviewer.value = state.__reviewer;
  reviewer.addEventListener("change", function () { state.__reviewer = reviewer.value.trim(); save(); });

  function show(card) {
    var d = state[card.getAttribute("data-candidate-id")];
    card.classList.remove("done-accept", "done-reject");
    if (d && d.verdict) card.classList.add("done-" + d.verdict);
    card.querySelector(".when").textContent = d && d.verdict ? "decided " + d.at : "";
  }
  function progress() {
    var all = cards(), n = all.filter(function (c) {
      var d = state[c.getAttribute("data-candidate-id")]; return d && d.verdict; }).length;
    document.getElementById("progress").textContent = n + " of " + all.length + " decided";
  }
  function record(card) {
    var cid = card.getAttribute("data-candidate-id");
    var checked = card.querySelector("input[type=radio]:checked");
    state[cid] = { verdict: checked ? checked.value : "", note: card.querySelector(".note").value,
                   at: new Date().toISOString() };
    save(); show(card); progress();
  }
  cards().forEach(function (card) {
    var d = state[card.getAttribute("data-candidate-id")];
    if (d) {
      card.querySelectorAll("input[type=radio]").forEach(function (r) { r.checked = r.value === d.verdict; });
      card.querySelector(".note").value = d.note || "";
    }
    show(card);
    card.querySelectorAll("input").forEach(function (inp) {
      inp.addEventListener("change", function () { record(card); });
    });
  });
  progress();

  function toggle(img) { img.classList.toggle("blurred"); }
  document.addEventListener("click", function (ev) {
    var t = ev.target; if (t.matches && t.matches("img.unsafe")) toggle(t);
  });
  document.addEventListener("keydown", function (ev) {
    var t = ev.target;
    if ((ev.key === "Enter" || ev.key === " ") && t.matches && t.matches("img.unsafe")) { ev.preventDefault(); toggle(t); }
  });
  var all = document.getElementById("reveal-all");
  if (all) all.addEventListener("change", function () {
    document.querySelectorAll("img.unsafe").forEach(function (img) { img.classList.toggle("blurred", !all.checked); });
  });

  function cell(v) {
    v = v == null ? "" : String(v);
    return /[",\r\n]|^\s|\s$/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v;
  }
  // The decisions as CSV text: one row per candidate with a verdict, in page order.
  window.reviewCsv = function () {
    var who = reviewer.value.trim(), lines = ["candidate_id,category,reviewer,decided_at,verdict,note"];
    cards().forEach(function (card) {
      var cid = card.getAttribute("data-candidate-id"), d = state[cid];
      if (!d || !d.verdict) return;
      lines.push([cid, card.getAttribute("data-category"), who, d.at, d.verdict, d.note].map(cell).join(","));
    });
    return lines.join("\r\n") + "\r\n";
  };
  document.getElementById("download").addEventListener("click", function () {
    var who = reviewer.value.trim(), msg = document.getElementById("message");
    if (!who) { msg.textContent = "Enter your name first."; reviewer.focus(); return; }
    var pending = cards().filter(function (c) {
      var d = state[c.getAttribute("data-candidate-id")]; return d && !d.verdict && d.note; }).length;
    var blob = new Blob([window.reviewCsv()], { type: "text/csv;charset=utf-8" });
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "decisions_" + category + "_" + who.replace(/[^A-Za-z0-9_-]+/g, "-") + "_" +
                 new Date().toISOString().replace(/[:.]/g, "-") + ".csv";
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(function () { URL.revokeObjectURL(a.href); }, 10000);
    msg.textContent = "Downloaded. Import it with: python -m sp_assets.review import " + a.download +
      (pending ? " (" + pending + " notes without a verdict were left out)" : "");
  });
  document.getElementById("clear").addEventListener("click", function () {
    if (!confirm("Forget every choice made on this page (in this browser)?")) return;
    var who = state.__reviewer; state = { __reviewer: who }; save();
    cards().forEach(function (card) {
      card.querySelectorAll("input[type=radio]").forEach(function (r) { r.checked = false; });
      card.querySelector(".note").value = ""; show(card);
    });
    progress();
  });
})();
"""


def page_paths(out_dir: Path, category: str, include: Include = "all") -> tuple[Path, Path]:
    """(review page, decisions template) that :func:`export_review` writes."""
    stem = f"review_{category}" + ("" if include == "all" else f"_{include}")
    return out_dir / f"{stem}.html", out_dir / f"{stem}_decisions.csv"


def export_review(store: Store, images: ImageStore, category: str, out_dir: Path,
                  include: Include = "all", show_unsafe: bool = False, max_side: int = MAX_SIDE) -> Path:
    """Write the review page for ``category`` (and its decisions template) under ``out_dir``; return the page.

    ``include`` picks candidates by their automatic verdict ('accepted' if any verification of the
    candidate accepted it). The store may be read-only.
    """
    if include not in ("all", "accepted", "rejected"):
        raise ValueError(f"include={include!r}: use 'all', 'accepted' or 'rejected'")
    if not _has_table(store, "verified_pairs"):
        raise ValueError("the database has no verified_pairs table yet: materialize verified_pairs first")
    groups = _group(_candidates(store, category))
    if not groups:
        known = store.query("SELECT DISTINCT category FROM verified_pairs ORDER BY 1")["category"].to_list()
        raise ValueError(f"no candidates for category {category!r} in verified_pairs; categories with "
                         f"candidates: {', '.join(known) or 'none (materialize verified_pairs first)'}")
    n_total = len(groups)
    n_auto_ok = sum(1 for _, rows in groups if any(r["accepted"] for r in rows))
    if include != "all":
        want = include == "accepted"
        groups = [(cid, rows) for cid, rows in groups if any(r["accepted"] for r in rows) == want]
    human = effective_decisions(store, category)
    enc = _Encoder(images, max_side)
    cards = [_card(cid, rows, enc, show_unsafe, human.get(cid)) for cid, rows in groups]
    now = _utcnow()
    blur_note = ("Unsafe images are shown unblurred (--show-unsafe)." if show_unsafe else
                 "Unsafe images (sources, control edits, and edits not rated safe) are blurred: click one to reveal it, "
                 "click again to blur it.")
    reveal = "" if show_unsafe else ' <label><input type="checkbox" id="reveal-all"> reveal all</label>'
    csp = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
           "base-uri 'none'; form-action 'none'")
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>SafetyPairs review: {_e(category)}</title>
<style>{_CSS}</style></head>
<body data-category="{_e(category)}" data-storage-key="safetypairs-review:{_e(category)}" data-show-unsafe="{str(show_unsafe).lower()}">
<header>
<h1>SafetyPairs review: {_e(category)}</h1>
<p class="warn">Content warning: this page shows images that violate a safety policy. {blur_note}</p>
<p>{len(groups)} candidates shown ({_e(include)}) of {n_total}; {n_auto_ok} accepted automatically.
Exported {now.isoformat()}Z.</p>
<label>Reviewer <input type="text" id="reviewer" placeholder="your name" autocomplete="name"></label>
<button type="button" id="download">Download decisions (CSV)</button>
<button type="button" id="clear">Clear my choices</button>{reveal}
<span id="progress" style="margin-left:1em"></span> <span id="message" role="status"></span>
<noscript><p class="warn">JavaScript is off: fill in the decisions template CSV next to this page instead.</p></noscript>
</header>
<main>{"".join(cards) or "<p>No candidates match.</p>"}
</main>
<script>{_JS}</script>
</body></html>
"""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    page, template = page_paths(out_dir, category, include)
    _write_atomic(page, doc.encode("utf-8"))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(DECISION_COLUMNS + ["kind", "auto_verdict"])  # the last two are for reading only
    for cid, rows in groups:
        writer.writerow([cid, category, "", "", "", "", rows[0]["kind"],
                         "accepted" if any(r["accepted"] for r in rows) else "rejected"])
    _write_atomic(template, buf.getvalue().encode("utf-8"))
    return page


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Import


def parse_time(value: str) -> dt.datetime:
    """ISO 8601 to naive UTC. Without an offset the time is taken as UTC. Raises ValueError."""
    text = value.strip()
    if not text:
        raise ValueError("empty")
    if text.endswith(("z", "Z")):
        text = text[:-1] + "+00:00"
    when = dt.datetime.fromisoformat(text)
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return when


def _read_records(path: Path, data: bytes) -> list[tuple[int, dict[str, Any] | None, str | None]]:
    """(row number, record or None, why the record could not be read)."""
    text = data.decode("utf-8-sig")
    stripped = text.lstrip()
    jsonl = path.suffix.lower() in (".jsonl", ".ndjson") or (
        path.suffix.lower() != ".csv" and stripped.startswith("{"))
    out: list[tuple[int, dict[str, Any] | None, str | None]] = []
    if jsonl:
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                out.append((n, None, f"not valid JSON ({exc.msg} at column {exc.colno})"))
                continue
            if not isinstance(obj, dict):
                out.append((n, None, "not a JSON object"))
                continue
            out.append((n, {str(k).strip().lower(): v for k, v in obj.items()}, None))
        if out and all(rec is None for _, rec, _ in out):
            raise DecisionsFileError(f"{path}: no line is a JSON object; expected JSON Lines with the keys "
                                     f"{', '.join(DECISION_COLUMNS)}")
        return out
    first_line = text.split("\n", 1)[0]
    # Spreadsheets in some locales save with ';' (or tabs); the header row tells which.
    delimiter = max(",;\t", key=first_line.count) if first_line.count(",") == 0 else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        return out
    names = [h.strip().lower() for h in header]
    missing = [c for c in ("candidate_id", "verdict") if c not in names]
    if missing:
        raise DecisionsFileError(
            f"{path}: the header row has no {' or '.join(missing)} column (found: {', '.join(header) or 'nothing'}). "
            f"Fix: export the decisions from the review page, or start from the template CSV; the columns are "
            f"{', '.join(DECISION_COLUMNS)}")
    for n, values in enumerate(reader, start=2):
        if not any(v.strip() for v in values):
            continue  # a blank line is not a row
        if len(values) > len(names) and any(v.strip() for v in values[len(names):]):
            out.append((n, None, f"has {len(values)} cells but the header has {len(names)} (an unquoted comma?)"))
            continue
        out.append((n, {name: (values[i] if i < len(values) else "") for i, name in enumerate(names)}, None))
    return out


def _text(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    return "" if value is None else str(value).strip()


def import_decisions(store: Store, path: Path, reviewer: str | None = None) -> ImportReport:
    """Validate every row of a decisions file (CSV or JSONL) and store the valid ones.

    ``reviewer`` fills rows whose reviewer cell is empty. Raises :class:`DecisionsFileError` when
    the file as a whole is unusable; row problems go to ``report.errors`` and the other rows still
    import. Idempotent: importing the same file again writes nothing.
    """
    if store.read_only:
        raise ValueError("import_decisions needs a writable Store (Store.at(path) without read_only)")
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DecisionsFileError(f"{path}: cannot read the decisions file ({exc.strerror or exc})") from exc
    try:
        records = _read_records(path, data)
    except UnicodeDecodeError as exc:
        raise DecisionsFileError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}). Fix: save it as "
                                 "CSV UTF-8 (or JSON Lines)") from exc
    sha = hashlib.sha256(data).hexdigest()
    name = str(path)
    report = ImportReport(file=name, sha256=sha, rows=len(records))

    known: dict[str, set[str]] = {}
    for r in store.query("SELECT DISTINCT candidate_id, category FROM verified_pairs").iter_rows():
        known.setdefault(r[0], set()).add(r[1])
    existing = {(d["candidate_id"], d["reviewer"], d["decided_at"]): d
                for d in store.query("SELECT * FROM review_decisions").to_dicts()}
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    new_rows: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    in_file: dict[tuple, tuple[int, dict[str, Any]]] = {}

    for n, rec, why in records:
        def err(column: str, value: Any, problem: str, fix: str, n: int = n) -> None:
            report.errors.append(RowError(name, n, column, value, problem, fix))

        if rec is None:
            err("row", None, why or "unreadable", "write one decision per line with the columns "
                + ", ".join(DECISION_COLUMNS))
            report.rejected += 1
            continue
        verdict_raw, note = _text(rec, "verdict"), _text(rec, "note")
        if not verdict_raw and not note:
            report.skipped += 1
            continue
        before = len(report.errors)
        cid = _text(rec, "candidate_id").lower()
        category = _text(rec, "category")
        if not cid:
            err("candidate_id", rec.get("candidate_id"), "missing", "copy the candidate_id from the review page or template")
        elif cid not in known:
            hits = [k for k in known if k.startswith(cid)] if len(cid) >= 8 else []
            hint = f"did you mean {hits[0]}? (ids are 64 hex characters; a spreadsheet may have cut it)" if len(hits) == 1 \
                else "use an id from the review page or template exported from this database"
            err("candidate_id", rec.get("candidate_id"), "no such candidate in verified_pairs", hint)
        elif category and category not in known[cid]:
            err("category", category, f"candidate {cid[:12]}... belongs to {', '.join(sorted(known[cid]))}",
                f"set category to {sorted(known[cid])[0]} or leave it empty")
        elif not category:
            if len(known[cid]) > 1:
                err("category", "", f"candidate is in several categories ({', '.join(sorted(known[cid]))})",
                    "set the category column")
            else:
                category = next(iter(known[cid]))
        verdict = verdict_raw.lower()
        verdict = {"accepted": "accept", "rejected": "reject"}.get(verdict, verdict)
        if verdict not in VERDICTS:
            err("verdict", rec.get("verdict"), "not a verdict" if verdict else "missing (the row has a note)",
                "write accept or reject")
        who = _text(rec, "reviewer") or (reviewer or "").strip()
        if not who:
            err("reviewer", rec.get("reviewer"), "missing", "write who decided in the reviewer column "
                "(or pass --reviewer NAME to fill empty cells)")
        when: dt.datetime | None = None
        raw_when = rec.get("decided_at")
        try:
            when = parse_time(str(raw_when)) if isinstance(raw_when, str) else None
            if when is None:
                raise ValueError("not text")
        except ValueError:
            err("decided_at", raw_when, "not an ISO 8601 time", "write the time of the decision like "
                "2025-01-31T14:05:00Z (UTC) or 2025-01-31T15:05:00+01:00")
        if len(report.errors) > before:
            report.rejected += 1
            continue
        assert when is not None
        row = {"candidate_id": cid, "category": category, "reviewer": who, "decided_at": when,
               "verdict": verdict, "note": note or None}
        key = (cid, who, when)
        content = (category, verdict, note or None)
        if key in in_file:
            first_n, first = in_file[key]
            if (first["category"], first["verdict"], first["note"]) == content:
                report.unchanged += 1
            else:
                report.rejected += 1
                err("decided_at", raw_when, f"same candidate, reviewer and time as row {first_n} but a different "
                    "verdict or note", "keep one of the two rows, or give each its own decided_at")
            continue
        in_file[key] = (n, row)
        stored = existing.get(key)
        if stored is not None and (stored["category"], stored["verdict"], stored["note"]) == content:
            report.unchanged += 1
            continue
        full = {**row, "decisions_file": str(path.resolve()), "decisions_sha256": sha, "imported_at": now}
        (updates if stored is not None else new_rows).append(full)
        report.imported += 1
        if category not in report.categories:
            report.categories.append(category)
    report.updated = len(updates)
    if new_rows:
        store.append("review_decisions", new_rows)
    for row in updates:  # a corrected file: the stored decision with this key takes the file's content
        store.replace_slice("review_decisions", {k: row[k] for k in ("candidate_id", "reviewer", "decided_at")}, [row])
    report.categories.sort()
    assert report.rows == report.imported + report.unchanged + report.skipped + report.rejected
    return report


# ---------------------------------------------------------------------------------------------
# Using the decisions


def effective_decisions(store: Store, category: str) -> dict[str, Decision]:
    """candidate_id -> the decision that counts: the latest ``decided_at``; on a tie 'reject', then
    the alphabetically first reviewer. Empty when nothing was reviewed (or the table is missing)."""
    if not _has_table(store, "review_decisions"):
        return {}
    names = [f.name for f in fields(Decision)]
    return {r["candidate_id"]: Decision(**{k: r.get(k) for k in names})
            for r in store.query(EFFECTIVE_SQL, [category]).to_dicts()}


def apply_review(row: Mapping[str, Any], decision: Decision | None) -> dict[str, Any]:
    """A verified_pairs row with a human decision applied (a copy; ``row`` unchanged).

    The verdict means what the automatic one means for the row's kind: for a flip, 'accept' = the
    edit removes the violation and keeps the rest; for a control (null) edit, 'accept' = the edit
    keeps the violation and changes nothing else that matters.

    'reject' rejects with reason ``human_rejected`` added to the automatic reasons. 'accept'
    accepts and clears the automatic reasons, except a pair that does not exist as a pair
    (``edit_failed``, ``size_mismatch``: see HARD_REASONS), which stays rejected with
    ``human_accept_ignored`` added. An accepted row gets a quality_score if it had none.
    """
    out = dict(row)
    if decision is None:
        return out
    reasons = [c for c in (row.get("reject_reason") or "").split(";") if c]
    if decision.verdict == "reject":
        out["accepted"] = False
        out["reject_reason"] = ";".join(reasons + ["human_rejected"])
        out["quality_score"] = None
    elif HARD_REASONS.intersection(reasons):
        out["accepted"] = False
        out["reject_reason"] = ";".join(reasons + ["human_accept_ignored"])
    else:
        out["accepted"] = True
        out["reject_reason"] = None
        if out.get("quality_score") is None:
            out["quality_score"] = quality_score(row.get("edit_score"), row.get("ssim_outside") or 0.0,
                                                 row.get("embedding_cosine") or 0.0, row.get("kind") or "flip")
    return out


# ---------------------------------------------------------------------------------------------
# Command line


def _data_root() -> Path:
    return Path(os.environ.get("SP_DATA_ROOT", "data")).expanduser().resolve()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sp_assets.review", description=__doc__.split("\n\n")[0],
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
    args = parser.parse_args(argv)

    root = _data_root()
    db = root / "safetypairs.duckdb"
    if not db.is_file():
        print(f"error: no database at {db}. Run `make demo`, or set SP_DATA_ROOT to the data folder.", file=sys.stderr)
        return 2
    import duckdb

    try:
        if args.command == "export":
            start = time.perf_counter()
            out = args.out or root / "review"
            page = export_review(Store.at(db, read_only=True), ImageStore(root), args.category, out,
                                 include=args.include, show_unsafe=args.show_unsafe, max_side=args.max_side)
            template = page_paths(page.parent, args.category, args.include)[1]
            print(f"review page   {page}  ({page.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s)")
            print(f"template CSV  {template}")
            print(f"open it in a browser (file://{page}), decide, download the CSV, then run:\n"
                  f"  python -m sp_assets.review import <downloaded.csv>")
            return 0
        report = import_decisions(Store.at(db), args.file, reviewer=args.reviewer)
        print(report.summary())
        return 0 if report.ok else 1
    except (DecisionsFileError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except duckdb.IOException as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
