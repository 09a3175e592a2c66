"""The program catalog: import of the real ERAS files, clear errors for broken ones, and the
synthetic catalog a bare clone runs on."""

from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smartpick_ml.contracts.errors import DataValidationError
from smartpick_ml.contracts.reference import (
    ADVANCED_SHARE,
    CATALOG_PROGRAM_COUNTS,
    CATALOG_SPECIALTIES,
    PGY1_ONLY_SPECIALTIES,
    REGIONS,
    SEED_PROGRAMS,
    SPECIALTIES,
    SPECIALTY_BY_NAME,
    SPECIALTY_BY_STEM,
    SPECIALTY_NAMES,
    STATE_REGION,
    TRACKS,
)
from smartpick_ml.contracts.schemas import PROGRAMS, validate
from smartpick_ml.data.catalog import (
    CATALOG_COLUMNS,
    HOST_RATE_COLUMNS,
    J1_IF_INTERVIEWS_NON_US_IMGS,
    RATE_COLUMNS,
    assign_positions,
    catalog_figures,
    derive_img_support,
    derive_military,
    derive_pgy1_programs,
    finish_programs,
    import_catalog,
    stable_uniform,
    synthetic_catalog,
)

REAL_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "program_interview_rates"
SIGNAL_SOURCES = {"Signal": "single", "Gold Signal": "gold_silver", "Silver Signal": "gold_silver"}


@pytest.fixture(scope="module")
def real() -> pd.DataFrame:
    if not REAL_DIR.is_dir():
        pytest.skip(f"real catalog not present at {REAL_DIR}")
    return import_catalog(REAL_DIR)


@pytest.fixture(scope="module")
def raw() -> dict[str, list[dict[str, str]]]:
    """The real files as plain text rows (csv module, not the code under test), by specialty."""
    if not REAL_DIR.is_dir():
        pytest.skip(f"real catalog not present at {REAL_DIR}")
    out = {}
    for path in sorted(REAL_DIR.glob("*.csv")):
        with open(path, newline="", encoding="utf-8-sig") as fh:
            out[SPECIALTY_BY_STEM[path.stem].name] = list(csv.DictReader(fh))
    return out


@pytest.fixture(scope="module")
def synthetic() -> pd.DataFrame:
    return synthetic_catalog(seed=0)


# ------------------------------------------------------------------------- real catalog


#: the published PGY-1-only programs (NRMP 2025): 329 + 261 + 236
PGY1_PROGRAMS = 826


def test_real_counts(real):
    assert len(real) == 4777 + PGY1_PROGRAMS
    assert real["specialty"].nunique() == 25
    assert set(real["specialty"]) == set(SPECIALTY_NAMES)
    counts = real["specialty"].value_counts().to_dict()
    assert {s.name: counts[s.name] for s in CATALOG_SPECIALTIES} == CATALOG_PROGRAM_COUNTS


def test_real_ids_and_names_unique(real):
    assert real["program_id"].is_unique
    codes = real["specialty"].map(lambda s: SPECIALTY_BY_NAME[s].code)
    assert (real["program_id"].str.rsplit("-", n=1).str[0] == codes).all()
    assert real["program_id"].str.fullmatch(r"[A-Z]+-\d{4}").all()
    assert not real.duplicated(["specialty", "name"]).any()


DUPLICATED_SITES = {
    "Family Medicine": [("Campbell University Program", ["Elkin", "Lumberton"]),
                        ("McLaren Health Care Corporation Program", ["Port Huron", "Petoskey"]),
                        ("University of Kansas School of Medicine Program",
                         ["Kansas City", "Olathe"])],
    "Internal Medicine": [("McLaren Health Care Corporation Program", ["Port Huron", "Bay City"]),
                          ("Prime South GME Consortium Program", ["Riverdale", "Harlingen"])],
    "Psychiatry": [("University of Alabama Hospital Program", ["Huntsville", "Montgomery"])],
}


