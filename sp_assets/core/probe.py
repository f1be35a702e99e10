"""The sample-efficiency experiment: do counterfactual pairs teach a linear probe more than ordinary images?

A linear probe (standardised features -> logistic regression) is trained on a fixed base set plus
either

- ``pairs``: k counterfactual pairs, both halves (2k examples: each unsafe image and its edit), or
- ``ordinary``: 2k ordinary labelled images drawn from a pool of non-pair images (k unsafe and k
  safe where the pool allows, so the two conditions differ in pairedness, not in class balance),

for every k in ``ks`` and every seed; the seed decides which pairs and which extras are drawn. Draws
are nested (the first k of one random order per seed), so a curve over k adds examples rather than
redrawing them, and k = 0 trains both conditions on the base set alone: the same model twice.

Each probe is evaluated on every eval set. On a set of pairs it gets the guard metrics of
``sp_assets.core.evaluation.score_pairs`` (accuracy on the unsafe and safe halves, pair accuracy = both
halves right, ROC-AUC) plus overall accuracy and ``pair_ranking`` (share of pairs whose unsafe half
scores higher: pair accuracy without a threshold); on other images, accuracy, per-class accuracy
and ROC-AUC.

Class weighting: ``class_weight='balanced'`` by default. The pairs condition adds classes in exactly
equal numbers, while the base set and the ordinary pool need not be balanced (the demo pool is 2:1
unsafe:safe). Unweighted, the probe's threshold would follow each draw's class ratio, and the
ordinary condition would be judged on its draw's imbalance rather than on what its images teach;
balancing puts both conditions' thresholds on the same footing. It changes nothing for a balanced
training set.

Pure numpy + scikit-learn (+ polars for the tables, matplotlib for the figure); no Dagster, no model: the
features come in as arrays (the text features from ``backends.embedders.sentence``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from sp_assets.core.evaluation import (
    CI_SAMPLES, CI_SEED, PairOutcome, percentile_interval, roc_auc, score_pairs, seeded_rng,
)

CONDITIONS = ("pairs", "ordinary")
DEFAULT_KS = (0, 2, 4, 8, 16, 32)
PAIR_METRICS = ("acc_unsafe", "acc_safe", "pair_accuracy", "pair_ranking", "accuracy", "roc_auc")
IMAGE_METRICS = ("acc_unsafe", "acc_safe", "accuracy", "roc_auc")

EvalSet = tuple[Any, Any, Any]  # (X, y, pair_index or None)


_POLARS_TYPES = {"String": pl.Utf8, "Int64": pl.Int64, "Int32": pl.Int32, "Float64": pl.Float64, "UInt32": pl.UInt32}


@dataclass
class ProbeResult:
    """Outcome of ``run_probe_experiment``.

    ``table``: one row per (condition, k, seed, eval_set, metric); ``k`` is the k asked for and
    ``k_used`` the k trained with (smaller when pairs or extras ran out; see ``capped``).
    ``value`` is null where a metric is undefined (ROC-AUC with one class present).
    ``summary``: mean, std (over seeds, ddof=1; 0 with one seed) and n per condition, k, eval_set,
    metric. ``skipped``: the (condition, k, seed) fits that were not made, each with its reason.
    ``capped``: k -> the k actually used, for every k that could not be met.
    """

    table: pl.DataFrame
    summary: pl.DataFrame
    skipped: list[dict[str, Any]] = field(default_factory=list)
    capped: dict[int, int] = field(default_factory=dict)
    pair_sets: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)

    def mean(self, condition: str, k: int, eval_set: str, metric: str) -> float | None:
        """The summary's mean for one cell, or None where no seed produced a value."""
        row = self.summary.filter(
            (pl.col("condition") == condition) & (pl.col("k") == k)
            & (pl.col("eval_set") == eval_set) & (pl.col("metric") == metric)
        )
        return None if row.height == 0 else row["mean"][0]

    def to_json(self) -> dict[str, Any]:
        """Everything in the result as JSON-able values (``from_json`` gives it back)."""
        return {"table": self.table.to_dicts(), "summary": self.summary.to_dicts(),
                "table_schema": {k: str(v) for k, v in self.table.schema.items()},
                "summary_schema": {k: str(v) for k, v in self.summary.schema.items()},
                "skipped": self.skipped, "capped": [[k, v] for k, v in self.capped.items()],
                "pair_sets": list(self.pair_sets),
                # the run time is left out: a stored result must not differ between runs of the same inputs
                "params": {k: v for k, v in self.params.items() if k != "seconds"}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ProbeResult":
        def frame(rows: list[dict[str, Any]], schema: dict[str, str]) -> pl.DataFrame:
            types = {k: _POLARS_TYPES[v] for k, v in schema.items()}
            return pl.DataFrame(rows, schema=types) if rows else pl.DataFrame(schema=types)

        return cls(frame(d["table"], d["table_schema"]), frame(d["summary"], d["summary_schema"]), d["skipped"],
                   {int(k): int(v) for k, v in d["capped"]}, tuple(d["pair_sets"]), d["params"])

    def headline_metric(self, eval_set: str) -> str:
        return "pair_accuracy" if eval_set in self.pair_sets else "accuracy"

    def to_markdown(self, metrics: Mapping[str, str] | None = None) -> str:
        """A k-by-condition table of each eval set's headline metric: mean ± std over seeds [95% interval]."""
        metrics = dict(metrics or {})
        lines = ["| eval set | metric | k | pairs | ordinary |", "|---|---|---:|---:|---:|"]
        for name in self.params.get("eval_sets", []):
            metric = metrics.get(name, self.headline_metric(name))
            for k in self.params.get("ks", []):
                cells = []
                for cond in CONDITIONS:
                    r = self.summary.filter(
                        (pl.col("condition") == cond) & (pl.col("k") == k)
                        & (pl.col("eval_set") == name) & (pl.col("metric") == metric)
                    )
                    if r.height == 0 or r["mean"][0] is None:
                        cells.append("n/a")
                    else:
                        cells.append(summary_cell(r.row(0, named=True)))
                k_used = self.capped.get(k, k)
                k_txt = f"{k}" if k_used == k else f"{k} (used {k_used})"
                lines.append(f"| {name} | {metric} | {k_txt} | {cells[0]} | {cells[1]} |")
        return "\n".join(lines)


def summary_cell(row: Mapping[str, Any]) -> str:
    """``0.83 ± 0.05 [0.70, 0.93]``: a summary row's mean ± std over seeds, and its interval where it has one."""
    text = f"{row['mean']:.2f} ± {row['std'] or 0.0:.2f}"
    if row.get("ci_low") is not None and row.get("ci_high") is not None:
        text += f" [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"
    return text


# -- input checks ---------------------------------------------------------------------------------


def _matrix(x: Any, name: str, dim: int | None = None) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1 and a.size == 0:
        a = a.reshape(0, dim or 0)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-d array (rows = images, columns = features), got shape {a.shape}")
    if dim is not None and a.shape[0] and a.shape[1] != dim:
        raise ValueError(f"{name} has {a.shape[1]} features but the others have {dim}")
    if a.shape[0] == 0 and dim is not None:
        a = a.reshape(0, dim)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _labels(y: Any, n: int, name: str) -> np.ndarray:
    """Binary labels, 1 = unsafe: ints/bools, or the strings 'unsafe' / 'safe'."""
    arr = np.asarray(y)
    if arr.dtype.kind in "OUS":
        bad = sorted({str(v) for v in arr.tolist()} - {"unsafe", "safe"})
        if bad:
            raise ValueError(f"{name}: labels must be 1/0 or 'unsafe'/'safe', got {bad[:5]}")
        arr = (arr == "unsafe").astype(int)
    arr = arr.astype(int).reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} labels for {n} rows")
    if not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name}: labels must be 0 (safe) or 1 (unsafe)")
    return arr


