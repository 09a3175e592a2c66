"""Typed configuration, read from TOML files in ``pipelines/``. Nothing here touches disk at import.

Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from smartpick_ml.contracts.errors import ConfigError
from smartpick_ml.contracts.reference import (
    APPLICANT_TYPES,
    MATCH_RESULTS,
    SIGNAL_ALLOTMENTS,
    SPECIALTY_NAMES,
)


def counts_by_type(counts: dict[str, int], minimum: int) -> dict[str, int]:
    """A count per applicant type: known types only, each at least ``minimum``."""
    unknown = sorted(set(counts) - set(APPLICANT_TYPES))
    if unknown or min(counts.values(), default=minimum) < minimum:
        raise ValueError(f"keys must be applicant types {list(APPLICANT_TYPES)} with counts "
                         f">= {minimum}; unknown: {unknown}")
    return counts


class _Strict(BaseModel):
    # TOML spells nan / inf; no parameter means anything with them (a NaN weight would silently
    # turn a whole simulated season into NaN), so they are errors like any other bad value
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TypeParams(_Strict):
    """Per-applicant-type inputs of the simulated season."""

    step2_mean: float
    step2_sd: float = Field(gt=0)
    applications_mean: float = Field(gt=0)
    applications_sd_log: float = Field(ge=0)
    rank_bias: float
    #: applicants who apply per active applicant (one who ranks a program): the published counts
    #: are of active applicants, and those whom no program interviews drop out before ranking
    applicants_per_active: float = Field(default=1.0, ge=1.0, le=3.0)
    backup_bias: float = 0.0
    #: share of this type's backup lists that end with at least one program ranked (the rest get
    #: no interview there): the published counts are of applicants who rank, so the backup
    #: volume is solved on ranking
    backup_ranking_share: float = Field(default=1.0, gt=0, le=1)
    target_rate_weight: float
    target_prestige_weight: float
    years_since_graduation_mean: float = Field(ge=0)
    needs_visa_share: float = Field(ge=0, le=1)
    usce_none_share: float = Field(ge=0, le=1)
    usce_months_mean: float = Field(ge=0)
    publications_mean: float = Field(ge=0)


class MarketFigures(_Strict):
    """Published figures of one specialty (or PGY-1 track) in the market season."""

    positions: int = Field(ge=0)
    prior_graduates: int = Field(ge=0)
    applicants_ranking: int = Field(ge=0)
    filled: dict[str, int]

    @model_validator(mode="after")
    def _fits(self) -> MarketFigures:
        if self.prior_graduates > self.positions:
            raise ValueError("prior_graduates cannot exceed positions")
        return self

    @field_validator("filled")
    @classmethod
    def _types(cls, v: dict[str, int]) -> dict[str, int]:
        if set(v) != set(APPLICANT_TYPES) or min(v.values(), default=0) < 0:
            raise ValueError(f"filled must give a count >= 0 for each of {list(APPLICANT_TYPES)}")
        return v


class SimulationParams(_Strict):
    """Behavioural parameters of the season; each documented in ``pipelines/simulate.toml``."""

    types: dict[str, TypeParams]
    applicants: dict[int, dict[str, int]]
    score_weight: float
    latent_weight: float
    usce_weight: float
    publications_weight: float
    years_since_graduation_penalty: float
    score_weight_prestige_slope: float = 0.0
    university_publications_weight: float = 0.0
    community_usce_weight: float = 0.0
    interview_noise_sd: float = Field(gt=0)
    interview_strength_weight: float
    interviews_per_position: float = Field(gt=0)
    min_interviews_per_position: float = Field(default=0.0, ge=0)
    max_interviews_per_applicant: int = Field(gt=0)
    max_supplemental_interviews: int = Field(default=8, ge=0)
    waitlist_margin: float = Field(default=1e6, gt=0)  # default: a waitlist reaches anyone
    target_home_state_weight: float
    target_region_weight: float
    applicant_taste_sd: float = Field(ge=0)
    applicant_prestige_weight: float
    applicant_home_weight: float
    program_home_state_bonus: float
    application_growth_per_season: float
    market_season: int = 2025
    active_applicants: int = Field(default=0, ge=0)
    market: dict[str, MarketFigures]
    pgy1_only_applicants: dict[str, int] = Field(default_factory=dict)
    specialty_strength_sorting: float = 0.0
    rank_type_by_fill_share: float = Field(default=0.0, ge=0)
    backup_competitiveness_weight: float = 0.0
    backup_strength_weight: float = 0.0
    backup_family_affinity: float = Field(default=1.0, gt=0)
    backup_applications_share: float = Field(default=0.5, gt=0, le=1)
    backup_rank_penalty: float = 0.0
    supplemental_applications_mean: float = Field(default=12.0, gt=0)
    fallback_applications_mean: float = Field(default=10.0, gt=0)
    fallback_strength_weight: float = 0.0
    applications_strength_elasticity: float = Field(ge=0)
    applications_rate_elasticity: float = Field(default=0.0, ge=0, le=1)
    applications_reference_season: int
    signals: dict[str, dict[str, int]] = Field(default_factory=lambda: {
        k: dict(v) for k, v in SIGNAL_ALLOTMENTS.items()})  # the published allotments
    positions_reference_season: int

    def per_type(self, name: str) -> np.ndarray:
        """``types[t].<name>`` of every applicant type, in ``APPLICANT_TYPES`` order."""
        return np.array([getattr(self.types[t], name) for t in APPLICANT_TYPES], dtype=float)

    @field_validator("types")
    @classmethod
    def _all_types(cls, v: dict[str, TypeParams]) -> dict[str, TypeParams]:
        missing = set(APPLICANT_TYPES) - set(v)
        unknown = set(v) - set(APPLICANT_TYPES)
        if missing or unknown:
            raise ValueError(f"types must be exactly {list(APPLICANT_TYPES)}; missing "
                             f"{sorted(missing)}, unknown {sorted(unknown)}")
        return v

    @field_validator("pgy1_only_applicants")
    @classmethod
    def _known_types(cls, v: dict[str, int]) -> dict[str, int]:
        return counts_by_type(v, minimum=0)

    @field_validator("market")
    @classmethod
    def _some_market(cls, v: dict[str, Any]) -> dict[str, Any]:
        if not v:
            raise ValueError("give the published figures of the specialties applicants choose "
                             "among (positions, applicants ranking, positions filled by type)")
        return v

    @field_validator("signals", "market")
    @classmethod
    def _known_specialties(cls, v: dict[str, Any]) -> dict[str, Any]:
        unknown = set(v) - set(SPECIALTY_NAMES)
        if unknown:
            raise ValueError(f"unknown specialty: {sorted(unknown)}")
        return v

    @model_validator(mode="after")
    def _market_season_known(self) -> SimulationParams:
        # the market's figures are scaled by that season's applicants, and backups are placed by
        # each type's published match rate that season
        if self.market_season not in self.applicants:
            raise ValueError(f"market_season {self.market_season} has no applicant counts in "
                             "applicants")
        if self.market_season not in MATCH_RESULTS:
            raise ValueError(f"market_season must be a season with published match rates by "
                             f"type: one of {sorted(MATCH_RESULTS)}")
        return self


class SimulateConfig(_Strict):
    """What ``smartpick simulate`` runs."""

    seasons: list[int] = Field(min_length=1)
    scale: float = Field(gt=0, le=2)
    seed: int = Field(ge=0)
    catalog: str = "auto"
    output_dir: str = "data/raw"
    oracle_replicates: int = Field(default=20, ge=2)
    params: SimulationParams

    @field_validator("seasons")
    @classmethod
    def _seasons_known(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("seasons must not repeat")
        return sorted(v)


def _format_pydantic(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)


def load_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None


def build(model: type[_Strict], data: dict[str, Any], source: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_pydantic(exc, source)) from None


def load_simulate_config(path: str | Path, **overrides: Any) -> SimulateConfig:
    """Read a simulation config; ``overrides`` (e.g. from the CLI) replace top-level keys."""
    data = load_toml(path)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return build(SimulateConfig, data, str(path))


# ----------------------------------------------------------------------------- training


class TrainData(_Strict):
    raw_dir: str = "data/raw"
    processed_dir: str = "data/processed"
    simulate: Literal["if-missing", "always", "never"] = "if-missing"
    simulate_config: str = "pipelines/simulate.toml"
    train_seasons: list[int] = Field(min_length=1)
    validation_season: int
    train_sample_fraction: float = Field(default=1.0, gt=0, le=1)
    validation_sample_fraction: float = Field(default=1.0, gt=0, le=1)
    holdout_fraction: float = Field(default=0.2, gt=0, lt=1)
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _validation_not_in_training(self) -> TrainData:
        if self.validation_season in self.train_seasons:
            raise ValueError(f"validation_season {self.validation_season} is also a training "
                             "season: validate on a season the model has not seen")
        return self


class TrainModel(_Strict):
    learning_rate: float = Field(default=0.1, gt=0, le=1)
    max_iter: int = Field(default=500, ge=1)
    max_leaf_nodes: int = Field(default=31, ge=2)
    min_samples_leaf: int = Field(default=100, ge=1)
    l2_regularization: float = Field(default=1.0, ge=0)
    n_iter_no_change: int = Field(default=20, ge=1)
    calibration: Literal["auto", "isotonic", "sigmoid", "none"] = "auto"
    negative_sample_rate: float = Field(default=1.0, gt=0, le=1)


class TrainEvaluation(_Strict):
    oracle_replicates: int = Field(default=8, ge=2)
    importance_rows: int = Field(default=20000, ge=100)
    importance_repeats: int = Field(default=3, ge=1)
    logistic_rows: int = Field(default=300000, ge=1000)


class TrainTracking(_Strict):
    experiment: str = "smartpick-match"
    registered_model: str = "smartpick-match"
    tracking_uri: str = ""


class TrainOutput(_Strict):
    model_dir: str = "models"


class TrainConfig(_Strict):
    """What ``smartpick train`` runs (``pipelines/train.toml``)."""

    data: TrainData
    model: TrainModel = TrainModel()
    evaluation: TrainEvaluation = TrainEvaluation()
    tracking: TrainTracking = TrainTracking()
    output: TrainOutput = TrainOutput()


def load_train_config(path: str | Path) -> TrainConfig:
    """Read a training config (TOML, e.g. ``pipelines/train.toml``) into a checked, frozen
    :class:`TrainConfig`: which seasons to train and validate on, where the data lives (and
    whether to simulate it), the model's settings, the evaluation and MLflow tracking.

    A bad file is refused before any work starts with a ``ConfigError`` naming the field
    (``model.learning_rate: Input should be greater than 0``). Change a setting for one run
    with ``cfg.model_copy(update=...)``."""
    return build(TrainConfig, load_toml(path), str(path))


# ----------------------------------------------------------------------------- plan evaluation


class EvaluateSample(_Strict):
    """Applicants of the validation season whose own list is replaced by SmartPick's plan."""

    per_type: dict[str, int] = Field(min_length=1)
    #: at most this share of the season's applicants follow a plan in one re-run season, so
    #: each measures the plan, not a market the plans have changed
    group_share: float = Field(default=0.01, gt=0, le=0.5)
    #: also the joint plan (preferred and backup lists, signals chosen with them) for sampled
    #: applicants with a backup list, against the single-specialty plan at the same fee
    joint: bool = False

    @field_validator("per_type")
    @classmethod
    def _known_types(cls, v: dict[str, int]) -> dict[str, int]:
        return counts_by_type(v, minimum=1)