def test_real_duplicate_names_kept_apart_by_city(real, raw):
    n_dup = 0
    for specialty, rows in raw.items():
        names = pd.Series([r["Program"] for r in rows])
        dup = sorted(set(names[names.duplicated()]))
        assert dup == sorted(n for n, _ in DUPLICATED_SITES.get(specialty, []))
        n_dup += len(dup)
    assert n_dup == 6
    for specialty, sites in DUPLICATED_SITES.items():
        progs = real[real["specialty"] == specialty].set_index("name")
        for name, cities in sites:
            assert name not in progs.index  # the bare name would be ambiguous
            for city in cities:
                assert progs.loc[f"{name} ({city})", "city"] == city


def test_real_seed_programs_findable(real):
    for name, city, state, specialty in SEED_PROGRAMS:
        hit = real[(real["name"] == name) & (real["specialty"] == specialty)]
        assert len(hit) == 1, name
        assert (hit["city"].item(), hit["state"].item()) == (city, state)
        assert hit["img_mentorship"].item() and hit["img_orientation"].item()


def _raw_key(specialty: str, rows: list[dict[str, str]]) -> list[tuple[str, str]]:
    names = pd.Series([r["Program"] for r in rows])
    dup = names.duplicated(keep=False)
    return [(specialty, f"{r['Program']} ({r['City']})" if d else r["Program"])
            for r, d in zip(rows, dup, strict=True)]


def test_real_values_match_the_files_and_suppressed_are_null(real, raw):
    """Every rate cell: '-' -> null, otherwise the number in the file; every other rate column
    (one the file does not have) is null."""
    by_key = real.set_index(["specialty", "name"])
    n_suppressed = 0
    for specialty, rows in raw.items():
        keys = _raw_key(specialty, rows)
        got = by_key.loc[keys]
        for src, dst in CATALOG_COLUMNS.items():
            col = got[dst].to_numpy()
            if src not in rows[0]:
                assert np.isnan(col).all(), (specialty, dst)
                continue
            text = [r[src].strip() for r in rows]
            suppressed = np.array([t == "-" for t in text])
            n_suppressed += int(suppressed.sum())
            assert np.isnan(col[suppressed]).all()
            expected = np.array([float(t) for t in np.array(text)[~suppressed]])
            np.testing.assert_array_equal(col[~suppressed], expected, err_msg=f"{specialty} {src}")
        assert list(got["city"]) == [r["City"] for r in rows]
        assert list(got["state"]) == [r["State"] for r in rows]
    assert n_suppressed > 5000  # the files do suppress a lot: the check above is not vacuous


def test_real_positions(real):
    assert real["positions"].dtype == np.int64
    assert (real["positions"] >= 1).all()
    sums = real.groupby("specialty")["positions"].sum()
    for s in SPECIALTIES:
        assert sums[s.name] == s.positions_2026, s.name
    # university programs are larger on average (the documented 1.6x weight)
    by_type = real.groupby("program_type")["positions"].mean()
    assert by_type["university"] > by_type["community"]


def test_real_region_derived_from_state(real, raw):
    assert (real["region"] == real["state"].map(STATE_REGION)).all()
    assert set(real["region"]) <= set(REGIONS)
    # the files truncate some division names; the import must not carry them over
    truncated = {r["Region"] for rows in raw.values() for r in rows} - set(REGIONS)
    assert truncated  # e.g. 'Middle Atlanti'
    assert not set(real["region"]) & truncated


def test_real_signal_columns_only_where_the_file_has_them(real, raw):
    for specialty, rows in raw.items():
        header = set(rows[0])
        g = real[real["specialty"] == specialty]
        for src in ("Signal", "Gold Signal", "Silver Signal", "No Signal"):
            present = g[CATALOG_COLUMNS[src]].notna().any()
            assert present == (src in header), (specialty, src)
        scheme = {SIGNAL_SOURCES[c] for c in header if c in SIGNAL_SOURCES} or {"none"}
        assert scheme == {SPECIALTY_BY_NAME[specialty].signal_scheme}, specialty


