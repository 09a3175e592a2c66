"""Fuzzing every entry point that takes outside input (issue #6).

Each test feeds hypothesis-generated input -- mostly *almost valid* (a valid example with a few
fields broken), sometimes pure junk -- and accepts exactly two outcomes:

- a correct result (checked, not just "no exception"), or
- one of SmartPick's own errors (``SmartPickError`` subclasses: ``DataValidationError``,
  ``ConfigError``, ``InputError``) whose message names the field that was broken.

Anything else -- a ``KeyError`` / ``TypeError`` / pandas ``ValueError``, NaN probabilities, a
partial output file -- fails the test. Hypothesis' per-example deadline is off (a loaded CI machine
is slow), but every example is small, so a hang would show as a stuck test.

Profiles: ``smartpick-fuzz`` (1,000 examples per test, the default suite; ``predict`` on pairs
frames, ~50 ms a call, a quarter of that on top of the 3,000 other MatchPredictor cases) and
``smartpick-fuzz-slow`` (20,000 per test), selected with ``SMARTPICK_FUZZ=slow``; both are applied
per test, so they never change other test files' hypothesis settings. All tests here carry the
``fuzz`` marker::

    .venv/bin/python -m pytest tests/system/test_fuzz.py -q --hypothesis-show-statistics
    SMARTPICK_FUZZ=slow .venv/bin/python -m pytest -m fuzz -q
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from smartpick_ml.contracts.config import load_simulate_config, load_toml, load_train_config
from smartpick_ml.contracts.errors import ConfigError, DataValidationError
from smartpick_ml.contracts.reference import SPECIALTY_BY_STEM, STATE_REGION
from smartpick_ml.contracts.schemas import validate
from smartpick_ml.data.catalog import CATALOG_COLUMNS, REQUIRED_CATALOG_COLUMNS, import_catalog
from smartpick_ml.data.io import TMP_PREFIX, read_table

REPO = Path(__file__).resolve().parents[2]

settings.register_profile(
    "smartpick-fuzz", max_examples=1000, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much])
settings.register_profile("smartpick-fuzz-slow", parent=settings.get_profile("smartpick-fuzz"),
                          max_examples=20_000)
PROFILE = "smartpick-fuzz-slow" if os.environ.get("SMARTPICK_FUZZ") == "slow" else "smartpick-fuzz"
#: applied to every test here (not loaded globally: other files keep their own settings)
FUZZ = settings(settings.get_profile(PROFILE))
#: ``predict`` on a pairs frame: the full count since ``validate`` checks small frames on numpy
#: arrays and small batches score on one thread (~40 ms -> a few ms of checks per call)
FUZZ_PREDICT = FUZZ

pytestmark = pytest.mark.fuzz


# ------------------------------------------------------------------------------ shared strategies

#: values that break a field in every way a JSON / TOML / CSV / service caller can
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["", " ", "nan", "NaN", "inf", "-inf", "1e400", "250", "250.0", "0x10",
                     "true", "None", "null", "CA", "non_us_img", "Internal Medicine", "-",
                     "\x00", "Ω", "١٢٣"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _mentions(message: str, names: set[str]) -> bool:
    return any(str(n) in message for n in names)


# ================================================================================ catalog import

CATALOG_HEADER = list(REQUIRED_CATALOG_COLUMNS) + ["In-State School", "Out-Of-State School"]
GOOD_ROW = {"Program": "Good Program", "City": "Boston", "State": "MA", "Region": "New England",
            "MD": "0.3", "DO": "0.2", "US IMG": "0.05", "Non US IMG": "0.01",
            "In-State School": "0.5", "Out-Of-State School": "0.1", "Signal": "0.4",
            "Gold Signal": "0.6", "Silver Signal": "0.2", "No Signal": "0.05"}
RATE_TEXT = st.sampled_from(["0", "1", "0.25", "0.5", "-", "1.0", " 0.3 ", "0.99"])
CELL_JUNK = st.one_of(
    st.sampled_from(["", " ", "abc", "nan", "inf", "-inf", "1e400", "-0.2", "1.4", "0x1", "1,5",
                     '"', "\n", "NA", "null", "--", "0.5.1", "ma", "ZZ", "\ufeff"]),
    st.text(max_size=6))
STEMS = sorted(SPECIALTY_BY_STEM)


@st.composite
def catalog_dirs(draw) -> dict[str, bytes]:
    """File name -> bytes of 1-2 per-specialty CSVs, each a valid file with a few cells, columns or
    bytes broken."""
    files: dict[str, bytes] = {}
    for _ in range(draw(st.integers(1, 2))):
        stem = draw(st.sampled_from(STEMS) | st.sampled_from(["Basket Weaving", "internal "
                                                              "medicine", ""]))
        header = list(CATALOG_HEADER)
        if draw(st.integers(0, 3)) == 0:
            header += draw(st.lists(st.sampled_from(list(CATALOG_COLUMNS) + ["Extra", "MD"]),
                                    max_size=2))
        if draw(st.integers(0, 5)) == 0 and header:
            header.pop(draw(st.integers(0, len(header) - 1)))
        header = draw(st.permutations(header))
        rows = []
        for i in range(draw(st.integers(0, 4))):
            row = dict(GOOD_ROW)
            row["Program"] = draw(st.sampled_from([f"Program {i}", "Good Program",
                                                   "Alpha University Program"]))
            row["City"] = draw(st.sampled_from(["Boston", "Austin", "Reno"]))
            row["State"] = draw(st.sampled_from(["MA", "TX", "NV", "PR", "DC"]))
            for c in ("MD", "DO", "US IMG", "Non US IMG", "In-State School",
                      "Out-Of-State School"):
                row[c] = draw(RATE_TEXT)
            for c in draw(st.lists(st.sampled_from(header), max_size=3)):
                row[c] = draw(CELL_JUNK)
            rows.append([row.get(c, "0.1") for c in header])
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
        writer.writerow(header)
        writer.writerows(rows)
        data = buf.getvalue().encode("utf-8")
        mode = draw(st.integers(0, 9))
        if mode == 0:  # raw byte damage: insert, cut or replace a few bytes
            pos = draw(st.integers(0, len(data)))
            data = data[:pos] + draw(st.binary(max_size=4)) + data[pos + draw(st.integers(0, 3)):]
        elif mode == 1:
            data = b"\xef\xbb\xbf" + data  # a byte-order mark
        elif mode == 2:
            data = data.replace(b",", draw(st.sampled_from([b";", b"\t", b"|"])))
        elif mode == 3:  # a trailing delimiter on every row
            data = data.replace(b"\n", b",\n").replace(b",\n", b"\n", 1)
        files[f"{stem}.csv"] = data
    return files


@FUZZ
@given(catalog_dirs())
@example({"Internal Medicine.csv": b"Program,City,State,Region,MD,DO,US IMG,Non US IMG\n"
                                   b"X,Boston,MA,New England,0.1,0.1,0.1,0.1\n"})
def test_fuzz_catalog_import(files: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for name, data in files.items():
            (d / name).write_bytes(data)
        try:
            programs = import_catalog(d)
        except DataValidationError as exc:
            assert exc.problems and all(p for p in exc.problems)
            assert exc.table.startswith("programs")
            return
    # a correct result: every data row became one valid program
    assert len(programs) >= 1
    pd.testing.assert_frame_equal(validate(programs, "programs"), programs)
    assert programs["program_id"].is_unique
    assert not programs.duplicated(["specialty", "name"]).any()
    for col in ("rate_us_md", "rate_us_do", "rate_us_img", "rate_non_us_img"):
        v = programs[col].dropna()
        assert ((v >= 0) & (v <= 1)).all()


# ============================================================================ the three tables

def _base_tables() -> dict[str, pd.DataFrame]:
    from conftest import make_applicants, make_applications, make_programs

    return {"programs": make_programs(), "applicants": make_applicants(),
            "applications": make_applications()}


BASE_TABLES = _base_tables()
#: columns tied by a table rule: breaking one may be reported under another
RELATED = [{"needs_visa", "applicant_type"}, {"graduation_year", "season"},
           {"matched", "interviewed", "rank_position", "applicant_id", "season", "program_id"}]


def _closure(cols: set[str]) -> set[str]:
    out = set(cols)
    for group in RELATED:
        if out & group:
            out |= group
    return out


@st.composite
def broken_tables(draw) -> tuple[str, pd.DataFrame, set[str]]:
    """(table, frame, columns touched): a valid table with cells, columns or rows broken."""
    table = draw(st.sampled_from(sorted(BASE_TABLES)))
    df = BASE_TABLES[table].copy()
    touched: set[str] = set()
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["cell", "cell", "cell", "column", "drop", "dtype",
                                       "duplicate_row"]))
        col = draw(st.sampled_from(list(df.columns)))
        if action == "cell":
            row = draw(st.integers(0, len(df) - 1))
            values = df[col].astype(object).tolist()
            valid = BASE_TABLES[table][col].dropna().tolist() if col in BASE_TABLES[table] else []
            values[row] = draw(JUNK | st.sampled_from(valid)) if valid else draw(JUNK)
            df[col] = pd.Series(values, dtype=object, index=df.index).infer_objects()
        elif action == "column":
            df[col] = [draw(JUNK) for _ in range(len(df))]
        elif action == "drop":
            df = df.drop(columns=[col])
        elif action == "dtype":
            dtype = draw(st.sampled_from(["string", "category", object, "Float64", float]))
            try:
                df[col] = df[col].astype(dtype)
            except (TypeError, ValueError):
                continue
        else:
            df = pd.concat([df, df.iloc[[draw(st.integers(0, len(df) - 1))]]], ignore_index=True)
            col = "key"
        touched.add(col)
    return table, df, touched


def _check_validation_outcome(table: str, df: pd.DataFrame, touched: set[str], read,
                              same_rows: bool = True) -> None:
    try:
        out = read()
    except DataValidationError as exc:
        assert exc.table == table
        message = str(exc)
        named = _closure(touched) | {"key (", "file", "empty", "header", "CSV", "Parquet",
                                     "columns"}
        assert _mentions(message, named), (touched, message)
        return
    # passed: a valid table (of the same rows, unless the file was cut), stable under validation
    assert len(out) >= 1
    if same_rows:
        assert len(out) == len(df)
    pd.testing.assert_frame_equal(validate(out, table), out)


@FUZZ
@given(broken_tables(), st.sampled_from(["frame", "frame", "csv", "parquet"]), st.integers(0, 6))
def test_fuzz_tables(case: tuple[str, pd.DataFrame, set[str]], via: str, damage: int) -> None:
    """Broken tables given to ``schemas.validate`` directly, or written to CSV / Parquet (sometimes
    with the bytes cut or damaged) and read back with ``io.read_table``."""
    table, df, touched = case
    if via == "frame":
        _check_validation_outcome(table, df, touched, lambda: validate(df, table))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{table}.{via}"
        try:
            if via == "csv":
                df.to_csv(path, index=False)
            else:
                df.to_parquet(path, index=False)
        except Exception:  # pandas / pyarrow cannot write this frame: nothing to read
            return
        if damage == 0:  # cut in half: a CSV may still be a valid, shorter table
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
            touched = touched | {"line", "column"}
        elif damage == 1:
            path.write_bytes(b"\x00\xff" + path.read_bytes())
            touched = touched | {"UTF-8", "line"}
        _check_validation_outcome(table, df, touched, lambda: read_table(path, table),
                                  same_rows=damage > 1)
        # a read never leaves anything behind
        assert sorted(p.name for p in Path(tmp).iterdir()) == [path.name]


# =========================================================================== pipeline configs

def _toml_key(k: Any) -> str:
    return json.dumps(str(k), ensure_ascii=False)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    if v is None:
        return '""'  # TOML has no null
    raise TypeError(type(v))


def to_toml(doc: dict[str, Any]) -> str:
    """Any dict as TOML (nested dicts as inline tables; TOML has no null, so None -> "")."""
    return "\n".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in doc.items()) + "\n"


BASE_SIMULATE = load_toml(REPO / "pipelines" / "simulate.toml")
BASE_TRAIN = load_toml(REPO / "pipelines" / "train.toml")
TOML_JUNK = st.one_of(
    st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -1.0, 1e308]),
    st.sampled_from(["", "auto", "never", "always", "2025", "isotonic"]),
    st.lists(st.integers(2000, 2030), max_size=3), st.dictionaries(st.text(max_size=3),
                                                                     st.integers(), max_size=2))


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append((*prefix, k))
            out.extend(_paths(v, (*prefix, k)))
    return out


def _set(doc: dict, path: tuple, value: Any) -> None:
    for k in path[:-1]:
        doc = doc[k]
    doc[path[-1]] = value


def _delete(doc: dict, path: tuple) -> None:
    for k in path[:-1]:
        doc = doc[k]
    del doc[path[-1]]


@st.composite
def broken_configs(draw) -> tuple[str, str, set[str]]:
    """(kind, TOML text, names that an error must mention)."""
    kind = draw(st.sampled_from(["simulate", "train"]))
    doc = json.loads(json.dumps(BASE_SIMULATE if kind == "simulate" else BASE_TRAIN))
    names: set[str] = set()
    if draw(st.integers(0, 19)) == 0:  # not TOML at all
        return kind, draw(st.text(max_size=40)), {"TOML", "Field required", "unknown key"}
    for _ in range(draw(st.integers(0, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["set", "set", "delete", "unknown"]))
        if action == "set":
            _set(doc, path, draw(TOML_JUNK))
        elif action == "delete":
            _delete(doc, path)
        else:
            parent = path[:-1]
            target = doc
            for k in parent:
                target = target[k]
            key = draw(st.sampled_from(["extra", "seed ", "Seed", "max_iters"]))
            target[key] = 1
            path = (*parent, key)
        names.update(str(p) for p in path)
    related = {"train_seasons": "validation_season", "validation_season": "training season"}
    names |= {related[n] for n in list(names) if n in related}
    return kind, to_toml(doc), names


@FUZZ
@given(broken_configs())
def test_fuzz_pipeline_configs(case: tuple[str, str, set[str]]) -> None:
    kind, text, names = case
    loader = load_simulate_config if kind == "simulate" else load_train_config
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{kind}.toml"
        path.write_text(text, encoding="utf-8")
        try:
            cfg = loader(path)
        except ConfigError as exc:
            message = str(exc)
            assert path.name in message
            assert _mentions(message, names | {"TOML"}), (names, message)
            return
    # accepted: the config is what the file says and dumps to a document that loads again
    again = type(cfg).model_validate(cfg.model_dump())
    assert again == cfg
    if kind == "simulate":
        assert cfg.seasons == sorted(set(cfg.seasons)) and cfg.scale > 0
        assert all(math.isfinite(v) for v in _floats(cfg.model_dump()))
    else:
        assert cfg.data.validation_season not in cfg.data.train_seasons
        assert all(math.isfinite(v) for v in _floats(cfg.model_dump()))


def _floats(obj: Any) -> list[float]:
    if isinstance(obj, dict):
        return [f for v in obj.values() for f in _floats(v)]
    if isinstance(obj, list):
        return [f for v in obj for f in _floats(v)]
    return [obj] if isinstance(obj, float) else []


# ======================================================================= MatchPredictor inputs
#
# One predictor, loaded once from the small trained world; ranking within the smallest specialty
# keeps each example cheap. OpenMP is limited to one thread (on a loaded 2-core machine its
# spin-waiting makes each tiny prediction ~10x slower).

SPECIALTY = "Thoracic Surgery"
VALID_APPLICANT = {"applicant_type": "non_us_img", "step2_ck": 241, "graduation_year": 2021,
                   "season": 2026, "usce_months": 6, "publications": 2, "needs_visa": True,
                   "home_state": "NY", "preferred_specialty": SPECIALTY, "signals": {}}
VALID_PREFS = {"states": ["NY", "NJ"], "regions": ["Middle Atlantic"],
               "program_type": "university", "location_weight": 1.0,
               "img_support_weight": 0.5, "university_weight": 0.25, "visa_weight": 0.5}
FIELD_VALUES = {
    "applicant_type": st.sampled_from(["us_md_senior", "us_do_senior", "us_img", "non_us_img"]),
    "step2_ck": st.integers(140, 310),
    "graduation_year": st.integers(1945, 2030),
    "season": st.integers(1999, 2101),
    "usce_months": st.integers(-2, 250),
    "publications": st.integers(-1, 1001),
    "needs_visa": st.booleans(),
    "home_state": st.sampled_from([*sorted(STATE_REGION)[:5], None, "ZZ", "ny"]),
    "preferred_specialty": st.sampled_from([SPECIALTY, "Astrology", None]),
    "states": st.lists(st.sampled_from(["NY", "CA", "ZZ", ""]), max_size=3),
    "regions": st.lists(st.sampled_from(["Middle Atlantic", "Pacific", "Mars"]), max_size=2),
    "program_type": st.sampled_from(["university", "community", "any", "both"]),
    "location_weight": st.floats(-1, 6) | st.just(math.nan),
    "img_support_weight": st.floats(-1, 6) | st.just(math.nan),
    "university_weight": st.floats(-1, 6) | st.just(math.nan),
    "visa_weight": st.floats(-1, 6) | st.just(math.nan),
}


@st.composite
def broken_mapping(draw, base: dict[str, Any], what: str) -> tuple[Any, set[str]]:
    """(value, names an error may mention): ``base`` with a few fields changed, dropped or added;
    now and then not a mapping at all."""
    if draw(st.integers(0, 24)) == 0:
        return draw(JUNK | st.just([base])), {what}
    doc = dict(base)
    touched: set[str] = set()
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(sorted(base)))
        action = draw(st.sampled_from(["plausible", "plausible", "junk", "drop", "unknown"]))
        if action == "plausible" and key in FIELD_VALUES:
            doc[key] = draw(FIELD_VALUES[key])
        elif action == "drop":
            doc.pop(key, None)
        elif action == "unknown":
            key = draw(st.sampled_from(["applicant_id", "name", "Step2_CK", "extra"]))
            doc[key] = draw(JUNK)
        else:
            doc[key] = draw(JUNK)
        touched.add(key)
    if "signals" in touched and isinstance(doc.get("signals"), dict) and draw(st.booleans()):
        doc["signals"] = {draw(st.sampled_from(["TS-0001", "TS-0002", "IM-0001", "", "x"])):
                          draw(st.sampled_from(["signal", "gold", "silver", "none", 1]))}
    # cross-field rules name one field for a pair
    if touched & {"applicant_type", "needs_visa"}:
        touched |= {"needs_visa"}
    if touched & {"graduation_year", "season"}:
        touched |= {"graduation_year"}
    return doc, touched | {f"{what}:"}


@pytest.fixture(scope="module")
def predictor(small_training_run):
    from smartpick_ml.inference.predictor import MatchPredictor

    w = small_training_run
    return MatchPredictor.load(w.model_dir, programs=w.raw_dir / "programs.parquet")


@pytest.fixture(scope="module")
def one_thread():
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def _expect_input_error(call, names: set[str]) -> Any:
    """Run ``call``; return its result, or check that its error is ours and names a field."""
    from smartpick_ml.inference.predictor import InputError

    try:
        return call()
    except (InputError, DataValidationError) as exc:
        message = str(exc)
        assert message
        assert _mentions(message, names), (names, message)
        return None


def _check_ranked(ranked: pd.DataFrame, n_expected: int) -> None:
    assert len(ranked) == n_expected
    q = ranked["q"].to_numpy(float)
    assert np.isfinite(q).all() and ((q >= 0) & (q <= 1)).all()
    u = ranked["utility"].to_numpy(float)
    assert np.isfinite(u).all() and (u >= 1).all()
    np.testing.assert_allclose(ranked["ev"].to_numpy(float), q * u)
    eligible = ranked["eligible"].to_numpy(bool)
    assert not (~eligible[:-1] & eligible[1:]).any()  # eligible programs first
    ev = ranked["ev"].to_numpy(float)[eligible]
    assert (np.diff(ev) <= 1e-12).all()


@FUZZ
@given(broken_mapping(VALID_APPLICANT, "applicant"), broken_mapping(VALID_PREFS, "preferences"),
       st.one_of(st.none(), st.integers(-2, 50), JUNK), st.integers(0, 19))
def test_fuzz_rank(predictor, one_thread, applicant, preferences, k, explain) -> None:
    (app, app_names), (prefs, pref_names) = applicant, preferences
    names = app_names | pref_names | {"k:", "specialty"}
    explain = explain == 0  # explanations cost ~7 model calls: one example in 20
    ranked = _expect_input_error(
        lambda: predictor.rank(app, prefs, specialty=SPECIALTY, k=k, explain=explain), names)
    if ranked is None:
        return
    n_specialty = int((predictor.programs["specialty"] == SPECIALTY).sum())
    _check_ranked(ranked, min(k, n_specialty) if k is not None else n_specialty)
    assert (ranked["specialty"] == SPECIALTY).all()
    if explain:
        assert ranked["top_factors"].map(lambda t: isinstance(t, str)).all()


@FUZZ
@given(broken_mapping(VALID_APPLICANT, "applicant"),
       st.one_of(st.lists(st.integers(0, 40), min_size=0, max_size=6), JUNK),
       st.lists(st.sampled_from(["NOPE-1", "", "TS-0001"]), max_size=1))
def test_fuzz_match_probability(predictor, one_thread, applicant, picks, extra) -> None:
    app, names = applicant
    ids = predictor.programs.loc[predictor.programs["specialty"] == SPECIALTY, "program_id"]
    if isinstance(picks, list) and all(isinstance(i, int) for i in picks):
        rank_list: Any = [ids.iloc[i % len(ids)] for i in picks] + extra
    else:
        rank_list = picks
    res = _expect_input_error(lambda: predictor.match_probability(app, rank_list),
                              names | {"rank_list"})
    if res is None:
        return
    p = res["ranks"]["p_match_here"].to_numpy(float)
    assert np.isfinite(p).all() and (p >= 0).all()
    assert res["p_match"] == pytest.approx(p.sum())
    assert res["p_match"] + res["p_unmatched"] == pytest.approx(1.0)
    assert 0 <= res["p_match_corrected"] <= 1 and math.isfinite(res["expected_utility"])


@FUZZ
@given(broken_mapping(VALID_APPLICANT, "applicant"), broken_mapping(VALID_PREFS, "preferences"),
       st.one_of(st.none(), st.integers(-1, 60), JUNK),
       st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), JUNK))
def test_fuzz_plan(predictor, one_thread, applicant, preferences, max_applications,
                   budget) -> None:
    (app, app_names), (prefs, pref_names) = applicant, preferences
    names = app_names | pref_names | {"budget", "max_applications", "specialty"}
    res = _expect_input_error(
        lambda: predictor.plan(app, prefs, specialty=SPECIALTY, max_applications=max_applications,
                               budget=budget), names)
    if res is None:
        return
    t = res["table"]
    assert len(t) >= 1 and t["h"].tolist() == list(range(1, len(t) + 1))
    assert np.isfinite(t["p_match"].to_numpy(float)).all()
    assert (np.diff(t["p_match"].to_numpy(float)) >= -1e-9).all()
    if budget is not None:
        assert res["fee_usd"] <= budget
    if max_applications is not None:
        assert len(t) <= max_applications


PAIR_JUNK = st.one_of(JUNK, st.just(pd.NA), st.just(np.nan), st.just(np.int64(2**62)))


@FUZZ_PREDICT
@given(st.data())
def test_fuzz_predict_pairs(predictor, one_thread, data) -> None:
    """Pairs frames (what a service sends to the model directly) with cells or columns broken."""
    from smartpick_ml.contracts.pairs import PAIR_INPUT_COLUMNS, applicant_pairs

    programs = predictor.programs[predictor.programs["specialty"] == SPECIALTY].iloc[:3]
    applicant = {k: v for k, v in VALID_APPLICANT.items() if k not in ("signals",)}
    pairs = applicant_pairs(applicant, programs)[list(PAIR_INPUT_COLUMNS)]
    touched: set[str] = set()
    for _ in range(data.draw(st.integers(0, 3))):
        col = data.draw(st.sampled_from(list(pairs.columns)))
        action = data.draw(st.sampled_from(["cell", "cell", "column", "drop", "rows"]))
        if action == "cell" and len(pairs):
            values = pairs[col].astype(object).tolist()
            values[data.draw(st.integers(0, len(values) - 1))] = data.draw(PAIR_JUNK)
            pairs[col] = pd.Series(values, dtype=object).infer_objects()
        elif action in ("column", "cell"):
            pairs[col] = [data.draw(PAIR_JUNK)] * len(pairs)
        elif action == "drop":
            pairs = pairs.drop(columns=[col])
        else:
            pairs = pairs.iloc[: data.draw(st.integers(0, 2))]
            col = "empty"
        touched.add(col)
    q = _expect_input_error(lambda: predictor.predict(pairs), touched | {"pairs"})
    if q is None:
        return
    assert q.shape == (len(pairs),)
    assert np.isfinite(q).all() and ((q >= 0) & (q <= 1)).all()


# ===================================================================== CLI profile files

@st.composite
def profile_files(draw) -> tuple[str, bytes]:
    """(suffix, bytes) of a profile file: JSON or TOML of a (broken) profile, or junk."""
    applicant, _ = draw(broken_mapping(VALID_APPLICANT, "applicant"))
    prefs, _ = draw(broken_mapping(VALID_PREFS, "preferences"))
    mode = draw(st.integers(0, 9))
    if mode <= 4 and isinstance(applicant, dict):
        doc = dict(applicant)
        if draw(st.booleans()):
            doc["preferences"] = prefs
        return ".json", json.dumps(doc, default=str).encode()
    if mode <= 6 and isinstance(applicant, dict):
        doc = {k: v for k, v in applicant.items() if v is not None}
        if isinstance(prefs, dict) and draw(st.booleans()):
            doc["preferences"] = {k: v for k, v in prefs.items() if v is not None}
        try:
            return ".toml", to_toml(doc).encode()
        except TypeError:
            return ".toml", b"x = 1\n"
    if mode == 7:  # deeply nested
        depth = draw(st.sampled_from([10, 1000, 100_000]))
        return draw(st.sampled_from([".json", ".toml"])), (
            b"{\"a\": " + b"[" * depth + b"]" * depth + b"}" if draw(st.booleans())
            else b"a = " + b"[" * depth + b"]" * depth)
    return draw(st.sampled_from([".json", ".toml", ".txt"])), draw(
        st.binary(max_size=30) | st.sampled_from([b"", b"[]", b"null", b"\"x\"", b"NaN",
                                                  b"{\"step2_ck\": NaN}", b"\xef\xbb\xbf{}"]))


@pytest.fixture(scope="module")
def cli_with_predictor(predictor):
    """The CLI with ``MatchPredictor.load`` answering from the already-loaded predictor (loading
    the artifact is not what is fuzzed here, and costs a second per call)."""
    from smartpick_ml.inference.predictor import MatchPredictor

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MatchPredictor, "load", classmethod(lambda cls, *a, **k: predictor))
        yield


@FUZZ
@given(profile_files(), st.sampled_from(["20", "1", "0", "-3", "x"]),
       st.sampled_from([".csv", ".json"]))
def test_fuzz_cli_rank_profile(cli_with_predictor, predictor, one_thread, profile, top,
                               out_suffix) -> None:
    from smartpick_ml.cli import main

    suffix, data = profile
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"profile{suffix}"
        path.write_bytes(data)
        out = Path(tmp) / "out" / f"ranked{out_suffix}"
        result = CliRunner().invoke(main, ["rank", "--profile", str(path), "--specialty",
                                           SPECIALTY, "--top", top, "--out", str(out)])
        if result.exit_code == 0:
            assert out.is_file()
            frame = (pd.read_json(out) if out_suffix == ".json" else pd.read_csv(out))
            # --top is what the terminal shows; --out holds every program of the specialty
            _check_ranked(frame, int((predictor.programs["specialty"] == SPECIALTY).sum()))
        else:
            # a clear error (exit 2: click usage errors and SmartPick errors), no traceback, and
            # no output file -- whole or partial
            assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
            assert isinstance(result.exception, SystemExit)
            assert "rror" in result.output
            assert not out.exists()
        leftovers = [p for p in Path(tmp).rglob(f"{TMP_PREFIX}*")]
        assert not leftovers


# ================================================================== regressions found by fuzzing


@pytest.mark.parametrize("field, section", [("score_weight", "params"),
                                            ("interview_noise_sd", "params")])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_regression_non_finite_config_values_are_refused(tmp_path, field, section, value):
    """Found by fuzzing: TOML `nan` / `inf` passed pydantic's float checks, so a simulation could
    run with a NaN weight."""
    doc = json.loads(json.dumps(BASE_SIMULATE))
    doc[section][field] = float(value)
    path = tmp_path / "simulate.toml"
    path.write_text(to_toml(doc), encoding="utf-8")
    with pytest.raises(ConfigError, match=f"{section}.{field}: Input should be a finite number"):
        load_simulate_config(path)


@pytest.mark.parametrize("budget", ["500", [], [500], {"usd": 500}, True, -(2**63) - 1])
def test_regression_plan_budget_of_the_wrong_type(predictor, budget):
    """Found by fuzzing: a budget that is not a number raised numpy's TypeError / ValueError."""
    from smartpick_ml.inference.predictor import InputError

    with pytest.raises(InputError, match="budget: must be a positive number"):
        predictor.plan(VALID_APPLICANT, specialty=SPECIALTY, budget=budget)


