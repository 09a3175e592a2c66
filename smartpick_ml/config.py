"""Typed configuration, read from TOML files in ``pipelines/``. Nothing here touches disk at import.

Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from smartpick_ml.errors import ConfigError
from smartpick_ml.reference import APPLICANT_TYPES, SPECIALTY_NAMES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TypeParams(_Strict):
    """Per-applicant-type inputs of the simulated season."""

    step2_mean: float
    step2_sd: float = Field(gt=0)
    applications_mean: float = Field(gt=0)
    applications_sd_log: float = Field(ge=0)
    rank_bias: float
    specialty_choice_power: float
    target_rate_weight: float
    target_prestige_weight: float
    years_since_graduation_mean: float = Field(ge=0)
    needs_visa_share: float = Field(ge=0, le=1)
    usce_none_share: float = Field(ge=0, le=1)
    usce_months_mean: float = Field(ge=0)
    publications_mean: float = Field(ge=0)


class SimulationParams(_Strict):
    """Behavioural parameters of the season; each documented in ``pipelines/simulate.toml``."""

    types: dict[str, TypeParams]
    applicants: dict[int, dict[str, int]]
    score_weight: float
    latent_weight: float
    usce_weight: float
    publications_weight: float
    years_since_graduation_penalty: float
    interview_noise_sd: float = Field(gt=0)
    interview_strength_weight: float
    interviews_per_position: float = Field(gt=0)
    max_interviews_per_applicant: int = Field(gt=0)
    target_home_state_weight: float
    target_region_weight: float
    applicant_taste_sd: float = Field(ge=0)
    applicant_prestige_weight: float
    applicant_home_weight: float
    program_home_state_bonus: float
    application_growth_per_season: float
    applications_strength_elasticity: float = Field(ge=0)
    applications_reference_season: int
    signals: dict[str, dict[str, int]]
    positions_reference_season: int

    @field_validator("types")
    @classmethod
    def _all_types(cls, v: dict[str, TypeParams]) -> dict[str, TypeParams]:
        missing = set(APPLICANT_TYPES) - set(v)
        unknown = set(v) - set(APPLICANT_TYPES)
        if missing or unknown:
            raise ValueError(f"types must be exactly {list(APPLICANT_TYPES)}; missing "
                             f"{sorted(missing)}, unknown {sorted(unknown)}")
        return v

    @field_validator("signals")
    @classmethod
    def _known_specialties(cls, v: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        unknown = set(v) - set(SPECIALTY_NAMES)
        if unknown:
            raise ValueError(f"unknown specialty in signals: {sorted(unknown)}")
        return v


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
