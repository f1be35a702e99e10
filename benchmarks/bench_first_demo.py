"""A new user's first demo against a warm one, and what the offline judge's build costs, as ``name: value``
lines (``make bench``).

- ``judge_build_cold_seconds``: the default scene-text judge's text head built in a fresh process with an
  empty cache, as on a new machine (the encoder loaded, the head shipped beside the examples read);
- ``judge_fit_cold_seconds``: the same head fitted with an empty cache, as for your own examples (every
  training string encoded, in worker processes, then the fit);
- ``judge_build_one_more_example_seconds``: built again, in a fresh process, on the examples plus one row
  (the vector cache filled by the fit above: that row's strings are encoded, the head refitted);
- ``first_demo_seconds``: ``python -m sp_assets.demo`` (the whole graph, all categories, through the
  Dagster CLI) with a fresh data root and an empty vector cache, as on a new machine after ``make setup``;
- ``warm_demo_seconds``: the same on another fresh data root, the vector cache now filled;
- ``first_over_warm``: their ratio, measured side by side in this run.

The installed sentence model stays where ``make setup`` put it (``SP_MODELS_DIR``).
Usage: ``python benchmarks/bench_first_demo.py [--categories o1_hate...o9_disasters] [--keep DIR]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.bench_execution import REPO, bench_args, make_env, say  # noqa: E402

BUILD = """
import sys
from pathlib import Path
from sp_assets.backends.judges.text_head import PolicyTextHead, judge_examples
from sp_assets.core.judge_examples import load_examples
from sp_assets.core.policy import load_policy, DEFAULT_POLICY_PATH
policy = load_policy(DEFAULT_POLICY_PATH)
examples = load_examples(Path(sys.argv[1]), set(policy.slugs)) if sys.argv[1] != "-" else None
PolicyTextHead(policy, examples, reuse_head=sys.argv[2] == "reuse")
"""


def build_seconds(env: dict[str, str], examples: str = "-", heads: str = "reuse") -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", BUILD, examples, heads], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def demo_seconds(root: Path, name: str, cache: Path, categories: str) -> float:
    env = {**make_env(root, root / name / "data"), "SP_CACHE_DIR": str(cache)}
    t0 = time.perf_counter()
    with open(root / f"{name}.log", "w") as log:
        done = subprocess.run([sys.executable, "-m", "sp_assets.demo", "--categories", categories], cwd=REPO,
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"the {name} demo failed, see {root / f'{name}.log'}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    args, root = bench_args(argv, __doc__, "sp-bench-first-")
    from sp_assets.backends.common.model_store import models_dir
    from sp_assets.core.judge_examples import examples_path
    from sp_assets.core.policy import DEFAULT_POLICY_PATH

    base = {**os.environ, "SP_MODELS_DIR": str(models_dir())}
    say("judge_build_cold_seconds", f"{build_seconds({**base, 'SP_CACHE_DIR': str(root / 'new-cache')}):.1f}")
    judge_cache = root / "judge-cache"
    say("judge_fit_cold_seconds", f"{build_seconds({**base, 'SP_CACHE_DIR': str(judge_cache)}, '-', 'fit'):.1f}")
    grown = root / "grown.examples.jsonl"
    row = {"text": "SPRING FLOWER MARKET ON SUNDAY", "label": "allowed", "category": "o1_hate", "origin": "bench"}
    grown.write_bytes(examples_path(DEFAULT_POLICY_PATH).read_bytes() + (json.dumps(row) + "\n").encode())
    say("judge_build_one_more_example_seconds",
        f"{build_seconds({**base, 'SP_CACHE_DIR': str(judge_cache)}, str(grown)):.1f}")
    os.environ["SP_MODELS_DIR"] = base["SP_MODELS_DIR"]  # make_env copies os.environ
    cache = root / "demo-cache"
    first = demo_seconds(root, "first", cache, args.categories)
    say("first_demo_seconds", f"{first:.1f}")
    warm = demo_seconds(root, "warm", cache, args.categories)
    say("warm_demo_seconds", f"{warm:.1f}")
    say("first_over_warm", f"{first / warm:.2f}")


if __name__ == "__main__":
    main()