def test_regression_predict_takes_pd_na_as_null(predictor, one_thread):
    """Found by fuzzing: a nullable column of pd.NA (home_state) raised "boolean value of NA is
    ambiguous" in the features; it means the same as None."""
    from smartpick_ml.contracts.pairs import PAIR_INPUT_COLUMNS, applicant_pairs

    programs = predictor.programs[predictor.programs["specialty"] == SPECIALTY].iloc[:3]
    applicant = {k: v for k, v in VALID_APPLICANT.items() if k != "signals"}
    pairs = applicant_pairs({**applicant, "home_state": None}, programs)[list(PAIR_INPUT_COLUMNS)]
    expected = predictor.predict(pairs)
    pairs["home_state"] = pd.Series([pd.NA] * len(pairs), dtype=object)
    np.testing.assert_array_equal(predictor.predict(pairs), expected)


@pytest.mark.parametrize("column, value", [("needs_visa", "yes"), ("applicant_type", ["us_img"]),
                                           ("positions", "12"), ("rate_us_md", "0.3"),
                                           ("home_state", 7), ("signal", "platinum")])
def test_regression_predict_rejects_values_of_the_wrong_type(predictor, one_thread, column, value):
    """Found by fuzzing: text in a bool / number column of a pairs frame reached the features and
    raised pandas' TypeError ("Need to pass bool-like values", "unhashable type: 'list'")."""
    from smartpick_ml.contracts.pairs import PAIR_INPUT_COLUMNS, applicant_pairs

    programs = predictor.programs[predictor.programs["specialty"] == SPECIALTY].iloc[:2]
    applicant = {k: v for k, v in VALID_APPLICANT.items() if k != "signals"}
    pairs = applicant_pairs(applicant, programs)[list(PAIR_INPUT_COLUMNS)]
    assert np.isfinite(predictor.predict(pairs)).all()
    pairs[column] = pd.Series([value, value], dtype=object)
    with pytest.raises(DataValidationError, match=f"column '{column}'"):
        predictor.predict(pairs)


@pytest.mark.parametrize("suffix, text", [(".json", "[" * 100_000 + "]" * 100_000),
                                          (".toml", "a = " + "[" * 100_000 + "]" * 100_000)])
def test_regression_deeply_nested_profile_is_a_clear_error(tmp_path, suffix, text):
    """Found by fuzzing: a deeply nested JSON / TOML profile crashed `smartpick rank` with a
    RecursionError traceback (exit 1) instead of the usual one-line error (exit 2)."""
    from smartpick_ml.cli import main

    path = tmp_path / f"profile{suffix}"
    path.write_text(text)
    result = CliRunner().invoke(main, ["rank", "--profile", str(path)])
    assert result.exit_code == 2, result.exception
    assert "error: profile: profile" in result.output and "is not valid" in result.output