def _pair_rows(pair_index: Any, y: np.ndarray, name: str) -> list[tuple[int, int]]:
    """(unsafe row, safe row) for every pair id; each id must have exactly one row of each class."""
    ids = np.asarray(pair_index).reshape(-1)
    if ids.shape[0] != y.shape[0]:
        raise ValueError(f"eval set {name!r}: pair_index has {ids.shape[0]} entries for {y.shape[0]} rows")
    groups: dict[Any, list[int]] = {}
    for row, pid in enumerate(ids.tolist()):
        groups.setdefault(pid, []).append(row)
    out = []
    for pid, rows in groups.items():
        labels = sorted(int(y[r]) for r in rows)
        if labels != [0, 1]:
            raise ValueError(
                f"eval set {name!r}: pair {pid!r} must have one unsafe (1) and one safe (0) row, "
                f"has labels {labels}"
            )
        unsafe = rows[0] if y[rows[0]] == 1 else rows[1]
        safe = rows[1] if unsafe == rows[0] else rows[0]
        out.append((unsafe, safe))
    return out


# -- the probe ------------------------------------------------------------------------------------


def fit_probe(X: np.ndarray, y: np.ndarray, C: float = 1.0, balanced: bool = True):
    """The probe of the experiment (standardised features, logistic regression), fitted once."""
    return _fit_probe(np.asarray(X, dtype=float), np.asarray(y, dtype=int), C, balanced)