def test_real_visa_rule(real):
    rate = real["rate_non_us_img"]
    j1 = real["sponsors_j1"]
    h1b = real["sponsors_h1b"]
    assert j1.notna().all() and h1b.notna().all()
    # a program that interviewed no non-US IMG sponsors no visa, seed program or not
    zero = rate == 0
    assert zero.sum() > 1000
    assert not j1[zero].any(), real.loc[zero & j1, ["specialty", "name"]]
    assert not h1b[zero].any()
    assert not (h1b & ~j1).any()  # H-1B sponsors are a subset of J-1 programs
    # a program that interviewed non-US IMGs (some only permanent residents) and a suppressed
    # rate are decided by fixed coins: some of each
    assert 0.7 < j1[rate > 0].mean() < 0.9
    assert 0 < j1[rate.isna()].mean() < j1[rate > 0].mean()
    # the coins are calibrated on the published census of Internal Medicine programs (J Grad Med
    # Educ 2022: 63.7 % accept J-1, 22.0 % sponsor H-1B); the draws land near it
    im = real["specialty"] == "Internal Medicine"
    assert j1[im].mean() == pytest.approx(0.637, abs=0.04)
    assert h1b[im].mean() == pytest.approx(0.220, abs=0.04)


def test_real_img_share(real):
    share = real["img_share"]
    assert share.dropna().between(0, 1).all()
    rates = real[["rate_us_md", "rate_us_do", "rate_us_img", "rate_non_us_img"]]
    unknown = rates.isna().any(axis=1) | (rates == 0).all(axis=1)
    assert (share.isna() == unknown).all()
    # no IMG interviewed -> no IMG share; only IMGs -> all
    no_img = (rates[["rate_us_img", "rate_non_us_img"]] == 0).all(axis=1) & ~unknown
    assert (share[no_img] == 0).all() and no_img.any()


def test_real_import_is_deterministic(real):
    again = import_catalog(REAL_DIR)
    pd.testing.assert_frame_equal(again, real)


def test_real_figures_reproduce_committed_resource(real):
    committed = json.loads(resources.files("smartpick_ml").joinpath(
        "resources", "catalog_figures.json").read_text())
    assert catalog_figures(real) == committed


# ------------------------------------------------------------------------- broken catalogs

HEADER = "Program,In-State School,Out-Of-State School,MD,DO,US IMG,Non US IMG,City,State,Region"
ROWS = [
    "Alpha Hospital Program,0.5,0.1,0.3,0.2,0.05,0.01,Boston,MA,New England",
    "Beta University Program,-,-,0.4,0.1,0,0,Chicago,IL,East North Central",
    "Gamma Medical Center Program,0.7,0.2,0.35,0.25,0.1,0.04,Houston,TX,West South Central",
]


def _catalog(tmp_path: Path, rows: list[str] | None = None, header: str = HEADER,
             name: str = "Internal Medicine.csv", raw: bytes | None = None) -> Path:
    d = tmp_path / "catalog"
    d.mkdir(exist_ok=True)
    data = raw if raw is not None else ("\n".join([header, *(rows or ROWS)]) + "\n").encode()
    (d / name).write_bytes(data)
    return d


def _row(i: int, column: str, value: str) -> list[str]:
    """ROWS with one cell replaced (data row i, i.e. CSV line i + 2)."""
    cols = HEADER.split(",")
    rows = [r.split(",") for r in ROWS]
    rows[i][cols.index(column)] = value
    return [",".join(r) for r in rows]


def _import_error(directory: Path) -> str:
    with pytest.raises(DataValidationError) as info:
        import_catalog(directory)
    exc = info.value
    # a clear error of our own, not a wrapped pandas/KeyError traceback
    assert exc.__cause__ is None
    assert exc.__context__ is None or exc.__suppress_context__
    return str(exc)


def test_small_valid_catalog_imports(tmp_path):
    # Thoracic Surgery: 56 positions, so three programs stay within the 300-per-program bound
    d = _catalog(tmp_path, name="Thoracic Surgery.csv")
    progs = import_catalog(d)
    assert progs["program_id"].tolist() == ["TS-0001", "TS-0002", "TS-0003"]
    assert progs["positions"].sum() == 56
    assert progs["rate_in_state"].isna().tolist() == [False, True, False]
    # no non-US IMG interviewed (Beta): no visa; the others by the program's fixed coin
    coin = [stable_uniform(f"Thoracic Surgery|{n}", "j1") < J1_IF_INTERVIEWS_NON_US_IMGS
            for n in progs["name"]]
    assert progs["sponsors_j1"].tolist() == [coin[0], False, coin[2]]


