"""`smartpick --help` reads as a guide; every command shows progress and ends by saying where its
outputs went and what to run next."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import click
import pandas as pd
import pytest
from click.testing import CliRunner

from smartpick_ml.cli import _Progress, main
from smartpick_ml.inference.predictor import MatchPredictor
from smartpick_ml.training.pipeline import ProgressEvent

#: Each command and where its help must say the outputs go.
OUTPUT_LOCATIONS: dict[str, tuple[str, ...]] = {
    "catalog": ("data/raw/programs.parquet",),
    "catalog import": ("data/raw/programs.parquet",),
    "catalog synthetic": ("data/raw/programs.parquet",),
    "catalog figures": ("smartpick_ml/resources/catalog_figures.json",),
    "simulate": ("data/raw/", "simulation_report.md"),
    "season-report": ("terminal", "--out"),
    "oracle": ("data/processed/oracle_<season>.parquet",),
    "train": ("data/processed/run/report.html", "models/", "mlflow.db"),
    "run": ("data/processed/run/report.html", "models/", "mlflow.db"),
    "rank": ("terminal", "--out"),
    "plan": ("terminal", "--out", "--plot"),
    "schemas": ("terminal", "--out"),
    "score": ("--out",),
    "evaluate-plans": ("data/processed/plans/", "summary.csv", "reliability.csv"),
}


def _commands(group: click.Group, prefix: str = "") -> list[str]:
    out = []
    for name, cmd in group.commands.items():
        path = f"{prefix}{name}"
        out.append(path)
        if isinstance(cmd, click.Group):
            out += _commands(cmd, path + " ")
    return out


def _help(args: list[str]) -> str:
    result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0, result.output
    return result.output


def test_top_level_help_is_a_guide():
    text = _help([])
    for name in main.commands:
        assert re.search(rf"^\s+{name}\s", text, re.M), f"{name} missing from smartpick --help"
    assert "smartpick run" in text and "Start here" in text


@pytest.mark.parametrize("command", sorted(OUTPUT_LOCATIONS))
def test_each_command_help_says_where_outputs_go(command: str):
    text = _help(command.split())
    assert "Output" in text, f"`smartpick {command} --help` does not say where its output goes"
    for where in OUTPUT_LOCATIONS[command]:
        assert where in text, f"`smartpick {command} --help` does not mention {where}"
    assert f"smartpick {command}" in text, "no example"
    # click's \b blocks keep examples verbatim; an unescaped block would be re-wrapped
    assert "\b" not in text


def test_every_command_is_covered():
    assert set(_commands(main)) <= set(OUTPUT_LOCATIONS), \
        f"add new commands to OUTPUT_LOCATIONS: {set(_commands(main)) - set(OUTPUT_LOCATIONS)}"


def test_simulate_shows_progress_and_ends_with_outputs_and_next(tmp_path):
    out = tmp_path / "raw"
    result = CliRunner().invoke(main, ["simulate", "--scale", "0.005", "--seasons", "2024,2025",
                                       "--catalog", "synthetic", "--output-dir", str(out),
                                       "--no-report"])
    assert result.exit_code == 0, result.output
    # not a terminal: one progress line per season, with the elapsed time
    assert re.search(r"^\[simulate +\d+\.\ds\] season 2024$", result.stderr, re.M)
    assert re.search(r"^\[simulate +\d+\.\ds\] season 2025$", result.stderr, re.M)
    for name in ("applicants.parquet", "applications.parquet", "simulation_report.md"):
        assert str(out / name) in result.stdout and (out / name).is_file()
    assert "next:" in result.stdout and "smartpick train" in result.stdout


@pytest.fixture(scope="module")
def small_seasons(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("seasons") / "raw"
    result = CliRunner().invoke(main, ["simulate", "--scale", "0.01", "--seasons", "2024,2025",
                                       "--catalog", "synthetic", "--output-dir", str(out),
                                       "--no-report"])
    assert result.exit_code == 0, result.output
    return out


def test_season_report_rebuilds_the_report_simulate_wrote(small_seasons, tmp_path):
    doc = tmp_path / "docs" / "season_report.md"
    result = CliRunner().invoke(main, ["season-report", "--data-dir", str(small_seasons),
                                       "--out", str(doc)])
    assert result.exit_code == 0, result.output
    assert str(doc) in result.stdout
    written = (small_seasons / "simulation_report.md").read_text().splitlines()
    rebuilt = doc.read_text().splitlines()
    # the same report, line for line, but for the line saying where it comes from
    assert len(rebuilt) == len(written) > 40
    differ = [i for i, (a, b) in enumerate(zip(written, rebuilt, strict=True)) if a != b]
    assert differ == [2] and "Rebuilt by `smartpick season-report`" in rebuilt[2]
    assert "scale 0.01, seed" in rebuilt[2]
    assert "## Positions filled by applicant type" in doc.read_text()


def test_season_report_judges_the_seasons_against_held_out_figures(small_seasons, tmp_path):
    """The held-out check is one option away, and a bad file is refused before anything is
    written, naming the field."""
    figures = tmp_path / "held_out.csv"
    figures.write_text("season,specialty,matched_preferred_pct,source\n"
                       "2025,Internal Medicine,55,a test figure\n2025,Neurology,50,\n"
                       "2025,Family Medicine,70,\n2025,Pediatrics,60,\n")
    doc = tmp_path / "report.md"
    result = CliRunner().invoke(main, ["season-report", "--data-dir", str(small_seasons),
                                       "--held-out", str(figures), "--out", str(doc)])
    assert result.exit_code == 0, result.output
    section = doc.read_text().split("## Held-out check")[1]
    assert re.search(r"2025: \d specialties, rank correlation", section)
    assert "| 2025 | Neurology |" in section and "| 50.0 |" in section
    figures.write_text("season,specialty,matched_preferred_pct\n2025,Neurology,140\n")
    doc.unlink()
    result = CliRunner().invoke(main, ["season-report", "--data-dir", str(small_seasons),
                                       "--held-out", str(figures), "--out", str(doc)])
    assert result.exit_code == 2 and "matched_preferred_pct" in result.stderr
    assert "Traceback" not in result.output and not doc.exists()


def test_season_report_refuses_stale_seasons_and_missing_outcomes(small_seasons, tmp_path):
    stale = tmp_path / "stale"
    shutil.copytree(small_seasons, stale)
    manifest = json.loads((stale / "simulation_manifest.json").read_text())
    manifest["simulation_fingerprint"] = "0" * 64
    (stale / "simulation_manifest.json").write_text(json.dumps(manifest))
    doc = tmp_path / "report.md"
    result = CliRunner().invoke(main, ["season-report", "--data-dir", str(stale), "--out",
                                       str(doc)])
    assert result.exit_code == 2 and "other parameters or code" in result.stderr
    assert "Traceback" not in result.output and not doc.exists()
    (stale / "simulation_manifest.json").unlink()
    (stale / "program_outcomes.parquet").unlink()
    result = CliRunner().invoke(main, ["season-report", "--data-dir", str(stale), "--out",
                                       str(doc)])
    assert result.exit_code == 2 and "program_outcomes.parquet" in result.stderr
    assert not doc.exists()
    # tables without outcomes (e.g. a season still to be matched) say what is missing
    pd.read_parquet(small_seasons / "program_outcomes.parquet").to_parquet(
        stale / "program_outcomes.parquet")
    pd.read_parquet(small_seasons / "applications.parquet").drop(
        columns=["matched", "rank_position"]).to_parquet(stale / "applications.parquet")
    result = CliRunner().invoke(main, ["season-report", "--data-dir", str(stale), "--out",
                                       str(doc)])
    assert result.exit_code == 2 and "matched" in result.stderr
    assert "rank_position" in result.stderr and not doc.exists()


def test_train_ends_with_outputs_report_and_next(small_training_run, monkeypatch):
    world = small_training_run
    said: list[str] = []

    def fake_run_training(cfg, progress, track):
        for step, msg in (("data", "loading, checking and splitting the tables"),
                          ("evaluate", "re-drawn season 1/2 (oracle)")):
            progress(ProgressEvent(step, msg, starts_step=step == "data"))
            said.append(msg)
        return world.result

    monkeypatch.setattr("smartpick_ml.training.pipeline.run_training", fake_run_training)
    result = CliRunner().invoke(main, ["train", "--config", str(world.config_path)])
    assert result.exit_code == 0, result.output
    for msg in said:
        assert re.search(rf"^\[train +\d+\.\ds\] {re.escape(msg)}$", result.stderr, re.M)
    report = world.result.outputs["model_report"]
    assert str(report) in result.stdout
    for p in world.result.outputs.values():
        assert str(p) in result.stdout
    assert world.result.champion_decision in result.stdout
    assert "next:" in result.stdout and "smartpick rank" in result.stdout
    # MLflow 3's UI opens on its GenAI view: the run's own page is printed
    assert re.search(rf"http://127\.0\.0\.1:5000/#/experiments/\d+/runs/{world.result.run_id}",
                     result.stdout)


def test_progress_text_mode_counts_nothing_on_a_pipe(capsys):
    with _Progress("demo", total=2, unit="step") as bar:
        assert bar.bar is None  # pytest's captured stderr is not a terminal
        bar.note("first", advance=1)
    err = capsys.readouterr().err
    assert re.fullmatch(r"\[demo +\d+\.\ds\] first\n", err)


# ------------------------------------------------------------------ rank / plan with a model

PROFILE = Path(__file__).resolve().parents[1] / "examples" / "profile_non_us_img.json"


def _profile_with_backup(tmp_path: Path, backup: str = "Family Medicine") -> tuple[dict, Path]:
    """The example profile with one backup specialty, written to a file."""
    profile = json.loads(PROFILE.read_text())
    profile["backup_specialties"] = [backup]
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile))
    return profile, path


def _catalog_of(model_dir: Path):
    from smartpick_ml.data.io import read_table
    from smartpick_ml.modelling import persist

    return read_table(model_dir / persist.read_manifest(model_dir)["catalog"]["file"], "programs")


def test_rank_from_another_directory_ranks_the_models_own_catalog(small_training_run, tmp_path,
                                                                   monkeypatch):
    """Issue #20 item 4: from a folder holding a synthetic catalog in data/raw,
    ``smartpick rank --model <models dir>`` ranked that catalog's programs, exit 0, no warning."""
    from smartpick_ml.data.catalog import synthetic_catalog
    from smartpick_ml.data.io import write_parquet_atomic

    model_dir = small_training_run.model_dir
    write_parquet_atomic(synthetic_catalog(seed=11), tmp_path / "data/raw/programs.parquet")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["rank", "--profile", str(PROFILE), "--model",
                                       str(model_dir), "--out", "ranked.csv"])
    assert result.exit_code == 0, result.output
    ranked = pd.read_csv(tmp_path / "ranked.csv")
    names = _catalog_of(model_dir).set_index("program_id")["name"]
    assert (ranked["name"].to_numpy() == names.loc[ranked["program_id"]].to_numpy()).all()


