"""Censored labels from real outcome data (design §2): matched 1, above 0, below unknown."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartpick_ml.contracts.errors import DataValidationError
from smartpick_ml.modelling.labels import LABEL, labels_from_outcomes, training_labels

NA = None


def _rows(applicant: str, season: int, rows: list[tuple[str, bool | None, int | None,
                                                        bool | None]]) -> list[dict]:
    return [{"applicant_id": applicant, "season": season, "program_id": p, "interviewed": i,
             "rank_position": r, "matched": m} for p, i, r, m in rows]


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    return df.astype({"interviewed": "boolean", "rank_position": "Int64", "matched": "boolean"})


def _labels(df: pd.DataFrame) -> list[int | None]:
    out = labels_from_outcomes(df)
    assert str(out.dtype) == "Int64"
    assert out.name == LABEL
    assert out.index.equals(df.index)
    return [None if pd.isna(v) else int(v) for v in out]


def test_matched_applicant_above_match_below_and_unranked() -> None:
    df = _frame(_rows("A", 2025, [
        ("P1", True, 1, False),    # ranked above the match: rejected a -> 0
        ("P2", True, 2, True),     # the match -> 1
        ("P3", True, 3, False),    # ranked below: unknown, NOT 0
        ("P4", False, NA, False),  # applied, not interviewed -> 0
        ("P5", True, NA, False),   # interviewed, not ranked by a: unknown
        ("P6", True, 4, False),    # below again
    ]))
    assert _labels(df) == [0, 1, None, 0, None, None]


def test_unmatched_applicant_gets_zero_for_every_ranked_program() -> None:
    df = _frame(_rows("B", 2025, [
        ("P1", True, 1, False), ("P2", True, 2, False), ("P3", True, 3, False),
        ("P4", False, NA, False),  # not interviewed -> 0
        ("P5", True, NA, False),   # interviewed, unranked -> unknown
    ]))
    assert _labels(df) == [0, 0, 0, 0, None]


def test_first_choice_match_leaves_everything_below_unknown() -> None:
    df = _frame(_rows("C", 2025, [("P1", True, 1, True), ("P2", True, 2, False),
                                  ("P3", True, 3, False)]))
    assert _labels(df) == [1, None, None]


def test_applicants_are_grouped_by_season_and_row_order_does_not_matter() -> None:
    # the same applicant id in two seasons: matched (at rank 2) in one, unmatched in the other
    rows = _rows("A", 2024, [("P1", True, 1, False), ("P2", True, 2, False),
                             ("P3", True, 3, False)]) + \
        _rows("A", 2025, [("P1", True, 1, False), ("P2", True, 2, True), ("P3", True, 3, False)])
    df = _frame(rows)
    assert _labels(df) == [0, 0, 0, 0, 1, None]
    perm = np.random.default_rng(0).permutation(len(df))
    shuffled = df.iloc[perm]
    assert labels_from_outcomes(shuffled).reindex(df.index).equals(labels_from_outcomes(df))


def test_match_with_missing_rank_censors_the_rest_rather_than_zeroing_it() -> None:
    # the applicant matched at P2 but its rank is not recorded: we cannot tell which programs were
    # ranked above the match, so the other ranked programs are unknown, not 0
    df = _frame(_rows("D", 2025, [("P1", True, 1, False), ("P2", True, NA, True),
                                  ("P3", True, 2, False), ("P4", False, NA, False)]))
    assert _labels(df) == [None, 1, None, 0]


def test_missing_match_outcome_is_not_read_as_unmatched() -> None:
    # where the applicant matched was not recorded for P2 / P3 (matched = NA) and no match is
    # recorded: P1, ranked above every unknown, was rejected either way; the rest are unknown
    df = _frame(_rows("E", 2025, [("P1", True, 1, False), ("P2", True, 2, NA),
                                  ("P3", True, 3, NA), ("P4", True, 4, False),
                                  ("P5", False, NA, NA)]))
    assert _labels(df) == [0, None, None, None, 0]
    # an unknown outcome on an unranked row says nothing about the ranked ones
    df = _frame(_rows("F", 2025, [("P1", True, 1, False), ("P2", True, 2, False),
                                  ("P3", NA, NA, NA)]))
    assert _labels(df) == [0, 0, None]


def test_missing_outcome_columns_are_named() -> None:
    df = _frame(_rows("A", 2025, [("P1", True, 1, True)]))
    with pytest.raises(DataValidationError) as err:
        labels_from_outcomes(df.drop(columns=["rank_position", "matched"]))
    msg = str(err.value)
    assert "rank_position" in msg and "matched" in msg and "interviewed" not in msg
    assert err.value.table == "applications"


def test_training_labels_prefer_exact_simulated_label() -> None:
    df = _frame(_rows("A", 2025, [("P1", True, 1, False), ("P2", True, 2, True),
                                  ("P3", True, 3, False)]))
    df[LABEL] = pd.array([0, 1, 1], dtype="Int64")  # the simulator knows P3 would take a
    assert training_labels(df).tolist() == [0, 1, 1]
    df[LABEL] = pd.array([None, None, None], dtype="Int64")  # no exact label: derive it
    assert [None if pd.isna(v) else int(v) for v in training_labels(df)] == [0, 1, None]


# ----------------------------------------------------------------------------- property


@st.composite
def _applicant(draw: st.DrawFn) -> dict:
    n_ranked = draw(st.integers(0, 8))
    match = draw(st.one_of(st.none(), st.integers(0, max(n_ranked - 1, 0)))) \
        if n_ranked else None
    return {"ranked": n_ranked, "match": match, "not_interviewed": draw(st.integers(0, 4)),
            "unranked": draw(st.integers(0, 4)), "season": draw(st.sampled_from([2024, 2025]))}


@settings(max_examples=150, deadline=None)
@given(applicants=st.lists(_applicant(), min_size=1, max_size=5), data=st.data())
def test_labels_follow_the_censoring_rules(applicants: list[dict], data: st.DataObject) -> None:
    rows, expected, expected_na = [], [], {}
    for k, a in enumerate(applicants):
        aid = f"A{k % 3}"  # ids repeat across seasons: grouping must use (id, season)
        key = (aid, a["season"])
        if key in expected_na:
            continue
        n_below = 0
        for pos in range(a["ranked"]):
            is_match = a["match"] == pos
            rows.append({"applicant_id": aid, "season": a["season"], "program_id": f"R{pos}",
                         "interviewed": True, "rank_position": pos + 1, "matched": is_match})
            if a["match"] is None:
                expected.append(0)            # unmatched: 0 for every ranked program
            elif is_match:
                expected.append(1)            # the match
            elif pos < a["match"]:
                expected.append(0)            # ranked above: rejected
            else:
                expected.append(None)         # ranked below: censored
                n_below += 1
        for j in range(a["not_interviewed"]):
            rows.append({"applicant_id": aid, "season": a["season"], "program_id": f"N{j}",
                         "interviewed": False, "rank_position": None, "matched": False})
            expected.append(0)
        for j in range(a["unranked"]):
            rows.append({"applicant_id": aid, "season": a["season"], "program_id": f"U{j}",
                         "interviewed": True, "rank_position": None, "matched": False})
            expected.append(None)
        expected_na[key] = n_below + a["unranked"]
    if not rows:
        return
    df = _frame(rows)
    order = data.draw(st.permutations(range(len(df))), label="row order")
    df = df.iloc[list(order)]
    expected = [expected[i] for i in order]

    got = _labels(df)
    assert got == expected
    na = labels_from_outcomes(df).isna().groupby([df["applicant_id"], df["season"]]).sum()
    for key, n in expected_na.items():
        assert na.get(key, 0) == n, key
    # every applicant with a match has exactly one 1; unmatched applicants have none
    ones = (labels_from_outcomes(df) == 1).groupby([df["applicant_id"], df["season"]]).sum()
    assert ones.isin([0, 1]).all()


# ------------------------------------------------------------------------ against the simulator


def test_censored_labels_agree_with_the_simulators_exact_labels() -> None:
    """Where the outcome data pin the label down, it is the simulator's exact ``would_take``
    (cutoff characterisation of deferred acceptance); censoring only ever hides labels."""
    from pathlib import Path

    from smartpick_ml.contracts.config import load_simulate_config
    from smartpick_ml.data.catalog import synthetic_catalog
    from smartpick_ml.simulation.season import simulate_season

    params = load_simulate_config(Path(__file__).resolve().parents[2] / "pipelines" /
                                  "simulate.toml").params
    apps = simulate_season(synthetic_catalog(seed=3), 2025, 0.02, params, seed=5).applications
    derived = labels_from_outcomes(apps.drop(columns=[LABEL]))
    known = derived.notna().to_numpy()
    exact = apps[LABEL].to_numpy(np.int64)
    assert np.array_equal(derived[known].to_numpy(np.int64), exact[known])
    # every 1 is known (the match); what is censored is ranked below the match or unranked
    assert derived.eq(1).sum() == apps["matched"].sum()
    assert 0 < (~known).sum() < len(apps)
    censored = apps[~known]
    assert censored["interviewed"].all()
    assert not censored["matched"].any()


def test_supplemental_lists_are_read_on_their_own_and_only_where_they_matched() -> None:
    """A supplemental PGY-1 list is used only if the applicant matched an advanced position: an
    unmatched one says nothing; a matched one is censored like a primary list."""
    apps = pd.DataFrame({
        "applicant_id": ["a"] * 5 + ["b"] * 4, "season": 2025,
        "rank_list": ["primary", "primary", "primary", "supplemental", "supplemental",
                      "primary", "primary", "supplemental", "supplemental"],
        "interviewed": True, "rank_position": [1, 2, 3, 4, 5, 1, 2, 3, 4],
        "matched": [False, True, False, False, False, True, False, False, True]})
    got = labels_from_outcomes(apps).tolist()
    na = pd.NA
    assert got[:5] == [0, 1, na, na, na]  # a: supplemental list not used (no match there)
    assert got[5:] == [1, na, 0, 1]  # b: matched on both lists
