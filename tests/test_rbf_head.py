"""The scene-text judge's head as arrays: libsvm's probabilities reproduced in numpy, stored as safetensors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.svm import SVC

from sp_assets.backends.judges.rbf_head import RBFMachine, load_head, rbf_kernel, save_head


def _fitted(n_classes: int, seed: int = 0) -> tuple[RBFMachine, SVC, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(240, 12))
    y = rng.integers(0, n_classes, len(x))
    x[:, 0] += 1.5 * y  # separable enough for a few support vectors per class, not all
    svc = SVC(C=3.0, kernel="precomputed", probability=True, random_state=0)
    machine = RBFMachine.fit(svc, x, y)
    queries = rng.normal(size=(40, 12))
    queries[:, 0] += 1.5 * rng.integers(0, n_classes, len(queries))
    return machine, svc, queries


@pytest.mark.parametrize("n_classes", [2, 3, 10])
def test_probabilities_are_libsvms_own(n_classes):
    """Two classes (scikit-learn flips their signs) and ten (the default policy's nine categories + safe)."""
    machine, svc, queries = _fitted(n_classes)
    kernel = np.zeros((len(queries), svc.shape_fit_[0]))
    kernel[:, svc.support_] = rbf_kernel(queries, machine.support_x.astype(np.float64), float(machine.gamma[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        expected = svc.predict_proba(kernel)
    got = machine.predict_proba(queries)
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-12
    assert np.allclose(got.sum(axis=1), 1.0)


def test_a_stored_head_predicts_the_same_bits_and_only_for_its_key(tmp_path):
    machine, _, queries = _fitted(4)
    path = save_head(tmp_path / "heads" / "h.safetensors", machine, "key-1", {"rows": 240})
    assert np.array_equal(load_head(path, "key-1").predict_proba(queries), machine.predict_proba(queries))
    assert load_head(path, "key-2") is None  # fitted on other rows: never used
    assert load_head(tmp_path / "absent.safetensors", "key-1") is None
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"h\.safetensors.*delete it"):
        load_head(path, "key-1")