def test_missing_column(tmp_path):
    header = HEADER.replace(",MD,", ",")
    rows = [r.replace(",0.3,", ",").replace(",0.4,", ",").replace(",0.35,", ",") for r in ROWS]
    msg = _import_error(_catalog(tmp_path, rows, header))
    assert "programs (Internal Medicine.csv)" in msg
    assert "missing required column(s): MD" in msg


def test_unknown_column(tmp_path):
    msg = _import_error(_catalog(tmp_path, [r + ",x" for r in ROWS], HEADER + ",Notes"))
    assert "Internal Medicine.csv" in msg and "unknown column(s): Notes" in msg


def test_text_in_rate_column(tmp_path):
    msg = _import_error(_catalog(tmp_path, _row(1, "MD", "high")))
    assert "Internal Medicine.csv" in msg
    assert "column 'MD': not a number or '-' at line 3: 'high'" in msg


@pytest.mark.parametrize(("column", "value"), [("MD", "1.4"), ("Non US IMG", "-0.2"),
                                               ("DO", "inf")])
def test_rate_out_of_range(tmp_path, column, value):
    msg = _import_error(_catalog(tmp_path, _row(2, column, value)))
    assert "Internal Medicine.csv" in msg
    assert f"column '{column}': interview rates must be between 0 and 1; got line 4: " \
           f"{float(value):g}" in msg


def test_both_out_of_range_rates_reported_together(tmp_path):
    rows = _row(0, "MD", "1.4")
    rows[2] = rows[2].replace(",0.25,", ",-0.2,")
    msg = _import_error(_catalog(tmp_path, rows))
    assert "(2 problems)" in msg
    assert "column 'MD': interview rates must be between 0 and 1; got line 2: 1.4" in msg
    assert "column 'DO': interview rates must be between 0 and 1; got line 4: -0.2" in msg


@pytest.mark.parametrize(("content", "fragment"), [
    (b"", "Internal Medicine.csv: the file is empty"),
    (b"\xef\xbb\xbf\n", "Internal Medicine.csv: the file is empty"),
    ((HEADER + "\n").encode(), "Internal Medicine.csv: header only, no rows"),
    (("\n".join([HEADER, *ROWS]).replace(",", ";") + "\n").encode(),
     "Internal Medicine.csv: expected comma-separated values, but the header is separated by ';'"),
    (("\n".join([HEADER, *ROWS]) + "\n").encode().replace(b"Beta", b"B\xe9ta"),
     "Internal Medicine.csv: not UTF-8 text (invalid byte 0xe9 on line 3)"),
    (("\n".join([HEADER, *ROWS]) + "\n").encode().replace(b"Houston,TX,West South Central",
                                                          b"Houston,TX,West,South"),
     "Internal Medicine.csv: malformed CSV"),
    (("\n".join([HEADER, *(r + "," for r in ROWS)]) + "\n").encode(),
     "Internal Medicine.csv: the rows from line 2 on have more fields than the header"),
])
def test_broken_file(tmp_path, content, fragment):
    msg = _import_error(_catalog(tmp_path, raw=content))
    assert "programs (Internal Medicine.csv)" in msg
    assert fragment in msg


def test_unknown_specialty_file(tmp_path):
    msg = _import_error(_catalog(tmp_path, name="Cardiology.csv"))
    assert "programs (Cardiology.csv)" in msg
    assert "unknown specialty 'Cardiology' (file name)" in msg
    assert "Internal Medicine" in msg  # lists the known ones


def test_error_names_the_broken_file_among_good_ones(tmp_path):
    _catalog(tmp_path, name="Thoracic Surgery.csv")
    d = _catalog(tmp_path, _row(0, "State", "ZZ"), name="Vasc Surg.csv")
    msg = _import_error(d)
    assert "programs (Vasc Surg.csv)" in msg
    assert "column 'State': not a US state code at line 2: 'ZZ'" in msg


def test_unknown_state_code(tmp_path):
    msg = _import_error(_catalog(tmp_path, _row(1, "State", "Ill")))
    assert "Internal Medicine.csv" in msg
    assert "column 'State': not a US state code at line 3: 'Ill'" in msg


@pytest.mark.parametrize(("column", "value", "line"), [("Program", "", 3), ("City", " ", 4),
                                                       ("State", "", 2)])
