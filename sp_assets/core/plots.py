"""Guard figures for the metadata: ROC curves, and error rate against pair similarity.

``error_by_similarity_bins`` and ``pair_error_rows`` answer "do near-identical pairs fool the guard
more?": each pair's error (either half wrong; 'invalid' counts as wrong, as in
``sp_assets.core.evaluation``) binned by how similar its halves are (``verified_pairs.ssim_outside`` or
``embedding_cosine``). Bins are quantiles of the similarity by default: the accepted pairs' SSIM
bunches near 1, and equal-width bins would put almost every pair in one bin.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot state, no global backend switch),
small (80 dpi, a few tens of KB), and ``data_uri`` / ``markdown_image`` embed them in Dagster
markdown metadata.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from sp_assets.core.encoding import data_uri
from sp_assets.core.evaluation import roc_auc

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f")


def _binary(labels: Sequence[Any]) -> np.ndarray:
    """1 = unsafe, 0 = safe; accepts 1/0, booleans or the strings 'unsafe'/'safe'."""
    arr = np.asarray(list(labels))
    if arr.dtype.kind in "OUS":
        bad = sorted({str(v) for v in arr.tolist()} - {"unsafe", "safe"})
        if bad:
            raise ValueError(f"labels must be 1/0 or 'unsafe'/'safe', got {bad[:5]}")
        return (arr == "unsafe").astype(int)
    out = arr.astype(int).reshape(-1)
    if not np.isin(out, (0, 1)).all():
        raise ValueError("labels must be 0 (safe) or 1 (unsafe)")
    return out


def roc_curve_points(labels: Sequence[Any], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(fpr, tpr, thresholds) of the ROC curve, every threshold kept (``sklearn.metrics.roc_curve``).

    Positive class = unsafe (1). None when a class is missing (the curve is undefined, as
    ``evaluation.roc_auc`` is). Scores must be finite: a guard without scores has no curve.
    """
    from sklearn.metrics import roc_curve

    y = _binary(labels)
    s = np.asarray([np.nan if v is None else v for v in scores], dtype=float)
    if y.shape != s.shape:
        raise ValueError(f"{len(y)} labels but {len(s)} scores")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite numbers (a missing score has no place on a ROC curve)")
    if y.size == 0 or y.min() == y.max():
        return None
    fpr, tpr, thr = roc_curve(y, s, pos_label=1, drop_intermediate=False)
    return fpr, tpr, thr


def _new_figure(width: float, height: float, dpi: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path, dpi: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=dpi)
    return path


def plot_roc_curves(curves: Mapping[str, tuple[Sequence[Any], Sequence[float | None]]], path: str | Path,
                    title: str = "ROC, unsafe = positive", dpi: int = 80) -> Path:
    """One ROC curve per guard (legend: AUC and n), chance diagonal; guards without a curve are listed.

    ``curves``: guard -> (labels, scores). A guard with a missing score or with one class present
    gets no curve and says why in the legend, rather than failing the figure.
    """
    fig = _new_figure(4.2, 3.6, dpi)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1)
    for i, (guard, (labels, scores)) in enumerate(curves.items()):
        color = PALETTE[i % len(PALETTE)]
        scores = list(scores)
        if any(v is None or not np.isfinite(v) for v in scores):
            ax.plot([], [], color=color, label=f"{guard}: no curve (missing scores)")
            continue
        pts = roc_curve_points(labels, scores)
        if pts is None:
            ax.plot([], [], color=color, label=f"{guard}: no curve (one class)")
            continue
        fpr, tpr, _ = pts
        auc = roc_auc(_binary(labels).tolist(), scores)
        ax.plot(fpr, tpr, color=color, lw=1.5, drawstyle="default",
                label=f"{guard}: AUC {auc:.2f} (n={len(scores)})")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("false positive rate (safe rated unsafe)", fontsize=8)
    ax.set_ylabel("true positive rate (unsafe caught)", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path, dpi)


def error_by_similarity_bins(similarity: Sequence[float], errors: Sequence[Any], n_bins: int = 4,
                             edges: Sequence[float] | None = None, strategy: str = "quantile") -> pl.DataFrame:
    """Error rate per similarity bin.

    Columns: bin (0-based), lo, hi (bin edges; each bin holds lo <= s < hi, the last one also
    s == hi), n, n_errors, error_rate, stderr (binomial, sqrt(p(1-p)/n)), mean_similarity.
    ``strategy``: 'quantile' (equal counts; repeated edges merged, so fewer bins may come back) or
    'uniform' (equal width). ``edges`` fixes the edges instead, so several guards can share bins.
    Rows with a missing (None/NaN) similarity are left out. Empty bins are kept with n = 0.
    """
    sim = np.asarray([np.nan if v is None else v for v in similarity], dtype=float)
    err = np.asarray([bool(e) for e in errors], dtype=bool)
    if sim.shape != err.shape:
        raise ValueError(f"{len(sim)} similarities but {len(err)} errors")
    keep = np.isfinite(sim)
    sim, err = sim[keep], err[keep]
    schema = {"bin": pl.Int64, "lo": pl.Float64, "hi": pl.Float64, "n": pl.Int64, "n_errors": pl.Int64,
              "error_rate": pl.Float64, "stderr": pl.Float64, "mean_similarity": pl.Float64}
    if edges is None:
        if sim.size == 0:
            return pl.DataFrame(schema=schema)
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        if strategy == "quantile":
            e = np.quantile(sim, np.linspace(0, 1, n_bins + 1))
        elif strategy == "uniform":
            e = np.linspace(sim.min(), sim.max(), n_bins + 1)
        else:
            raise ValueError(f"strategy must be 'quantile' or 'uniform', got {strategy!r}")
        e = np.unique(e)
    else:
        e = np.asarray(edges, dtype=float)
        if e.ndim != 1 or e.size < 2 or np.any(np.diff(e) <= 0):
            raise ValueError("edges must be at least two increasing numbers")
    if e.size == 1:  # every similarity the same: one bin [v, v]
        e = np.array([e[0], e[0]])
    n_out = e.size - 1
    idx = np.clip(np.searchsorted(e, sim, side="right") - 1, 0, n_out - 1)
    inside = (sim >= e[0]) & (sim <= e[-1])  # fixed edges may not cover every value
    rows = []
    for b in range(n_out):
        m = inside & (idx == b)
        n = int(m.sum())
        k = int(err[m].sum())
        p = k / n if n else None
        rows.append({"bin": b, "lo": float(e[b]), "hi": float(e[b + 1]), "n": n, "n_errors": k,
                     "error_rate": p, "stderr": None if p is None else float(np.sqrt(p * (1 - p) / n)),
                     "mean_similarity": float(sim[m].mean()) if n else None})
    return pl.DataFrame(rows, schema=schema)


