"""``smartpick``: one command, a subcommand per stage. ``smartpick --help`` is the guide."""

from __future__ import annotations

import contextlib
import inspect
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from smartpick_ml.contracts.errors import ConfigError, DataValidationError, SmartPickError

DEFAULT_SIMULATE_CONFIG = "pipelines/simulate.toml"
DEFAULT_TRAIN_CONFIG = "pipelines/train.toml"
DEFAULT_EVALUATE_PLANS_CONFIG = "pipelines/evaluate_plans.toml"


class _Progress:
    """Progress of a long stage on stderr: a tqdm bar on a terminal, otherwise (CI logs, pipes)
    one line per message with the elapsed time, so a long run never looks hung."""

    def __init__(self, desc: str, total: int, unit: str):
        self.desc, self.t0 = desc, time.perf_counter()
        self.bar = None
        if sys.stderr.isatty():
            try:  # the training stack's; a service's lean install prints lines instead
                from tqdm import tqdm
            except ModuleNotFoundError:
                return
            self.bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            if exc[0] is None:
                self.bar.update(self.bar.total - self.bar.n)
            self.bar.close()

    def note(self, msg: str, advance: int = 0) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(msg[:60])
            self.bar.update(min(advance, self.bar.total - self.bar.n))
        else:
            click.echo(f"[{self.desc} {time.perf_counter() - self.t0:6.1f}s] {msg}", err=True)


@contextlib.contextmanager
def _stopped_like_ctrl_c() -> Iterator[None]:
    """A SIGTERM (``kill``, a scheduler's time limit) stops the command as Ctrl-C does: by an
    exception, so joblib stops its worker processes instead of leaving them running."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fail(exc: Exception) -> None:
    click.secho(f"error: {exc}", fg="red", err=True)
    sys.exit(2)


class _Group(click.Group):
    """Turns SmartPick's own errors into a one-paragraph message and exit code 2 (no traceback)."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except SmartPickError as exc:
            _fail(exc)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="smartpick-ml")
def main() -> None:
    """SmartPick ML — how likely is a residency program to take this applicant?

    q(applicant, program) from a calibrated gradient-boosted model, trained on simulated Match
    seasons decided by the real deferred-acceptance algorithm; then, for one applicant, programs
    ranked by expected value and the best application list with its ERAS fees.

    \b
    Stages, in order (each writes what the next reads):
      catalog    import the ERAS program catalog (or build the synthetic one) -> data/raw/
      simulate   simulate Match seasons on it, by deferred acceptance        -> data/raw/
      season-report
                 the seasons against NRMP's figures (simulate writes it too) -> terminal, --out
      oracle     the true q for a simulated season (the floor for any model) -> data/processed/
      train      features -> calibrated gradient boosting -> baselines -> MLflow
                 -> data/processed/run/ (report.html, plots), models/, mlflow.db
      rank       rank programs for one applicant by expected value           -> terminal, --out
      plan       the best application list of every length, with ERAS fees   -> terminal, --out
      score      q for every applicant x program of a table (a whole season) -> Parquet
      run        the main job on the default config (what `make run` does)
      evaluate-plans
                 does following the plan help? the season re-run with plans -> data/processed/plans/
      schemas    print the data contracts (tables, columns, units, allowed values)

    \b
    Start here:
      smartpick run                         # simulate if needed, train, evaluate, register
      smartpick rank --profile examples/profile_non_us_img.json
      smartpick simulate --scale 0.1 --seasons 2025 --output-dir data/small   # a quick look

    \b
    Paths are relative to the working directory (run from the project root). Every command
    ends by printing where its outputs went and what to run next; `smartpick COMMAND --help`
    has examples and defaults.
    """


@main.group()
def catalog() -> None:
    """Build the `programs` table: the real catalog or a synthetic one.

    \b
    Output: data/raw/programs.parquet (change with --out). Not needed before `simulate`,
    which builds the catalog itself (`--catalog auto`: ../shared when present, else synthetic).

    \b
    Examples:
      smartpick catalog import ../shared/data/program_interview_rates
      smartpick catalog synthetic --seed 0
    """


@catalog.command("import")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("data/raw/programs.parquet"), show_default=True,
              help="Where to write the validated programs table (Parquet).")
def catalog_import(directory: Path, out: Path) -> None:
    """Import a directory of per-specialty interview-rate CSVs (ERAS format).

    Validates every file against the `programs` contract and fills what the files lack by
    documented rules (positions, IMG-support markers; see smartpick_ml/catalog.py).

    \b
    Output: data/raw/programs.parquet (default of --out).
    Example:
      smartpick catalog import ../shared/data/program_interview_rates
    """
    from smartpick_ml.data.catalog import import_catalog
    from smartpick_ml.data.io import write_parquet_atomic

    programs = import_catalog(directory)
    write_parquet_atomic(programs, out)
    click.echo(f"{len(programs):,} programs in {programs['specialty'].nunique()} specialties "
               f"({int(programs['positions'].sum()):,} PGY-1 positions) -> {out}")
    click.echo("next: smartpick simulate --catalog " + str(out))