def test_blank_identity_field(tmp_path, column, value, line):
    msg = _import_error(_catalog(tmp_path, _row(line - 2, column, value)))
    assert "Internal Medicine.csv" in msg
    assert f"column '{column}': empty at line(s) {line}" in msg


def test_same_program_twice_in_one_city(tmp_path):
    msg = _import_error(_catalog(tmp_path, [*ROWS, ROWS[0]]))
    assert "Internal Medicine.csv" in msg
    assert "column 'Program': duplicate program at the same city" in msg
    assert "Alpha Hospital Program (Boston)" in msg


def test_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "LICENSE").write_text("MIT")
    msg = _import_error(tmp_path / "empty")
    assert "table 'programs'" in msg and "no .csv files in catalog directory" in msg


def test_missing_directory(tmp_path):
    msg = _import_error(tmp_path / "nowhere")
    assert "table 'programs'" in msg and "catalog directory not found" in msg
    assert "nowhere" in msg


# ------------------------------------------------------------------------ derived attributes


def test_assign_positions_exact_totals_and_at_least_one():
    progs = pd.DataFrame({
        "specialty": ["A"] * 5 + ["B"] * 3,
        "name": [f"P{i}" for i in range(8)],
        "program_type": ["university", "community"] * 4,
    })
    pos = assign_positions(progs, {"A": 23, "B": 3})
    assert pos[progs["specialty"] == "A"].sum() == 23
    assert pos[progs["specialty"] == "B"].tolist() == [1, 1, 1]
    assert (pos >= 1).all()
    # by name, not by row order
    shuffled = progs.iloc[::-1]
    assert assign_positions(shuffled, {"A": 23, "B": 3}).sort_index().equals(pos)
    with pytest.raises(DataValidationError, match="2 positions cannot give each of 3 programs"):
        assign_positions(progs, {"A": 23, "B": 2})


def test_derive_img_support_visa_rule():
    seed_name = SEED_PROGRAMS[1][0]
    progs = pd.DataFrame({
        "specialty": "Internal Medicine",
        "name": ["Zero Program", "Open Program", "Hidden Program", seed_name, seed_name + " X"],
        "rate_us_md": [0.3, 0.3, np.nan, 0.3, 0.3], "rate_us_do": [0.2, 0.2, np.nan, 0.2, 0.2],
        "rate_us_img": [0.0, 0.1, np.nan, 0.0, 0.1],
        "rate_non_us_img": [0.0, 0.2, np.nan, 0.0, 0.2],
    })
    out = derive_img_support(progs)
    open_coin = stable_uniform("Internal Medicine|Open Program", "j1")
    assert out["sponsors_j1"].tolist()[:2] == [False, open_coin < J1_IF_INTERVIEWS_NON_US_IMGS]
    # the brief's program carries the soft markers, but the data decides visas
    assert out.loc[3, "img_mentorship"] and out.loc[3, "img_orientation"]
    assert not out.loc[3, "sponsors_j1"] and not out.loc[3, "sponsors_h1b"]
    assert out.loc[0, "img_share"] == 0.0
    assert 0 < out.loc[1, "img_share"] < 1


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_j1_coin_follows_its_calibration(salt):
    # 400 programs that all interviewed non-US IMGs: J-1 at the calibrated share, never more
    # often where they interviewed none
    names = [f"Program {salt}-{i}" for i in range(400)]
    progs = pd.DataFrame({"specialty": "Internal Medicine", "name": names,
                          "rate_us_md": 0.3, "rate_us_do": 0.2, "rate_us_img": 0.05,
                          "rate_non_us_img": 0.02})
    share = derive_img_support(progs)["sponsors_j1"].mean()
    assert abs(share - J1_IF_INTERVIEWS_NON_US_IMGS) < 4 * (0.8 * 0.2 / 400) ** 0.5
    none = derive_img_support(progs.assign(rate_non_us_img=0.0))
    assert not none["sponsors_j1"].any() and not none["sponsors_h1b"].any()


# ------------------------------------------------------------------------ synthetic catalog


def test_synthetic_shape(synthetic):
    assert len(synthetic) == 4777 + PGY1_PROGRAMS
    counts = synthetic["specialty"].value_counts().to_dict()
    assert {s.name: counts[s.name] for s in CATALOG_SPECIALTIES} == CATALOG_PROGRAM_COUNTS
    assert synthetic["program_id"].is_unique
    assert not synthetic.duplicated(["specialty", "name"]).any()
    sums = synthetic.groupby("specialty")["positions"].sum()
    assert all(sums[s.name] == s.positions_2026 for s in SPECIALTIES)
    assert (synthetic["region"] == synthetic["state"].map(STATE_REGION)).all()