def test_rank_refuses_a_model_whose_catalog_was_changed(small_training_run, tmp_path):
    from smartpick_ml.data.io import write_parquet_atomic
    from smartpick_ml.modelling import persist

    model_dir = tmp_path / "models"
    shutil.copytree(small_training_run.model_dir, model_dir)
    catalog = model_dir / persist.read_manifest(model_dir)["catalog"]["file"]
    write_parquet_atomic(pd.read_parquet(catalog).iloc[:-1], catalog)
    result = CliRunner().invoke(main, ["rank", "--profile", str(PROFILE), "--model",
                                       str(model_dir)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "error:" in result.output and catalog.name in result.output


@pytest.fixture
def formula_model(small_training_run, tmp_path) -> Path:
    """The small world's model saved with a catalog whose program names start like a formula."""
    from smartpick_ml.modelling import persist

    model, manifest = persist.load_model(small_training_run.model_dir)
    programs = _catalog_of(small_training_run.model_dir)
    programs["name"] = '=HYPERLINK("http://evil.example","' + programs["name"] + '")'
    dest = tmp_path / "formula-models"
    persist.save_model(model, dest, {"model_version": manifest["model_version"]},
                       programs=programs)
    return dest


@pytest.mark.parametrize("command, column", [("rank", "name"), ("plan", "name_added")])
def test_exported_csv_escapes_cells_a_spreadsheet_would_run(formula_model, tmp_path, command,
                                                            column):
    """Issue #20 item 8: a program name starting with ``=HYPERLINK(`` went unchanged into the
    CSV."""
    import csv

    out = tmp_path / f"{command}.csv"
    result = CliRunner().invoke(main, [command, "--profile", str(PROFILE), "--model",
                                       str(formula_model), "--out", str(out)])
    assert result.exit_code == 0, result.output
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(r[column].startswith("'=HYPERLINK(") for r in rows)
    json_out = tmp_path / f"{command}.json"  # JSON is data, not a sheet: written as it is
    CliRunner().invoke(main, [command, "--profile", str(PROFILE), "--model",
                              str(formula_model), "--out", str(json_out)])
    assert json.loads(json_out.read_text())[0][column].startswith("=HYPERLINK(")


def test_plan_with_a_bad_backup_writes_nothing(small_training_run, tmp_path):
    """Issue #16: a backup equal to the preferred specialty is refused naming the field, exit 2,
    and no file is written."""
    profile = json.loads(PROFILE.read_text())
    profile["backup_specialties"] = [profile["preferred_specialty"]]
    bad = tmp_path / "profile.json"
    bad.write_text(json.dumps(profile))
    out = tmp_path / "plan.csv"
    result = CliRunner().invoke(main, ["plan", "--profile", str(bad), "--model",
                                       str(small_training_run.model_dir), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "backup_specialties" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_rank_with_a_backup_ranks_both_specialties_and_says_which(small_training_run, tmp_path):
    """Issue #16: a profile with backup specialties ranks their programs too; the table names
    each row's specialty."""
    profile, path = _profile_with_backup(tmp_path)
    out = tmp_path / "ranked.csv"
    result = CliRunner().invoke(main, ["rank", "--profile", str(path), "--model",
                                       str(small_training_run.model_dir), "--top", "400",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    header, table_header = result.output.splitlines()[:2]
    assert "Internal Medicine + Family Medicine" in header and "programs can take" in header
    assert "specialty" in table_header.split()
    ranked = pd.read_csv(out)
    assert set(ranked["specialty"]) == {profile["preferred_specialty"], "Family Medicine"}


def test_plan_with_a_backup_says_what_it_covers(small_training_run, tmp_path):
    profile, path = _profile_with_backup(tmp_path)
    result = CliRunner().invoke(main, ["plan", "--profile", str(path), "--model",
                                       str(small_training_run.model_dir),
                                       "--max-applications", "10"])
    assert result.exit_code == 0, result.output
    assert "covers Internal Medicine only" in result.output
    assert "Family Medicine" in result.output
    assert "--across 40,15" in result.output  # and how to plan them together


def test_evaluate_plans_prints_its_summary_and_writes_its_files(small_training_run, tmp_path):
    """The small world's validation season re-run with a few applicants following the plan."""
    config = small_training_run.evaluate_plans_config(
        tmp_path / "evaluate.toml", tmp_path / "out", {"non_us_img": 20, "us_md_senior": 10},
        group_share=0.05, replicates=2,
        adoption="non_us_img_shares = [0.1]\nevery_type_share = 0.05")
    model_dir = tmp_path / "models"  # the calibration is installed beside it
    shutil.copytree(small_training_run.model_dir, model_dir)
    result = CliRunner().invoke(main, ["evaluate-plans", "--config", str(config), "--model",
                                       str(model_dir), "--no-track"])
    assert result.exit_code == 0, result.output
    assert MatchPredictor.load(model_dir).manifest["plan_calibration"] is not None
    assert "installed" in result.stdout and "no type" in result.stdout  # too few to fit here
    # the headline lands in the model's run report, in place of "not measured yet"
    report = (model_dir / "report.html").read_text()
    assert "realised, own list" in report and "Not measured for this model yet" not in report
    assert report.count("smartpick:promise -->") == 2
    assert "SmartPick's plan against applicants' own lists" in result.stdout
    assert "Non-US IMG" in result.stdout and "US MD senior" in result.stdout
    for name in ("summary.md", "summary.csv", "reliability.csv", "reliability.png",
                 "per_applicant.parquet"):
        assert (tmp_path / "out" / name).is_file() and name in result.stdout
    bad = CliRunner().invoke(main, ["evaluate-plans", "--config", str(config), "--n-jobs", "0"])
    assert bad.exit_code == 2 and "--n-jobs" in bad.output and "Traceback" not in bad.output


def test_rank_numbers_from_one_names_program_ids_and_saves_every_program(small_training_run,
                                                                        tmp_path):
    """Issue #18: rows were numbered from 0, without program_id (so a user could not name a
    program to signal), and --out held only the rows shown."""
    out = tmp_path / "ranked.csv"
    result = CliRunner().invoke(main, ["rank", "--profile", str(PROFILE), "--model",
                                       str(small_training_run.model_dir), "--top", "5",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    header = result.output.splitlines()[0]
    catalog = _catalog_of(small_training_run.model_dir)
    in_specialty = int((catalog["specialty"] == "Internal Medicine").sum())
    assert re.search(rf"Internal Medicine: \d+ of {in_specialty} programs can take", header)
    rows = result.output.splitlines()[2:7]
    assert [int(r.split()[0]) for r in rows] == [1, 2, 3, 4, 5]
    ranked = pd.read_csv(out)
    assert len(ranked) == in_specialty and ranked["rank"].tolist() == list(
        range(1, in_specialty + 1))
    assert all(pid in result.output for pid in ranked["program_id"].head(5))


def test_plan_explains_its_header_fee_and_optimal_and_never_prints_negative_zero(
        small_training_run):
    result = CliRunner().invoke(main, ["plan", "--profile", str(PROFILE), "--model",
                                       str(small_training_run.model_dir),
                                       "--max-applications", "40"])
    assert result.exit_code == 0, result.output
    text = result.output
    assert re.search(r"Internal Medicine: \d+ of \d+ programs can take this applicant \(left "
                     r"out: (.*, )?\d+ \(needs a visa; program sponsors neither", text)
    assert "highest expected utility" in text and "not the highest P(match)" in text
    assert "USMLE transcript" in text and "not other specialties' fees" in text
    assert "-0.000" not in text
    assert re.search(r"^\s+1\. IM-\d{4}  ", text, re.M)  # the program_id of each added program


def test_plan_across_the_preferred_and_backup_specialties(small_training_run, tmp_path):
    """Issue #18: one rank list across specialties, its figures and fee, every program in
    --out; a malformed --across is a usage error naming the option."""
    profile, path = _profile_with_backup(tmp_path)
    out = tmp_path / "list.csv"
    result = CliRunner().invoke(main, ["plan", "--profile", str(path), "--model",
                                       str(small_training_run.model_dir), "--across", "12,6",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Internal Medicine" in result.output and "Family Medicine" in result.output
    assert "restart for each specialty" in result.output and "P(match)" in result.output
    listed = pd.read_csv(out)
    assert listed["rank"].tolist() == list(range(1, len(listed) + 1))
    assert (listed["specialty"] == "Internal Medicine").sum() <= 12
    bad = CliRunner().invoke(main, ["plan", "--profile", str(path), "--model",
                                    str(small_training_run.model_dir), "--across", "12,x"])
    assert bad.exit_code == 2 and "--across" in bad.output and "Traceback" not in bad.output
    alone = CliRunner().invoke(main, ["plan", "--profile", str(path), "--choose-signals"])
    assert alone.exit_code == 2 and "--across" in alone.output


def test_plan_chooses_signals_with_the_list(small_training_run, tmp_path):
    """Issue #18: --choose-signals sends signals within the allotment, says how many of each
    tier, and every row of --out carries its signal."""
    path = tmp_path / "anesthesia.json"
    path.write_text(json.dumps({"applicant_type": "us_md_senior", "step2_ck": 250,
                                "graduation_year": 2025,
                                "preferred_specialty": "Anesthesiology",
                                "backup_specialties": ["Internal Medicine"]}))
    out = tmp_path / "list.csv"
    result = CliRunner().invoke(main, ["plan", "--profile", str(path), "--model",
                                       str(small_training_run.model_dir), "--across", "12,4",
                                       "--choose-signals", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert re.search(r"signals in Anesthesiology: gold \d+ of 5, silver \d+ of 10",
                     result.output)
    assert "signals in Internal Medicine: none" in result.output
    listed = pd.read_csv(out)
    assert set(listed["signal"]) <= {"none", "gold", "silver"}
    budgeted = CliRunner().invoke(main, ["plan", "--profile", str(path), "--model",
                                         str(small_training_run.model_dir), "--across", "30,10",
                                         "--budget", "400", "--choose-signals"])
    assert budgeted.exit_code == 0, budgeted.output
    fee = int(re.search(r"fee \$([\d,]+)", budgeted.output).group(1).replace(",", ""))
    assert fee <= 400
    assert (listed.loc[listed["specialty"] == "Internal Medicine", "signal"] == "none").all()
