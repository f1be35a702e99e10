"""The scene-text judge's labelled example texts: a dataset of their own beside the policy.

A policy (``policies/<name>.yaml``) holds the rules people read. The texts the offline judge learns
from live next to it in ``policies/<name>.examples.jsonl``, one JSON object per line:

    {"text": "...", "label": "violating" | "allowed", "category": "<slug>",
     "kind": "sign", "origin": "<batch>", "added": "YYYY-MM-DD"}

``text``, ``label`` and ``category`` are required; ``kind`` (what the text stands for: "sign", text
shown in a photograph), ``origin`` (the batch the row came from) and ``added`` are provenance. Only
the judge that trains on them reads this file, so only its answers depend on its hash (the rules'
hash is ``Policy.rules_sha256``).

``python -m sp_assets.core.judge_examples extract POLICY.yaml`` moves a policy's inline
``judge_examples`` blocks (the layout before this file existed) into such a file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sp_assets.core.hashing import sha256_json

EXAMPLES_SUFFIX = ".examples.jsonl"
LABELS = ("violating", "allowed")
REQUIRED = ("text", "label", "category")
OPTIONAL = ("kind", "origin", "added")
MAX_TEXT_CHARS = 2000  # a sign, not a document
_SHOWN_PROBLEMS = 20


class ExamplesError(ValueError):
    """An examples file that cannot be used. The message names the file, the line, the value and the fix."""


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    category: str
    kind: str = "sign"
    origin: str = ""
    added: str = ""


@dataclass(frozen=True)
class JudgeExamples:
    path: Path
    sha256: str  # of the file's bytes
    rows: tuple[Example, ...]

    @property
    def content_sha256(self) -> str:
        """Hash of what a judge learns from: (category, label, text) in file order, not the provenance fields."""
        return sha256_json([[r.category, r.label, r.text] for r in self.rows])

    def texts(self, category: str, label: str) -> list[str]:
        """The texts of one category and label, in file order."""
        return [r.text for r in self.rows if r.category == category and r.label == label]


def examples_path(policy_path: Path) -> Path:
    """Where a policy's examples are looked for: ``default.yaml`` -> ``default.examples.jsonl``."""
    return policy_path.with_name(policy_path.stem + EXAMPLES_SUFFIX)


def _row_problem(value: Any, slugs: set[str]) -> str:
    """What is wrong with one parsed line (empty when nothing)."""
    if not isinstance(value, dict):
        return f"expected a JSON object with {', '.join(REQUIRED)}, got {type(value).__name__}"
    missing = [k for k in REQUIRED if k not in value]
    if missing:
        return f"missing {', '.join(missing)}"
    unknown = sorted(set(value) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        return f"unknown field(s) {', '.join(unknown)} (known: {', '.join(REQUIRED + OPTIONAL)})"
    text = value["text"]
    if not isinstance(text, str) or not text.strip():
        return f"text must be a non-empty string, got {text!r}"
    if len(text) > MAX_TEXT_CHARS:
        return f"text is {len(text)} characters; an example is a short sign's text (at most {MAX_TEXT_CHARS})"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return f"text {text!r} holds lone surrogates; write the character itself"
    if value["label"] not in LABELS:
        return f"label {value['label']!r} is not one of {', '.join(LABELS)}"
    if value["category"] not in slugs:
        return f"category {value['category']!r} is not in the policy (its slugs: {', '.join(sorted(slugs))})"
    bad = [k for k in OPTIONAL if k in value and not isinstance(value[k], str)]
    if bad:
        return f"{', '.join(bad)} must be text"
    return ""


def parse_examples(data: bytes, path: Path, slugs: set[str]) -> JudgeExamples:
    """Validate every line; all problems are reported at once (a judge is never trained on part of a file)."""
    rows: list[Example] = []
    problems: list[str] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            problems.append(f"line {number}: not a JSON object ({type(exc).__name__}: {str(exc)[:120]})")
            continue
        problem = _row_problem(value, slugs)
        if problem:
            problems.append(f"line {number}: {problem}")
            continue
        rows.append(Example(text=value["text"].strip(), label=value["label"], category=value["category"],
                            **{k: value[k] for k in OPTIONAL if k in value}))
    if problems:
        shown = problems[:_SHOWN_PROBLEMS]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        raise ExamplesError(
            f"{path}: {len(problems)} row(s) cannot be used:\n  " + "\n  ".join(shown) + more +
            "\nFix or remove these lines; each line is one JSON object "
            '{"text": ..., "label": "violating" | "allowed", "category": "<policy slug>"}.')
    return JudgeExamples(path=path, sha256=hashlib.sha256(data).hexdigest(), rows=tuple(rows))


def load_examples(path: Path, slugs: set[str]) -> JudgeExamples:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ExamplesError(f"{path}: cannot read the judge's examples ({exc.strerror or exc}).") from None
    return parse_examples(data, Path(path), slugs)


# -- moving inline examples out of an older policy file ---------------------------------------------

def _without_examples_blocks(text: str) -> str:
    """The policy text with every ``judge_examples:`` block removed, every other line kept as it was."""
    kept: list[str] = []
    indent: int | None = None
    for line in text.split("\n"):
        if indent is not None:
            if not line.strip() or len(line) - len(line.lstrip()) > indent:
                continue
            indent = None
        found = re.match(r"^(\s*)judge_examples:\s*(#.*)?$", line)
        if found:
            indent = len(found.group(1))
            continue
        kept.append(line)
    return "\n".join(kept)


def extract(policy_file: Path, origin: str | None = None) -> tuple[Path, int]:
    """Write ``policy_file``'s inline examples to its examples file and remove them from the policy.

    The rules must read back exactly as before, else nothing is written. The old policy is kept as
    ``<file>.bak``. Returns (examples file, rows written)."""
    text = policy_file.read_text(encoding="utf-8")
    doc = yaml.safe_load(text)
    out = examples_path(policy_file)
    if out.exists():
        raise ExamplesError(f"{out} exists already; move it away or merge the examples by hand.")
    today = dt.date.today().isoformat()
    rows = []
    for cat in doc.get("categories") or []:
        for label in LABELS:
            for item in ((cat.get("judge_examples") or {}).get(label) or []):
                rows.append({"text": str(item).strip(), "label": label, "category": cat["slug"], "kind": "sign",
                             "origin": origin or f"moved from {policy_file.name}", "added": today})
    stripped = _without_examples_blocks(text)
    expected = [{k: v for k, v in c.items() if k != "judge_examples"} for c in doc.get("categories") or []]
    if (yaml.safe_load(stripped) or {}).get("categories") != expected:
        raise ExamplesError(f"{policy_file}: its judge_examples blocks could not be cut out cleanly; move them "
                            f"by hand into {out.name} (one JSON object per line).")
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    policy_file.with_name(policy_file.name + ".bak").write_text(text, encoding="utf-8")
    policy_file.write_text(stripped, encoding="utf-8")
    return out, len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sp_assets.core.judge_examples",
                                     description="Move a policy's inline judge_examples into <policy>.examples.jsonl.")
    sub = parser.add_subparsers(dest="command", required=True)
    move = sub.add_parser("extract", help="move the inline judge_examples of POLICY into its examples file")
    move.add_argument("policy", type=Path)
    args = parser.parse_args(argv)
    try:
        out, n = extract(args.policy)
    except (OSError, ExamplesError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{n} example rows written to {out}; {args.policy} now holds the rules only "
          f"(the previous file is {args.policy.name}.bak).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