def test_synthetic_validates(synthetic):
    pd.testing.assert_frame_equal(validate(synthetic, PROGRAMS, allow_extra=False), synthetic)


def test_synthetic_has_the_seed_programs(synthetic):
    for name, city, state, specialty in SEED_PROGRAMS:
        hit = synthetic[synthetic["name"] == name]
        assert len(hit) == 1, name
        row = hit.iloc[0]
        assert (row["specialty"], row["city"], row["state"]) == (specialty, city, state)
        assert row["img_mentorship"] and row["img_orientation"]
        assert row["sponsors_j1"] and row["sponsors_h1b"]
        assert row["rate_non_us_img"] >= 0.05


def test_synthetic_signal_columns_follow_the_scheme(synthetic):
    for s in SPECIALTIES:
        g = synthetic[synthetic["specialty"] == s.name]
        assert g["rate_signal"].notna().any() == (s.signal_scheme == "single")
        assert g["rate_gold_signal"].notna().any() == (s.signal_scheme == "gold_silver")


def test_synthetic_is_seeded(synthetic):
    pd.testing.assert_frame_equal(synthetic_catalog(seed=0), synthetic)
    other = synthetic_catalog(seed=1)
    assert len(other) == len(synthetic)
    both = synthetic["rate_us_md"].notna() & other["rate_us_md"].notna()
    assert (synthetic["rate_us_md"][both] != other["rate_us_md"][both]).mean() > 0.5


def test_synthetic_visa_rule(synthetic):
    zero = synthetic["rate_non_us_img"] == 0
    assert zero.any()
    assert not synthetic.loc[zero, "sponsors_j1"].any()


def test_synthetic_rates_resemble_the_figures(synthetic):
    """The per-specialty suppressed share is drawn from the committed figures."""
    figs = json.loads(resources.files("smartpick_ml").joinpath(
        "resources", "catalog_figures.json").read_text())
    suppressed = synthetic.groupby("specialty")["rate_us_md"].apply(lambda s: s.isna().mean())
    for s in CATALOG_SPECIALTIES:
        target = figs["specialties"][s.name]["suppressed_share"]
        n = CATALOG_PROGRAM_COUNTS[s.name]
        assert abs(suppressed[s.name] - target) < 4 * np.sqrt(target * (1 - target) / n) + 0.02


def test_synthetic_catalog_keeps_the_real_within_specialty_structure(synthetic):
    """University programs at each specialty's share, and the two IMG types' rates move together
    within a specialty (programs closed to one are closed to the other) while US MDs' and non-US
    IMGs' barely do: drawn pooled and with independent zeros, the synthetic catalog had no
    university programs and IMG-open programs that were also MD-favoured, and its non-US IMGs
    matched up to 5 pp below the real catalog's."""
    figs = json.loads(resources.files("smartpick_ml").joinpath(
        "resources", "catalog_figures.json").read_text())
    catalog_rows = synthetic[synthetic["specialty"].isin([s.name for s in CATALOG_SPECIALTIES])]
    university = (catalog_rows["program_type"] == "university").groupby(
        catalog_rows["specialty"]).mean()
    for s in CATALOG_SPECIALTIES:
        target = figs["specialties"][s.name]["university_share"]
        n = CATALOG_PROGRAM_COUNTS[s.name]
        assert abs(university[s.name] - target) < 4 * np.sqrt(target * (1 - target) / n) + 0.03
    im = synthetic[synthetic["specialty"] == "Internal Medicine"][
        ["rate_us_md", "rate_us_img", "rate_non_us_img"]].dropna()
    corr = im.corr(method="spearman")
    assert corr.loc["rate_us_img", "rate_non_us_img"] > 0.35
    assert abs(corr.loc["rate_us_md", "rate_non_us_img"]) < 0.15


