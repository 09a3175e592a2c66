"""The promise, measured: re-run the validation season with applicants following SmartPick's plan.

For sampled applicants of the validation season (a season the model never saw), each one's
preferred-specialty list is replaced by SmartPick's plan of the same length (so the same ERAS
fee; their signals, backup, preliminary and supplemental applications are kept), and the season
is re-run from its observed tables: screens, interviews, rank lists, the two-pass match
(``match-model.md`` §8). Everything else is held fixed. A re-run season replaces at most
``group_share`` of the applicants, so it measures the plan, not a market the plans changed;
``adoption`` seasons measure exactly that change. Each re-drawn replicate of a plan season has a
twin with everyone's own list and the same seed (common random numbers: the same latent
strengths), so differences are measured more precisely than either rate.

Re-run seasons are independent, so they run through joblib (``loky`` on one machine, ``spark``
on a cluster through ``joblibspark``); a worker reads the season's tables once.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smartpick_ml.contracts.config import (
    EvaluatePlansConfig,
    SimulationParams,
    TrainConfig,
    load_simulate_config,
)
from smartpick_ml.contracts.errors import ConfigError
from smartpick_ml.contracts.reference import APPLICANT_TYPES
from smartpick_ml.data.io import read_table
from smartpick_ml.modelling.persist import save_plan_calibration
from smartpick_ml.modelling.pmatch import MIN_JOINT_APPLICANTS, PlanCalibration
from smartpick_ml.simulation.season import (
    TIER_BACKUP,
    TIER_PREFERRED,
    TIER_SUPPLEMENTAL,
    build_market_inputs,
    list_tiers,
    run_market,
)

#: the plan calibration an evaluation fits, in its output folder
PLAN_CALIBRATION_FILE = "plan_calibration.json"
_APPLICATION_COLUMNS = ["applicant_id", "program_id", "season", "signal", "rank_list"]


# ----------------------------------------------------------------------------- the season


@dataclass(frozen=True)
class SeasonSource:
    """Where a re-run season's observed tables live; small, so it travels to every worker."""

    raw_dir: str
    season: int
    simulate_config: str

    def load(self) -> SeasonMarket:
        return _load_market(self.raw_dir, self.season, self.simulate_config)


@dataclass
class SeasonMarket:
    """One season's observed tables, and where each application sits in its applicant's lists."""

    applicants: pd.DataFrame
    programs: pd.DataFrame
    applications: pd.DataFrame
    positions: np.ndarray
    params: SimulationParams
    tiers: np.ndarray


@functools.lru_cache(maxsize=1)
def _load_market(raw_dir: str, season: int, simulate_config: str) -> SeasonMarket:
    raw = Path(raw_dir)
    missing = [t for t in ("programs", "applicants", "applications", "program_outcomes")
               if not (raw / f"{t}.parquet").exists()]
    if missing:
        raise ConfigError(f"{raw} lacks {', '.join(missing)}: run `smartpick run` (or "
                          "`smartpick simulate`) first; plans are evaluated on a simulated season")
    programs = read_table(raw / "programs.parquet", "programs")
    applicants = read_table(raw / "applicants.parquet", "applicants")
    applicants = applicants[applicants["season"] == season].reset_index(drop=True)
    applications = pd.read_parquet(raw / "applications.parquet", columns=_APPLICATION_COLUMNS,
                                   filters=[("season", "==", season)])
    outcomes = pd.read_parquet(raw / "program_outcomes.parquet",
                               filters=[("season", "==", season)])
    if len(applicants) == 0 or len(outcomes) == 0:
        raise ConfigError(f"season {season} is not in {raw}: evaluate on a simulated season")
    positions = (outcomes.set_index("program_id")["positions"]
                 .reindex(programs["program_id"]).fillna(0).to_numpy(np.int64))
    params = load_simulate_config(simulate_config).params
    pa = pd.Index(applicants["applicant_id"]).get_indexer(applications["applicant_id"])
    pp = pd.Index(programs["program_id"]).get_indexer(applications["program_id"])
    tiers = list_tiers(applicants, programs, applications, pa, pp)
    return SeasonMarket(applicants, programs, applications.reset_index(drop=True), positions,
                        params, tiers)


def replace_lists(market: SeasonMarket, plans: pd.DataFrame | None) -> pd.DataFrame:
    """The season's applications with each planned applicant's lists replaced by their plan
    (``plans``: applicant_id, program_id, signal, and ``tier``: which list a row belongs to,
    the preferred specialty's where absent; a list the plan has no rows for is kept).

    The plan's k-th program of a list takes the row of the applicant's k-th own one in that
    list, so every other application keeps its place and a re-drawn season gives it the same
    random draws (a plan equal to the own list re-runs the season exactly); a shorter plan
    leaves rows out, a longer one is appended."""
    apps = market.applications
    if plans is None or len(plans) == 0:
        return apps
    new = plans[["applicant_id", "program_id", "signal"]].copy()
    new["tier"] = (plans["tier"].fillna(TIER_PREFERRED).to_numpy(np.int64) if "tier" in plans
                   else TIER_PREFERRED)
    new["k"] = new.groupby(["applicant_id", "tier"], sort=False).cumcount()
    slots = []
    for tier, part in new.groupby("tier", sort=False):
        planned = apps["applicant_id"].isin(pd.unique(part["applicant_id"])).to_numpy()
        at = np.flatnonzero(planned & (market.tiers == tier))
        slots.append(pd.DataFrame({"applicant_id": apps["applicant_id"].to_numpy()[at],
                                   "tier": tier, "slot": at}))
    slots = pd.concat(slots, ignore_index=True)
    slots["k"] = slots.groupby(["applicant_id", "tier"], sort=False).cumcount()
    placed = new.merge(slots, on=["applicant_id", "tier", "k"], how="left")
    out = apps.copy()
    inside = placed["slot"].notna().to_numpy()
    at = placed.loc[inside, "slot"].to_numpy(np.int64)
    out.loc[at, "program_id"] = placed.loc[inside, "program_id"].to_numpy()
    out.loc[at, "signal"] = placed.loc[inside, "signal"].to_numpy()
    unused = np.setdiff1d(slots["slot"].to_numpy(), at)
    extra = placed.loc[~inside, ["applicant_id", "program_id", "signal"]].assign(
        season=apps["season"].iloc[0], rank_list="primary")[_APPLICATION_COLUMNS]
    out = out.drop(index=unused)
    return pd.concat([out, extra], ignore_index=True) if len(extra) else \
        out.reset_index(drop=True)