class EvaluateReplicates(_Strict):
    """Re-drawn seasons: at least ``min``, more until every reported rate's Monte-Carlo error is
    at most ``max_mc_error_pp`` percentage points, at most ``max``."""

    min: int = Field(default=3, ge=2)
    max: int = Field(default=12, ge=2)
    max_mc_error_pp: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> EvaluateReplicates:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        return self


class EvaluateAdoption(_Strict):
    """Seasons in which many follow SmartPick at once: shares of non-US IMGs, and one share of
    every type."""

    non_us_img_shares: list[float] = Field(default_factory=lambda: [0.01, 0.10, 0.50])
    every_type_share: float | None = Field(default=0.10, gt=0, le=1)

    @field_validator("non_us_img_shares")
    @classmethod
    def _shares(cls, v: list[float]) -> list[float]:
        if any(not 0 < s <= 1 for s in v):
            raise ValueError("every share must be in (0, 1]")
        return sorted(set(v))


class EvaluateRun(_Strict):
    seed: int = Field(default=0, ge=0)
    n_jobs: int = Field(default=1, ge=1, le=256)
    backend: Literal["loky", "threading", "spark"] = "loky"
    out_dir: str = "data/processed/plans"


class EvaluatePlansConfig(_Strict):
    """What ``smartpick evaluate-plans`` runs (``pipelines/evaluate_plans.toml``)."""

    train_config: str = "pipelines/train.toml"
    sample: EvaluateSample
    replicates: EvaluateReplicates = EvaluateReplicates()
    adoption: EvaluateAdoption = EvaluateAdoption()
    run: EvaluateRun = EvaluateRun()


def load_evaluate_plans_config(path: str | Path) -> EvaluatePlansConfig:
    """Read a plan-evaluation config (e.g. ``pipelines/evaluate_plans.toml``); a bad file is
    refused with a ``ConfigError`` naming the field."""
    return build(EvaluatePlansConfig, load_toml(path), str(path))
