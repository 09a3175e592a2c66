"""Small numeric helpers shared by every stage (one definition each)."""

from __future__ import annotations

import numpy as np

LOGIT_CLIP = 0.005
LOG_LOSS_EPS = 1e-15


def clipped_logit(p: np.ndarray | float, clip: float = LOGIT_CLIP) -> np.ndarray:
    """logit(p), p clipped to [clip, 1 - clip]: published rates of exactly 0 or 1 stay finite."""
    p = np.clip(np.asarray(p, dtype=float), clip, 1.0 - clip)
    return np.log(p / (1.0 - p))


def log_loss(y: np.ndarray, p: np.ndarray, eps: float = LOG_LOSS_EPS) -> float:
    """Mean binary log-loss; works on single-class subsets (unlike sklearn's without labels=)."""
    y = np.asarray(y, dtype=float)
    pc = np.clip(np.asarray(p, dtype=float), eps, 1.0 - eps)
    return float(-np.mean(y * np.log(pc) + (1.0 - y) * np.log1p(-pc)))