def rerun_season(source: SeasonSource, plans: pd.DataFrame | None, seed: int,
                 replicate: int) -> np.ndarray:
    """One re-drawn season with ``plans`` followed: per applicant (the season's order) the
    catalog row of the program matched on the primary list, -1 if unmatched.

    The same ``(seed, replicate)`` draws the same latent strengths with or without plans."""
    market = source.load()
    apps = replace_lists(market, plans)
    inputs = build_market_inputs(market.applicants, market.programs, apps, market.positions,
                                 market.params)
    out = run_market(inputs, np.random.default_rng(np.random.SeedSequence([seed, replicate])))
    matched = np.flatnonzero(out.matched & (inputs.pair_tier != TIER_SUPPLEMENTAL))
    result = np.full(inputs.n_applicants, -1, np.int32)
    result[inputs.pair_applicant[matched]] = inputs.pair_program[matched]
    return result


# ----------------------------------------------------------------------------- the plans


@dataclass
class PlannedLists:
    """Per planned applicant: the figures SmartPick states for the plan and for their own list;
    ``rows``: the plans (applicant_id, program_id, signal)."""

    per_applicant: pd.DataFrame
    rows: pd.DataFrame
    joint_rows: pd.DataFrame | None = None  # joint plans: applicant_id, program_id, signal, tier


def applicant_profile(row: Mapping[str, Any], n_applications: int,
                      signals: dict[str, str]) -> dict[str, Any]:
    """The profile an applicant of the season would give SmartPick."""
    backup = row.get("backup_specialty")
    return {"applicant_type": row["applicant_type"], "step2_ck": int(row["step2_ck"]),
            "graduation_year": int(row["graduation_year"]), "season": int(row["season"]),
            "usce_months": int(row["usce_months"]), "publications": int(row["publications"]),
            "applications": int(n_applications), "needs_visa": bool(row["needs_visa"]),
            "home_state": row["home_state"],
            "preferred_specialty": row["preferred_specialty"],
            "backup_specialties": [backup] if isinstance(backup, str) and backup else [],
            "signals": signals}


def _plan_one(predictor: Any, profile: dict[str, Any], own: pd.DataFrame) -> dict[str, Any]:
    """SmartPick's plan at the length of the applicant's own preferred-specialty list, keeping
    their signals (signals are planned in a later step): the signalled programs, then the
    plan's programs in the order its nested optimal lists add them."""
    n = len(own)
    signalled = list(profile["signals"])
    kept = set(signalled)
    plan = predictor.plan(profile, specialty=profile["preferred_specialty"], max_applications=n)
    order = [p for p in plan["table"]["program_added"] if p not in kept]
    chosen = signalled + order[: max(n - len(signalled), 0)]
    stated = predictor.match_probability(profile, chosen)
    own_stated = predictor.match_probability(profile, own["program_id"].tolist())
    return {"programs": chosen,
            "figures": {"programs_own": n, "programs_plan": len(chosen),
                        "stated_plan": stated["p_match_corrected"],
                        "stated_plan_independent": stated["p_match"],
                        "stated_own": own_stated["p_match_corrected"],
                        "stated_own_independent": own_stated["p_match"],
                        "expected_utility_plan": stated["expected_utility"],
                        "expected_utility_own": own_stated["expected_utility"]}}


def _joint_plan(predictor: Any, profile: dict[str, Any], n_preferred: int, n_backup: int
                ) -> dict[str, Any] | None:
    """SmartPick's joint plan at the applicant's own list sizes (so the same fees): preferred
    and backup programs and the signals, chosen together (``plan_across``); None where it
    cannot plan (no program of a specialty can take the applicant)."""
    from smartpick_ml.inference.predictor import InputError

    try:
        joint = predictor.plan_across({**profile, "signals": {}}, sizes=[n_preferred, n_backup],
                                      choose_signals=True)
    except InputError:
        return None
    rows = joint["programs"]
    return {"rows": pd.DataFrame({
                "program_id": rows["program_id"].to_numpy(), "signal": rows["signal"].to_numpy(),
                "tier": np.where(rows["specialty"] == profile["preferred_specialty"],
                                 TIER_PREFERRED, TIER_BACKUP)}),
            "figures": {"programs_joint": len(rows),
                        "stated_joint": joint["p_match_corrected"],
                        "stated_joint_preferred": joint["p_match_preferred_corrected"]}}


def plan_lists(predictor: Any, market: SeasonMarket, applicant_ids: Sequence[str],
               progress: Callable[[str], None] = lambda _: None,
               joint_for: Sequence[str] = ()) -> PlannedLists:
    """SmartPick's plan for each applicant: figures per applicant, and the plans' rows; also
    the joint plan (``joint_rows``) of those of ``joint_for`` with a backup list."""
    own_rows = market.applications[market.tiers == TIER_PREFERRED]
    own_by_applicant = dict(tuple(own_rows.groupby("applicant_id", sort=False)))
    backups = market.applications.loc[market.tiers == TIER_BACKUP, "applicant_id"]
    n_backup = backups[backups.isin(set(joint_for))].value_counts()
    others = market.applications[~np.isin(market.tiers, [TIER_PREFERRED, TIER_BACKUP])
                                 & market.applications["applicant_id"].isin(n_backup.index)]
    kept_elsewhere = others.groupby("applicant_id")["program_id"].agg(set).to_dict()
    n_total = market.applications.groupby("applicant_id", sort=False).size()
    records = market.applicants.set_index("applicant_id")
    figures, rows, joint_rows = [], [], []
    for i, applicant_id in enumerate(applicant_ids):
        own = own_by_applicant.get(applicant_id)
        if own is None:  # an applicant with no preferred-specialty list: nothing to replace
            continue
        row = records.loc[applicant_id]
        own_signals = own[own["signal"] != "none"]
        profile = applicant_profile(row.to_dict(), int(n_total[applicant_id]),
                                    dict(zip(own_signals["program_id"], own_signals["signal"],
                                             strict=True)))
        done = _plan_one(predictor, profile, own)
        together = (_joint_plan(predictor, profile, len(own), int(n_backup[applicant_id]))
                    if applicant_id in n_backup.index and profile["backup_specialties"]
                    else None)
        if together is not None:
            # a program the applicant keeps on another list (a supplemental PGY-1 list) is
            # not applied to twice
            kept = kept_elsewhere.get(applicant_id, set())
            rows_joint = together["rows"]
            joint_rows.append(rows_joint[~rows_joint["program_id"].isin(kept)].assign(
                applicant_id=applicant_id))
        figures.append({"applicant_id": applicant_id, "applicant_type": row["applicant_type"],
                        "preferred_specialty": row["preferred_specialty"], **done["figures"],
                        **(together["figures"] if together else {})})
        signal_of = profile["signals"]
        rows.append(pd.DataFrame({"applicant_id": applicant_id, "program_id": done["programs"],
                                  "signal": [signal_of.get(p, "none") for p in done["programs"]]}))
        if (i + 1) % 500 == 0:
            progress(f"planned {i + 1:,} of {len(applicant_ids):,} applicants")
    per = pd.DataFrame(figures)
    plans = (pd.concat(rows, ignore_index=True) if rows
             else pd.DataFrame(columns=["applicant_id", "program_id", "signal"]))
    joint_plans = (pd.concat(joint_rows, ignore_index=True) if joint_rows
                   else pd.DataFrame(columns=["applicant_id", "program_id", "signal", "tier"]))
    return PlannedLists(per, plans, joint_plans)