@pytest.mark.parametrize(("name", "military"), [
    ("Dwight David Eisenhower Army Medical Center Program", True),
    ("Naval Medical Center (San Diego) Program", True),
    ("National Capital Consortium (Fort Belvoir Community Hospital) Program", True),
    ("San Antonio Uniformed Services Health Education Consortium Program", True),
    ("MIke O'Callaghan Military Medical Center/Nellis Air Force Base Program", True),
    ("Tripler Army Medical Center Program", True),
    ("Eisenhower Medical Center Program", False),
    ("Baylor All Saints Medical Center Fort Worth Program", False),
    ("Fort Wayne Medical Education Program", False),
    ("Wright State University Program", False),
])
def test_uniformed_services_programs_are_flagged_by_name(name, military):
    from smartpick_ml.data.catalog import derive_military

    assert bool(derive_military(pd.Series([name])).iloc[0]) is military


def test_real_catalog_flags_the_uniformed_services_programs(real):
    flagged = real[real["military"]]
    assert 80 <= len(flagged) <= 100, len(flagged)  # the uniformed-services programs named
    assert flagged["name"].str.contains("Army|Naval|Air Force|Consortium|Military|Tripler|"
                                        "Madigan|Keesler|David Grant").all()


def test_synthetic_catalog_has_uniformed_services_programs_at_the_real_share(synthetic):
    share = synthetic["military"].mean()
    assert 0.005 < share < 0.04, share
    assert synthetic.loc[synthetic["military"], "name"].str.contains("Army Medical Center").all()


# ------------------------------------------------------- tracks and the PGY-1-only programs


@pytest.fixture(params=["real", "synthetic"])
def catalog(request) -> pd.DataFrame:
    return request.getfixturevalue(request.param)


def test_pgy1_programs_counts_and_positions_are_the_published_ones(catalog):
    for s in PGY1_ONLY_SPECIALTIES:
        g = catalog[catalog["specialty"] == s.name]
        assert len(g) == s.programs_2025, s.name
        assert g["positions"].sum() == s.positions_2026, s.name
        assert (g["positions"] >= 1).all()
        assert (g["track"] == s.pgy1_track).all()
        assert g["program_id"].str.fullmatch(rf"{s.code}-\d{{4}}").all()
    assert set(catalog["track"]) == set(TRACKS)
    catalog_rows = catalog["specialty"].isin(CATALOG_PROGRAM_COUNTS)
    assert catalog.loc[catalog_rows, "track"].isin(["categorical", "advanced"]).all()
    assert catalog.loc[~catalog_rows, "track"].isin(["preliminary", "transitional"]).all()


def test_pgy1_programs_copy_a_civilian_host_of_the_host_specialty(catalog):
    for s in PGY1_ONLY_SPECIALTIES:
        g = catalog[catalog["specialty"] == s.name]
        assert g["name"].is_unique
        suffix = f" ({s.name})"
        assert g["name"].str.endswith(suffix).all()
        hosts = catalog[catalog["specialty"] == s.host].set_index("name")
        host_names = g["name"].str.slice(0, -len(suffix))
        assert host_names.isin(hosts.index).all(), s.name
        host = hosts.loc[host_names.to_numpy()]
        assert not host["military"].any() and not g["military"].any()
        for col in ("city", "state", "region", "program_type", *HOST_RATE_COLUMNS):
            pd.testing.assert_series_equal(g[col].reset_index(drop=True),
                                           host[col].reset_index(drop=True), check_names=False)
        for col in set(RATE_COLUMNS) - set(HOST_RATE_COLUMNS):  # no signals
            assert g[col].isna().all(), (s.name, col)
    # the catalog's own programs keep their names: the suffix marks only the derived ones
    assert not catalog["specialty"].isin(CATALOG_PROGRAM_COUNTS)[
        catalog["name"].str.endswith(tuple(f" ({s.name})" for s in PGY1_ONLY_SPECIALTIES))].any()


def test_real_advanced_share_near_the_published_share(real):
    for specialty, share in ADVANCED_SHARE.items():
        g = real[real["specialty"] == specialty]
        got = (g["track"] == "advanced").mean()
        if share == 0:
            assert got == 0, specialty
        else:  # a fixed coin per program: within 3 binomial SDs (+1 program) of the share
            tolerance = 3 * np.sqrt(share * (1 - share) / len(g)) + 1 / len(g)
            assert abs(got - share) < tolerance, (specialty, got, share)