@catalog.command("synthetic")
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic draw.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("data/raw/programs.parquet"), show_default=True)
def catalog_synthetic(seed: int, out: Path) -> None:
    """Build a synthetic catalog (for machines without ../shared).

    Same program count per specialty as the real one; interview rates drawn from per-specialty
    distributions measured on it (smartpick_ml/resources/catalog_figures.json).

    \b
    Output: data/raw/programs.parquet (default of --out).
    Example:
      smartpick catalog synthetic --seed 1 --out data/raw/programs.parquet
    """
    from smartpick_ml.data.catalog import synthetic_catalog
    from smartpick_ml.data.io import write_parquet_atomic

    programs = synthetic_catalog(seed)
    write_parquet_atomic(programs, out)
    click.echo(f"{len(programs):,} synthetic programs -> {out}")
    click.echo(f"next: smartpick simulate --catalog {out}")


@catalog.command("figures")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("smartpick_ml/resources/catalog_figures.json"), show_default=True)
def catalog_figures_cmd(directory: Path, out: Path) -> None:
    """Re-derive the figures the synthetic catalog is drawn from, from a real catalog.

    \b
    Output: smartpick_ml/resources/catalog_figures.json (default of --out).
    Example:
      smartpick catalog figures ../shared/data/program_interview_rates
    """
    from smartpick_ml.data.catalog import catalog_figures, import_catalog
    from smartpick_ml.data.io import write_json_atomic

    write_json_atomic(out, catalog_figures(import_catalog(directory)))
    click.echo(f"catalog figures -> {out}")
    click.echo("next: smartpick catalog synthetic   # a synthetic catalog drawn from them")


def _simulate(config: Path, seasons: str | None, scale: float | None, seed: int | None,
              catalog_source: str | None, output_dir: Path | None, report: bool) -> dict:
    from smartpick_ml.contracts.config import load_simulate_config
    from smartpick_ml.simulation.season import simulate_to_disk

    season_list = [int(s) for s in seasons.split(",")] if seasons else None
    cfg = load_simulate_config(config, seasons=season_list, scale=scale, seed=seed,
                               catalog=catalog_source,
                               output_dir=str(output_dir) if output_dir else None)
    started = time.perf_counter()
    seasons_started = 0
    with _Progress("simulate", len(cfg.seasons), "season") as bar:
        def progress(msg: str) -> None:
            # "season N" is said when season N starts: the previous one is then done
            nonlocal seasons_started
            bar.note(msg, advance=1 if msg.startswith("season") and seasons_started else 0)
            seasons_started += msg.startswith("season")
        paths = simulate_to_disk(cfg, progress=progress)
    elapsed = time.perf_counter() - started
    if report:
        click.echo(paths["report"].read_text())
    click.echo(f"simulated seasons {cfg.seasons} at scale {cfg.scale} in {elapsed:.1f} s")
    for name, p in paths.items():
        click.echo(f"  {name:17s} {p}")
    return paths


@main.command()
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path),
              default=Path(DEFAULT_SIMULATE_CONFIG), show_default=True,
              help="Simulation config (TOML); the flags below override its top-level keys.")
@click.option("--seasons", help="Comma-separated Match years, e.g. 2023,2024,2025.")
@click.option("--scale", type=float, help="Market size: 1.0 = the real Match (~45k applicants).")
@click.option("--seed", type=int, help="Seed: the same seed gives byte-identical tables.")
@click.option("--catalog", "catalog_source",
              help="'auto' (../shared if present, else synthetic), 'synthetic', a CSV directory "
                   "or a programs Parquet file.")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the tables go (default data/raw).")
@click.option("--report/--no-report", default=True, show_default=True,
              help="Print the validation report (match rate by type vs published).")
def simulate(config: Path, seasons: str | None, scale: float | None, seed: int | None,
             catalog_source: str | None, output_dir: Path | None, report: bool) -> None:
    """Simulate Match seasons: applicants, applications, interviews, rank lists, the match.

    Defaults come from pipelines/simulate.toml (seasons 2023-2025, scale 1.0 = the real
    market, ~45k applicants and ~3M applications a season; docs/benchmarks.md has the time);
    the flags override them. The same seed gives byte-identical tables.

    \b
    Output: data/raw/ (or --output-dir): programs, applicants, applications,
    program_outcomes (Parquet), simulation_report.md (match rate by type vs NRMP) and
    simulation_manifest.json (row counts, hashes).

    \b
    Examples:
      smartpick simulate                               # pipelines/simulate.toml
      smartpick simulate --scale 0.1 --seasons 2025    # a small, quick season
      smartpick simulate --catalog synthetic --output-dir data/synthetic
    """
    paths = _simulate(config, seasons, scale, seed, catalog_source, output_dir, report)
    click.echo("next:")
    click.echo("  smartpick train   # train on these seasons (reads data/raw/, see its --config)")
    click.echo(f"  less {paths['report']}   # match rate by type vs NRMP")
    click.echo("  notebooks/01_season_explorer.ipynb   # explore the seasons in Jupyter")


@main.command("season-report")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("data/raw"), show_default=True,
              help="The seasons' tables: programs, applicants, applications, program_outcomes.")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path),
              default=Path(DEFAULT_SIMULATE_CONFIG), show_default=True,
              help="Where the published figures compared against come from.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the Markdown to this file instead of printing it.")
@click.option("--held-out", "held_out", type=click.Path(dir_okay=False, path_type=Path),
              default=None,
              help="A CSV of published non-US IMG match rates by preferred specialty (season, "
                   "specialty, matched_preferred_pct[, source]) to judge the seasons against: "
                   "adds their rank correlation and offset-free error, beside #16's goals.")
