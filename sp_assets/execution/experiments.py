"""The run-level experiments of guard_metrics through the memo: the guard figures and the sample-efficiency
probe are recomputed only when what they are made from changes. Their PNGs are kept as files in the image
store (``figures/``, by content), which the memo entry names: a figure whose file is gone is drawn again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from sp_assets.backends.sources.demo import demo_slug_for
from sp_assets.backends.sources.demo_ood import ood_pairs
from sp_assets.core.hashing import sha256_json
from sp_assets.core.policy import Category
from sp_assets.core.probe import ProbeResult
from sp_assets.core.sample_efficiency import assign_roles, guard_figures, run_sample_efficiency
from sp_assets.execution.judge import judged
from sp_assets.execution.lazy import LazyBackend
from sp_assets.execution.memo import Call, Encoded, Memo
from sp_assets.storage import ImageStore

EXPERIMENTS_VERSION = "3"  # bump when core.sample_efficiency or the figures change what they compute
# (2: figures as files; 3: the probe's 95% intervals and its out-of-distribution pairs)


def _stored(images: ImageStore, paths: Mapping[str, Path]) -> dict[str, str]:
    """Each figure's bytes kept in the image store: name -> path there."""
    return {name: images.put_bytes(Path(p).read_bytes(), Path(p).suffix, folder="figures")[1]
            for name, p in paths.items()}


def _restored(images: ImageStore, stored: Mapping[str, str], out_dir: Path, names: Mapping[str, str]
              ) -> dict[str, Path]:
    """The kept figures written to ``out_dir`` under their names."""
    out = {}
    for name, rel in stored.items():
        path = out_dir / names[name]
        path.write_bytes(images.read_bytes(rel))
        out[name] = path
    return out


FIGURE_FILES = {"roc": "roc_curves.png", "error_vs_similarity": "error_vs_similarity.png"}


def figures(memo: Memo, predictions: Sequence[dict[str, Any]], similarity: Mapping[str, float | None],
            out_dir: Path) -> dict[str, Path]:
    """ROC curves and error rate against pair similarity, written to ``out_dir`` (drawn again only when the
    predictions or the similarities changed)."""
    def encode(paths: Mapping[str, Path]) -> Encoded:
        stored = _stored(memo.images, paths)
        return Encoded(json.dumps(stored, sort_keys=True), files=tuple(stored.values()))

    call = Call("report", sha256_json({"figures": EXPERIMENTS_VERSION}),
                lambda item: {"figures": sha256_json([item["predictions"], sorted(item["similarity"].items())])},
                encode, lambda text, _b: json.loads(text))
    item = {"predictions": list(predictions), "similarity": dict(similarity)}
    [(_, out)] = memo.run(call, lambda batch: [guard_figures(b["predictions"], b["similarity"], out_dir)
                                               for b in batch], [item])
    if out.reused:
        return _restored(memo.images, out.result, out_dir, FIGURE_FILES)
    return out.result


def sample_efficiency(memo: Memo, pairs: Sequence[dict[str, Any]], sources: Sequence[dict[str, Any]],
                      embed_images: Callable[[list[tuple[str, str]]], Mapping[str, np.ndarray]],
                      embed_texts: Callable[[list[str]], np.ndarray], features_sha256: str, seed: int,
                      out_dir: Path, seeds: int, held_out: Callable[[], list[dict[str, Any]]] | None = None
                      ) -> dict[str, Any]:
    """``core.sample_efficiency.run_sample_efficiency``, recomputed only when its inputs change.

    ``features_sha256`` names the embedders whose vectors the probe is trained on; ``held_out`` gives the
    out-of-distribution pairs (``held_out_pairs``), asked for only when the probe can run at all.
    """
    runs = not isinstance(assign_roles(pairs, sources, seed), str)
    ood = held_out() if held_out is not None and runs else []
    inputs = {"pairs": sha256_json(list(pairs)), "sources": sha256_json(list(sources)), "features": features_sha256,
              "seed": seed, "seeds": seeds, "ood": sha256_json(list(ood))}
    call = Call("report", sha256_json({"probe": EXPERIMENTS_VERSION}), lambda item: item,
                lambda probe: _encode_probe(memo.images, probe), lambda text, _b: json.loads(text))
    [(_, out)] = memo.run(call, lambda batch: [run_sample_efficiency(pairs, sources, embed_images, embed_texts,
                                                                     seed, out_dir, seeds, ood=ood) for _ in batch],
                          [inputs])
    return _decode_probe(memo.images, out.result, out_dir) if out.reused else out.result


def held_out_pairs(memo: Memo, judge: LazyBackend, categories: Sequence[Category], seed: int) -> list[dict[str, Any]]:
    """The probe's out-of-distribution pairs (``backends.sources.demo_ood``) of the run's categories, kept in
    the image store (``probe_ood/``), each half with the run judge's answer: its scene text is the image's
    text feature, as for every other image of the probe. A category the set has no phrases for adds none."""
    out = []
    for category in categories:
        try:
            slug = demo_slug_for(category, judge.policy)
        except ValueError:
            continue
        rows = []
        for pair in ood_pairs(slug, seed):
            row = {"pair_id": pair.pair_id, "category": category.slug, "photo": pair.photo, "font": pair.font}
            for half in ("unsafe", "safe"):
                row[f"{half}_sha256"], row[f"{half}_path"] = memo.images.put_bytes(pair.png(half), ".png", "probe_ood")
            rows.append(row)
        halves = [{"image_sha256": r[f"{half}_sha256"], "image_path": r[f"{half}_path"]}
                  for r in rows for half in ("unsafe", "safe")]
        answers = {item["image_sha256"]: answer.result.verdict for item, answer in judged(memo, judge, category, halves)}
        out += [{**r, **{f"{half}_{key}": getattr(answers[r[f"{half}_sha256"]], attr) for half in ("unsafe", "safe")
                         for key, attr in (("rating", "rating"), ("raw_output", "raw_output"))}} for r in rows]
    return out


def _encode_probe(images: ImageStore, probe: dict[str, Any]) -> Encoded:
    if "skipped" in probe:
        return Encoded(json.dumps(probe))
    stored = _stored(images, probe["figures"])
    return Encoded(json.dumps({
        "results": {name: r.to_json() for name, r in probe["results"].items()},
        "figures": {name: p.name for name, p in probe["figures"].items()},
        "figure_files": stored, "probe_guards": probe["probe_guards"],
        "pairs": probe["pairs"], "roles": probe["roles"]}, default=str), files=tuple(stored.values()))


def _decode_probe(images: ImageStore, d: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    if "skipped" in d:
        return d
    return {"results": {name: ProbeResult.from_json(r) for name, r in d["results"].items()},
            "figures": _restored(images, d["figure_files"], out_dir, d["figures"]),
            "probe_guards": d["probe_guards"], "pairs": d["pairs"], "roles": d["roles"]}
