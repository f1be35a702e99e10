"""The ``policy_pairs`` config: benchmark images whose label changes with the policy.

One row per image and variant where the two policies disagree: the image (published bytes), both policies'
names, rule hashes and the category's rules as each states them, both labels, and the rules that make the
difference. Written to ``policy_pairs/<split>.parquet``, loadable with
``datasets.load_dataset(<export>, "policy_pairs")``. Only written when the run labelled its benchmark under
policy variants (``SP_POLICY_VARIANTS``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

DIRECTORY = "policy_pairs"
_STRING = ("category", "pair_id", "half", "image_sha256", "policy_a", "policy_a_sha256", "policy_a_category",
           "policy_a_rules", "label_a", "policy_b", "policy_b_sha256", "policy_b_category", "policy_b_rules", "label_b",
           "judge_profile", "rationale_b")
SCHEMA_FIELDS = [("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                 *((name, pa.string()) for name in _STRING), ("deciding_rules", pa.list_(pa.string()))]
FEATURES = {"image": {"_type": "Image"}, **{name: {"_type": "Value", "dtype": "string"} for name in _STRING},
            "deciding_rules": {"_type": "List", "feature": {"_type": "Value", "dtype": "string"}}}
# How a policy pair's half is read through ``shards.StoredImages`` (a look-alike's image is its 'image').
_READ_AS = {"unsafe": ("unsafe", "source_sha256"), "safe": ("safe", "safe_sha256"),
            "control": ("control", "control_sha256"), "lookalike": ("image", "image_sha256")}

Read = Callable[[Mapping[str, Any], str], "tuple[bytes, str] | None"]


def policy_pair_row(row: Mapping[str, Any], policy: Any, read: Read) -> dict[str, Any]:
    """One policy pair as a published row: policy A is the run's, policy B the variant."""
    half, sha_key = _READ_AS[row["half"]]
    key = "lookalike_id" if row["half"] == "lookalike" else "pair_id"
    data, name = read({key: row["pair_id"], "category": row["category"], f"{half}_path": row["image_path"],
                       sha_key: row["image_sha256"]}, half)
    main = policy.category(row["category"])
    return {"image": {"bytes": data, "path": name}, "category": row["category"], "pair_id": row["pair_id"],
            "half": row["half"], "image_sha256": row["image_sha256"], "policy_a": policy.name,
            "policy_a_sha256": policy.rules_sha256, "policy_a_category": main.slug, "policy_a_rules": main.rules_text(),
            "label_a": row["main_label"], "policy_b": row["variant"], "policy_b_sha256": row["variant_sha256"],
            "policy_b_category": row["variant_category"], "policy_b_rules": row["variant_rules"],
            "label_b": row["variant_label"], "judge_profile": row["judge_profile"], "rationale_b": row["rationale"],
            "deciding_rules": json.loads(row["deciding_rules"] or "[]")}


def write_policy_pairs(out: Path, rows: Sequence[Mapping[str, Any]], policy: Any, read: Read) -> list[Path]:
    """``policy_pairs/<split>.parquet`` for each split that has policy pairs; the files written."""
    schema = pa.schema([pa.field(n, t) for n, t in SCHEMA_FIELDS],
                       metadata={"huggingface": json.dumps({"info": {"features": FEATURES}})})
    written = []
    for split in sorted({r["split"] for r in rows}):
        table = pa.Table.from_pylist([policy_pair_row(r, policy, read) for r in rows if r["split"] == split],
                                     schema=schema)
        path = out / DIRECTORY / f"{split}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, compression="snappy")
        written.append(path)
    return written


def describe() -> str:
    """The datasheet's line for this config."""
    return ("`policy_pairs/<split>.parquet`, the card's `policy_pairs` config: every benchmark image whose label "
            "differs between the run's policy and a variant, with both policies' rules, hashes and labels and the "
            "rules that make the difference.")
