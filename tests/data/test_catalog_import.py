"""Catalog import: the real ERAS files, and malformed catalogs with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartpick_ml.contracts.errors import DataValidationError
from smartpick_ml.contracts.reference import SEED_PROGRAMS, SPECIALTIES
from smartpick_ml.data.catalog import import_catalog

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "program_interview_rates"
HEADER = "Program,In-State School,Out-Of-State School,MD,DO,US IMG,Non US IMG,City,State,Region\n"
ROW = "Good Program,0.5,0.1,0.3,0.2,0.05,0.01,Boston,MA,New England\n"


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared catalog not present")
def test_real_catalog_imports_all_programs():
    programs = import_catalog(REAL)
    assert len(programs) == 4777 + 329 + 261 + 236  # the catalog's and the PGY-1-only programs
    assert programs["specialty"].nunique() == 25
    assert programs["program_id"].is_unique
    assert not programs.duplicated(["specialty", "name"]).any()
    for name, *_ in SEED_PROGRAMS:
        assert (programs["name"] == name).any(), name
    totals = programs.groupby("specialty")["positions"].sum()
    for s in SPECIALTIES:
        assert totals[s.name] == s.positions_2026
    assert (programs["positions"] >= 1).all()
    closed = programs["rate_non_us_img"] == 0
    assert not programs.loc[closed, "sponsors_j1"].any()


def _catalog(tmp_path: Path, content: bytes | str, name: str = "Internal Medicine.csv") -> Path:
    d = tmp_path / "catalog"
    d.mkdir()
    data = content.encode() if isinstance(content, str) else content
    (d / name).write_bytes(data)
    return d


@pytest.mark.parametrize("content, expected", [
    (HEADER.replace(",MD,", ",XX,") + ROW, "missing required column(s): MD"),
    (HEADER + ROW.replace("0.3", "high"), "column 'MD': not a number or '-' at line 2"),
    (HEADER + ROW.replace("0.3", "1.4"), "between 0 and 1; got line 2: 1.4"),
    (HEADER + ROW.replace("0.3", "-0.2"), "between 0 and 1; got line 2: -0.2"),
    ("", "the file is empty"),
    (HEADER, "header only, no rows"),
    (HEADER.replace(",", ";") + ROW.replace(",", ";"), "separated by ';'"),
    (HEADER.encode() + b"Caf\xe9 Program,0.5,0.1,0.3,0.2,0.05,0.01,Boston,MA,New England\n",
     "not UTF-8"),
    (HEADER + ROW.replace(",MA,", ",ZZ,"), "not a US state code"),
])
def test_malformed_catalog_gives_clear_error(tmp_path, content, expected):
    d = _catalog(tmp_path, content)
    with pytest.raises(DataValidationError) as err:
        import_catalog(d)
    message = str(err.value)
    assert expected in message
    assert "Internal Medicine.csv" in message or "programs" in message


def test_unknown_specialty_file_and_missing_directory(tmp_path):
    with pytest.raises(DataValidationError, match="unknown specialty 'Basket Weaving'"):
        import_catalog(_catalog(tmp_path, HEADER + ROW, name="Basket Weaving.csv"))
    with pytest.raises(DataValidationError, match="not found"):
        import_catalog(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataValidationError, match="no .csv files"):
        import_catalog(empty)


@pytest.mark.parametrize("extra", [3, 20_000, 1_000_000])
def test_a_very_wide_catalog_file_is_refused_quickly_with_a_short_message(tmp_path, extra):
    """Issue #20, item 7: extra columns are refused with a message of bounded size, and a file
    of a million columns is refused from its header, before pandas parses it."""
    from click.testing import CliRunner

    from smartpick_ml.cli import main

    names = [f"Extra{i}" for i in range(extra)]
    content = HEADER.rstrip("\n") + "," + ",".join(names) + "\n" + \
        ROW.rstrip("\n") + "," * extra + "\n"
    d = _catalog(tmp_path, content)
    with pytest.raises(DataValidationError) as err:
        import_catalog(d)
    message = str(err.value)
    assert len(message) < 1_000, len(message)
    if extra < 100:
        assert "unknown column(s): Extra0, Extra1, Extra2" in message
    else:  # refused from the header line, before the file is parsed
        assert f"{len(names) + 10:,} columns in the header" in message
    result = CliRunner().invoke(main, ["catalog", "import", str(d), "--out",
                                       str(tmp_path / "programs.parquet")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert len(result.output) < 2_000
    assert not (tmp_path / "programs.parquet").exists()
