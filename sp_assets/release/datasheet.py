"""The datasheet: ``README.md``, a Hugging Face dataset card (YAML front matter, contents, provenance, licences, limits)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from sp_assets.core.formatting import fmt, md_cell
from sp_assets.core.splitting import SPLITS
from sp_assets.release.columns import COLUMN_NOTES, Columns, category_info, feature, n_controls
from sp_assets.release.inputs import ExportInputs
from sp_assets.release.licences import licence_rows, photo_rows, profiles_info_rows
from sp_assets.release.report import load_command
from sp_assets.storage import SCHEMA

PAPER = "Helbling et al., SafetyPairs, arXiv 2510.21120"
# Tables whose column meanings explain exported columns; the first table that has a column explains it.
_SCHEMA_TABLES = ("benchmark_split", "verified_pairs", "edited_images", "edit_instructions", "policy_labels",
                  "source_images")

LIMITS_GENERAL = [
    "**Automatic labels.** A pair enters the benchmark when the judge rated the source unsafe, the "
    "verifier rated the edit safe and the preservation thresholds held. No human looked at a pair "
    "unless the review table below counts a decision for it.",
    "**Selection bias.** Only sources whose edit passed verification are kept: the benchmark over-"
    "represents violations that are easy to edit away and under-represents subtle or diffuse ones "
    "(the yield table shows how much was dropped per category).",
    "**Edit artefacts.** The safe half is an edited image and the unsafe half is not. A model can "
    "learn 'was it edited' instead of 'is it unsafe'; the control column (a null edit of the source) "
    "exists to measure that, and is empty where no control passed.",
    "**Policy wording.** Labels follow this project's policy file in its own words, not any other "
    "taxonomy; the same image can be rated differently under another policy.",
]
LIMITS_DEMO = [
    "**Synthetic text signs.** Every demo violation is English text on a sign or caption over a stock "
    "photograph (no depictions of violence, nudity or other imagery). A guard that does not read text "
    "fails both halves alike, so on this data pair accuracy measures reading and judging scene text.",
    "**Few photographs.** The demo reuses {n_photos} scikit-image sample photographs. Splits are grouped by "
    "source image (photo + sign), not by photograph, so the same background photo appears in train and "
    "test with different text.",
    "**Phrases written by the project.** Sign texts and replacements come from the policy's demo phrase "
    "lists; they are short, clean and English-only, unlike real-world text (slang, misspellings, other "
    "languages, handwriting).",
]


@dataclass(frozen=True)
class DatasheetFacts:
    """Everything the datasheet states: the export, what it was read from, and the settings in force."""

    name: str
    rows: Sequence[Mapping[str, Any]]
    columns: Columns
    counts: Mapping[str, Mapping[str, int]]
    inputs: ExportInputs
    policy: Any
    profiles_info: Mapping[str, Any]
    thresholds: Mapping[str, Any]
    formats: Mapping[str, str]  # format -> where it is and what it holds
    licence: str  # the card's ``license`` field ("other": mixed, see the licence section)

    @property
    def with_controls(self) -> bool:
        return "control_image" in dict(self.columns)


def write_datasheet(root: Path, facts: DatasheetFacts) -> Path:
    """Write ``README.md`` under ``root``."""
    sections = [_front_matter, _introduction, _contents, _columns, _policy, _profiles, _thresholds, _yields,
                _review, _licences, _limits, _formats_and_citation]
    lines = [line for section in sections for line in section(facts)]
    path = root / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def _front_matter(f: DatasheetFacts) -> list[str]:
    splits_present = [s for s in SPLITS if any(c.get(s) for c in f.counts.values())] or ["train"]
    front: dict[str, Any] = {
        "pretty_name": f"SafetyPairs: {f.name}",
        "license": f.licence,
        "language": ["en"],
        "task_categories": ["image-classification"],
        "tags": ["safety", "content-moderation", "counterfactual", "image-pairs", "guard-models", "synthetic"],
        "size_categories": [_size_category(len(f.rows))],
        "configs": [{"config_name": "default",
                     "data_files": [{"split": s, "path": f"data/{s}-*"} for s in splits_present]}],
    }
    if f.licence == "other":
        front["license_name"] = "mixed"
        front["license_link"] = "README.md#licences"
    return ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---", ""]


def _introduction(f: DatasheetFacts) -> list[str]:
    return [f"# SafetyPairs: {f.name}", "",
            "> **Content warning.** This dataset holds images that violate a safety policy (the unsafe half of "
            "every pair). Blur or gate them where people may see them by accident.", "",
            f"Counterfactual image pairs for safety, made by the SafetyPairs pipeline ({PAPER}). Each row is an "
            "**unsafe image and an edited copy** that differs only in the detail the policy cares about, so the "
            "label flips and nothing else changes. Use it to find where guard classifiers and vision-language "
            "models fail: a guard should call the unsafe half unsafe *and* the safe half safe (pair accuracy).", "",
            "## Load it", "",
            "From this folder, in one line:", "",
            "```python",
            load_command("data"),
            "```", "",
            "or `load_dataset(\"path/to/this/folder\")` (the configs above), or from the Hub after upload. "
            "Image columns decode to PIL images; their bytes are the pipeline's stored files, unchanged.", ""]


def _contents(f: DatasheetFacts) -> list[str]:
    n, controls, counts = len(f.rows), n_controls(f.rows), f.counts
    lines = ["## What it holds", "",
             f"{n} pairs in {len(counts)} categories"
             + (f"; {controls} pairs also carry a control image" if f.with_controls else "") + ".", "",
             "| category | id | title | " + " | ".join(SPLITS) + " | total |"
             + (" with control |" if f.with_controls else ""),
             "|---|---|---|" + "---:|" * (len(SPLITS) + 1) + ("---:|" if f.with_controls else "")]
    for cat, c in counts.items():
        cid, title = category_info(f.policy, cat)
        n_ctl = n_controls([r for r in f.rows if r["category"] == cat])
        lines.append(f"| {cat} | {cid} | {md_cell(title)} | " + " | ".join(str(c.get(s, 0)) for s in SPLITS)
                     + f" | {sum(c.values())} |" + (f" {n_ctl} |" if f.with_controls else ""))
    lines.append("| **all** | | | " + " | ".join(str(sum(c.get(s, 0) for c in counts.values())) for s in SPLITS)
                 + f" | {n} |" + (f" {controls} |" if f.with_controls else ""))
    return lines


def _columns(f: DatasheetFacts) -> list[str]:
    lines = ["", "Splits are grouped by source image (no source is in two splits) and stratified by category.", "",
             "### Columns", "", "| column | type | meaning |", "|---|---|---|"]
    schema_notes: dict[str, str] = {}
    for table in _SCHEMA_TABLES:
        for c, _, meaning in SCHEMA.get(table, []):
            schema_notes.setdefault(c, meaning)
    for col, t in f.columns:
        ftype = feature(col, t)
        tname = ftype["_type"] if ftype["_type"] != "Value" else ftype["dtype"]
        lines.append(f"| `{col}` | {tname} | {md_cell(COLUMN_NOTES.get(col) or schema_notes.get(col, ''))} |")
    return lines


def _policy(f: DatasheetFacts) -> list[str]:
    p_name, p_sha = getattr(f.policy, "name", ""), getattr(f.policy, "sha256", "")
    p_path, p_version = getattr(f.policy, "path", ""), getattr(f.policy, "version", "")
    lines = ["", "## How it was made", "",
             "Pipeline: `source_pool -> policy_labels -> edit_instructions -> edited_images -> verified_pairs -> "
             "benchmark_split`, a Dagster asset graph over one DuckDB database. Every row above carries the "
             "lineage of its pair (profiles, config hashes, seeds, run ids).", "",
             "**Policy**", "",
             f"- name: `{p_name}`" + (f", version `{p_version}`" if p_version else ""),
             f"- file: `{Path(str(p_path)).name}`" if p_path else "- file: n/a",
             f"- sha256: `{p_sha}`"]
    other = [h for h in f.inputs.policy_hashes if h != p_sha]
    if other:
        lines.append(f"- warning: some pairs were made under other policy hashes: {', '.join(f'`{h}`' for h in other)}")
    return lines


def _profiles(f: DatasheetFacts) -> list[str]:
    lines = ["", "**Profiles behind the exported pairs** (from the data)", "",
             "| role | profile | config sha256 | pairs |", "|---|---|---|---:|"]
    for p in f.inputs.profiles_used:
        lines.append(f"| {p['role']} | `{p['profile']}` | `{p['config_sha256']}` | {p['pairs']} |")
    for v in f.inputs.verify_configs:
        lines.append(f"| verifier judge | `{v['verifier_profile']}` | `{v['verifier_config_sha256']}` | {v['pairs']} |")
        lines.append(f"| embedder (verification config `{str(v['verify_config_sha256'])[:12]}`) | "
                     f"`{v['embedder_profile']}` | see verification config | {v['pairs']} |")
    info_rows = profiles_info_rows(f.profiles_info)
    if info_rows:
        lines += ["", "**Profiles in force for the run that exported it**", "",
                  "| role | profile | implementation | config sha256 |", "|---|---|---|---|"]
        lines += [f"| {r} | `{p}` | {i} | `{h}` |" for r, p, i, h in info_rows]
    return lines


def _thresholds(f: DatasheetFacts) -> list[str]:
    lines = ["", "**Thresholds** (an edit is accepted when the judge rates the source unsafe, the verifier rates "
             "the edit safe, and preservation holds)", "", "| threshold | value |", "|---|---|"]
    lines += [f"| `{k}` | {md_cell(v)} |" for k, v in f.thresholds.items()]
    recorded = sorted({v["thresholds_json"] for v in f.inputs.verify_configs if v.get("thresholds_json")})
    if recorded and any(json.loads(r) != dict(f.thresholds) for r in recorded):
        lines += ["", "Thresholds recorded with the exported pairs differ from the ones above: "
                  + "; ".join(f"`{r}`" for r in recorded)]
    if f.inputs.split_configs:
        lines += ["", f"Split config sha256: {', '.join(f'`{s}`' for s in f.inputs.split_configs)}"]
    return lines


def _yields(f: DatasheetFacts) -> list[str]:
    lines = ["", "**Yield per category** (candidates verified; a source can have several candidates)", "",
             "| category | kind | sources stored | judged unsafe | candidates | accepted | yield | "
             "sources with an accepted edit | pairs exported |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for y in f.inputs.yields:
        rate = y["accepted"] / y["attempts"] if y["attempts"] else 0.0
        exported = sum(f.counts.get(y["category"], {}).values()) if y["kind"] == "flip" else ""
        lines.append(f"| {y['category']} | {y['kind']} | {fmt(y.get('stored'))} | {fmt(y.get('judged_unsafe'))} | "
                     f"{y['attempts']} | {y['accepted']} | {rate:.0%} | {y['sources_ok']} | {exported} |")
    return lines


def _review(f: DatasheetFacts) -> list[str]:
    lines = ["", "**Human review**", ""]
    if not f.inputs.reviews:
        return lines + ["None: no review decisions were imported; every label is automatic."]
    lines += ["| category | verdict | decisions | reviewers |", "|---|---|---:|---:|"]
    lines += [f"| {r['category']} | {r['verdict']} | {r['n']} | {r['reviewers']} |" for r in f.inputs.reviews]
    return lines + ["", "Reviewed decisions override the automatic ones and are part of the provenance."]


def _licences(f: DatasheetFacts) -> list[str]:
    origins = set(f.inputs.origins)
    lines = ["", "## Licences", "", "<a id=\"licences\"></a>", "",
             "The dataset's licence is the combination of its sources' terms and the terms of the models that "
             "made or judged the edits. Check every row before you redistribute.", "", "**Sources**", ""]
    if "demo" in origins:
        lines += ["Demo images: scikit-image sample photographs (statements from the `skimage.data` docstrings, "
                  "scikit-image 0.26; the package itself is BSD-3-Clause) with signs rendered by this project "
                  "in DejaVu fonts.", "",
                  "| photo | scikit-image function | licence statement | sources |", "|---|---|---|---:|"]
        lines += [f"| {p} | `{fn}` | {md_cell(lic)} | {k} |" for p, fn, lic, k in photo_rows(f.inputs.demo_photos_used)]
        lines.append("")
    if origins - {"demo"}:
        lines += ["Your own images (source `folder`): their licence is not recorded by the pipeline; state it here "
                  "before you publish.", ""]
    lines += ["**Models and tools**", "", "| used to | component | licence |", "|---|---|---|"]
    lines += [f"| {u} | {md_cell(c)} | {md_cell(lic)} |" for u, c, lic in licence_rows(f.inputs, f.profiles_info)]
    return lines + ["", "The pipeline code is Apache-2.0 (SafetyPairs)."]


def _limits(f: DatasheetFacts) -> list[str]:
    lines = ["", "## Known limits and biases", ""]
    lines += [f"- {t}" for t in LIMITS_GENERAL]
    judges = {p["profile"] for p in f.inputs.profiles_used if p["role"] == "judge"}
    if any(v.get("verifier_profile") and v["verifier_profile"] in judges for v in f.inputs.verify_configs):
        lines.append("- **The judge verified its own pairs.** The same judge profile labelled the sources and rated "
                     "the edits, so every pair is one that judge agrees with by construction. Its own score on this "
                     "benchmark is not a measure of its quality, and its blind spots are absent from the data.")
    if "demo" in f.inputs.origins:
        n_photos = str(len(f.inputs.demo_photos_used))
        lines += [f"- {t}".replace("{n_photos}", n_photos) for t in LIMITS_DEMO]
    if not n_controls(f.rows):
        lines.append("- **No control images.** No null-edit control passed, so 'was it edited' is confounded "
                     "with the label in every pair.")
    return lines


def _formats_and_citation(f: DatasheetFacts) -> list[str]:
    lines = ["", "## Other formats in this folder", ""]
    lines += [f"- **{k}**: {v}" for k, v in f.formats.items()]
    return lines + ["", "## Citation", "",
                    f"The method: {PAPER}. Cite the pipeline run by the policy and config hashes above.", ""]