def season_report_cmd(data_dir: Path, config: Path, out: Path | None,
                      held_out: Path | None) -> None:
    """Rebuild the seasons' validation report from their tables, against NRMP's figures.

    Match rate by applicant type and unfilled positions each season; in the market season
    (2025), applicants ranking each specialty and track and positions filled by applicant type;
    backup lists; non-US IMGs by preferred specialty. `smartpick simulate` writes the same report
    beside its tables; this rebuilds it, e.g. for the docs, or for tables from elsewhere in the
    schemas (`smartpick schemas`). Simulated tables must come from this version's parameters
    and code (their manifest says so), else simulate them again.

    \b
    Output: the terminal, or the file given to --out.
    Examples:
      make run && smartpick season-report --out docs/season_report.md
      smartpick season-report --held-out held_out_rates.csv   # the held-out check
    """
    import pandas as pd

    from smartpick_ml.contracts.config import load_simulate_config
    from smartpick_ml.data.io import read_table, write_text_atomic
    from smartpick_ml.simulation.report import provenance, read_held_out, season_report
    from smartpick_ml.simulation.season import (
        is_current,
        manifest_config,
        read_simulation_manifest,
    )

    cfg = load_simulate_config(config)
    published = read_held_out(held_out) if held_out is not None else None
    made = read_simulation_manifest(data_dir)
    if made is not None and "simulation_fingerprint" in made and not is_current(made, cfg.params):
        raise ConfigError(f"{data_dir} holds seasons simulated by other parameters or code than "
                          f"{config} and this version: run `smartpick simulate` (or `make run`) "
                          "first")
    recorded = manifest_config(made, cfg) if made is not None else None
    if made is not None and recorded is None:
        raise ConfigError(f"{data_dir}/simulation_manifest.json has unreadable run options "
                          "(seasons, scale, seed, catalog)")
    tables = {n: read_table(data_dir / f"{n}.parquet", n)
              for n in ("programs", "applicants", "applications")}
    missing = [c for c in ("interviewed", "rank_position", "matched")
               if c not in tables["applications"]]
    if missing:
        raise DataValidationError("applications", [
            f"the report compares outcomes: it needs the columns {', '.join(missing)}"])
    outcomes_path = data_dir / "program_outcomes.parquet"
    if not outcomes_path.exists():
        raise ConfigError(f"{data_dir} has no program_outcomes.parquet (positions filled per "
                          "program and season), which the report needs")
    scale = recorded.scale if recorded is not None else 1.0
    made_by = (provenance(recorded.seasons, scale, recorded.seed,
                          made.get("catalog_source") or f"catalog {recorded.catalog!r}",
                          len(tables["programs"]), made.get("simulation_fingerprint"),
                          rebuilt=True) if recorded is not None
               else f"Tables in {data_dir} (no simulation manifest), scale 1.0. Rebuilt by "
               "`smartpick season-report`.")
    text = season_report(tables["programs"], tables["applicants"], tables["applications"],
                         pd.read_parquet(outcomes_path), cfg.params, float(scale),
                         made_by=made_by, held_out=published)
    if out is None:
        click.echo(text)
        return
    write_text_atomic(out, text)
    click.echo(f"season report -> {out}")


def _train(config: Path, track: bool) -> None:
    import logging

    from smartpick_ml.contracts.config import load_train_config
    from smartpick_ml.training.pipeline import STEPS, ProgressEvent, run_training
    from smartpick_ml.training.tracking import default_tracking_uri

    logging.basicConfig(level=logging.WARNING)
    cfg = load_train_config(config)
    with _Progress("train", len(STEPS) - (not track), "step") as bar:
        def progress(event: ProgressEvent) -> None:
            bar.note(event.message, advance=int(event.starts_step))
        result = run_training(cfg, progress=progress, track=track)
    m = result.metrics
    click.echo("\nvalidation season " + str(cfg.data.validation_season) +
               " — log-loss / Brier / ECE / ROC AUC (all applicants; IMGs in metrics.csv):")
    for r in m[m["group"] == "all"].itertuples():
        ratio = getattr(r, "log_loss_vs_reference", float("nan"))
        extra = f"   {ratio:.3f}x oracle" if ratio == ratio else ""
        click.echo(f"  {r.model:9s} {r.log_loss:.4f} / {r.brier:.4f} / {r.ece:.4f} / "
                   f"{r.roc_auc:.4f}{extra}")
    nonus = m[(m["group"] == "non_us_img") & (m["model"] == "model")]
    if len(nonus):
        click.echo(f"  non-US IMGs: model ECE {float(nonus['ece'].iloc[0]):.4f}")
    click.echo(f"\n{result.champion_decision}")
    click.echo(f"done in {result.timings['total']:.0f} s. Outputs:")
    for name, p in result.outputs.items():
        click.echo(f"  {name:18s} {p}")
    uri = default_tracking_uri(cfg)
    if track:
        click.echo(f"  {'mlflow':18s} {uri} (run {result.run_id}, "
                   f"model version {result.model_version})")
    report = result.outputs.get("model_report", result.outputs.get("report_html"))
    click.echo("next:")
    click.echo(f"  {report}   # the run report (a browser): metrics, plots, decision")
    model_dir = result.outputs.get("model_dir")
    model_flag = f" --model {model_dir}" if model_dir and Path(model_dir) != Path("models") else ""
    click.echo(f"  smartpick rank --profile examples/profile_non_us_img.json{model_flag}"
               "   # use the model")
    if track:
        click.echo(f"  mlflow ui --backend-store-uri {uri}   # compare runs, then open")
        click.echo(f"    {_run_page(uri, result.run_id)}"
                   "   # this run (MLflow 3's start page is its GenAI view)")
    click.echo("  notebooks/02_model_report.ipynb   # the champion, explored (Jupyter)")


