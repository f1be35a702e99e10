"""Policy variants at run time: the benchmark's images labelled under each variant by the run's judge, and
each guard asked under each variant (a guard that takes no policy keeps its one answer). Every call goes
through the memo, keyed by the variant's rules, so editing one variant redoes only its answers.
The figures are ``core.policy_variants``'s."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from sp_assets.backends.base import RecordJudge, takes_policy
from sp_assets.core import policy_variants as pv
from sp_assets.core.policy import Category, Policy
from sp_assets.core.record_types import Verdict
from sp_assets.execution.judge import judged
from sp_assets.execution.lazy import LazyBackend
from sp_assets.execution.memo import Memo

Key = tuple[str, str]
Row = dict[str, Any]


def verdicts_of(memo: Memo, lazy: LazyBackend, category: Category, items: Sequence[Row]
                ) -> tuple[dict[Key, Verdict], dict[Key, str]]:
    """The backend's verdict on every item under ``category``, and the run that computed each."""
    verdicts, computed = {}, {}
    for item, out in judged(memo, lazy, category, items):
        key = (item["pair_id"], item["half"])
        verdicts[key], computed[key] = out.result.verdict, out.computed_run_id
    return verdicts, computed


def labels(memo: Memo, judge_for: Callable[[Policy], LazyBackend], judge_profile: str,
           variants: Sequence[pv.Variant], category: Category, items: Sequence[Row], base: Row,
           human: Mapping[str, Mapping[str, str]] | None = None) -> list[Row]:
    """``variant_labels`` rows of one category: every item under every variant that maps the category, a
    person's label (``human``: image hash -> variant name -> label) where the manifest gives one.

    A judge that labels from manifest records cannot label under another policy: no rows (the caller says so).
    """
    rows: list[Row] = []
    for variant in variants:
        mapped = variant.category_for(category.slug)
        if mapped is None or not items:
            continue
        lazy = judge_for(variant.policy)
        if issubclass(lazy.cls, RecordJudge):
            continue
        verdicts, computed = verdicts_of(memo, lazy, mapped, items)
        rows += pv.label_rows(base, variant, category, items, verdicts, judge_profile, lazy.config_sha256, computed,
                              human)
    return rows


def guard_rows(memo: Memo, guard_for: Callable[[Policy], LazyBackend], guard: str, main: Mapping[Key, Verdict],
               variants: Sequence[pv.Variant], category: Category, items: Sequence[Row],
               variant_labels: Sequence[Row], base: Row, selected: bool) -> tuple[list[Row], list[Row]]:
    """One guard's ``variant_predictions`` and ``policy_guard_metrics`` rows in one category: asked under each
    variant where it takes a policy, its main answers otherwise."""
    predictions: list[Row] = []
    metrics: list[Row] = []
    for variant in variants:
        mapped = variant.category_for(category.slug)
        labelled = [r for r in variant_labels if r["variant"] == variant.name]
        if mapped is None or not labelled:
            continue
        lazy = guard_for(variant.policy)
        conditioned = takes_policy(lazy.cls)
        verdicts, computed = verdicts_of(memo, lazy, mapped, items) if conditioned else (main, {})
        predictions += [{**base, "guard": guard, "variant": variant.name, "pair_id": i["pair_id"], "half": i["half"],
                         "image_sha256": i["image_sha256"], "rating": verdicts[k].rating, "score": verdicts[k].score,
                         "conditioned": conditioned, "guard_config_sha256": lazy.config_sha256,
                         "computed_run_id": computed.get(k, base["run_id"])}
                        for i in items if (k := (i["pair_id"], i["half"])) in verdicts]
        metrics += pv.metric_rows(base, guard, variant.name, labelled, {k: v.rating for k, v in main.items()},
                                  {k: v.rating for k, v in verdicts.items()}, conditioned=conditioned,
                                  config_sha256=lazy.config_sha256, selected=selected)
    return predictions, metrics
