"""The run's data: simulate it when asked, load and validate the tables, join the pairs and their
labels, and split them by season and by applicant (never by row)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from smartpick_ml.contracts.config import TrainConfig, load_simulate_config
from smartpick_ml.contracts.errors import ConfigError
from smartpick_ml.data.io import read_table
from smartpick_ml.modelling.features import build_pairs
from smartpick_ml.modelling.labels import LABEL, training_labels

RAW_TABLES = ("programs", "applicants", "applications")


def ensure_data(cfg: TrainConfig, progress: Callable[[str], None]) -> None:
    """Simulate the default seasons when asked to, when tables are missing, or when the seasons
    on disk were simulated by other parameters or code than the current ones (then again with
    the seasons, scale, seed and catalog they were made with). Tables without a simulation
    manifest (real data) are never replaced unless asked."""
    raw = Path(cfg.data.raw_dir)
    missing = [t for t in (*RAW_TABLES, "program_outcomes")
               if not (raw / f"{t}.parquet").exists()]
    if cfg.data.simulate == "never":
        if any(t in missing for t in RAW_TABLES):
            raise ConfigError(f"data.simulate = 'never' but {raw} lacks: "
                              f"{', '.join(t for t in missing if t in RAW_TABLES)}")
        return
    from smartpick_ml.simulation.season import (
        is_current,
        manifest_config,
        read_simulation_manifest,
        simulate_to_disk,
    )

    made = None
    if not missing and cfg.data.simulate != "always":
        made = read_simulation_manifest(raw)
        if made is None:  # real data, or tables another tool wrote
            return
    sim = load_simulate_config(cfg.data.simulate_config, output_dir=str(raw))
    if made is not None:
        if is_current(made, sim.params):
            return
        recorded = manifest_config(made, sim)
        if recorded is None:
            progress(f"{raw}/simulation_manifest.json has unreadable run options; the "
                     f"defaults of {cfg.data.simulate_config} are used")
        sim = recorded or sim
        progress(f"{raw} holds seasons simulated by other parameters or code than "
                 f"{cfg.data.simulate_config} and this version; simulating them again")
    needed = sorted({*cfg.data.train_seasons, cfg.data.validation_season})
    absent = [s for s in needed if s not in sim.seasons]
    if absent:
        sim = sim.model_copy(update={"seasons": sorted({*sim.seasons, *needed})})
    progress(f"simulating seasons {sim.seasons} at scale {sim.scale}")
    simulate_to_disk(sim, progress=progress)


def load_tables(cfg: TrainConfig) -> dict[str, pd.DataFrame]:
    raw = Path(cfg.data.raw_dir)
    tables = {t: read_table(raw / f"{t}.parquet", t) for t in RAW_TABLES}
    outcomes = raw / "program_outcomes.parquet"
    tables["program_outcomes"] = pd.read_parquet(outcomes) if outcomes.exists() else None
    return tables


def _sample_applicants(ids: pd.Series, fraction: float, seed: int, salt: str) -> np.ndarray:
    """Keep a fixed share of applicants (all of their rows), chosen by a seeded hash of the id."""
    if fraction >= 1.0:
        return np.ones(len(ids), bool)
    codes, distinct = pd.factorize(ids, use_na_sentinel=False)  # each id hashed once, not per row
    h = pd.util.hash_pandas_object(pd.Series(distinct.astype(str), dtype=object)
                                   + f"|{salt}|{seed}", index=False).to_numpy()
    return ((h % 1_000_000) < fraction * 1_000_000)[codes]


def scoped_applications(applications: pd.DataFrame, cfg: TrainConfig) -> pd.DataFrame:
    """The applications a run joins: its seasons' rows of the sampled applicants (every row of
    each, so labels derived per applicant are unchanged). ``make_splits`` draws the same sample;
    joining only these keeps time and memory in proportion to the sample, not the market."""
    d = cfg.data
    season = applications["season"].to_numpy()
    present = sorted(int(x) for x in np.unique(season))
    for s in [*d.train_seasons, d.validation_season]:
        if s not in present:
            raise ConfigError(f"season {s} has no labelled applications in {d.raw_dir} "
                              f"(seasons present: {present})")
    keep = np.zeros(len(applications), bool)
    for chosen, fraction, salt in ((np.isin(season, d.train_seasons), d.train_sample_fraction,
                                    "train"),
                                   (season == d.validation_season,
                                    d.validation_sample_fraction, "validation")):
        keep[chosen] = _sample_applicants(applications.loc[chosen, "applicant_id"], fraction,
                                          d.seed, salt)
    return applications[keep]


@dataclass
class Splits:
    train: pd.DataFrame
    holdout: pd.DataFrame
    validation: pd.DataFrame


def make_splits(pairs: pd.DataFrame, cfg: TrainConfig) -> Splits:
    """Train on earlier seasons, validate on the latest; hold out applicants, never rows."""
    d = cfg.data
    labelled = pairs[LABEL].notna().to_numpy()
    season = pairs["season"].to_numpy()
    seasons = set(np.unique(season[labelled]).tolist())
    for s in [*d.train_seasons, d.validation_season]:
        if s not in seasons:
            raise ConfigError(f"season {s} has no labelled applications in {d.raw_dir} "
                              f"(seasons present: {sorted(int(x) for x in seasons)})")
    # row masks first, then one copy of the (wide) frame per split
    ids = pairs["applicant_id"]
    train = labelled & np.isin(season, d.train_seasons)
    val = labelled & (season == d.validation_season)
    train[train] = _sample_applicants(ids[train], d.train_sample_fraction, d.seed, "train")
    val[val] = _sample_applicants(ids[val], d.validation_sample_fraction, d.seed, "validation")
    held = np.zeros(len(pairs), bool)
    held[train] = _sample_applicants(ids[train], d.holdout_fraction, d.seed, "holdout")
    splits = Splits(pairs[train & ~held], pairs[held], pairs[val])
    for name in ("train", "holdout", "validation"):
        part = getattr(splits, name)
        classes = part[LABEL].nunique()
        if len(part) == 0 or classes < 2:
            raise ConfigError(f"the {name} split has {len(part)} rows and {classes} label "
                              "class(es): a model needs both outcomes; check seasons and sample "
                              "fractions")
    return splits


def load_splits(cfg: TrainConfig) -> tuple[dict[str, pd.DataFrame], Splits]:
    """The run's tables, and its labelled pairs split into train / hold-out / validation."""
    tables = load_tables(cfg)
    scoped = scoped_applications(tables["applications"], cfg)
    pairs = build_pairs(scoped, tables["applicants"], tables["programs"])
    pairs[LABEL] = training_labels(scoped).to_numpy()
    return tables, make_splits(pairs, cfg)


def interviewed_mask(pairs: pd.DataFrame) -> np.ndarray | None:
    """Which pairs were interviewed (what ``PairFeatures.fit`` learns programs' typical
    interviewee from); None when the data does not say."""
    if "interviewed" not in pairs:
        return None
    return pairs["interviewed"].astype("boolean").fillna(False).to_numpy(bool)

