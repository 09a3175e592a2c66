"""Small numeric helpers shared by every stage (one definition each)."""

from __future__ import annotations

import numpy as np
from scipy.special import expit

LOGIT_CLIP = 0.005
LOG_LOSS_EPS = 1e-15
#: E[logistic(a + bZ)] ~= logistic(a / sqrt(1 + LOGISTIC_PROBIT b^2)), Z ~ N(0, 1)
LOGISTIC_PROBIT = np.pi / 8.0


def clipped_logit(p: np.ndarray | float, clip: float = LOGIT_CLIP) -> np.ndarray:
    """logit(p), p clipped to [clip, 1 - clip]: published rates of exactly 0 or 1 stay finite."""
    p = np.clip(np.asarray(p, dtype=float), clip, 1.0 - clip)
    return np.log(p / (1.0 - p))


def expected_logistic(a: np.ndarray | float, b: float) -> np.ndarray:
    """E[logistic(a + b Z)] for Z ~ N(0, 1), by the probit approximation."""
    return expit(a / np.sqrt(1.0 + LOGISTIC_PROBIT * b * b))


def log_loss(y: np.ndarray, p: np.ndarray, eps: float = LOG_LOSS_EPS) -> float:
    """Mean binary log-loss; works on single-class subsets (unlike sklearn's without labels=)."""
    y = np.asarray(y, dtype=float)
    pc = np.clip(np.asarray(p, dtype=float), eps, 1.0 - eps)
    return float(-np.mean(y * np.log(pc) + (1.0 - y) * np.log1p(-pc)))