def _run_page(tracking_uri: str, run_id: str | None) -> str:
    """The MLflow UI's page of a training run (``mlflow ui``'s default address), or its list
    of experiments where the run cannot be looked up."""
    base = "http://127.0.0.1:5000/#/experiments"
    if not run_id:
        return base
    try:
        from mlflow import MlflowClient

        experiment = MlflowClient(tracking_uri=tracking_uri).get_run(run_id).info.experiment_id
    except Exception:  # a page address is a courtesy: never fail a finished run over it
        return base
    return f"{base}/{experiment}/runs/{run_id}"


@main.command()
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path),
              default=Path(DEFAULT_TRAIN_CONFIG), show_default=True,
              help="Training config (TOML): data, seasons, model settings, tracking.")
@click.option("--track/--no-track", default=True, show_default=True,
              help="Log to MLflow and move the champion alias (off: just save to models/).")
def train(config: Path, track: bool) -> None:
    """Train the match model, score it against baselines and the oracle, log it to MLflow.

    Trains on the config's earlier seasons and validates on the latest (2023-2024 / 2025 by
    default); simulates them first if data/raw is empty, or again if its seasons were simulated
    by other parameters or code (data/raw/simulation_manifest.json). The new model becomes
    `champion` only if it beats the current champion on the same validation rows, else
    `challenger`.

    \b
    Output:
      data/processed/run/report.html   the run report: data, metrics vs baselines and the
                                       oracle per applicant type, plots, alias decision, config
      data/processed/run/              metrics.csv, the plots (PNG), validation_scores.parquet
      data/processed/features.parquet  model features (+ features_manifest.json)
      models/                          the champion for services (+ manifest.json, report.html)
      mlflow.db                        runs and the registry `smartpick-match` (aliases
                                       champion / challenger); the report is logged there too

    \b
    Examples:
      smartpick train                                  # pipelines/train.toml
      smartpick train --no-track                       # just save to models/
      MLFLOW_TRACKING_URI=sqlite:///other.db smartpick train
    """
    _train(config, track)


@main.command()
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path),
              default=Path(DEFAULT_TRAIN_CONFIG), show_default=True)
def run(config: Path) -> None:
    """The main job on the embedded default (what `make run` does).

    Simulates seasons 2023-2025 on the catalog (../shared when present, else synthetic) if
    data/raw is empty (again if pipelines/simulate.toml or the simulation code changed since),
    then trains, evaluates and registers the model — `smartpick train`.
    A few minutes on a 2-core machine (docs/benchmarks.md).

    \b
    Output: data/raw/ (seasons), data/processed/run/report.html (the run report) and plots,
    models/ (the champion + report.html), mlflow.db (runs and registry).

    \b
    Example:
      smartpick run          # then open models/report.html in a browser
    """
    _train(config, True)


