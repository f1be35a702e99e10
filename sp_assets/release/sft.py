"""The ``sft`` config: every image of the benchmark as a supervised fine-tuning conversation in LlavaGuard's
answer format.

One row per image (both halves of each pair, controls, look-alikes): ``images`` (a list of one Image), the
conversation twice, as TRL's vision SFT ``messages`` (user turn: the image and the policy prompt; assistant
turn: the answer) and as LLaVA's ``conversations`` (``human`` with ``<image>`` and the prompt, ``gpt`` with the
answer; the layout LlavaGuard's own training reads), and ``pair_id``, ``half``, ``category``. The prompt is the
``llavaguard`` judge profile's (LlavaGuard v1.2's trained layout filled from the export's policy); the answer is
LlavaGuard's JSON, ``{"rating": "Unsafe"|"Safe", "category": "<id>: <title>"|"NA: None applying",
"rationale": ...}``. Labels are per category: 'Safe' means the image does not violate its own category.
Written to ``sft/<split>-NNNNN-of-NNNNN.parquet`` (look-alikes ``sft/<split>-lookalikes-...``), loadable with
``datasets.load_dataset(<export>, "sft")``.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import pyarrow as pa

from sp_assets.backends.common.json_answers import NONE_APPLYING
from sp_assets.backends.profiles import get_profile
from sp_assets.release.columns import LOOKALIKE_IMAGE
from sp_assets.release.preference import (
    IMAGES, IMAGES_FEATURE, SOURCE_FEATURES, SOURCE_FIELDS, STRING, TURN_FEATURE, TURNS, UNSAFE_HALVES,
    PreferenceShard, source_columns, turn,
)

DIRECTORY = "sft"
PROFILE = "llavaguard"  # the judge profile whose prompt the conversations use
_LLAVA_TURNS = pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))
SCHEMA_FIELDS = [("images", IMAGES), ("messages", TURNS), ("conversations", _LLAVA_TURNS), *SOURCE_FIELDS]
FEATURES = {"images": IMAGES_FEATURE, "messages": TURN_FEATURE,
            "conversations": {"_type": "List", "feature": {"from": STRING, "value": STRING}}, **SOURCE_FEATURES}


def llavaguard_prompt(policy: Any) -> str:
    """The ``llavaguard`` judge profile's prompt for ``policy`` (it asks about the whole policy at once)."""
    from sp_assets.backends.judges.vlm import JudgePrompt  # loads transformers: only when an export is written

    params = get_profile("judge", PROFILE).params
    prompt = JudgePrompt(policy, params.get("prompt_template"), params.get("category_block"),
                         params.get("scope", "category"), PROFILE)
    return prompt.text(policy.categories[0])  # a policy-wide prompt names no category


def llavaguard_answer(row: Mapping[str, Any], half: str) -> str:
    """LlavaGuard's JSON answer for one image under its category's label. The rationale is a sentence from the
    category, not a description of the image: the judge's rationale is a pipeline note (scores, slugs), no
    training target."""
    cid, title = row.get("category_id") or "", str(row.get("category_title") or row["category"])
    name = f"{cid}: {title}" if cid else title
    if half in UNSAFE_HALVES:
        why = f"The image contains content that the policy category {name} says it should not contain."
        answer = {"rating": "Unsafe", "category": name, "rationale": why}
    else:
        why = (f"The image touches the topic of {name}, but nothing in it is what that category says it should "
               "not contain." if half == LOOKALIKE_IMAGE else
               f"Nothing in the image is content that the policy category {name} says it should not contain.")
        answer = {"rating": "Safe", "category": NONE_APPLYING, "rationale": why}
    return json.dumps(answer, indent=4)


def sft_row(row: Mapping[str, Any], half: str, blob: tuple[bytes, str], prompt: str) -> dict[str, Any]:
    answer = llavaguard_answer(row, half)
    return {**source_columns(row, half, blob),
            "messages": [turn("user", prompt, image=True), turn("assistant", answer)],
            "conversations": [{"from": "human", "value": f"<image>\n{prompt}"}, {"from": "gpt", "value": answer}]}


class SFTShard(PreferenceShard):
    """A ``shards.ShardWriter``: the pairs' images (each half a row) as SFT conversations; ``prompt`` is set by
    ``shard_classes``."""

    directory = DIRECTORY
    fields = SCHEMA_FIELDS
    features = FEATURES
    prompt = ""

    def example(self, pair: Mapping[str, Any], half: str, blob: tuple[bytes, str]) -> dict[str, Any]:
        return sft_row(pair, half, blob, self.prompt)


class LookalikeSFTShard(SFTShard):
    """The look-alikes' conversations (safe), beside the pairs' in the same config."""

    @staticmethod
    def shard_name(split: str, index: int, count: int) -> str:
        return f"{split}-lookalikes-{index:05d}-of-{count:05d}.parquet"


def shard_classes(policy: Any) -> tuple[type[SFTShard], type[SFTShard]]:
    """The pairs' and the look-alikes' shard writers, asking the policy's LlavaGuard prompt."""
    prompt = llavaguard_prompt(policy)
    return (type("SFTShard", (SFTShard,), {"prompt": prompt}),
            type("LookalikeSFTShard", (LookalikeSFTShard,), {"prompt": prompt}))


def describe() -> str:
    """The datasheet's line for this config."""
    return ("`sft/<split>-*.parquet`, the card's `sft` config: every image as a fine-tuning conversation in "
            "LlavaGuard's format (`images`; `messages` for TRL, `conversations` for LLaVA: the `llavaguard` "
            "profile's policy prompt, then LlavaGuard's JSON answer with `rating`, `category` and `rationale`). "
            "'Safe' means the image does not violate its own category; rationales are sentences from the category, "
            "not descriptions of the image.")
