"""The scene-text judge's fitted head as plain arrays: an RBF support-vector machine fitted by libsvm,
predicted in numpy, stored and read back as safetensors (never a pickle).

A head is found, in this order, by its key (``head_key``: the encoder's weights, the training rows and
every setting that shapes the fit): the file shipped beside the policy's examples
(``policies/default.examples.head.safetensors``, rebuilt with ``python -m
sp_assets.backends.judges.build_head``), this machine's cache (``SP_CACHE_DIR``), or a fit here, which
is then cached. A head read back predicts the same bits as the head that was fitted: the support vectors
are fitted as float16 and kept as float16.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from sp_assets.backends.common.threads import single_threaded
from sp_assets.storage.files import atomic_write

HEAD_FORMAT = "sp-rbf-head-v1"


class RBFMachine:
    """An RBF-kernel SVC (gamma 'scale', as scikit-learn defines it), fitted by libsvm on a kernel matrix
    computed here (libsvm computing the kernel itself takes about 25 s on the default policy, this about
    2 s) and kept as plain arrays: the support vectors' features (rounded to float16, so that a head
    fitted here, read from this machine's cache or shipped beside the examples predicts the same bits),
    the one-against-one coefficients and intercepts, and the pairwise Platt sigmoids.

    ``predict_proba`` follows libsvm's ``svm_predict_probability`` (pairwise sigmoids coupled by
    ``couple_pairwise``) in numpy: the head is stored and read back as safetensors (``head_store``),
    never as a pickle, and predicting needs nothing of scikit-learn.
    Probabilities are libsvm's own (Platt scaling on internal folds, seeded). scikit-learn 1.9 deprecates
    ``SVC(probability=True)`` for removal in 1.11; its suggested replacement (``CalibratedClassifierCV``,
    sigmoid or temperature) gave near one-hot probabilities here and rated safe about four times as many
    violating rows in cross-validation, so libsvm's stay until a port.
    """

    ARRAYS = ("support_x", "n_support", "dual_coef", "intercept", "prob_a", "prob_b", "classes", "gamma")

    def __init__(self, *, support_x: np.ndarray, n_support: np.ndarray, dual_coef: np.ndarray,
                 intercept: np.ndarray, prob_a: np.ndarray, prob_b: np.ndarray, classes: np.ndarray,
                 gamma: np.ndarray):
        self.support_x = np.asarray(support_x, dtype=np.float16)
        self.n_support = np.asarray(n_support, dtype=np.int64)
        self.dual_coef = np.asarray(dual_coef, dtype=np.float64)
        self.intercept = np.asarray(intercept, dtype=np.float64)
        self.prob_a, self.prob_b = np.asarray(prob_a, np.float64), np.asarray(prob_b, np.float64)
        self.classes_ = np.asarray(classes, dtype=np.int64)
        self.gamma = np.asarray(gamma, dtype=np.float64).reshape(1)
        self._support64 = self.support_x.astype(np.float64)

    @classmethod
    def fit(cls, svc, x: np.ndarray, y: np.ndarray) -> "RBFMachine":
        """Fit ``svc`` (an ``SVC(kernel='precomputed', probability=True)``) on the RBF kernel of ``x`` rounded
        to float16 (the features are unit-length blocks; the rounding moves them by about 1e-4)."""
        x = np.asarray(x, dtype=np.float16).astype(np.float64)  # what is kept is what was fitted
        gamma = 1.0 / (x.shape[1] * x.var())
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*probability.*deprecated", category=FutureWarning)
            warnings.filterwarnings("ignore", message=".*prob[AB]_.*deprecated", category=FutureWarning)
            svc.fit(rbf_kernel(x, x, gamma), y)
            prob_a, prob_b = svc.probA_, svc.probB_
        # scikit-learn flips the sign of a two-class machine's coefficients against libsvm's; undone here.
        sign = -1.0 if len(svc.classes_) == 2 else 1.0
        return cls(support_x=x[svc.support_], n_support=svc.n_support_, dual_coef=sign * svc.dual_coef_,
                   intercept=sign * svc.intercept_, prob_a=prob_a, prob_b=prob_b, classes=svc.classes_,
                   gamma=np.array([gamma]))

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: np.ascontiguousarray(getattr(self, "classes_" if name == "classes" else name))
                for name in self.ARRAYS}

    def decision_values(self, x: np.ndarray) -> np.ndarray:
        """One-against-one decision values, one column per class pair (i, j), i < j, in libsvm's order."""
        with single_threaded():
            k = rbf_kernel(np.asarray(x, dtype=np.float64), self._support64, float(self.gamma[0]))
        starts = np.concatenate([[0], np.cumsum(self.n_support)[:-1]])
        n_cls = len(self.n_support)
        out = np.empty((len(k), n_cls * (n_cls - 1) // 2))
        p = 0
        for i in range(n_cls):
            si = slice(starts[i], starts[i] + self.n_support[i])
            for j in range(i + 1, n_cls):
                sj = slice(starts[j], starts[j] + self.n_support[j])
                out[:, p] = k[:, si] @ self.dual_coef[j - 1, si] + k[:, sj] @ self.dual_coef[i, sj] + self.intercept[p]
                p += 1
        return out

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Columns follow ``classes_``."""
        dec = self.decision_values(x)
        f = dec * self.prob_a + self.prob_b
        pos = np.exp(-np.abs(f))  # libsvm's sigmoid_predict, without cancellation on either side
        pair = np.where(f >= 0, pos / (1.0 + pos), 1.0 / (1.0 + pos))
        pair = np.clip(pair, 1e-7, 1 - 1e-7)
        n_cls = len(self.n_support)
        r = np.zeros((len(dec), n_cls, n_cls))
        p = 0
        for i in range(n_cls):
            for j in range(i + 1, n_cls):
                r[:, i, j], r[:, j, i] = pair[:, p], 1.0 - pair[:, p]
                p += 1
        return couple_pairwise(r)


def rbf_kernel(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    sq = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2.0 * a @ b.T
    return np.exp(-gamma * np.maximum(sq, 0.0))


def couple_pairwise(r: np.ndarray) -> np.ndarray:
    """Class probabilities from pairwise ones (``r[:, i, j]`` = P(i | i or j)), per row: libsvm's
    ``multiclass_probability`` (Wu, Lin and Weng 2004, method 2), its iterations and stopping rule, run on
    all rows at once (a row stops updating once it has converged)."""
    n, k, _ = r.shape
    q = -np.transpose(r, (0, 2, 1)) * r
    idx = np.arange(k)
    q[:, idx, idx] = (r ** 2).sum(axis=1) - r[:, idx, idx] ** 2
    p = np.full((n, k), 1.0 / k)
    active = np.ones(n, dtype=bool)
    eps = 0.005 / k
    for _ in range(max(100, k)):
        qp = np.einsum("ntj,nj->nt", q, p)
        pqp = (p * qp).sum(axis=1)
        active &= np.abs(qp - pqp[:, None]).max(axis=1) >= eps
        if not active.any():
            break
        a = np.flatnonzero(active)
        pa, qpa, pqpa, qa = p[a], qp[a], pqp[a], q[a]
        for t in range(k):
            diff = (-qpa[:, t] + pqpa) / qa[:, t, t]
            pa[:, t] += diff
            pqpa = (pqpa + diff * (diff * qa[:, t, t] + 2 * qpa[:, t])) / (1 + diff) / (1 + diff)
            qpa = (qpa + diff[:, None] * qa[:, t, :]) / (1 + diff)[:, None]
            pa /= (1 + diff)[:, None]
        p[a] = pa
    return p


def save_head(path: str | Path, machine: RBFMachine, key: str, info: dict[str, Any]) -> Path:
    """Write ``machine`` to ``path`` (atomically) with its key and ``info`` (how it was built) as metadata."""
    from safetensors.numpy import save_file

    metadata = {"format": HEAD_FORMAT, "key": key, "info": json.dumps(info, sort_keys=True)}
    return atomic_write(path, lambda tmp: save_file(machine.arrays(), str(tmp), metadata=metadata))


def head_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a stored head (format, key, info), without reading its arrays."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return dict(f.metadata() or {})


def load_head(path: str | Path, key: str) -> RBFMachine | None:
    """The head stored at ``path`` when it was built for ``key`` (else None: another policy, examples,
    encoder or setting). A file that cannot be read as a head raises ``ValueError`` naming it."""
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        return None
    try:
        meta = head_metadata(path)
        if meta.get("format") != HEAD_FORMAT or meta.get("key") != key:
            return None
        arrays = load_file(str(path))
        return RBFMachine(**{name: arrays[name] for name in RBFMachine.ARRAYS})
    except Exception as exc:  # safetensors' own errors, or a missing array
        raise ValueError(
            f"{path}: not a readable scene-text judge head ({type(exc).__name__}: {exc}); delete it (it is "
            "rebuilt on the next run) or rebuild it with python -m sp_assets.backends.judges.build_head."
        ) from exc