def _read_profile(path: Path) -> tuple[dict, dict | None]:
    """A profile file: JSON or TOML with the applicant's fields and an optional
    `preferences` object. Returns (applicant, preferences)."""
    import json
    import tomllib

    from smartpick_ml.inference.predictor import InputError

    if not path.is_file():
        raise InputError(f"profile: file not found: {path}")
    text = path.read_bytes()
    try:
        data = tomllib.loads(text.decode()) if path.suffix.lower() == ".toml" else \
            json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: [[[[…
        raise InputError(f"profile: {path.name} is not valid "
                         f"{'TOML' if path.suffix.lower() == '.toml' else 'JSON'}: {exc}") from None
    if not isinstance(data, dict):
        raise InputError("profile: expected an object with the applicant's fields")
    prefs = data.pop("preferences", None)
    return data, prefs


def _number(x: float) -> str:
    """Three decimals, and never "-0.000" (a difference of exactly nothing has no sign)."""
    text = f"{x:.3f}"
    return "0.000" if text == "-0.000" else text


_NUMBER_FORMATS = {c: _number for c in ("q", "utility", "ev", "p_match", "p_match_corrected",
                                        "expected_utility", "usd_per_extra_pp",
                                        "gain_vs_naive")}


def _write_table(frame, out: Path | None) -> None:
    """``frame`` to ``out``: JSON records, or CSV for a spreadsheet (formula-like text escaped)."""
    from smartpick_ml.data.io import write_csv_atomic, write_text_atomic

    if out is None:
        return
    if out.suffix.lower() == ".json":
        write_text_atomic(out, frame.to_json(orient="records", indent=2, double_precision=15))
    else:
        write_csv_atomic(frame, out)
    click.echo(f"-> {out}")


_PROFILE_HELP = """\b
Profile file (JSON or TOML), e.g. profile.json:
  {"applicant_type": "non_us_img", "step2_ck": 248, "graduation_year": 2022,
   "needs_visa": true, "usce_months": 6, "preferred_specialty": "Internal Medicine",
   "preferences": {"states": ["NY", "NJ"], "img_support_weight": 1.0}}
Optional: "backup_specialties": ["Family Medicine"] (up to 2, ranked below the preferred one;
`rank` covers them, `plan --across` plans them with the preferred one), "applications": 90
(programs you apply to this season; default: your type's typical number), "signals":
{"DERM-0097": "gold"} (preference signals by program_id, as `rank` lists them: "signal" in
single-tier specialties, "gold" / "silver" in tiered ones, at most the published number per
tier; or let `plan --across ... --choose-signals` choose them).
More: examples/profile_us_md_dermatology.json, examples/profile_non_us_img_backup.json
"""


@main.command()
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="Applicant profile (JSON/TOML), optional `preferences`.")
@click.option("--specialty", help="Rank this specialty (default: the profile's "
              "preferred_specialty and backup_specialties, else the whole catalog).")
@click.option("--top", "k", type=int, default=20, show_default=True, help="Rows to show.")
@click.option("--model", "model_source", default="models", show_default=True,
              help="Model directory or MLflow URI (models:/smartpick-match@champion).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the ranked programs (.csv or .json).")
def rank(profile_path: Path, specialty: str | None, k: int, model_source: str,
         out: Path | None) -> None:
    """Rank programs for one applicant by expected value EV = q x U.

    q: the chance the program would take the applicant; U: their value of the program (from
    `preferences`); programs that cannot take the applicant (visa, military, a published Step
    2 CK minimum or graduation cut-off) are listed last with the reason. Uses the model
    in models/ (saved by `smartpick train`) unless --model says otherwise, and ranks the
    programs it was trained on (saved with it and checked against its manifest; never the
    working directory's data/raw).

    \b
    Output: the top rows on the terminal; every column (q, U, EV, eligibility, the inputs
    that move q most) for all ranked programs in --out (.csv or .json).

    \b
    Examples:
      smartpick rank --profile examples/profile_non_us_img.json --top 20
      smartpick rank --profile me.json --specialty Psychiatry --out ranked.csv
      smartpick rank --profile me.json --model models:/smartpick-match@champion
    """
    from smartpick_ml.inference.predictor import MatchPredictor

    applicant, prefs = _read_profile(profile_path)
    predictor = MatchPredictor.load(model_source)
    if k is not None and k < 1:
        raise click.BadParameter("must be at least 1", param_hint="--top")
    # every program is ranked (cheap); the first rows are shown and explained, --out has all
    ranked = predictor.rank(applicant, prefs, specialty=specialty, explain=k)
    specialties = [specialty] if specialty else [
        s for s in [applicant.get("preferred_specialty"), *applicant.get("backup_specialties", [])]
        if s]
    where = " + ".join(map(str, specialties)) or "the whole catalog"
    click.echo(f"{where}: {int(ranked['eligible'].sum())} of {len(ranked)} programs can take "
               "this applicant; ranked by EV = q x U (the ineligible last, with the reason)")
    columns = ["rank", "program_id", "name", "state", "q", "utility", "ev", "eligible",
               "top_factors"]
    if len(specialties) > 1:
        columns.insert(2, "specialty")  # the preferred and backup specialties, ranked together
    ranked.insert(0, "rank", range(1, len(ranked) + 1))
    shown = ranked.head(k)[columns]
    click.echo(shown.to_string(index=False, formatters=_NUMBER_FORMATS))
    _write_table(ranked, out)
    if out is None:
        click.echo(f"(--out ranked.csv saves every column for all {len(ranked)} programs)")
    click.echo(f"next: smartpick plan --profile {profile_path}   # the best application list")


rank.help = inspect.cleandoc(rank.help or "") + "\n\n" + _PROFILE_HELP


@main.command()
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="Applicant profile (JSON/TOML), optional `preferences`.")
@click.option("--specialty", help="Specialty to apply in (default: preferred_specialty).")
@click.option("--max-applications", type=int, default=None,
              help="Longest list to consider (default: every eligible program).")
@click.option("--budget", type=float, default=None, help="ERAS budget in US dollars.")
@click.option("--schedule", type=click.Choice(["2025", "2026", "2024"]), default="2025",
              show_default=True, help="ERAS fee schedule.")
@click.option("--model", "model_source", default="models", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the plan table (.csv or .json).")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a PNG of P(match) and fees against list length.")
@click.option("--across", help="One rank list across the preferred specialty and the "
              "profile's backup_specialties: at most this many programs of each, preferred "
              "first, e.g. 40,15,5 (with --budget: the best split within it).")
@click.option("--choose-signals", is_flag=True,
              help="With --across: also choose which programs to signal, within each "
                   "specialty's allotment (the profile then lists no signals).")
def plan(profile_path: Path, specialty: str | None, max_applications: int | None,
         budget: float | None, schedule: str, model_source: str, out: Path | None,
         plot: Path | None, across: str | None, choose_signals: bool) -> None:
    """The best application list for every length: P(match), E[U] and ERAS fees.

    Exact (nested optimal portfolios, Kapur & Hong 2022), compared with the naive
    "top h by EV" list. P(match) is shown by the independence formula and corrected for
    programs' correlated decisions (for a plan: calibrated on re-run seasons, once
    `smartpick evaluate-plans` has run for the model).

    With --across: one rank list across the preferred specialty and the profile's backups,
    preferred first, the exact best for expected utility with ERAS fees restarting per
    specialty; --choose-signals also chooses which programs to signal (within each
    specialty's allotment), --budget the best split of the budget between the specialties.
    How: docs/planning.md

    \b
    Output: a summary on the terminal; the whole table (one row per list length h: the
    program added, P(match), E[U], fee) in --out (.csv or .json); a PNG of P(match) and
    fees against h in --plot.

    \b
    Examples:
      smartpick plan --profile examples/profile_non_us_img.json --max-applications 120
      smartpick plan --profile me.json --budget 1500 --out plan.csv --plot plan.png
      smartpick plan --profile examples/profile_non_us_img_backup.json --across 40,15,5
      smartpick plan --profile me.json --across 60,20,5 --budget 1200 --choose-signals
    """
    from smartpick_ml.inference.predictor import MatchPredictor

    if choose_signals and across is None:
        raise click.UsageError("--choose-signals plans the list and its signals together: "
                               "give the list's size with --across, e.g. --across 40")
    applicant, prefs = _read_profile(profile_path)
    predictor = MatchPredictor.load(model_source)
    if across is not None:
        _plan_across(predictor, applicant, prefs, across, schedule, out, choose_signals, budget)
        return
    result = predictor.plan(applicant, prefs, specialty=specialty,
                            max_applications=max_applications, budget=budget,
                            schedule=schedule)
    from smartpick_ml.inference.portfolio import USMLE_TRANSCRIPT_FEE_USD

    t = result["table"]
    marks = sorted({1, 5, 10, 15, 20, 30, 40, 60, 80, 100, 150, len(t)} & set(t["h"]))
    view = t[t["h"].isin(marks)][["h", "p_match", "p_match_corrected", "expected_utility",
                                  "fee_usd", "usd_per_extra_pp", "gain_vs_naive"]]
    excluded = result["excluded"]
    reasons = ", ".join(f"{n} ({r})" for r, n in excluded["reason"].value_counts().items() if n)
    click.echo(f"{result['specialty']}: {result['programs_in_specialty'] - len(excluded)} of "
               f"{result['programs_in_specialty']} programs can take this applicant"
               + (f" (left out: {reasons})" if reasons else ""))
    click.echo("each row h: the list of h programs with the highest expected utility E[U] (not "
               "the highest P(match)); gain_vs_naive: its E[U] over the top h by EV")
    click.echo(view.to_string(index=False, formatters=_NUMBER_FORMATS))
    click.echo(f"\nlongest list: P(match) {result['p_match_corrected']:.1%} (independence formula "
               f"{result['p_match']:.1%}), fee ${result['fee_usd']:,}")
    click.echo(f"fee_usd: ERAS fees for h programs in {result['specialty']} ({schedule} schedule) "
               f"plus the ${USMLE_TRANSCRIPT_FEE_USD} USMLE transcript, once a season; not other "
               "specialties' fees, the NRMP registration or interview travel")
    click.echo("p_match assumes programs decide independently; p_match_corrected lets them share "
               "your unseen strengths (use it; usd_per_extra_pp is computed from it)")
    backups = applicant.get("backup_specialties")
    if backups and not specialty:
        sizes = ",".join(["40", *(["15"] * len(backups))])
        click.echo(f"this plan covers {result['specialty']} only; one list with your backups "
                   f"({', '.join(map(str, backups))}): smartpick plan --profile {profile_path} "
                   f"--across {sizes} [--choose-signals] [--budget DOLLARS]")
    click.echo("programs, in the order the optimal list adds them:")
    for i, r in enumerate(result["programs"].head(15).itertuples(), 1):
        click.echo(f"  {i:3d}. {r.program_id}  {r.name} ({r.state})  q={r.q:.3f}")
    _write_table(t, out)
    if plot:
        from smartpick_ml.training.evaluate import plot_plan

        plot_plan(t, plot, title=result["specialty"])
        click.echo(f"-> {plot}")
    if out is None and plot is None:
        click.echo("(--out plan.csv saves the whole table; --plot plan.png draws it)")
    click.echo(f"next: smartpick rank --profile {profile_path} --out ranked.csv   # every "
               "program's q, U and EV")


def _plan_across(predictor: Any, applicant: dict, prefs: dict | None, across: str,
                 schedule: str, out: Path | None, choose_signals: bool = False,
                 budget: float | None = None) -> None:
    """`plan --across`: the best single list across the preferred and backup specialties."""
    try:
        sizes = [int(x) for x in across.split(",")]
    except ValueError:
        raise click.BadParameter("whole numbers separated by commas, e.g. 40,15",
                                 param_hint="--across") from None
    result = predictor.plan_across(applicant, prefs, sizes, schedule=schedule,
                                   choose_signals=choose_signals, budget=budget)
    counts = result["programs_per_specialty"]
    click.echo("one rank list, preferred specialty first: " + ", ".join(
        f"{s} {counts[s]} of at most {n}" for s, n in zip(result["specialties"], sizes,
                                                          strict=True)))
    click.echo("the programs are the exact best list for expected utility, a backup's match "
               "worth half a preferred one (plan_across's specialty_weights)")
    click.echo(f"P(match) {result['p_match_corrected']:.1%} (independence formula "
               f"{result['p_match']:.1%}); in {result['specialties'][0]} "
               f"{result['p_match_preferred_corrected']:.1%}; E[U] "
               f"{_number(result['expected_utility'])}; fee ${result['fee_usd']:,} (ERAS fees "
               "restart for each specialty, plus the USMLE transcript once)")
    if choose_signals:
        from smartpick_ml.contracts.reference import SIGNAL_ALLOTMENTS

        sent = result["programs"].groupby(["specialty", "signal"]).size()
        for s in result["specialties"]:
            allowed = SIGNAL_ALLOTMENTS.get(s)
            click.echo(f"signals in {s}: " + (", ".join(
                f"{tier} {int(sent.get((s, tier), 0))} of {n}" for tier, n in allowed.items())
                if allowed else "none (the catalog has no signal data for it)"))
        click.echo("the signals are chosen with the list (exactly, for expected utility); q is "
                   "each program's with its signal")
    shown = result["programs"][["rank", "specialty", "program_id", "name", "signal", "q",
                                "utility", "p_match_corrected", "fee_usd"]]
    click.echo(shown.head(25).to_string(index=False, formatters=_NUMBER_FORMATS))
    _write_table(result["programs"], out)
    if out is None and len(shown) > 25:
        click.echo(f"(--out list.csv saves all {len(shown)} programs)")


plan.help = inspect.cleandoc(plan.help or "") + "\n\n" + _PROFILE_HELP


@main.command()
@click.option("--applicants", "applicants_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Applicants table (.parquet or .csv; the columns of `smartpick schemas`).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the scores (Parquet: applicant_id, program_id, q).")
@click.option("--specialty", help="Score this specialty's programs only (default: all).")
@click.option("--model", "model_source", default="models", show_default=True,
              help="Model directory or MLflow URI (models:/smartpick-match@champion).")
def score(applicants_path: Path, out: Path, specialty: str | None, model_source: str) -> None:
    """q for every applicant x program: a whole season in one file.

    Each applicant is scored against every program (or one specialty's) by the compiled fast
    path, in chunks written as they are done; the file appears only when all are done.

    \b
    Output: --out (Parquet: applicant_id, program_id, q), docs/scale.md
    Example:
      smartpick score --applicants data/raw/applicants.parquet --out data/processed/scores.parquet
    """
    from smartpick_ml.inference.batch import read_applicants, score_applicants
    from smartpick_ml.inference.predictor import MatchPredictor

    applicants = read_applicants(applicants_path)
    predictor = MatchPredictor.load(model_source)
    with _Progress("score", len(applicants), "applicants") as bar:
        done = {"n": 0}

        def progress(n: int, total: int) -> None:
            bar.note(f"{n:,} of {total:,} applicants", advance=n - done["n"])
            done["n"] = n

        summary = score_applicants(predictor, applicants, out, specialty, progress)
    click.echo(f"{summary.pairs:,} pairs ({summary.applicants:,} applicants x "
               f"{summary.programs:,} programs) -> {summary.path}")
    click.echo("next: pandas.read_parquet(...) or a Spark job over the file")


@main.command("evaluate-plans")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path),
              default=Path(DEFAULT_EVALUATE_PLANS_CONFIG), show_default=True,
              help="Plan-evaluation config (TOML): sample sizes, replicates, adoption shares, "
                   "parallel backend.")