def _fit_probe(X: np.ndarray, y: np.ndarray, C: float, balanced: bool):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=C, class_weight="balanced" if balanced else None, max_iter=5000),
    )
    probe.fit(X, y)
    return probe


def _evaluate(probe, X: np.ndarray, y: np.ndarray, pairs: list[tuple[int, int]] | None
              ) -> tuple[dict[str, float | None], dict[str, np.ndarray]]:
    """The probe's metrics on one eval set, and for the metrics that are a mean over the set's units (pairs,
    or images of an unpaired set) each unit's share of it, which the intervals resample."""
    if X.shape[0] == 0:
        return {}, {}
    p = probe.predict_proba(X)[:, list(probe.classes_).index(1)]
    pred = (p >= 0.5).astype(int)
    out: dict[str, float | None] = {
        "accuracy": float(np.mean(pred == y)),
        "acc_unsafe": float(np.mean(pred[y == 1] == 1)) if (y == 1).any() else None,
        "acc_safe": float(np.mean(pred[y == 0] == 0)) if (y == 0).any() else None,
        "roc_auc": roc_auc(y.tolist(), p.tolist()),
    }
    if pairs is None:
        return out, {"accuracy": (pred == y).astype(float)}
    rating = np.where(pred == 1, "unsafe", "safe")
    scores = score_pairs([PairOutcome(rating[u], rating[s], float(p[u]), float(p[s])) for u, s in pairs])
    out.update(acc_unsafe=scores.acc_unsafe, acc_safe=scores.acc_safe,
               pair_accuracy=scores.pair_accuracy, roc_auc=scores.roc_auc)
    unsafe_ok = np.array([pred[u] == 1 for u, _ in pairs], dtype=float)
    safe_ok = np.array([pred[s] == 0 for _, s in pairs], dtype=float)
    ranking = np.array([(p[u] > p[s]) + 0.5 * (p[u] == p[s]) for u, s in pairs], dtype=float)
    out["pair_ranking"] = float(np.mean(ranking))
    return out, {"acc_unsafe": unsafe_ok, "acc_safe": safe_ok, "pair_accuracy": unsafe_ok * safe_ok,
                 "accuracy": (unsafe_ok + safe_ok) / 2, "pair_ranking": ranking}


