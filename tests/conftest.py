"""Shared fixtures: small, valid instances of the three contracted tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def make_programs() -> pd.DataFrame:
    return pd.DataFrame({
        "program_id": ["IM-0001", "IM-0002", "FM-0001"],
        "name": ["Alpha Hospital Program", "Beta University Program", "Gamma Program"],
        "specialty": ["Internal Medicine", "Internal Medicine", "Family Medicine"],
        "city": ["Boston", "Chicago", "Houston"],
        "state": ["MA", "IL", "TX"],
        "region": ["New England", "East North Central", "West South Central"],
        "positions": [12, 30, 8],
        "program_type": ["community", "university", "community"],
        "rate_us_md": [0.3, 0.1, np.nan],
        "rate_us_do": [0.2, 0.05, np.nan],
        "rate_us_img": [0.05, 0.0, np.nan],
        "rate_non_us_img": [0.01, 0.0, np.nan],
        "sponsors_j1": pd.array([True, False, None], dtype="boolean"),
    })


def make_applicants() -> pd.DataFrame:
    return pd.DataFrame({
        "applicant_id": ["A1", "A2", "A3", "A4"],
        "season": [2025, 2025, 2025, 2024],
        "applicant_type": ["us_md_senior", "us_do_senior", "us_img", "non_us_img"],
        "step2_ck": [250, 241, 236, 228],
        "graduation_year": [2025, 2025, 2021, 2019],
        "usce_months": [0, 0, 4, 12],
        "publications": [3, 1, 0, 7],
        "needs_visa": [False, False, False, True],
        "home_state": ["CA", "NY", "FL", None],
        "preferred_specialty": ["Internal Medicine", "Family Medicine", "Internal Medicine",
                                "Psychiatry"],
    })


def make_applications() -> pd.DataFrame:
    return pd.DataFrame({
        "applicant_id": ["A1", "A1", "A2", "A3", "A3"],
        "program_id": ["IM-0001", "IM-0002", "IM-0001", "IM-0001", "IM-0002"],
        "season": [2025, 2025, 2025, 2025, 2025],
        "signal": ["gold", "none", "signal", "none", "silver"],
        "interviewed": pd.array([True, True, False, True, None], dtype="boolean"),
        "rank_position": pd.array([1, 2, None, 1, None], dtype="Int64"),
        "matched": pd.array([True, False, False, False, None], dtype="boolean"),
        "would_take": pd.array([1, 0, 0, None, None], dtype="Int64"),
    })


@pytest.fixture
def programs_frame() -> pd.DataFrame:
    return make_programs()


@pytest.fixture
def applicants_frame() -> pd.DataFrame:
    return make_applicants()


@pytest.fixture
def applications_frame() -> pd.DataFrame:
    return make_applications()