@click.option("--model", "model_source", default="models", show_default=True,
              help="Model directory or MLflow URI (models:/smartpick-match@champion).")
@click.option("--n-jobs", type=int, default=None, help="Parallel seasons (overrides run.n_jobs).")
@click.option("--track/--no-track", default=True, show_default=True,
              help="Log the evaluation to MLflow (the training config's experiment).")
@click.option("--install-calibration/--no-install-calibration", default=True,
              show_default=True,
              help="Save the fitted plan calibration beside a model directory, so the "
                   "P(match) it states is the calibrated one (not for an MLflow URI: pass the "
                   "file to MatchPredictor.load(..., plan_calibration=)).")
def evaluate_plans_cmd(config: Path, model_source: str, n_jobs: int | None,
                       track: bool, install_calibration: bool) -> None:
    """Does SmartPick's plan beat applicants' own lists, and is its stated P(match) right?

    Sampled applicants of the validation season (never seen in training) follow SmartPick's
    plan at the fee of their own list; the season is re-run (interviews, rank lists, the
    match) with everything else held fixed, and repeated until every rate's Monte-Carlo error
    is small. Also: seasons in which 1 %, 10 %, 50 % of non-US IMGs, or 10 % of everyone,
    follow SmartPick at once. Needs a simulated season and a model (`smartpick run`).

    It also calibrates the stated P(match) on what the plans realised (a smooth, rising
    line per applicant type; reported cross-fitted) and saves that calibration beside the
    model: from then on `rank`, `plan` and `match_probability` state the calibrated figure.

    \b
    Output: data/processed/plans/ (run.out_dir): summary.md (printed), summary.csv (per
    season and type: stated and realised P(match), own list, gain, Monte-Carlo error),
    reliability.csv (stated against realised by decile), reliability.png,
    gain_by_adoption.png, by_type.csv, adoption.csv, per_applicant.parquet, summary.json,
    plan_calibration.json; an MLflow run tagged with the model it evaluates. Method:
    docs/promise.md

    \b
    Examples:
      smartpick evaluate-plans                       # pipelines/evaluate_plans.toml, ~8 min
      smartpick evaluate-plans --n-jobs 8            # more seasons at once
    """
    from smartpick_ml.contracts.config import load_evaluate_plans_config, load_train_config
    from smartpick_ml.evaluation.plans import (
        evaluate_plans,
        format_summary,
        log_evaluation,
        update_model_report,
        write_evaluation,
    )
    from smartpick_ml.inference.predictor import MatchPredictor
    from smartpick_ml.training.tracking import default_tracking_uri

    cfg = load_evaluate_plans_config(config)
    if n_jobs is not None:
        if n_jobs < 1:
            raise click.BadParameter("must be at least 1", param_hint="--n-jobs")
        cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"n_jobs": n_jobs})})
    train_cfg = load_train_config(cfg.train_config)
    predictor = MatchPredictor.load(model_source)
    started = time.perf_counter()
    with _Progress("evaluate-plans", 0, "step") as bar, _stopped_like_ctrl_c():
        evaluation = evaluate_plans(cfg, train_cfg, predictor, progress=bar.note)
    # a run stopped before here has written nothing: the files appear together at the end
    paths = write_evaluation(evaluation, cfg.run.out_dir)
    click.echo(format_summary(evaluation))
    click.echo(f"evaluated in {time.perf_counter() - started:.0f} s")
    for name, p in paths.items():
        click.echo(f"  {name:16s} {p}")
    if install_calibration and evaluation.calibration is not None:
        click.echo(_install_plan_calibration(evaluation.calibration, model_source))
    if not model_source.startswith(("models:/", "runs:/")):
        report = update_model_report(model_source, evaluation)
        if report is not None:
            click.echo(f"  {'model report':16s} {report} (its promise section)")
    if track:
        run_id = log_evaluation(paths, evaluation, default_tracking_uri(train_cfg),
                                train_cfg.tracking.experiment, model_source,
                                predictor.manifest.get("model_version"))
        click.echo(f"  mlflow           run {run_id} ({train_cfg.tracking.experiment})")