def pair_error_rows(predictions: Iterable[Mapping[str, Any]], similarity: Mapping[str, float | None],
                    similarity_name: str = "similarity") -> list[dict[str, Any]]:
    """Per guard and pair: was the pair wrong (either half wrong; 'invalid' is wrong), and its similarity.

    ``predictions``: ``guard_predictions`` rows (guard, pair_id, half, rating). ``similarity``:
    pair_id -> value (e.g. ``verified_pairs.ssim_outside`` joined through ``benchmark_split``).
    Pairs missing a half are left out.
    """
    halves: dict[tuple[str, str], dict[str, str]] = {}
    for r in predictions:
        halves.setdefault((r["guard"], r["pair_id"]), {})[r["half"]] = r["rating"]
    out = []
    for (guard, pair_id), h in sorted(halves.items()):
        if set(h) != {"unsafe", "safe"}:
            continue
        out.append({"guard": guard, "pair_id": pair_id, similarity_name: similarity.get(pair_id),
                    "error": not (h["unsafe"] == "unsafe" and h["safe"] == "safe"),
                    "unsafe_wrong": h["unsafe"] != "unsafe", "safe_wrong": h["safe"] != "safe"})
    return out


def plot_error_vs_similarity(rows: Iterable[Mapping[str, Any]] | pl.DataFrame, path: str | Path,
                             similarity: str = "similarity", error: str = "error", n_bins: int = 4,
                             title: str | None = None, dpi: int = 80) -> Path:
    """Each guard's error rate per similarity bin (bins shared across guards), ± binomial stderr.

    ``rows``: one per (guard, pair) with keys 'guard', ``similarity`` and ``error`` (bool), e.g.
    from ``pair_error_rows``. Bin edges are the quantiles of all rows' similarities, so every guard
    is measured on the same bins; the x position is each bin's mean similarity and each point is
    labelled with its n.
    """
    data = rows.to_dicts() if isinstance(rows, pl.DataFrame) else list(rows)
    sims = np.asarray([np.nan if r.get(similarity) is None else r[similarity] for r in data], dtype=float)
    fig = _new_figure(4.6, 3.4, dpi)
    ax = fig.subplots()
    finite = sims[np.isfinite(sims)]
    if finite.size:
        edges = np.unique(np.quantile(finite, np.linspace(0, 1, max(1, n_bins) + 1)))
        if edges.size == 1:
            edges = np.array([edges[0], edges[0] + 1e-12])
        guards = sorted({r["guard"] for r in data})
        for i, guard in enumerate(guards):
            mine = [r for r in data if r["guard"] == guard]
            t = error_by_similarity_bins([r.get(similarity) for r in mine], [r[error] for r in mine], edges=edges)
            t = t.filter(pl.col("n") > 0)
            if t.height == 0:
                continue
            x, y, se = t["mean_similarity"].to_numpy(), t["error_rate"].to_numpy(), t["stderr"].to_numpy()
            color = PALETTE[i % len(PALETTE)]
            ax.errorbar(x, y, yerr=se, fmt="o-", color=color, ms=4, lw=1.5, capsize=2,
                        label=f"{guard} (n={int(t['n'].sum())})")
            for xi, yi, ni in zip(x, y, t["n"].to_list()):
                ax.annotate(str(ni), (xi, yi), textcoords="offset points", xytext=(3, 3), fontsize=6, color=color)
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, "no pairs with a similarity", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylim(-0.03, 1.1)  # room for the n labels above a rate of 1
    ax.set_xlabel(f"{similarity} (bin mean; quantile bins)", fontsize=8)
    ax.set_ylabel(f"{error.replace('_', ' ')} rate", fontsize=8)
    ax.set_title(title or "Do near-identical pairs fool the guard more?", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path, dpi)


def markdown_image(image: str | Path | bytes, alt: str = "figure") -> str:
    """A markdown image with the PNG inline, for ``MetadataValue.md``."""
    raw = image if isinstance(image, bytes) else Path(image).read_bytes()
    return f"![{alt}]({data_uri(raw)})"
