"""Rebuild, or check, the scene-text judge's head shipped beside a policy's examples.

    python -m sp_assets.backends.judges.build_head [POLICY.yaml] [--examples FILE.jsonl] [--check]

Fits the head on this machine (the examples' vectors from the cache under ``SP_CACHE_DIR``, encoding what
is missing: minutes on 2 cores when the cache is empty) and writes it to ``<examples>.head.safetensors``
(``policies/default.examples.head.safetensors`` for the default policy), where every new machine finds
it instead of encoding thousands of examples before its first run. Run it after editing the examples or
the rules of a policy whose head you ship; a head that no longer matches is passed over (and fitted
where it runs), never used. ``--check`` fits it again and compares it with the shipped file instead of
writing it: same key, the same support vectors and probabilities on every training row within
``TOLERANCE`` (float noise between CPUs), and the same decision for each; exit 1 when they differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from sp_assets.backends.judges.rbf_head import RBFMachine, load_head, save_head
from sp_assets.backends.judges.text_head import (
    DEFAULT_SENTENCE_MODEL,
    SENTENCE_MODELS,
    PolicyTextHead,
    head_probs,
    judge_examples,
)
from sp_assets.core.policy import DEFAULT_POLICY_PATH, load_policy

# The largest probability difference a rebuild may show: float noise between CPUs. The sentence model's
# vectors differ in their last bits between instruction sets, and libsvm's fit and Platt scaling carry that
# on: a rebuild on an AMD EPYC gave 8.3e-4 against the shipped file, with the same support vectors and the
# same decision on every training row (which the check also requires).
TOLERANCE = 2e-3


def rebuild(policy_path: Path, examples: str | None = None,
            sentence_model: str = DEFAULT_SENTENCE_MODEL) -> tuple[PolicyTextHead, np.ndarray]:
    """A head fitted here on the policy's examples, and its training features (from the vector cache)."""
    policy = load_policy(policy_path)
    head = PolicyTextHead(policy, judge_examples(policy, examples), sentence_model=sentence_model, reuse_head=False)
    return head, head.training_features()


def compare(shipped: RBFMachine, rebuilt: PolicyTextHead, x: np.ndarray) -> list[str]:
    """What differs between a shipped head and a rebuilt one (empty: they match)."""
    fresh = rebuilt._head
    problems = []
    if not np.array_equal(shipped.n_support, fresh.n_support):
        problems.append(f"support vectors per class {shipped.n_support.tolist()} != {fresh.n_support.tolist()}")
        return problems
    n = len(rebuilt.classes)
    a = head_probs(shipped, x, n, rebuilt.settings.safe_prior)
    b = head_probs(fresh, x, n, rebuilt.settings.safe_prior)
    worst = float(np.abs(a - b).max())
    if worst > TOLERANCE:
        problems.append(f"probabilities differ by up to {worst:.2e} on the training rows (tolerance {TOLERANCE:g})")
    flipped = int((a.argmax(axis=1) != b.argmax(axis=1)).sum())
    if flipped:
        problems.append(f"{flipped} training rows change their most likely class")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("policy", nargs="?", type=Path, default=DEFAULT_POLICY_PATH)
    parser.add_argument("--examples", help="the examples file (default: <policy>.examples.jsonl beside it)")
    parser.add_argument("--sentence-model", default=DEFAULT_SENTENCE_MODEL, choices=sorted(SENTENCE_MODELS),
                        help="the encoder of the judge profile that will use the head (default %(default)s)")
    parser.add_argument("--check", action="store_true", help="compare a rebuild with the shipped file")
    args = parser.parse_args(argv)
    head, x = rebuild(args.policy, args.examples, args.sentence_model)
    if head.settings.kind != "svc":
        print(f"{args.policy}: the head kind is {head.settings.kind!r}; only 'svc' heads are stored.", file=sys.stderr)
        return 2
    target = head.shipped_head_path()
    if not args.check:
        save_head(target, head._head, head.head_key, head.head_info())
        print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB, key {head.head_key[:16]}, "
              f"{int(head._head.n_support.sum())} support vectors of {len(head.train_texts)} rows)")
        return 0
    shipped = load_head(target, head.head_key)
    if shipped is None:
        print(f"{target}: {'missing' if not target.is_file() else 'built for other rows, settings or encoder'}"
              f" (key {head.head_key[:16]} here); rebuild it without --check.", file=sys.stderr)
        return 1
    problems = compare(shipped, head, x)
    for problem in problems:
        print(f"{target}: {problem}", file=sys.stderr)
    if not problems:
        print(f"{target} matches a rebuild (key {head.head_key[:16]}, {len(x)} rows)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
