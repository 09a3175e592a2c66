"""Hard eligibility rules: pairs where a program cannot take the applicant, whatever the model says
(q = 0). Simulation, training, ranking and serving apply the same functions."""

from __future__ import annotations

import numpy as np
import pandas as pd


def bool_values(frame: pd.DataFrame, col: str, default: float = np.nan) -> np.ndarray:
    """A true/false column as 1.0 / 0.0, NaN where null, ``default`` where absent."""
    if col not in frame:
        return np.full(len(frame), default)
    return pd.to_numeric(frame[col].astype("boolean").astype("Float64"), errors="coerce"
                         ).to_numpy(dtype=float, na_value=np.nan)


def sponsors_visa(programs: pd.DataFrame) -> np.ndarray:
    """Programs that sponsor a J-1 or an H-1B visa; an unknown J-1 status is not a refusal."""
    j1 = np.nan_to_num(bool_values(programs, "sponsors_j1", 1.0), nan=1.0) == 1.0
    h1b = np.nan_to_num(bool_values(programs, "sponsors_h1b", 0.0), nan=0.0) == 1.0
    return j1 | h1b


def visa_blocked(pairs: pd.DataFrame) -> np.ndarray:
    """Pairs where the applicant needs a visa and the program sponsors none: a hard rule, q = 0."""
    return (bool_values(pairs, "needs_visa", 0.0) == 1.0) & ~sponsors_visa(pairs)