def _install_plan_calibration(calibration: Any, model_source: str) -> str:
    """Save the calibration beside a model directory; say where it is and how it is used."""
    from smartpick_ml.modelling.persist import plan_calibration_path, save_plan_calibration
    from smartpick_ml.modelling.pmatch import MIN_APPLICANTS

    if model_source.startswith(("models:/", "runs:/")):
        return ("  the plan calibration is for an MLflow model: load it with "
                "MatchPredictor.load(uri, plan_calibration='<out_dir>/plan_calibration.json')")
    path = save_plan_calibration(
        calibration, plan_calibration_path(model_source, calibration.model_sha256))
    types = ", ".join(sorted(calibration.by_type)) or (
        f"no type (each needs {MIN_APPLICANTS} sampled applicants): figures unchanged")
    return f"  {'installed':16s} {path} (the model's stated P(match) is calibrated for {types})"


@main.command()
@click.option("--season", type=int, required=True, help="Season to score, e.g. 2025.")
@click.option("--replicates", type=int, default=None,
              help="Re-drawn seasons (default: oracle_replicates in the config).")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path),
              default=Path(DEFAULT_SIMULATE_CONFIG), show_default=True,
              help="The simulation config the season was made with.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("data/raw"), show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Default: data/processed/oracle_<season>.parquet")