def test_pgy1_programs_are_deterministic(real):
    catalog_rows = real[real["specialty"].isin(CATALOG_PROGRAM_COUNTS)]
    raw = catalog_rows[["specialty", "name", "city", "state", "region", *RATE_COLUMNS]]
    once = derive_pgy1_programs(raw)
    pd.testing.assert_frame_equal(derive_pgy1_programs(raw.iloc[::-1]), once)  # not row order
    # the derived rows are those of the imported catalog, and finishing again adds none
    assert len(once) == PGY1_PROGRAMS
    assert derive_pgy1_programs(real).empty


def test_pgy1_programs_do_not_change_the_catalog_programs(synthetic):
    """The markers of the catalog's own programs do not depend on the programs derived from it."""
    own = synthetic[synthetic["specialty"].isin(CATALOG_PROGRAM_COUNTS)]
    alone = derive_img_support(own)
    for col in alone.columns:
        pd.testing.assert_series_equal(alone[col], own[col], check_dtype=False)


SMALL_HOSTS = ["Internal Medicine", "General Surgery", "Thoracic Surgery"]


@st.composite
def small_catalogs(draw) -> tuple[pd.DataFrame, dict[str, int]]:
    """A few programs of host and non-host specialties (some military, some with suppressed
    rates), and positions per specialty: enough for the catalog's own programs, and for the
    PGY-1-only ones anything from none to plenty."""
    rows = []
    for specialty in SMALL_HOSTS:
        for i in range(draw(st.integers(0, 5))):
            military = draw(st.booleans()) and draw(st.booleans())
            rate = draw(st.none() | st.floats(0, 1))
            prefix = "Army Medical Center " if military else ""
            rows.append({"specialty": specialty, "name": f"{prefix}{specialty} Program {i}",
                         "city": "Boston", "state": "MA", "region": "New England",
                         **{c: (np.nan if rate is None else rate) for c in RATE_COLUMNS[:6]},
                         **{c: np.nan for c in RATE_COLUMNS[6:]}})
    if not rows:
        rows.append({"specialty": "Thoracic Surgery", "name": "Only Program", "city": "Reno",
                     "state": "NV", "region": "Mountain", **dict.fromkeys(RATE_COLUMNS, 0.2)})
    programs = pd.DataFrame(rows)
    totals = {s: 56 for s in SMALL_HOSTS}
    for s in PGY1_ONLY_SPECIALTIES:
        if draw(st.booleans()):
            totals[s.name] = draw(st.integers(0, 12))
    return programs, totals


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_catalogs())
def test_pgy1_programs_on_small_catalogs(case):
    programs, totals = case
    derived = derive_pgy1_programs(programs, totals)
    assert set(derived["track"]) <= set(TRACKS)
    finished = finish_programs(programs, totals)  # never raises
    assert (finished["positions"] >= 1).all()
    assert set(finished["track"]) <= set(TRACKS)
    assert finished["program_id"].is_unique
    assert not finished.duplicated(["specialty", "name"]).any()
    for s in PGY1_ONLY_SPECIALTIES:
        g = finished[finished["specialty"] == s.name]
        hosts = programs[(programs["specialty"] == s.host) & ~derive_military(programs["name"])]
        assert len(g) <= min(len(hosts), totals.get(s.name, len(hosts)))
        assert not g["military"].any()
        if s.name in totals and len(g):
            assert g["positions"].sum() == totals[s.name]
        if len(hosts) and totals.get(s.name, 1) > 0:
            assert len(g) > 0, s.name  # a host and a position: the track is there


def test_describe_catalog_says_which_catalog_auto_resolves_to(monkeypatch):
    from smartpick_ml.data import catalog

    monkeypatch.setattr(catalog, "default_catalog_dir", lambda: None)
    assert catalog.describe_catalog("auto") == "the synthetic catalog"
    monkeypatch.setattr(catalog, "default_catalog_dir", lambda: Path("/x/shared/data/y"))
    assert catalog.describe_catalog("auto").startswith("the real catalog")
    assert catalog.describe_catalog("synthetic") == "the synthetic catalog"
    assert catalog.describe_catalog("data/raw/programs.parquet") == \
        "the catalog in data/raw/programs.parquet"