# ----------------------------------------------------------------------------- the seasons


@dataclass
class Scenario:
    """One kind of re-run season: who follows SmartPick in it."""

    name: str
    followers: np.ndarray  # applicant ids
    share: float = 0.0  # of their type, for an adoption season


def draw_followers(market: SeasonMarket, cfg: EvaluatePlansConfig, has_list: np.ndarray
                   ) -> tuple[list[Scenario], list[Scenario], np.ndarray]:
    """The sampled applicants in groups of at most ``group_share`` of the season, the adoption
    seasons, and every applicant who needs a plan. One seeded order per type: a smaller
    adoption share is part of a larger one and of the sample, so fewer plans are needed."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.run.seed, 1]))
    types = market.applicants["applicant_type"].to_numpy(dtype=object)
    ids = market.applicants["applicant_id"].to_numpy(dtype=object)
    order = {t: rng.permutation(np.flatnonzero((types == t) & has_list)) for t in APPLICANT_TYPES}
    sample = np.concatenate([order[t][: cfg.sample.per_type.get(t, 0)] for t in APPLICANT_TYPES])
    sample = rng.permutation(sample)
    size = max(1, int(cfg.sample.group_share * len(ids)))
    groups = [Scenario(f"plan group {k + 1}", ids[sample[k * size:(k + 1) * size]])
              for k in range(int(np.ceil(len(sample) / size)))]
    adoption = [Scenario(f"{share:.0%} of non-US IMGs follow SmartPick",
                         ids[order["non_us_img"][: int(round(share * len(order["non_us_img"])))]],
                         share)
                for share in cfg.adoption.non_us_img_shares]
    if cfg.adoption.every_type_share:
        share = cfg.adoption.every_type_share
        adoption.append(Scenario(f"{share:.0%} of every type follow SmartPick", ids[
            np.concatenate([order[t][: int(round(share * len(order[t])))]
                            for t in APPLICANT_TYPES])], share))
    needed = pd.unique(np.concatenate([ids[sample], *(s.followers for s in adoption)]))
    return groups, adoption, needed


def rerun_seasons(source: SeasonSource, jobs: list[tuple[pd.DataFrame | None, int, int]]
                  ) -> list[np.ndarray]:
    """Several re-drawn seasons in one task: (plans, seed, replicate) each (``rerun_season``).
    A process keeps the last season it read, so a task reads it at most once, also in a
    worker that loky replaced between tasks (it replaces one whose memory grew)."""
    return [rerun_season(source, plans, seed, replicate) for plans, seed, replicate in jobs]


def _parallel_runs(cfg: EvaluatePlansConfig, source: SeasonSource,
                   jobs: list[tuple[pd.DataFrame | None, int, int]]) -> list[np.ndarray]:
    """Run re-drawn seasons through joblib, in about two tasks per worker: ``loky`` processes
    on one machine, ``spark`` tasks on a cluster (``joblibspark``), or ``threading``."""
    from joblib import Parallel, delayed, parallel_backend

    backend = cfg.run.backend
    if backend == "spark":
        try:
            from joblibspark import register_spark
        except ImportError:
            raise ConfigError("run.backend = 'spark' needs joblibspark and pyspark: "
                              "pip install 'smartpick-ml[spark]'") from None
        register_spark()
    n_tasks = min(len(jobs), 2 * cfg.run.n_jobs)
    chunks = [jobs[k::n_tasks] for k in range(n_tasks)]
    with parallel_backend(backend, n_jobs=cfg.run.n_jobs):
        done = Parallel()(delayed(rerun_seasons)(source, chunk) for chunk in chunks)
    # back in the order of ``jobs``
    out: list[np.ndarray] = [np.empty(0, np.int32)] * len(jobs)
    for k, results in enumerate(done):
        for i, result in zip(range(k, len(jobs), n_tasks), results, strict=True):
            out[i] = result
    return out


# ----------------------------------------------------------------------------- the outcomes


@dataclass
class Outcomes:
    """Realised outcomes of some applicants over R re-drawn seasons (rows: replicates)."""

    matched_preferred: np.ndarray  # bool (R, n): matched in the preferred specialty
    matched: np.ndarray  # bool (R, n): matched at all (primary list)
    utility: np.ndarray  # float (R, n): U of the program matched in the preferred specialty, else 0


def outcomes_of(matched_rows: np.ndarray, columns: np.ndarray, market: SeasonMarket,
                utility_of_program: np.ndarray) -> Outcomes:
    """``matched_rows``: (R, applicants) catalog rows matched (-1 none); ``columns``: which
    applicants (positions in the season's applicant table)."""
    m = matched_rows[:, columns]
    specialty = market.programs["specialty"].to_numpy(dtype=object)
    preferred = market.applicants["preferred_specialty"].to_numpy(dtype=object)[columns]
    is_matched = m >= 0
    in_preferred = is_matched & (specialty[np.maximum(m, 0)] == preferred[None, :])
    return Outcomes(in_preferred, is_matched,
                    np.where(in_preferred, utility_of_program[np.maximum(m, 0)], 0.0))


def rate_with_error(values: np.ndarray) -> tuple[float, float]:
    """Mean over applicants and replicates, and its Monte-Carlo error: the standard error over
    replicates of the replicate means (the applicants are fixed; only the draws vary)."""
    per_replicate = np.asarray(values, float).mean(axis=1)
    r = len(per_replicate)
    error = float(per_replicate.std(ddof=1) / np.sqrt(r)) if r > 1 else float("inf")
    return float(per_replicate.mean()), error


@dataclass
class PlanEvaluation:
    """What ``evaluate_plans`` measured (every rate with its Monte-Carlo error)."""

    per_applicant: pd.DataFrame  # sampled applicants: stated figures and realised frequencies
    by_type: pd.DataFrame  # plan against own list, per applicant type
    adoption: pd.DataFrame  # what the plan is worth when many follow it
    replicates: int
    settings: dict[str, Any]
    calibration: PlanCalibration | None = None  # fitted on the plans' outcomes (full sample)
    #: the joint plan (backup and signals too) against the single-specialty plan, per type, for
    #: sampled applicants with a backup list; empty unless ``sample.joint``
    joint: pd.DataFrame = field(default_factory=pd.DataFrame)


#: the outcomes reported: a match in the preferred specialty, a match anywhere, utility
_RATES = ("matched_preferred", "matched", "utility")


def _by_type(per_type_index: dict[str, np.ndarray], plan: Outcomes, own: Outcomes,
             stated: pd.DataFrame, stated_columns: tuple[str, ...] = ("stated_plan", "stated_own")
             ) -> pd.DataFrame:
    """Per type: ``plan``'s rates against ``own``'s (the joint table: the joint plan against
    the single-specialty plan), paired replicate by replicate, with Monte-Carlo errors."""
    rows = []
    for typ, cols in per_type_index.items():
        if len(cols) == 0:
            continue
        row: dict[str, Any] = {"applicant_type": typ, "applicants": len(cols),
                               **{c: float(stated[c].iloc[cols].mean()) for c in stated
                                  if c.startswith(stated_columns)}}
        for rate in _RATES:
            p, o = getattr(plan, rate)[:, cols], getattr(own, rate)[:, cols]
            row[f"{rate}_plan"], row[f"{rate}_plan_mc"] = rate_with_error(p)
            row[f"{rate}_own"], row[f"{rate}_own_mc"] = rate_with_error(o)
            row[f"{rate}_gain"], row[f"{rate}_gain_mc"] = rate_with_error(
                p.astype(float) - o.astype(float))
        rows.append(row)
    return pd.DataFrame(rows)


def evaluate_plans(cfg: EvaluatePlansConfig, train_cfg: TrainConfig, predictor: Any,
                   progress: Callable[[str], None] = lambda _: None) -> PlanEvaluation:
    """Re-run the validation season with sampled applicants following SmartPick's plan, and
    with shares of them following it at once; replicates until the Monte-Carlo error of every
    reported rate is at most ``replicates.max_mc_error_pp`` (or ``replicates.max``)."""
    from smartpick_ml.inference.predictor import Preferences, utility, utility_inputs

    source = SeasonSource(train_cfg.data.raw_dir, train_cfg.data.validation_season,
                          train_cfg.data.simulate_config)
    progress(f"loading season {source.season} from {source.raw_dir}")
    market = source.load()
    if not market.programs["program_id"].isin(predictor.programs["program_id"]).all():
        raise ConfigError("the model's catalog is not the season's: retrain on these tables "
                          "(`smartpick train`) before evaluating its plans")
    preferred_ids = market.applications.loc[market.tiers == TIER_PREFERRED, "applicant_id"]
    has_list = market.applicants["applicant_id"].isin(preferred_ids).to_numpy()
    groups, adoption, needed = draw_followers(market, cfg, has_list)
    progress(f"planning for {len(needed):,} applicants")
    # the figures before any plan calibration: this run fits the calibration afresh
    uncalibrated = copy.copy(predictor)
    uncalibrated.plan_calibration = None
    sample_ids = np.concatenate([g.followers for g in groups]) if groups else []
    planned = plan_lists(uncalibrated, market, list(needed), progress,
                         joint_for=sample_ids if cfg.sample.joint else ())
    # each plan group again with the joint plan for those who have one: paired with it
    joint_groups = ([Scenario(f"joint group {k + 1}", g.followers) for k, g in enumerate(groups)]
                    if cfg.sample.joint and len(planned.joint_rows) else [])
    scenarios = [Scenario("own lists", np.array([], dtype=object)), *groups, *joint_groups,
                 *adoption]
    plans_of = {s.name: (None if len(s.followers) == 0 else
                         planned.rows[planned.rows["applicant_id"].isin(s.followers)])
                for s in scenarios}
    has_joint = set(planned.joint_rows["applicant_id"]) if joint_groups else set()
    for s_joint in joint_groups:
        single = plans_of[s_joint.name]
        plans_of[s_joint.name] = pd.concat(
            [single[~single["applicant_id"].isin(has_joint)],
             planned.joint_rows[planned.joint_rows["applicant_id"].isin(s_joint.followers)]],
            ignore_index=True)
    matched: dict[str, list[np.ndarray]] = {s.name: [] for s in scenarios}
    u_program = utility(utility_inputs(market.programs), Preferences())
    position = pd.Index(market.applicants["applicant_id"])
    sampled = planned.per_applicant[planned.per_applicant["applicant_id"].isin(
        np.concatenate([g.followers for g in groups]) if groups else [])].reset_index(drop=True)
    columns = position.get_indexer(sampled["applicant_id"])
    group_of = np.empty(len(market.applicants), np.int64)
    for k, g in enumerate(groups):
        group_of[position.get_indexer(g.followers)] = k
    raw = planned.per_applicant.set_index("applicant_id")["stated_plan"]
    stated = pd.DataFrame({"stated_plan": raw, "stated_plan_uncalibrated": raw})
    target = cfg.replicates.max_mc_error_pp / 100
    # the plan groups go on together (their rates are pooled); each adoption season on its own;
    # the own-list season as far as the furthest of them (every comparison is paired with it)
    wanted = {s.name: cfg.replicates.min for s in [*groups, *joint_groups, *adoption]}
    while True:
        wanted["own lists"] = max(wanted.values())
        jobs, names = [], []
        for name, upto in wanted.items():
            for r in range(len(matched[name]), upto):
                jobs.append((plans_of[name], cfg.run.seed, r))
                names.append(name)
        if not jobs:
            break
        progress(f"re-running {len(jobs)} seasons ({len(matched['own lists']) + 1}-"
                 f"{wanted['own lists']} replicates of the own-list season)")
        for name, result in zip(names, _parallel_runs(cfg, source, jobs), strict=True):
            matched[name].append(result)
        evaluation = _summarise(market, sampled, columns, group_of, groups, adoption, matched,
                                u_program, stated, joint_groups)
        errors = _errors_by_season(evaluation, groups)
        progress("largest Monte-Carlo error " + ", ".join(
            f"{name}: {100 * e:.2f} pp" for name, e in errors.items()))
        for name, error in errors.items():
            members = ([g.name for g in [*groups, *joint_groups]] if name == "plan groups"
                       else [name])
            if error > target and len(matched[members[0]]) < cfg.replicates.max:
                for m in members:
                    wanted[m] = min(cfg.replicates.max, len(matched[m]) + 2)
    worst = max(errors.values())
    n_plan_replicates = len(matched[groups[0].name]) if groups else 0
    calibration, calibrated = calibrate_stated(
        planned.per_applicant, evaluation.per_applicant, n_plan_replicates,
        str(predictor.manifest.get("sha256", "")), source.season, cfg.run.seed)
    if calibration is not None:  # the same seasons, reported with the calibrated figures
        sampled = calibrated.set_index("applicant_id").loc[sampled["applicant_id"]].reset_index()
        evaluation = _summarise(market, sampled, columns, group_of, groups, adoption, matched,
                                u_program, calibrated.set_index("applicant_id")[
                                    ["stated_plan", "stated_plan_uncalibrated"]], joint_groups)
    evaluation.calibration = calibration
    evaluation.replicates = len(matched["own lists"])
    evaluation.settings = {"season": source.season, "sampled": len(sampled),
                           "planned": len(planned.per_applicant), "groups": len(groups),
                           "group_share": cfg.sample.group_share, "seed": cfg.run.seed,
                           "joint_plans": len(has_joint),
                           "replicates": {name: len(v) for name, v in matched.items()
                                          if not name.startswith(("plan group", "joint group"))}
                           | {"plan groups": len(matched[groups[0].name]) if groups else 0},
                           "largest_mc_error_pp": round(100 * worst, 3),
                           "target_mc_error_pp": cfg.replicates.max_mc_error_pp}
    return evaluation


def _summarise(market: SeasonMarket, sampled: pd.DataFrame, columns: np.ndarray,
               group_of: np.ndarray, groups: list[Scenario], adoption: list[Scenario],
               matched: dict[str, list[np.ndarray]], u_program: np.ndarray,
               stated: pd.DataFrame, joint_groups: Sequence[Scenario] = ()) -> PlanEvaluation:
    # the groups' replicates, each paired with the own-list season of the same seed
    n_rep = len(matched[groups[0].name]) if groups else len(matched["own lists"])
    own_rows = np.stack(matched["own lists"][:n_rep])
    # each sampled applicant's outcome in the season of their own group
    plan_rows = own_rows.copy()
    for k, g in enumerate(groups):
        cols = columns[group_of[columns] == k]
        plan_rows[:, cols] = np.stack(matched[g.name])[:, cols]
    own = outcomes_of(own_rows, columns, market, u_program)
    plan = outcomes_of(plan_rows, columns, market, u_program)
    per = sampled.assign(realised_plan=plan.matched_preferred.mean(axis=0),
                         realised_own=own.matched_preferred.mean(axis=0),
                         realised_plan_any=plan.matched.mean(axis=0),
                         realised_own_any=own.matched.mean(axis=0),
                         utility_plan=plan.utility.mean(axis=0),
                         utility_own=own.utility.mean(axis=0))
    types = per["applicant_type"].to_numpy(dtype=object)
    by_type = _by_type({t: np.flatnonzero(types == t) for t in APPLICANT_TYPES}, plan, own, per)
    joint = pd.DataFrame()
    if joint_groups:
        # the joint season of each one's group against the plan season: the same seeds
        joint_rows = plan_rows.copy()
        for k, g in enumerate(joint_groups):
            cols = columns[group_of[columns] == k]
            joint_rows[:, cols] = np.stack(matched[g.name])[:, cols]
        together = outcomes_of(joint_rows, columns, market, u_program)
        with_joint = per["stated_joint"].notna().to_numpy() if "stated_joint" in per \
            else np.zeros(len(per), bool)
        per = per.assign(realised_joint=together.matched_preferred.mean(axis=0),
                         realised_joint_any=together.matched.mean(axis=0))
        joint = _by_type({t: np.flatnonzero((types == t) & with_joint) for t in APPLICANT_TYPES},
                         together, plan, per, stated_columns=("stated_joint",))
    return PlanEvaluation(per, by_type, _adoption(market, adoption, matched, u_program, stated),
                          own_rows.shape[0], {}, joint=joint)


def _adoption(market: SeasonMarket, adoption: list[Scenario],
              matched: dict[str, list[np.ndarray]], u_program: np.ndarray,
              stated: pd.DataFrame) -> pd.DataFrame:
    """Per adoption season and type: followers' realised P(match in the preferred specialty)
    against their own lists', and what the others of the type lose or gain."""
    position = pd.Index(market.applicants["applicant_id"])
    types = market.applicants["applicant_type"].to_numpy(dtype=object)
    rows = []
    for s in adoption:
        season_rows = np.stack(matched[s.name])
        own_rows = np.stack(matched["own lists"][:len(season_rows)])
        follower = np.zeros(len(types), bool)
        follower[position.get_indexer(s.followers)] = True
        for typ in APPLICANT_TYPES:
            row: dict[str, Any] = {"season": s.name, "share": s.share, "applicant_type": typ}
            for who, mask in (("followers", follower & (types == typ)),
                              ("others", ~follower & (types == typ))):
                cols = np.flatnonzero(mask)
                row[who] = len(cols)
                if len(cols) == 0:
                    continue
                now = outcomes_of(season_rows, cols, market, u_program).matched_preferred
                before = outcomes_of(own_rows, cols, market, u_program).matched_preferred
                row[f"{who}_rate"], row[f"{who}_rate_mc"] = rate_with_error(now)
                row[f"{who}_gain"], row[f"{who}_gain_mc"] = rate_with_error(
                    now.astype(float) - before.astype(float))
                row[f"{who}_own"], row[f"{who}_own_mc"] = rate_with_error(before)
            their = position[follower & (types == typ)]
            for column, name in (("stated_plan", "followers_stated"),
                                 ("stated_plan_uncalibrated", "followers_stated_uncalibrated")):
                row[name] = (float(stated[column].reindex(their).mean()) if row["followers"]
                             else np.nan)
            if row["followers"]:
                rows.append(row)
    return pd.DataFrame(rows)


def _errors_by_season(evaluation: PlanEvaluation, groups: list[Scenario]) -> dict[str, float]:
    """The largest Monte-Carlo error of any rate each kind of season reports (the plan groups
    together; utility is not a rate)."""
    def worst(frame: pd.DataFrame) -> float:
        cols = [c for c in frame.columns if c.endswith("_mc") and not c.startswith("utility")]
        values = frame[cols].to_numpy(float).ravel() if cols else np.array([])
        values = values[np.isfinite(values)]
        return float(values.max()) if len(values) else float("inf")

    # the joint plan's rates ride along with the plan groups' replicates: they are reported
    # with their error, but do not ask for more seasons (a subsample, and twice the cost)
    errors = {"plan groups": worst(evaluation.by_type)} if groups else {}
    if len(evaluation.adoption):  # none when the config asks for no adoption season
        for season, part in evaluation.adoption.groupby("season", sort=False):
            errors[str(season)] = worst(part)
    return errors


# ----------------------------------------------------------------------------- calibration


#: only plans: SmartPick states the calibrated figure for the lists it chose, not for others
_STATED = ("stated_plan",)
#: a joint plan's figure (a match anywhere on the list), calibrated by lines of its own
_JOINT_STATED = "stated_joint"


def calibrate_stated(planned: pd.DataFrame, measured: pd.DataFrame, trials: int,
                     model_sha256: str, season: int, seed: int
                     ) -> tuple[PlanCalibration | None, pd.DataFrame]:
    """Fit the plan calibration (``pmatch.PlanCalibration``) on the sampled applicants' plans:
    their stated P(match) against how often they matched in ``trials`` re-run seasons.

    The figures reported are cross-fitted, so none is judged by a line fitted on its own
    outcome: the sample is split in two halves (seeded, within each type), each half's figures
    come from the line fitted on the other. Applicants outside the sample (adoption seasons)
    get the line fitted on all of it, which is also the calibration saved for the model.
    Returns that calibration (None without outcomes) and ``planned`` with ``stated_plan``
    calibrated, the figure before kept as ``stated_plan_uncalibrated``."""
    joint = _JOINT_STATED in planned and "realised_joint_any" in measured
    # each calibrated column, and whether it is a joint plan's
    calibrated = {**{c: False for c in _STATED}, **({_JOINT_STATED: True} if joint else {})}
    out = planned.assign(**{f"{c}_uncalibrated": planned[c] for c in calibrated})
    if trials < 1 or measured.empty:
        return None, out
    def fit(part: pd.DataFrame) -> PlanCalibration:
        single = PlanCalibration.fit(part["stated_plan"], part["realised_plan"] * trials,
                                     np.full(len(part), trials), part["applicant_type"],
                                     model_sha256, season)
        if not joint:
            return single
        # joint plans: P(match anywhere on the list), fitted on those who had one
        together = part[part[_JOINT_STATED].notna()]
        return single.with_joint(together[_JOINT_STATED],
                                 together["realised_joint_any"] * trials,
                                 np.full(len(together), trials), together["applicant_type"])

    full = fit(measured)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
    half = np.zeros(len(measured), np.int8)
    for typ in pd.unique(measured["applicant_type"]):
        rows = np.flatnonzero(measured["applicant_type"].to_numpy() == typ)
        half[rng.permutation(rows)[: len(rows) // 2]] = 1
    position = pd.Index(out["applicant_id"]).get_indexer(measured["applicant_id"])
    validated = set(full.joint_by_type)
    for k in (0, 1):
        other = fit(measured[half != k])
        validated &= set(other.joint_by_type)
        rows = position[half == k]
        for column, is_joint in calibrated.items():
            out.loc[out.index[rows], column] = other.apply_by_type(
                out[f"{column}_uncalibrated"].iloc[rows], out["applicant_type"].iloc[rows],
                joint=is_joint)
    # a joint line is kept only where both halves had one, so what is saved was also what the
    # cross-fitted figures were judged with
    full = PlanCalibration(full.by_type, full.model_sha256, full.season, full.applicants,
                           {t: line for t, line in full.joint_by_type.items() if t in validated})
    outside = np.setdiff1d(np.arange(len(out)), position)  # adoption seasons' followers
    for column, is_joint in calibrated.items():
        out.loc[out.index[outside], column] = full.apply_by_type(
            out[f"{column}_uncalibrated"].iloc[outside], out["applicant_type"].iloc[outside],
            joint=is_joint)
    return full, out


# ----------------------------------------------------------------------------- the report


def _pm(value: float, error: float, scale: float = 100.0, signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{scale * value:{sign}.1f} ± {scale * error:.1f}"


def format_summary(ev: PlanEvaluation) -> str:
    """The evaluation as Markdown a person reads: what was done, then three tables."""
    from smartpick_ml.contracts.reference import APPLICANT_TYPE_LABELS
    from smartpick_ml.simulation.report import markdown_table

    st = ev.settings
    lines = [f"# SmartPick's plan against applicants' own lists (simulated season {st['season']})",
             "",
             f"{st['sampled']:,} applicants of the validation season (never seen in training) "
             "each had their preferred-specialty list replaced by SmartPick's plan of the same "
             "length (the same ERAS fee; their signals, backup and preliminary applications "
             f"kept), at most {st['group_share']:.0%} of the season at a time; each season "
             f"was re-run {st['replicates']['plan groups']} times (interviews, rank lists, the "
             f"match; the adoption seasons up to {ev.replicates} times), each beside a twin "
             "with everyone's own list and the same seed. ± is the Monte-Carlo error (largest "
             f"{st['largest_mc_error_pp']:.2f} pp; goal {st['target_mc_error_pp']} pp). "
             "Percentages; gain = plan − own list, in percentage points."]
    lines += markdown_table(
        "Does the plan match more often, and is its stated P(match) right?",
        ["applicant type", "applicants", "stated P(match), plan", "before calibration",
         "realised, plan", "realised, own list", "gain (pp)", "stated, own list",
         "P(match) any specialty: plan", "own list"],
        [[APPLICANT_TYPE_LABELS[r.applicant_type], r.applicants, f"{100 * r.stated_plan:.1f}",
          f"{100 * getattr(r, 'stated_plan_uncalibrated', r.stated_plan):.1f}",
          _pm(r.matched_preferred_plan, r.matched_preferred_plan_mc),
          _pm(r.matched_preferred_own, r.matched_preferred_own_mc),
          _pm(r.matched_preferred_gain, r.matched_preferred_gain_mc, signed=True),
          f"{100 * r.stated_own:.1f}", _pm(r.matched_plan, r.matched_plan_mc),
          _pm(r.matched_own, r.matched_own_mc)] for r in ev.by_type.itertuples()],
        note="P(match) here is in the preferred specialty (what the plan covers); the last "
             "two columns count a match anywhere (backup and preliminary programs too). Stated: "
             "the figure SmartPick states for its plan once calibrated on these seasons, each "
             "applicant's from the half of the sample they were not in (cross-fitted); before "
             "calibration: the model's own figure, which is also what it states for a list the "
             "applicant chose (stated, own list).")
    if len(ev.adoption):
        lines += markdown_table(
            "When many follow SmartPick in one season",
            ["season", "applicant type", "followers", "their P(match)", "gain over own lists",
             "others of the type", "others' change"],
            [[r.season, APPLICANT_TYPE_LABELS[r.applicant_type], r.followers,
              _pm(r.followers_rate, r.followers_rate_mc),
              _pm(r.followers_gain, r.followers_gain_mc, signed=True), r.others,
              _pm(getattr(r, "others_gain", np.nan), getattr(r, "others_gain_mc", np.nan),
                  signed=True)] for r in ev.adoption.itertuples()],
            note="Followers' P(match in the preferred specialty) in that season, and its change "
                 "from the season in which everyone sends their own list; others: the type's "
                 "applicants who did not follow, whose chances the followers' lists can crowd.")
    if len(ev.joint):
        lines += markdown_table(
            "The joint plan: the backup list and the signals chosen too",
            ["applicant type", "applicants with a backup", "stated P(match), joint plan",
             "before calibration", "P(match), joint plan", "single-specialty plan", "gain (pp)",
             "in the preferred specialty: joint", "single", "gain (pp)"],
            [[APPLICANT_TYPE_LABELS[r.applicant_type], r.applicants,
              f"{100 * r.stated_joint:.1f}",
              f"{100 * getattr(r, 'stated_joint_uncalibrated', r.stated_joint):.1f}",
              _pm(r.matched_plan, r.matched_plan_mc),
              _pm(r.matched_own, r.matched_own_mc),
              _pm(r.matched_gain, r.matched_gain_mc, signed=True),
              _pm(r.matched_preferred_plan, r.matched_preferred_plan_mc),
              _pm(r.matched_preferred_own, r.matched_preferred_own_mc),
              _pm(r.matched_preferred_gain, r.matched_preferred_gain_mc, signed=True)]
             for r in ev.joint.itertuples()],
            note="Applicants of the sample who sent a backup list: SmartPick's joint plan "
                 "(plan_across at their own list sizes: preferred and backup programs and the "
                 "signals chosen together) against the single-specialty plan, which keeps their "
                 "own signals and backup list; the same re-run seasons. P(match): anywhere on "
                 "the primary list. Stated: calibrated on these joint plans where each half of "
                 f"the sample had at least {MIN_JOINT_APPLICANTS} of the type with one, else by "
                 "the single-plan line (cross-fitted); before calibration: the model's own "
                 "figure.")
    reliability = reliability_table(ev)
    lines += markdown_table(
        "Stated against realised P(match) of the plans, by tenth of the stated figure",
        ["applicant type", "ECE", *(f"tenth {d}" for d in range(1, 11))],
        [[APPLICANT_TYPE_LABELS[typ], f"{part['ece'].iloc[0]:.3f}",
          *(f"{100 * r.stated:.0f} → {100 * r.realised:.0f}" for r in part.itertuples())]
         for typ, part in reliability.groupby("applicant_type", sort=False)],
        note="Each cell: the stated (calibrated, cross-fitted) P(match) of the plans in that "
             "tenth (mean, %) → the realised rate; ECE: the gaps weighted by applicants. "
             "Before calibration: " + ", ".join(
                 f"{APPLICANT_TYPE_LABELS[typ]} ECE {_ece(part, 'stated_uncalibrated'):.3f}"
                 for typ, part in reliability.groupby("applicant_type", sort=False)) + ".")
    return "\n".join(lines) + "\n"


SUMMARY_COLUMNS = ["season", "applicant_type", "adoption", "n_applicants", "stated_p_match",
                   "stated_p_match_uncalibrated", "realised_p_match", "realised_own_list",
                   "realised_gain_pp", "mc_error_pp"]


def summary_table(ev: PlanEvaluation) -> pd.DataFrame:
    """One row per kind of season and applicant type, plus ``all`` (weighted by applicants):
    stated and realised P(match in the preferred specialty) of the followers, their own lists'
    rate, the gain in points and its Monte-Carlo error in points."""
    rows = [{"season": "sample", "applicant_type": r.applicant_type,
             "adoption": ev.settings["group_share"], "n_applicants": r.applicants,
             "stated_p_match": r.stated_plan,
             "stated_p_match_uncalibrated": getattr(r, "stated_plan_uncalibrated", r.stated_plan),
             "realised_p_match": r.matched_preferred_plan,
             "realised_own_list": r.matched_preferred_own,
             "realised_gain_pp": 100 * r.matched_preferred_gain,
             "mc_error_pp": 100 * r.matched_preferred_gain_mc} for r in ev.by_type.itertuples()]
    rows += [{"season": r.season, "applicant_type": r.applicant_type, "adoption": r.share,
              "n_applicants": r.followers, "stated_p_match": r.followers_stated,
              "stated_p_match_uncalibrated": r.followers_stated_uncalibrated,
              "realised_p_match": r.followers_rate, "realised_own_list": r.followers_own,
              "realised_gain_pp": 100 * r.followers_gain,
              "mc_error_pp": 100 * r.followers_gain_mc} for r in ev.adoption.itertuples()]
    table = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    pooled = []
    for season, part in table.groupby("season", sort=False):
        w = part["n_applicants"].to_numpy(float) / part["n_applicants"].sum()
        pooled.append({"season": season, "applicant_type": "all",
                       "adoption": part["adoption"].iloc[0],
                       "n_applicants": int(part["n_applicants"].sum()),
                       **{c: float(w @ part[c].to_numpy(float)) for c in SUMMARY_COLUMNS[4:-1]},
                       # independent types: errors add in quadrature, weighted
                       "mc_error_pp": float(np.sqrt(w**2 @ part["mc_error_pp"].to_numpy(float)
                                                    ** 2))})
    return pd.concat([table, pd.DataFrame(pooled)], ignore_index=True)


def reliability_table(ev: PlanEvaluation, bins: int = 10) -> pd.DataFrame:
    """Stated against realised P(match) of the plans by decile of the stated figure, per type,
    with each type's expected calibration error (the decile gaps weighted by applicants)."""
    out = []
    for typ, g in ev.per_applicant.groupby("applicant_type", sort=False):
        decile = pd.qcut(g["stated_plan"].rank(method="first"), min(bins, len(g)),
                         labels=False)
        for d, part in g.groupby(decile):
            out.append({"applicant_type": typ, "decile": int(d) + 1, "n": len(part),
                        "stated": float(part["stated_plan"].mean()),
                        "stated_uncalibrated": float(part.get("stated_plan_uncalibrated",
                                                              part["stated_plan"]).mean()),
                        "realised": float(part["realised_plan"].mean())})
    table = pd.DataFrame(out)
    ece = table.groupby("applicant_type", sort=False).apply(_ece, include_groups=False)
    return table.assign(ece=table["applicant_type"].map(ece))


def _ece(deciles: pd.DataFrame, stated: str = "stated") -> float:
    """Expected calibration error: the deciles' |stated − realised|, weighted by applicants."""
    gap = (deciles[stated] - deciles["realised"]).abs()
    return float((gap * deciles["n"]).sum() / deciles["n"].sum())


def plot_evaluation(summary: pd.DataFrame, reliability: pd.DataFrame, out_dir: Path
                    ) -> dict[str, Path]:
    """Two PNGs: stated against realised P(match) of the plans by decile, per type; and what
    following the plan gains per type and adoption share."""
    from smartpick_ml.contracts.reference import APPLICANT_TYPE_LABELS
    from smartpick_ml.training.evaluate import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.plot([0, 100], [0, 100], color="grey", lw=1, ls="--", label="stated = realised")
    for typ, part in reliability.groupby("applicant_type", sort=False):
        ax.plot(100 * part["stated"], 100 * part["realised"], marker="o",
                label=f"{APPLICANT_TYPE_LABELS[typ]} (ECE {part['ece'].iloc[0]:.3f})")
    ax.set(xlabel="stated P(match) of SmartPick's plan, % (decile mean)",
           ylabel="realised in re-run seasons, %",
           title="Is the stated P(match) the one applicants get?")
    ax.legend(loc="upper left", fontsize=8)
    paths = {"reliability_png": save_figure(fig, out_dir / "reliability.png")}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    seasons = list(pd.unique(summary["season"]))
    kinds = [t for t in APPLICANT_TYPE_LABELS if t in set(summary["applicant_type"])]
    width = 0.8 / max(len(kinds), 1)
    for k, typ in enumerate(kinds):
        part = summary[summary["applicant_type"] == typ].set_index("season").reindex(seasons)
        ax.bar(np.arange(len(seasons)) + k * width, part["realised_gain_pp"], width,
               yerr=part["mc_error_pp"], label=APPLICANT_TYPE_LABELS[typ])
    ax.set_xticks(np.arange(len(seasons)) + 0.4 - width / 2,
                  [s.replace(" follow SmartPick", "") for s in seasons], rotation=20,
                  ha="right", fontsize=8)
    ax.axhline(0, color="grey", lw=1)
    ax.set(ylabel="P(match) gain over own list, points",
           title="What following the plan is worth, by how many follow it")
    ax.legend(fontsize=8)
    paths["gain_png"] = save_figure(fig, out_dir / "gain_by_adoption.png")
    return paths


def write_evaluation(ev: PlanEvaluation, out_dir: str | Path, plots: bool = True
                     ) -> dict[str, Path]:
    """Write the tables (CSV, Parquet), ``summary.md``, ``summary.json`` and the plots into a
    temporary folder beside ``out_dir``, then swap it in: an evaluation stopped part-way
    leaves the previous one whole, never a mix."""
    import shutil
    import tempfile

    final = Path(out_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        written = _write_files(ev, staging, plots)
        retired = final.with_name(f".{final.name}.old-{staging.name[-8:]}")
        if final.exists():
            final.rename(retired)
        staging.rename(final)
        shutil.rmtree(retired, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {name: final / p.name for name, p in written.items()}


def _write_files(ev: PlanEvaluation, out: Path, plots: bool) -> dict[str, Path]:
    from smartpick_ml.data.io import (
        write_csv_atomic,
        write_json_atomic,
        write_parquet_atomic,
        write_text_atomic,
    )

    reliability = reliability_table(ev)
    summary = summary_table(ev)
    paths = {"summary": out / "summary.md", "summary_csv": out / "summary.csv",
             "reliability_csv": out / "reliability.csv", "by_type": out / "by_type.csv",
             "adoption": out / "adoption.csv", "per_applicant": out / "per_applicant.parquet",
             "json": out / "summary.json"}
    write_csv_atomic(summary, paths["summary_csv"])
    write_csv_atomic(reliability, paths["reliability_csv"])
    write_csv_atomic(ev.by_type, paths["by_type"])
    write_csv_atomic(ev.adoption, paths["adoption"])
    if len(ev.joint):
        paths["joint"] = out / "joint.csv"
        write_csv_atomic(ev.joint, paths["joint"])
    write_parquet_atomic(ev.per_applicant, paths["per_applicant"])
    write_text_atomic(paths["summary"], format_summary(ev))
    write_json_atomic(paths["json"], {"settings": ev.settings, "replicates": ev.replicates,
                                      "summary": summary.to_dict("records")})
    if ev.calibration is not None:
        paths["plan_calibration"] = save_plan_calibration(ev.calibration,
                                                          out / PLAN_CALIBRATION_FILE)
    if plots:
        paths.update(plot_evaluation(summary, reliability, out))
    return paths


def promise_section_html(ev: PlanEvaluation) -> str:
    """The evaluation's headline for the model's run report: plan against own list per type,
    what it is worth as more follow it, and whether the stated P(match) is the realised one."""
    import html

    from smartpick_ml.contracts.reference import APPLICANT_TYPE_LABELS

    summary = summary_table(ev)
    sample = summary[summary["season"] == "sample"]
    ece = reliability_table(ev).groupby("applicant_type")["ece"].first()
    rows = "".join(
        f"<tr><td>{html.escape(APPLICANT_TYPE_LABELS.get(r.applicant_type, 'all types'))}</td>"
        f"<td>{r.n_applicants:,}</td><td>{100 * r.stated_p_match:.1f}</td>"
        f"<td>{100 * r.realised_p_match:.1f}</td><td>{100 * r.realised_own_list:.1f}</td>"
        f"<td>{r.realised_gain_pp:+.1f} ± {r.mc_error_pp:.1f}</td>"
        f"<td>{ece.get(r.applicant_type, np.nan):.3f}</td></tr>" for r in sample.itertuples())
    shares = summary[summary["season"].str.contains("of non-US IMGs")
                     & (summary["applicant_type"] == "non_us_img")]
    adoption = "; ".join(f"{r.adoption:.0%} follow it: {r.realised_gain_pp:+.1f} pp"
                         for r in shares.itertuples())
    st = ev.settings
    return (
        "<h2>Does following the plan help? (the promise, measured)</h2>"
        f"<p>Season {st['season']} re-run with {st['sampled']:,} sampled applicants following "
        f"SmartPick's plan at their own list's fee, at most {st['group_share']:.0%} of the "
        "season at a time, beside a twin season with everyone's own list (<code>smartpick "
        "evaluate-plans</code>; <code>docs/promise.md</code>). P(match) in the preferred "
        "specialty, %; stated: calibrated on these seasons, cross-fitted; ± the Monte-Carlo "
        "error.</p><table><tr><th>applicant type</th><th>applicants</th><th>stated, plan</th>"
        "<th>realised, plan</th><th>realised, own list</th><th>gain (pp)</th>"
        f"<th>ECE by decile</th></tr>{rows}</table>"
        + (f"<p>Non-US IMGs when more follow it at once: {html.escape(adoption)}.</p>"
           if adoption else ""))


def update_model_report(model_dir: str | Path, ev: PlanEvaluation) -> Path | None:
    """Put the headline in the run report saved beside the model (if there is one)."""
    from smartpick_ml.data.io import write_text_atomic
    from smartpick_ml.training.run_report import REPORT_NAME, with_promise_section

    path = Path(model_dir) / REPORT_NAME
    if not path.is_file():
        return None
    write_text_atomic(path, with_promise_section(path.read_text(encoding="utf-8"),
                                                 promise_section_html(ev)))
    return path


def log_evaluation(paths: dict[str, Path], ev: PlanEvaluation, tracking_uri: str,
                   experiment: str, model: str, model_version: str | None) -> str:
    """An MLflow run in the training experiment, tagged with the model it evaluates: the
    summary's figures as metrics, the files as artifacts. Returns the run id."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name="evaluate-plans", description=(
            "SmartPick's plans against applicants' own lists in re-run seasons "
            "(docs/promise.md)")) as run:
        mlflow.set_tags({"smartpick.task": "evaluate-plans", "smartpick.model": model,
                         "smartpick.model_version": str(model_version)})
        mlflow.log_params({k: str(v)[:500] for k, v in ev.settings.items()})
        summary = summary_table(ev)
        for r in ev.joint.itertuples():
            mlflow.log_metrics({f"{r.applicant_type}.joint_gain_pp": 100 * r.matched_gain})
        for r in summary[summary["season"] == "sample"].itertuples():
            mlflow.log_metrics({f"{r.applicant_type}.gain_pp": r.realised_gain_pp,
                                f"{r.applicant_type}.stated_minus_realised_pp":
                                    100 * (r.stated_p_match - r.realised_p_match),
                                f"{r.applicant_type}.uncalibrated_minus_realised_pp":
                                    100 * (r.stated_p_match_uncalibrated
                                           - r.realised_p_match)})
        for p in paths.values():
            mlflow.log_artifact(str(p), artifact_path="evaluate_plans")
        return run.info.run_id