def oracle(season: int, replicates: int | None, config: Path, data_dir: Path,
           out: Path | None) -> None:
    """The true q(a, p) for every application of a simulated season, and its error bound.

    Re-draws every unobserved quantity R times with the applications fixed; prints the oracle's
    Brier and log-loss (the floor for any model) and how much its own Monte-Carlo noise can move
    them. (`smartpick train` computes and caches the oracle itself; this is for a closer look.)

    \b
    Output: data/processed/oracle_<season>.parquet (or --out): applicant_id, program_id,
    season, oracle_q, oracle_se.

    \b
    Example:
      smartpick oracle --season 2025 --replicates 20
    """
    import pandas as pd

    from smartpick_ml.contracts.config import load_simulate_config
    from smartpick_ml.data.io import read_table, write_parquet_atomic
    from smartpick_ml.simulation.oracle import oracle_error_bound, oracle_for_season

    cfg = load_simulate_config(config)
    r = replicates or cfg.oracle_replicates
    tables = {n: read_table(data_dir / f"{n}.parquet", n)
              for n in ("applicants", "programs", "applications")}
    outcomes = pd.read_parquet(data_dir / "program_outcomes.parquet")
    with _Progress("oracle", r, "season") as bar:
        result = oracle_for_season(tables["applicants"], tables["programs"],
                                   tables["applications"], outcomes, season, cfg.params, r,
                                   cfg.seed,
                                   progress=lambda i: bar.note(f"season {i}/{r} re-drawn", 1))
    out = out or Path("data/processed") / f"oracle_{season}.parquet"
    write_parquet_atomic(result, out)
    ap = tables["applications"]
    y = ap.loc[ap["season"] == season, "would_take"].to_numpy(dtype=float)
    s = oracle_error_bound(y, result["oracle_q"].to_numpy(), result["oracle_se"].to_numpy(), r)
    click.echo(f"oracle on season {season} ({len(result):,} applications, R = {r}):")
    click.echo(f"  Brier    {s.brier:.5f}  (own Monte-Carlo error <= {s.brier_mc_error:.2e}, "
               f"{100 * s.brier_relative_error:.2f} % of the score)")
    click.echo(f"  log-loss {s.log_loss:.5f}  (own Monte-Carlo error <= {s.log_loss_mc_error:.2e}, "
               f"{100 * s.log_loss_relative_error:.2f} % of the score)")
    click.echo(f"  -> {out}")
    click.echo("next: smartpick train   # compares every model with this floor")


@main.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the Markdown to this file instead of printing it.")
def schemas(out: Path | None) -> None:
    """Print the data contracts (programs, applicants, applications) as Markdown tables.

    \b
    Output: the terminal, or the file given to --out.
    Example:
      smartpick schemas --out docs/schemas.md
    """
    from smartpick_ml.contracts.schemas import SCHEMAS, schema_markdown
    from smartpick_ml.data.io import write_text_atomic

    text = "# Data contracts\n\nGenerated by `smartpick schemas --out docs/schemas.md`.\n\n" + \
        "\n\n".join(schema_markdown(s) for s in SCHEMAS.values()) + "\n"
    if out:
        write_text_atomic(out, text)
        click.echo(f"schemas -> {out}")
        click.echo("next: smartpick catalog import DIR   # validated against these contracts")
    else:
        click.echo(text)


if __name__ == "__main__":
    main()