def _ordinary_order(extra_y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random order of the pool that alternates unsafe and safe while both last.

    Its first 2k entries are k of each class when the pool has them; once a class runs out the
    rest follow in random order, so the draw still has 2k images.
    """
    pos = rng.permutation(np.flatnonzero(extra_y == 1))
    neg = rng.permutation(np.flatnonzero(extra_y == 0))
    head = [i for pair in zip(pos, neg) for i in pair]
    m = min(len(pos), len(neg))
    tail = rng.permutation(np.concatenate([pos[m:], neg[m:]])).astype(int)
    return np.concatenate([np.asarray(head, dtype=int), tail])


def _run_grid(bx, by, pu, ps, ex, ey, evals, ks, seeds, k_max, C, balanced, rows, skipped, units) -> int:
    """Every (seed, k, condition) fit and its evaluation; appends to rows / skipped / units (each cell's
    per-unit shares, one array per seed), returns the fit count."""
    n_fits = 0
    n_pairs = pu.shape[0]
    for seed in seeds:
        pair_order = np.random.default_rng([seed, 0]).permutation(n_pairs)
        extra_order = _ordinary_order(ey, np.random.default_rng([seed, 1]))
        for k in ks:
            k_used = min(k, k_max)
            for cond in CONDITIONS:
                if cond == "pairs":
                    chosen = pair_order[:k_used]
                    X = np.vstack([bx, pu[chosen], ps[chosen]])
                    y = np.concatenate([by, np.ones(k_used, int), np.zeros(k_used, int)])
                else:
                    chosen = extra_order[: 2 * k_used]
                    X = np.vstack([bx, ex[chosen]])
                    y = np.concatenate([by, ey[chosen]])
                classes = set(y.tolist())
                if len(classes) < 2:
                    reason = ("empty training set" if not classes else
                              f"training set has one class only ({'unsafe' if 1 in classes else 'safe'}, "
                              f"{len(y)} images)")
                    skipped.append({"condition": cond, "k": k, "k_used": k_used, "seed": seed, "reason": reason})
                    continue
                probe = _fit_probe(X, y, C, balanced)
                n_fits += 1
                for name, (xm, ym, pairs) in evals.items():
                    metrics, shares = _evaluate(probe, xm, ym, pairs)
                    wanted = PAIR_METRICS if pairs is not None else IMAGE_METRICS
                    for metric in wanted:
                        if metric in metrics:
                            rows.append({"condition": cond, "k": k, "k_used": k_used, "seed": seed,
                                         "eval_set": name, "metric": metric, "value": metrics[metric]})
                    for metric, share in shares.items():
                        units.setdefault((cond, k, name, metric), []).append(share)
    return n_fits


def _training_inputs(base_X: Any, base_y: Any, pair_X_unsafe: Any, pair_X_safe: Any, extra_X: Any,
                     extra_y: Any) -> tuple[np.ndarray, ...]:
    """The training matrices and labels, checked: one feature width, pair halves row-aligned."""
    pu = _matrix(pair_X_unsafe, "pair_X_unsafe")
    dim = pu.shape[1]
    ps = _matrix(pair_X_safe, "pair_X_safe", dim)
    if ps.shape[0] != pu.shape[0]:
        raise ValueError(f"pair_X_unsafe has {pu.shape[0]} rows but pair_X_safe has {ps.shape[0]}; "
                         "row i of each must be the two halves of pair i")
    bx = _matrix(base_X, "base_X", dim)
    ex = _matrix(extra_X, "extra_X", dim)
    return bx, _labels(base_y, bx.shape[0], "base_y"), pu, ps, ex, _labels(extra_y, ex.shape[0], "extra_y")


def _eval_inputs(eval_sets: Mapping[str, EvalSet], dim: int
                 ) -> dict[str, tuple[np.ndarray, np.ndarray, list[tuple[int, int]] | None]]:
    evals: dict[str, tuple[np.ndarray, np.ndarray, list[tuple[int, int]] | None]] = {}
    for name, spec in eval_sets.items():
        if len(spec) != 3:
            raise ValueError(f"eval set {name!r} must be (X, y, pair_index or None)")
        X, y, pidx = spec
        xm = _matrix(X, f"eval set {name!r}", dim)
        ym = _labels(y, xm.shape[0], f"eval set {name!r}")
        evals[name] = (xm, ym, None if pidx is None else _pair_rows(pidx, ym, name))
    return evals


def run_probe_experiment(
    base_X: Any,
    base_y: Any,
    pair_X_unsafe: Any,
    pair_X_safe: Any,
    extra_X: Any,
    extra_y: Any,
    eval_sets: Mapping[str, EvalSet],
    ks: Sequence[int] = DEFAULT_KS,
    seeds: Iterable[int] = range(5),
    C: float = 1.0,
    balanced: bool = True,
) -> ProbeResult:
    """Linear probes trained on base + k pairs (2k images) vs base + 2k ordinary images, over seeds.

    ``eval_sets`` maps a name to ``(X, y, pair_index)``: ``pair_index`` gives each row's pair id
    (each id one unsafe and one safe row) for a set of pairs, or is None for unpaired images.
    Labels are 1 = unsafe, 0 = safe (the strings 'unsafe'/'safe' work too).

    A k larger than the pairs available, or than half the ordinary pool, is capped to what both
    conditions can have (the conditions always get the same number of extra images) and recorded
    in ``capped``. A training set with one class (or none) is skipped with its reason in
    ``skipped``; the experiment never stops for it.
    """
    started = time.perf_counter()
    bx, by, pu, ps, ex, ey = _training_inputs(base_X, base_y, pair_X_unsafe, pair_X_safe, extra_X, extra_y)
    dim = pu.shape[1]
    evals = _eval_inputs(eval_sets, dim)
    ks = sorted({int(k) for k in ks})
    if any(k < 0 for k in ks):
        raise ValueError(f"ks must be >= 0, got {ks}")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds is empty")
    if C <= 0:
        raise ValueError(f"C must be > 0, got {C}")

    n_pairs = pu.shape[0]
    k_max = min(n_pairs, ex.shape[0] // 2)
    capped = {k: k_max for k in ks if k > k_max}

    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    # One BLAS thread: these matrices are tiny, and on a shared 2-core machine a threaded BLAS made
    # each lbfgs fit on 1280-d embeddings 10-40x slower (0.4 s instead of 10 ms) than one thread.
    from threadpoolctl import threadpool_limits

    units: dict[tuple[str, int, str, str], list[np.ndarray]] = {}
    with threadpool_limits(limits=1):
        n_fits = _run_grid(bx, by, pu, ps, ex, ey, evals, ks, seeds, k_max, C, balanced, rows, skipped, units)

    table = _table(rows)
    return ProbeResult(
        table=table, summary=summarise(table, units), skipped=skipped, capped=capped,
        pair_sets=tuple(n for n, (_, _, p) in evals.items() if p is not None),
        params={"ks": ks, "seeds": seeds, "C": C, "balanced": balanced, "n_base": int(bx.shape[0]),
                "n_pairs": n_pairs, "n_extra": int(ex.shape[0]), "n_features": dim,
                "eval_sets": list(evals), "n_fits": n_fits,
                "seconds": round(time.perf_counter() - started, 3)},
    )


def _table(rows: list[dict[str, Any]]) -> pl.DataFrame:
    schema = {"condition": pl.Utf8, "k": pl.Int64, "k_used": pl.Int64, "seed": pl.Int64,
              "eval_set": pl.Utf8, "metric": pl.Utf8, "value": pl.Float64}
    return pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)


def summarise(table: pl.DataFrame, units: Mapping[tuple[str, int, str, str], Sequence[np.ndarray]] | None = None
              ) -> pl.DataFrame:
    """Mean, std over seeds (ddof=1; 0 for a single seed), n and the mean's 95% interval (``ci_low`` /
    ``ci_high``, see ``_interval``; null where no per-unit shares were given), per condition / k / eval set
    / metric."""
    keys = ["condition", "k", "eval_set", "metric"]
    if table.height == 0:
        return pl.DataFrame(schema={**{k: table.schema[k] for k in keys}, "k_used": pl.Int64,
                                    "mean": pl.Float64, "std": pl.Float64, "n": pl.UInt32,
                                    "ci_low": pl.Float64, "ci_high": pl.Float64})
    summary = (
        table.group_by(keys, maintain_order=True)
        .agg(pl.col("k_used").first(), pl.col("value").mean().alias("mean"),
             pl.col("value").std(ddof=1).fill_null(0.0).alias("std"),
             pl.col("value").count().alias("n"))
        .with_columns(pl.when(pl.col("n") == 0).then(None).otherwise(pl.col("std")).alias("std"))
        .sort(keys)
    )
    bounds = [_interval(units or {}, (r["condition"], r["k"], r["eval_set"], r["metric"]))
              for r in summary.iter_rows(named=True)]
    return summary.with_columns(pl.Series("ci_low", [b[0] for b in bounds], dtype=pl.Float64),
                                pl.Series("ci_high", [b[1] for b in bounds], dtype=pl.Float64))


def _interval(units: Mapping[tuple[str, int, str, str], Sequence[np.ndarray]], cell: tuple[str, int, str, str]
              ) -> tuple[float | None, float | None]:
    """The 95% interval of a cell's mean over seeds, from resampling the eval set's units (its pairs, or its
    images): every seed's probe is scored on the same draw, so the interval is that of the seed-averaged
    figure over what the eval set happened to hold. Seeded by the cell (``evaluation.seeded_rng``)."""
    shares = units.get(cell)
    if not shares:
        return None, None
    mean_share = np.mean(np.stack(shares), axis=0)  # each unit's share of the figure, averaged over seeds
    n = mean_share.shape[0]
    rng = seeded_rng(CI_SEED, "probe", cell[0], str(cell[1]), cell[2], cell[3])
    draws = rng.multinomial(n, np.full(n, 1.0 / n), size=CI_SAMPLES).astype(float)
    return percentile_interval(draws @ mean_share / n)


# -- the figure -----------------------------------------------------------------------------------

COLORS = {"pairs": "#1f77b4", "ordinary": "#d62728"}
LABELS = {"pairs": "k counterfactual pairs (2k images)", "ordinary": "2k ordinary images"}


def plot_probe_curves(result: ProbeResult, path: str | Path, metrics: Mapping[str, str] | None = None,
                      dpi: int = 80, title: str | None = None) -> Path:
    """PNG with one panel per eval set: mean ± std over seeds of its headline metric against k.

    Headline metric: pair accuracy on sets of pairs, accuracy elsewhere (override per set with
    ``metrics``). x is the k actually used, so capped ks collapse onto the largest possible k.
    Drawn with matplotlib's Agg canvas directly (no pyplot, no global backend switch).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(result.params.get("eval_sets", [])) or sorted(set(result.summary["eval_set"].to_list()))
    metrics = dict(metrics or {})
    n = max(1, len(names))
    fig = Figure(figsize=(3.6 * n, 3.0), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, name in zip(axes, names or ["(no eval sets)"]):
        metric = metrics.get(name, result.headline_metric(name))
        for cond in CONDITIONS:
            s = (result.summary.filter((pl.col("condition") == cond) & (pl.col("eval_set") == name)
                                       & (pl.col("metric") == metric) & pl.col("mean").is_not_null())
                 .unique("k_used", keep="first", maintain_order=True).sort("k_used"))
            if s.height == 0:
                continue
            x = s["k_used"].to_numpy()
            m = s["mean"].to_numpy()
            sd = s["std"].fill_null(0.0).to_numpy()
            ax.plot(x, m, "o-", color=COLORS[cond], label=LABELS[cond], lw=1.5, ms=3)
            ax.fill_between(x, m - sd, m + sd, color=COLORS[cond], alpha=0.2, lw=0)
        ax.set_title(f"{name}: {metric.replace('_', ' ')}", fontsize=9)
        ax.set_xlabel("k (pairs added; ordinary: 2k images)", fontsize=8)
        ks = sorted(set(result.summary["k_used"].to_list())) if result.summary.height else []
        if ks and max(ks) > 0:
            ax.set_xscale("symlog", linthresh=1)
            ax.set_xticks(ks)
            ax.set_xticklabels([str(k) for k in ks])
        ax.set_ylim(-0.02, 1.02)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7, loc="best", framealpha=0.8)
    seeds = len(result.params.get("seeds", []))
    fig.suptitle(title or f"linear probe, mean ± std over {seeds} seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=dpi)
    return path


# -- features -------------------------------------------------------------------------------------


def concat_features(*blocks: Any, normalize: bool = True) -> np.ndarray:
    """Features side by side (e.g. image embedding + text embedding), one row per image.

    With ``normalize`` each block is scaled to unit length row by row first (zero rows stay zero),
    so neither block dominates by its norm; the probe standardises columns afterwards anyway.
    """
    if not blocks:
        raise ValueError("concat_features needs at least one block")
    mats = [np.asarray(b, dtype=np.float32) for b in blocks]
    for i, m in enumerate(mats):
        if m.ndim != 2:
            raise ValueError(f"block {i} must be 2-d, got shape {m.shape}")
    if len({m.shape[0] for m in mats}) != 1:
        raise ValueError(f"blocks have different numbers of rows: {[m.shape[0] for m in mats]}")
    if normalize:
        mats = [m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12) for m in mats]
    return np.hstack(mats)
