"""Fréchet distance between Gaussians fitted to two feature sets (the core of FID and FVD).

FD = ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2}). The trace of the matrix square root is
computed from the eigenvalues of S1^{1/2} S2 S1^{1/2} (symmetric PSD, so real and >= 0 up to
round-off): no complex sqrtm, no failure on singular covariances (few samples).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Gaussian:
    mean: np.ndarray  # (D,)
    cov: np.ndarray  # (D, D)
    count: int


def fit_gaussian(features: np.ndarray) -> Gaussian:
    """Mean and (unbiased) covariance of features (N, D); needs N >= 2."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need features (N, D) with N >= 2, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("features contain NaN or inf")
    return Gaussian(mean=x.mean(0), cov=np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1]), count=x.shape[0])


def frechet_distance(a: Gaussian, b: Gaussian) -> float:
    if a.mean.shape != b.mean.shape:
        raise ValueError(f"feature sizes differ: {a.mean.shape} vs {b.mean.shape}")
    w, v = np.linalg.eigh(a.cov)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root_a @ b.cov @ root_a
    tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())
    diff = a.mean - b.mean
    # Round-off can push a zero distance slightly below 0.
    return max(0.0, float(diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2.0 * tr_sqrt))


def frechet_distance_of(features_a: np.ndarray, features_b: np.ndarray) -> float:
    return frechet_distance(fit_gaussian(features_a), fit_gaussian(features_b))
