"""Stage 5 — what a backend service calls: rank programs for one applicant, plan where to apply.

Three lines::

    from smartpick_ml import MatchPredictor
    predictor = MatchPredictor.load("models")            # or "models:/smartpick-match@champion"
    ranked = predictor.rank({"applicant_type": "non_us_img", "step2_ck": 248,
                             "graduation_year": 2022, "needs_visa": True},
                            specialty="Internal Medicine", k=20)

- ``predict(pairs)``: q for applicant × program rows (a pairs frame,
  ``features.PAIR_INPUT_COLUMNS``).
- ``rank(applicant, preferences, specialty, k)``: every program with q, the applicant's utility U,
  expected value EV = q·U, eligibility with the reason, and the inputs that move q most.
- ``match_probability(applicant, rank_list)``: P(match at each rank), P(unmatched), E[U].
- ``plan(applicant, preferences, max_applications | budget)``: the exact optimal application list
  for every length, its P(match), E[U] and ERAS fees (``portfolio``).

Applicant profiles and preferences are validated by pydantic: a bad field gets an error naming it.
A signal must name a program of the catalog, of the specialty ranked or planned: a signal the
model cannot see would otherwise be dropped without a word.

``load`` ranks the catalog the model was trained with, verified against the hash its manifest
records; another catalog only when passed as ``programs=``, warned about and recorded in
``predictor.manifest["catalog_used"]``.
"""

from __future__ import annotations

import datetime as _dt
import functools
import numbers
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from smartpick_ml.contracts.columns import MAX_QUOTED_CHARS, check_values, quote
from smartpick_ml.contracts.eligibility import RULES as ELIGIBILITY_RULES
from smartpick_ml.contracts.eligibility import (
    below_minimum,
    graduation_screened,
    ineligibility_reasons,
    past_cutoff,
    step2_screened,
)
from smartpick_ml.contracts.errors import DataValidationError, SmartPickError
from smartpick_ml.contracts.pairs import PROGRAM_INPUTS, applicant_pairs, check_pairs_frame
from smartpick_ml.contracts.reference import (
    RATE_COLUMN_BY_TYPE,
    REGIONS,
    SIGNAL_ALLOTMENTS,
    SPECIALTY_NAMES,
    STATE_REGION,
    TYPICAL_STEP2_CK,
)
from smartpick_ml.contracts.schemas import APPLICANT_ROW_RULES, APPLICANTS
from smartpick_ml.inference.portfolio import (
    USMLE_TRANSCRIPT_FEE_USD,
    PortfolioInputError,
    best_joint_list,
    best_joint_list_within,
    fees_for_sizes,
    match_probability,
    plan_table,
    usd_per_extra_point,
)
from smartpick_ml.modelling.threads import SMALL_BATCH_ROWS, one_openmp_thread

DISPLAY_COLUMNS = ("program_id", "name", "specialty", "city", "state", "positions",
                   "program_type", "sponsors_j1", "sponsors_h1b", "img_share", "img_mentorship",
                   "img_orientation")


#: why a program is closed to the applicant ("" = open), in the order of ``eligibility.RULES``
_REASON_DTYPE = pd.CategoricalDtype(["", *(reason for reason, _ in ELIGIBILITY_RULES)])


def _reason_of(rule: Any) -> str:
    return next(reason for reason, r in ELIGIBILITY_RULES if r is rule)


def _display_array(column: pd.Series) -> Any:
    """A catalog column as the array ``rank`` takes rows from (see ``MatchPredictor``)."""
    if not (pd.api.types.is_object_dtype(column.dtype)
            or pd.api.types.is_string_dtype(column.dtype)):
        return column.array
    return pd.Categorical(column.astype("str"))


class InputError(SmartPickError, ValueError):
    """An applicant profile, preference or request argument is invalid (the message names it)."""


def _default_season() -> int:
    """The Match a person applying now enters: applications open in June for next spring."""
    today = _dt.date.today()
    return today.year + 1 if today.month >= 6 else today.year


def _contract_field(name: str, **kwargs: Any) -> Any:
    """A profile field with the bounds and description of the ``applicants`` contract."""
    spec = APPLICANTS.column(name)
    return Field(ge=spec.min, le=spec.max, description=spec.description, **kwargs)


def _contract_error(message: str) -> PydanticCustomError:
    return PydanticCustomError("contract", "{message}", {"message": message})


#: backup specialties (or PGY-1 tracks) beside the preferred one: three specialties in all
MAX_BACKUPS = 2


class ApplicantProfile(BaseModel):
    """One applicant, as a service sends it. Unknown fields are errors.

    Every field the ``applicants`` table also has is checked by that table's rules (type, range,
    allowed values, and the row rules), exactly as a served request's columns are: a value the
    server refuses is refused here with the same words."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    applicant_type: Literal["us_md_senior", "us_do_senior", "us_img", "non_us_img"]
    step2_ck: int = _contract_field("step2_ck")
    graduation_year: int = _contract_field("graduation_year")
    season: int = _contract_field("season", default_factory=_default_season)
    usce_months: int = _contract_field("usce_months", default=0)
    publications: int = _contract_field("publications", default=0)
    applications: int | None = _contract_field("applications", default=None)
    needs_visa: bool = False
    home_state: str | None = None
    preferred_specialty: str | None = None
    backup_specialties: list[str] = Field(default_factory=list, max_length=MAX_BACKUPS)
    signals: dict[str, Literal["signal", "gold", "silver"]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _contract_values(cls, data: Any) -> Any:
        """The contract's column rules on the raw values (before pydantic converts any)."""
        if not isinstance(data, Mapping):
            return data
        out = dict(data)
        for name in (n for n in _PROFILE_CONTRACT_FIELDS if n in out):  # declared order
            value = out[name]
            if value is None and name in ("preferred_specialty", "applications"):
                continue  # optional in a profile
            spec = APPLICANTS.column(name)
            try:
                checked = check_values(spec, [value], where=f"applicant.{name}")[0]
            except ValueError as exc:
                raise _contract_error(str(exc)) from None
            if spec.kind == "int":
                out[name] = int(checked)
            elif spec.kind == "bool":
                out[name] = bool(checked)
        return out

    @field_validator("backup_specialties", mode="before")
    @classmethod
    def _known_backups(cls, v: Any) -> Any:
        """Each backup by the contract's rule for ``backup_specialty``, named by its place."""
        if not isinstance(v, list | tuple):
            return v  # pydantic names the wrong type
        spec = APPLICANTS.column("backup_specialty")
        for i, item in enumerate(v):
            try:
                check_values(spec, [item], where=f"applicant.backup_specialties[{i}]")
            except ValueError as exc:
                raise _contract_error(str(exc)) from None
            if item is None:
                raise _contract_error(f"applicant.backup_specialties[{i}]: a specialty, not null")
        return v

    @model_validator(mode="after")
    def _backups_differ(self) -> ApplicantProfile:
        if not self.backup_specialties:
            return self
        if self.preferred_specialty is None:
            raise _contract_error("applicant.backup_specialties: give preferred_specialty too "
                                  "(a backup ranks below it)")
        if self.preferred_specialty in self.backup_specialties:
            raise _contract_error("applicant.backup_specialties: "
                                  f"{quote(self.preferred_specialty)} is the preferred specialty")
        if len(set(self.backup_specialties)) != len(self.backup_specialties):
            raise _contract_error("applicant.backup_specialties: a specialty appears twice")
        return self

    @property
    def specialties(self) -> list[str]:
        """The specialties the applicant applies to, preferred first (empty if none given)."""
        return ([self.preferred_specialty, *self.backup_specialties]
                if self.preferred_specialty else [])

    @model_validator(mode="after")
    def _row_rules(self) -> ApplicantProfile:
        for rule in APPLICANT_ROW_RULES:
            try:
                rule.check({c: [getattr(self, c)] for c in rule.needs}, f"applicant.{rule.column}")
            except ValueError as exc:
                raise _contract_error(str(exc)) from None
        return self


#: the profile's fields that the applicants table declares (checked by its rules)
_PROFILE_CONTRACT_FIELDS: tuple[str, ...] = tuple(
    n for n in ApplicantProfile.model_fields if n in APPLICANTS.column_names)


def _weight(default: float) -> Any:
    """A utility weight: a finite number from 0 to 5 (NaN or infinity is refused as not finite,
    not as "too large"); a number, never text or true/false, as the served model reads it."""
    return Field(default=default, ge=0, le=5, allow_inf_nan=False, strict=True)


class Preferences(BaseModel):
    """What the applicant values, for the utility U of a program (documented default: U ≥ 1).

    U = 1 + location_weight · (1 if the program is in a preferred state, 0.5 if only in a preferred
    region) + img_support_weight · (mentorship + orientation) / 2 + university_weight · (1 if the
    program type matches ``program_type``) + visa_weight · (1 if it sponsors H-1B).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    states: list[str] = Field(default_factory=list)
    regions: list[str] = Field(default_factory=list)
    program_type: Literal["university", "community", "any"] = "any"
    location_weight: float = _weight(0.5)
    img_support_weight: float = _weight(0.5)
    university_weight: float = _weight(0.25)
    visa_weight: float = _weight(0.0)

    @field_validator("states", "regions")
    @classmethod
    def _known_places(cls, v: list[str], info: ValidationInfo) -> list[str]:
        known, what = ((STATE_REGION, "not US state codes") if info.field_name == "states"
                       else (REGIONS, f"unknown regions; known: {list(REGIONS)}"))
        bad = [s for s in v if s not in known]
        if bad:
            raise ValueError(f"{what}: {quote(bad)}")
        return v


#: rows of a ranking explained by default (``rank(explain=True)``): a page of results
EXPLAINED_ROWS = 25
#: an input whose neutral value moves q by less than this is not worth naming
_SMALLEST_FACTOR = 5e-4
_NO_FACTOR = "no single input moves q by 0.001 or more"
#: the order explanations consider their inputs in (ties keep it)
_FACTOR_ORDER = ("own_rate", "step2_ck", "home_state", "img_share", "positions", "signal",
                 "usce_months")


def _explained_rows(explain: Any, n_rows: int) -> int:
    """How many of the first rows ``explain`` asks to explain."""
    if isinstance(explain, bool | np.bool_):
        return min(n_rows, EXPLAINED_ROWS) if explain else 0
    if isinstance(explain, int | np.integer) and explain >= 0:
        return min(n_rows, int(explain))
    raise InputError(f"explain: must be true, false or a whole number ≥ 0, got {quote(explain)}")


def _parse(model: type[BaseModel], data: Any, what: str) -> Any:
    if isinstance(data, model):
        return data
    if data is None and what == "preferences":
        return model()
    if not isinstance(data, Mapping):
        raise InputError(f"{what}: expected an object with fields, got {type(data).__name__}")
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            # a location can hold a key the caller sent (a signal's program id): quoted, cut
            loc = ".".join(str(p) if len(str(p)) <= MAX_QUOTED_CHARS else quote(p)
                           for p in err["loc"]) or what
            if err["type"] == "contract":  # already names the field
                parts.append(err["msg"])
                continue
            msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
            parts.append(f"{what}.{loc}: {msg}" if err["loc"] else f"{what}: {msg}")
        raise InputError("; ".join(parts)) from None


#: applicant types for whom IMG-support markers (mentorship, orientation) mean nothing: their
#: default ``img_support_weight`` is 0, so a US senior's ranking does not favour IMG programs
_NO_IMG_SUPPORT_DEFAULT = ("us_md_senior", "us_do_senior")


def preferences_for(profile: ApplicantProfile, preferences: Any) -> Preferences:
    """The applicant's preferences, with the defaults for their type where they set none."""
    prefs = _parse(Preferences, preferences, "preferences")
    if (profile.applicant_type in _NO_IMG_SUPPORT_DEFAULT
            and "img_support_weight" not in prefs.model_fields_set):
        prefs = prefs.model_copy(update={"img_support_weight": 0.0})
    return prefs


def utility_inputs(programs: pd.DataFrame) -> dict[str, np.ndarray]:
    """The program attributes the utility uses, as arrays (computed once per catalog)."""
    def flag(c: str) -> np.ndarray:
        if c not in programs:
            return np.zeros(len(programs))
        return programs[c].astype("boolean").fillna(False).to_numpy(float)

    return {"state": programs["state"].to_numpy(dtype=object),
            "region": programs["region"].to_numpy(dtype=object),
            "support": (flag("img_mentorship") + flag("img_orientation")) / 2,
            "type": programs["program_type"].to_numpy(dtype=object),
            "h1b": flag("sponsors_h1b")}


def utility(inputs: dict[str, np.ndarray], prefs: Preferences,
            rows: np.ndarray | slice = slice(None)) -> np.ndarray:
    """The applicant's value of each program (see :class:`Preferences`); always ≥ 1."""
    location = np.maximum(np.isin(inputs["state"][rows], prefs.states),
                          0.5 * np.isin(inputs["region"][rows], prefs.regions))
    n = len(inputs["state"][rows])
    uni = np.zeros(n) if prefs.program_type == "any" else \
        (inputs["type"][rows] == prefs.program_type).astype(float)
    return (1.0 + prefs.location_weight * location
            + prefs.img_support_weight * inputs["support"][rows]
            + prefs.university_weight * uni + prefs.visa_weight * inputs["h1b"][rows])


def _explicit_catalog(programs: pd.DataFrame | str | Path, trained_sha256: str | None
                      ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A catalog passed to ``load`` on purpose: checked by the programs contract, compared with
    the one the model was trained with, and warned about when it differs."""
    from smartpick_ml.contracts.schemas import validate
    from smartpick_ml.data.catalog import load_catalog
    from smartpick_ml.data.io import frame_hash

    given = isinstance(programs, pd.DataFrame)
    table = validate(programs, "programs") if given else load_catalog(programs)
    digest = frame_hash(table)
    source = "a DataFrame passed as programs=" if given else str(programs)
    used = {"source": source, "sha256": digest, "trained_with": digest == trained_sha256}
    if not used["trained_with"]:
        warnings.warn(
            f"programs: ranking a catalog that is not the one the model was trained with "
            f"({quote(source)}, sha256 {digest[:12]}…; trained with "
            f"{(trained_sha256 or 'an unrecorded catalog')[:12]}…): q of programs the model never "
            "saw are extrapolations", UserWarning, stacklevel=3)
    return table, used


def _count(value: Any, name: str) -> int | None:
    """A count argument (``k``, ``max_applications``): a whole number ≥ 1, numpy integers
    included; a bool is not a count."""
    if value is None:
        return None
    if (isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral)
            or value < 1):
        raise InputError(f"{name}: must be a whole number ≥ 1, got {quote(value)}")
    return int(value)


def _dollars(value: Any, name: str) -> float | None:
    """A positive, finite amount of dollars (numpy numbers included; a bool is not one)."""
    if value is None:
        return None
    amount = float("nan")
    if isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_):
        try:
            amount = float(value)
        except OverflowError:  # an int beyond float range
            pass
    if not 0 < amount < np.inf:
        raise InputError(f"{name}: must be a positive number of dollars, got {quote(value)}")
    return amount


# Inputs whose effect on q is reported as the "top factors", with the neutral value each is
# compared against (a specialty-typical program, or the typical applicant).
_FACTOR_PROGRAM_COLUMNS = ("rate_us_md", "rate_us_do", "rate_us_img", "rate_non_us_img",
                           "img_share", "positions", "rate_in_state", "rate_out_of_state")
_FACTOR_LABELS = {
    "own_rate": "program's interview rate for your applicant type",
    "step2_ck": "your Step 2 CK score",
    "home_state": "in-state (home-state) advantage",
    "img_share": "program's IMG share",
    "positions": "program size",
    "signal": "preference signal",
    "usce_months": "your US clinical experience",
    "years_since_graduation": "years since graduation",
}


def _check_allotments(signals: Mapping[str, str], specialty_of: Sequence[str]) -> None:
    """Signals of the tiers a specialty uses, at most its published number per tier
    (``SIGNAL_ALLOTMENTS``); none where the catalog has no signal data (the model could not
    have learnt what they do there)."""
    used: dict[tuple[str, str], int] = {}
    for tier, specialty in zip(signals.values(), specialty_of, strict=True):
        used[(specialty, tier)] = used.get((specialty, tier), 0) + 1
    for (specialty, tier), n in used.items():
        allowed = SIGNAL_ALLOTMENTS.get(specialty, {})
        if not allowed:
            raise InputError(f"applicant.signals: the catalog has no signal data for "
                             f"{specialty}, so SmartPick does not take signals there")
        if tier not in allowed:
            raise InputError(f"applicant.signals: {specialty} signals are "
                             f"{' and '.join(repr(t) for t in allowed)}, not {tier!r}")
        if n > allowed[tier]:
            raise InputError(f"applicant.signals: {n} {tier!r} signals in {specialty}; "
                             f"applicants have {allowed[tier]}")


#: what a match in a backup specialty is worth, as a share of one in the preferred specialty,
#: unless the applicant says otherwise (``plan_across``'s ``specialty_weights``)
DEFAULT_BACKUP_WEIGHT = 0.5


def _across_inputs(specialties: list[str], sizes: Any, specialty_weights: Any
                   ) -> dict[str, float]:
    """``plan_across``'s sizes checked, and each specialty's weight (defaults filled in)."""
    if sizes is None or isinstance(sizes, str) or not isinstance(sizes, Sequence) \
            or len(sizes) != len(specialties):
        raise InputError(f"sizes: one number of programs per specialty, preferred first "
                         f"({', '.join(specialties)})")
    for n in sizes:
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 0 <= n <= 10_000:
            raise InputError(f"sizes: {quote(n)} is not a whole number of programs from 0 "
                             "to 10000")
    given = dict(specialty_weights or {})
    unknown = sorted(set(given) - set(specialties))
    if unknown:
        raise InputError(f"specialty_weights: {quote(unknown)} not among {specialties}")
    for name, w in given.items():
        if isinstance(w, bool) or not isinstance(w, int | float) or not 0 <= w <= 5 \
                or not np.isfinite(w):
            raise InputError(f"specialty_weights.{name}: a number from 0 to 5, got {quote(w)}")
    return {s: float(given.get(s, 1.0 if k == 0 else DEFAULT_BACKUP_WEIGHT))
            for k, s in enumerate(specialties)}


class MatchPredictor:
    """Loads a trained model and the program catalog; answers per-applicant questions."""

    def __init__(self, model: Any, programs: pd.DataFrame, manifest: dict[str, Any] | None = None,
                 *, fast_scorer: Any = "auto", plan_calibration: Any = None):
        """``fast_scorer``: ``"auto"`` builds the compiled fast path on first use (where the
        model allows it); a ``FastScorer`` built for this model and catalog shares that one;
        None scores through the model's ``predict_proba`` only. ``plan_calibration``: a
        ``pmatch.PlanCalibration`` of this model's stated P(match), or None."""
        self.model = model
        self.plan_calibration = plan_calibration
        self.manifest = manifest or {}
        self.programs = programs.reset_index(drop=True)
        self._index = pd.Index(self.programs["program_id"])
        if not self._index.is_unique:
            raise DataValidationError("programs", ["program_id must be unique"])
        cols = [c for c in PROGRAM_INPUTS if c in self.programs.columns]
        self._program_block = self.programs[cols]
        # the published screens, compared with each applicant's own figures (``_closed``)
        self._step2_minimum, self._graduation_cutoff = (
            pd.to_numeric(self.programs[c], errors="coerce").to_numpy(float) if c in self.programs
            else np.full(len(self.programs), np.nan)
            for c in ("step2_minimum", "max_years_since_graduation"))
        self._screen_code = {
            name: _REASON_DTYPE.categories.get_loc(reason) for name, reason in
            (("step2", _reason_of(step2_screened)),
             ("graduation", _reason_of(graduation_screened)))}
        # per program, why it is closed to an applicant who does or does not need a visa: these
        # rules read only the program's fields and this one flag (the screens find no applicant
        # figures here, so they close nothing yet)
        self._closed_code = {
            needs: pd.Categorical(ineligibility_reasons(self._program_block.assign(
                needs_visa=needs)), dtype=_REASON_DTYPE).codes.astype(np.int8)
            for needs in (False, True)}
        # text columns converted once to categoricals: each answer then takes small integer
        # codes, with no per-row string copies or type inference
        self._display_arrays = {c: _display_array(self.programs[c])
                                for c in DISPLAY_COLUMNS if c in self.programs}
        self._fast = fast_scorer
        # "every program", as one shared read-only array: rank() over the whole catalog is then
        # recognised by identity and takes whole columns instead of fancy-indexing each
        self._all_rows = np.arange(len(self.programs))
        self._all_rows.flags.writeable = False

    @property
    def fast_scorer(self) -> Any:
        """The compiled fast path (built on first use), or None where this model cannot use it
        or it disagrees with ``predict_proba`` (``fastpath.usable_fast_scorer``)."""
        if isinstance(self._fast, str):
            from smartpick_ml.inference.fastpath import usable_fast_scorer

            self._fast = usable_fast_scorer(self.model, self.programs)
        return self._fast

    def _closed(self, profile: ApplicantProfile, rows: np.ndarray) -> np.ndarray:
        """Per program at ``rows``, the code of the first hard rule that closes it to this
        applicant (0: open; ``_REASON_DTYPE``'s order): the program-only rules precomputed,
        the published screens compared here, as ``eligibility.RULES`` words them."""
        codes = self._closed_code[profile.needs_visa][rows].copy()
        years = profile.season - profile.graduation_year
        for code, screened in ((self._screen_code["step2"],
                                below_minimum(profile.step2_ck, self._step2_minimum[rows])),
                               (self._screen_code["graduation"],
                                past_cutoff(years, self._graduation_cutoff[rows]))):
            codes[(codes == 0) & screened] = code
        return codes

    def _utility(self, prefs: Preferences, rows: np.ndarray) -> np.ndarray:
        if not hasattr(self, "_utility_inputs"):
            self._utility_inputs = utility_inputs(self.programs)
        return utility(self._utility_inputs, prefs,
                       slice(None) if rows is self._all_rows else rows)

    def _q(self, profile: ApplicantProfile, rows: np.ndarray) -> np.ndarray:
        """q for one applicant at ``rows`` of the catalog: the fast path when available."""
        return self.score_rows(profile.model_dump(), rows, profile.signals)

    def score_rows(self, applicant: Mapping[str, Any], rows: np.ndarray,
                   signals: Mapping[str, str] | None = None) -> np.ndarray:
        """q for one applicant record (the applicant's columns, already checked by the
        ``applicants`` contract or an :class:`ApplicantProfile`) at catalog ``rows``
        (:meth:`program_rows`), through the fast path where the model allows it."""
        fast = self.fast_scorer
        if fast is None:
            pairs = applicant_pairs(dict(applicant), self._program_block.iloc[rows],
                                    dict(signals or {}))
            return self.predict(pairs)
        full = rows is self._all_rows or (
            len(rows) == len(self.programs) and bool(np.all(rows == self._all_rows)))
        q = fast.score(dict(applicant), dict(signals) if signals else None,
                       None if full else rows)
        return q.copy()

    def program_rows(self, specialty: str | None = None) -> np.ndarray:
        """The catalog rows of ``specialty`` (every program if None)."""
        return self._rows(specialty)

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, source: str | Path = "models", programs: pd.DataFrame | str | Path | None = None,
             strict: bool = False, plan_calibration: str | Path | None = None
             ) -> MatchPredictor:
        """Load from a model directory (verified against its manifest) or an MLflow model URI
        (``models:/…``, ``runs:/…``), with the catalog the model was trained with: saved beside
        it (``models/programs-<hash>.parquet``) or logged with it, and refused
        (``ModelIntegrityError`` naming the file) if its content is not the recorded one.

        ``programs`` (a programs table, a path, or ``"synthetic"``) ranks another catalog on
        purpose: it is checked against the programs contract, warned about when it is not the
        training catalog, and recorded in ``manifest["catalog_used"]`` (source, hash, whether
        it is the one trained with). Nothing is read from the working directory.

        ``plan_calibration``: the file ``smartpick evaluate-plans`` fitted for this model
        (``plan-calibration-<hash>.json``); by default the one beside a model directory, if
        any. It is refused (``ModelIntegrityError``) when fitted for another model;
        ``manifest["plan_calibration"]`` says which file is in use (None: uncalibrated)."""
        from smartpick_ml.modelling import persist

        src = str(source)
        if src.startswith(("models:/", "runs:/")):
            from smartpick_ml.modelling.logged_model import load_logged_model

            model, manifest, folder = load_logged_model(src)
        else:
            model, manifest = persist.load_model(src, strict=strict)
            folder = Path(src)
        trained = persist.recorded_catalog_sha256(manifest)
        if programs is None:
            table, path = persist.load_saved_catalog(folder, manifest)
            used = {"source": str(path), "sha256": trained, "trained_with": True}
        else:
            table, used = _explicit_catalog(programs, trained)
        if plan_calibration is not None:
            calibration = persist.load_plan_calibration(plan_calibration, manifest.get("sha256"))
            calibration_file: str | None = str(plan_calibration)
        else:
            calibration = persist.saved_plan_calibration(folder, manifest)
            calibration_file = (str(persist.plan_calibration_path(folder, manifest["sha256"]))
                                if calibration is not None else None)
        return cls(model, table, {**manifest, "catalog_used": used,
                                  "plan_calibration": calibration_file},
                   plan_calibration=calibration)

    # ------------------------------------------------------------------ scoring

    def predict(self, pairs: pd.DataFrame) -> np.ndarray:
        """q for each applicant × program row of a pairs frame (``contracts.pairs``: the same
        rules a served request is held to)."""
        pairs = check_pairs_frame(pairs)
        with one_openmp_thread(len(pairs) <= SMALL_BATCH_ROWS):
            q = self.model.predict_proba(pairs)[:, 1]
        if not np.isfinite(q).all():  # a model must never hand a service NaN
            raise SmartPickError("model produced non-finite probabilities")
        return q

    def _pairs(self, profile: ApplicantProfile, rows: np.ndarray) -> pd.DataFrame:
        return applicant_pairs(profile.model_dump(), self._program_block.iloc[rows],
                               profile.signals)

    def _rows(self, specialty: str | None, program_ids: Sequence[str] | None = None
              ) -> np.ndarray:
        if program_ids is not None:
            if len(program_ids) == 0:
                raise InputError("rank_list: empty (give at least one program_id)")
            idx = self._index.get_indexer(list(program_ids))
            if (idx < 0).any():
                unknown = [p for p, i in zip(program_ids, idx, strict=True) if i < 0][:5]
                raise InputError(f"rank_list: unknown program_id(s) {quote(unknown)}")
            if len(set(program_ids)) != len(program_ids):
                raise InputError("rank_list: a program appears twice")
            return idx
        if specialty is None:
            return self._all_rows
        if specialty not in SPECIALTY_NAMES:
            raise InputError(f"specialty: unknown specialty {quote(specialty)}")
        rows = np.flatnonzero(self.programs["specialty"].to_numpy() == specialty)
        if len(rows) == 0:
            raise InputError(f"specialty: no programs of '{specialty}' in the catalog")
        return rows

    def _rows_of(self, specialties: Sequence[str] | None) -> np.ndarray:
        """The catalog rows of each specialty in turn (every program if None)."""
        if not specialties:
            return self._all_rows
        return np.concatenate([self._rows(s) for s in specialties])

    def _check_signals(self, profile: ApplicantProfile,
                       specialties: Sequence[str] | None) -> None:
        """Each signal names a program of the catalog and, when specialties are ranked or
        planned, of one of them: the model only sees signals to the programs it scores."""
        if not profile.signals:
            return
        ids = list(profile.signals)
        idx = self._index.get_indexer(ids)
        unknown = [p for p, i in zip(ids, idx, strict=True) if i < 0]
        if unknown:
            more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
            raise InputError(f"applicant.signals: unknown program_id {quote(unknown[0])}{more} "
                             "(not in the catalog)")
        of = self.programs["specialty"].to_numpy()[idx]
        _check_allotments(profile.signals, of)
        if not specialties:
            return
        other = [(p, o) for p, o in zip(ids, of, strict=True) if o not in specialties]
        if other:
            ranked = " or ".join(specialties)
            raise InputError(f"applicant.signals: program {quote(other[0][0])} is in "
                             f"{other[0][1]}, not {ranked} (the specialties ranked); signals "
                             "count within a specialty")

    def rank(self, applicant: Mapping[str, Any] | ApplicantProfile,
             preferences: Mapping[str, Any] | Preferences | None = None,
             specialty: str | None = None, k: int | None = None,
             explain: bool | int = True) -> pd.DataFrame:
        """Programs ranked by expected value EV = q·U, eligible ones first: of ``specialty``, else
        of the applicant's preferred and backup specialties, else the whole catalog.

        ``explain``: the inputs that move q most (``top_factors``) for the first
        :data:`EXPLAINED_ROWS` rows (True), the first ``n`` rows (an int) or none (False);
        the other rows' ``top_factors`` are empty. Explaining a row scores it several times
        more, so the default keeps a ranking of the whole catalog fast."""
        profile = _parse(ApplicantProfile, applicant, "applicant")
        prefs = preferences_for(profile, preferences)
        k = _count(k, "k")
        specs = [specialty] if specialty else profile.specialties
        rows = self._rows_of(specs)
        self._check_signals(profile, specs)
        q = self._q(profile, rows)
        u = self._utility(prefs, rows)
        ev = q * u
        closed = self._closed(profile, rows)
        eligible = closed == 0
        order = np.lexsort((-q, -ev, ~eligible))  # eligible first, then EV, then q
        if k is not None:
            order = order[:k]
        take = rows[order]
        # one DataFrame built from numpy columns: much cheaper than pandas take + setitem
        columns = {c: v.take(take) for c, v in self._display_arrays.items()}
        columns.update(q=q[order], utility=u[order], ev=ev[order], eligible=eligible[order],
                       reason=pd.Categorical.from_codes(closed[order], dtype=_REASON_DTYPE,
                                                        validate=False))
        out = pd.DataFrame(columns, copy=False)
        n_explained = _explained_rows(explain, len(out))
        if n_explained:
            factors = np.full(len(out), "", dtype=object)
            factors[:n_explained] = self._explain(profile, out.iloc[:n_explained])
            out["top_factors"] = factors
        return out

    @functools.cached_property
    def _typical_values(self) -> dict[str, np.ndarray]:
        """Per catalog row, its specialty's median of each program field an explanation
        neutralises (the catalog is fixed: computed once)."""
        cols = [*RATE_COLUMN_BY_TYPE.values(), "img_share", "positions"]
        medians = self.programs.groupby("specialty")[cols].transform("median")
        return {c: medians[c].to_numpy(dtype=float) for c in cols}

    def _explain(self, profile: ApplicantProfile, ranked: pd.DataFrame, top: int = 3
                 ) -> list[str]:
        """For each row, the inputs whose neutral value would change q most (signed Δq)."""
        n = len(ranked)
        if n == 0:
            return []
        rows = self._index.get_indexer(ranked["program_id"])
        q0 = ranked["q"].to_numpy()
        # the applicant's own inputs, neutralised: the same applicant record scored again (the
        # fast path where the model has one)
        applicant = profile.model_dump()
        signals = profile.signals or None
        own: dict[str, tuple[dict[str, Any], dict[str, str] | None]] = {
            "step2_ck": ({**applicant, "step2_ck": TYPICAL_STEP2_CK}, signals),
            "home_state": ({**applicant, "home_state": None}, signals)}
        if signals:
            own["signal"] = (applicant, None)
        if profile.applicant_type in ("us_img", "non_us_img"):
            own["usce_months"] = ({**applicant, "usce_months": 0}, signals)
        q_by_name = {name: self.score_rows(a, rows, sig) for name, (a, sig) in own.items()}
        # the program's fields, neutralised to its specialty's typical values
        own_col = RATE_COLUMN_BY_TYPE[profile.applicant_type]
        typical = self._typical_values
        program_side = {"own_rate": own_col, "img_share": "img_share", "positions": "positions"}
        fast = self.fast_scorer
        if fast is not None:
            for name, col in program_side.items():
                q_by_name[name] = fast.score_with_program_column(applicant, signals, rows, col,
                                                                 typical[col])
        else:
            base = self._pairs(profile, rows)
            stacked = pd.concat([base.assign(**{col: typical[col][rows]})
                                 for col in program_side.values()], ignore_index=True)
            with one_openmp_thread(len(stacked) <= SMALL_BATCH_ROWS):
                q_prog = self.model.predict_proba(stacked)[:, 1].reshape(len(program_side), n)
            q_by_name.update(zip(program_side, q_prog, strict=True))
        names = [nm for nm in _FACTOR_ORDER if nm in q_by_name]
        q_alt = np.stack([q_by_name[nm] for nm in names])
        delta = q0[None, :] - q_alt
        texts = []
        for j in range(n):
            order = np.argsort(-np.abs(delta[:, j]))[:top]
            text = "; ".join(f"{_FACTOR_LABELS[names[i]]} {delta[i, j]:+.3f}"
                             for i in order if abs(delta[i, j]) >= _SMALLEST_FACTOR)
            texts.append(text or _NO_FACTOR)
        return texts

    def match_probability(self, applicant: Mapping[str, Any] | ApplicantProfile,
                          rank_list: Sequence[str],
                          preferences: Mapping[str, Any] | Preferences | None = None
                          ) -> dict[str, Any]:
        """For a rank list in the applicant's order: P(match at each rank), P(unmatched), E[U]."""
        profile = _parse(ApplicantProfile, applicant, "applicant")
        prefs = preferences_for(profile, preferences)
        if isinstance(rank_list, str) or not isinstance(rank_list, Sequence):
            raise InputError("rank_list: expected a list of program_id strings")
        rows = self._rows(None, list(rank_list))
        self._check_signals(profile, None)
        q = self._q(profile, rows)
        u = self._utility(prefs, rows)
        res = match_probability(q, u)
        corrected = float(self.correct_p_match(q, profile.applicant_type)[-1])
        table = pd.DataFrame({"rank": np.arange(1, len(rows) + 1),
                              "program_id": list(rank_list),
                              "name": self.programs["name"].to_numpy()[rows], "q": q,
                              "utility": u, "p_match_here": res.p_match_at})
        return {"ranks": table, "p_match": res.p_match, "p_unmatched": res.p_unmatched,
                "expected_utility": res.expected_utility, "p_match_corrected": corrected}

    def correct_p_match(self, q_in_order: np.ndarray, applicant_type: str,
                        planned: bool = False, joint: bool = False) -> np.ndarray:
        """P(match) of the first 1, 2, … programs of a list, corrected for programs' decisions
        sharing the applicant's unobserved strength (``pmatch``; the independence figure for
        models trained without the correction), and never below the q of the likeliest
        program so far: a list matches at least as often as that program would take you.
        For a list SmartPick chose (``planned``), then, where ``evaluate-plans`` fitted one for
        this model, the plan calibration: what such figures realised in re-run seasons
        (``pmatch.PlanCalibration``). Only there: a plan picks the programs whose q is highest,
        so its q errors lean optimistic; a list the applicant chose does not. ``joint``: a plan
        across specialties, calibrated by its own line where one was fitted."""
        q = np.asarray(q_in_order, float)
        cal = getattr(self.model, "pmatch_calibrator_", None)
        independent = -np.expm1(np.cumsum(np.log1p(-np.clip(q, 0.0, 1.0 - 1e-12))))
        if cal is None:
            corrected = independent
        elif cal.is_legacy():
            corrected = cal.transform(independent, applicant_type)
        else:
            corrected = cal.p_match_of_prefixes(q, applicant_type)
        if len(q):
            corrected = np.maximum(corrected, np.maximum.accumulate(q))
        if planned and self.plan_calibration is not None:
            corrected = self.plan_calibration.apply(corrected, applicant_type, joint)
        return corrected

    def plan(self, applicant: Mapping[str, Any] | ApplicantProfile,
             preferences: Mapping[str, Any] | Preferences | None = None,
             specialty: str | None = None, max_applications: int | None = None,
             budget: float | None = None, schedule: str = "2025") -> dict[str, Any]:
        """The exact optimal application list for every length h (equal ERAS cost per program
        within a specialty: optimal lists are nested), with P(match), E[U] and fees."""
        profile = _parse(ApplicantProfile, applicant, "applicant")
        prefs = preferences_for(profile, preferences)
        spec = specialty or profile.preferred_specialty
        if spec is None:
            raise InputError("specialty: give a specialty (or applicant.preferred_specialty); "
                             "ERAS fees are per specialty")
        budget = _dollars(budget, "budget")
        max_applications = _count(max_applications, "max_applications")
        ranked = self.rank(profile, prefs, specialty=spec, explain=False)
        eligible = ranked[ranked["eligible"]].reset_index(drop=True)
        excluded = ranked.loc[~ranked["eligible"], ["program_id", "name", "reason"]]
        if len(eligible) == 0:
            raise InputError(f"applicant: no program in {spec} can take this applicant")
        h_max = min(max_applications or len(eligible), len(eligible))
        if budget is not None:
            fees = (fees_for_sizes(np.arange(1, len(eligible) + 1), schedule)
                    + USMLE_TRANSCRIPT_FEE_USD)
            affordable = int(np.sum(fees <= budget))
            if affordable == 0:
                raise InputError(f"budget: ${budget:,.0f} does not cover one application "
                                 f"(${int(fees[0])} with the USMLE transcript fee)")
            h_max = min(h_max, affordable)
        table = plan_table(eligible["q"].to_numpy(), eligible["utility"].to_numpy(), h_max,
                           schedule)
        q_added = eligible["q"].to_numpy()[table["added"].to_numpy()]
        table.insert(3, "p_match_corrected",
                     self.correct_p_match(q_added, profile.applicant_type, planned=True))
        # the price of a point is quoted in the points a user is told, the corrected ones
        table["usd_per_extra_pp"] = usd_per_extra_point(table["fee_usd"].to_numpy(),
                                                        table["p_match_corrected"].to_numpy())
        table.insert(1, "program_added", eligible["program_id"].to_numpy()[table["added"]])
        table.insert(2, "name_added", eligible["name"].to_numpy()[table["added"]])
        best = table.iloc[-1]
        chosen = eligible.iloc[table["added"].to_numpy()].reset_index(drop=True)
        return {"specialty": spec, "table": table, "programs": chosen,
                "programs_in_specialty": len(ranked),
                "excluded": excluded.reset_index(drop=True),
                "p_match": float(best["p_match"]),
                "p_match_corrected": float(best["p_match_corrected"]),
                "expected_utility": float(best["expected_utility"]),
                "fee_usd": int(best["fee_usd"])}

    def plan_across(self, applicant: Mapping[str, Any] | ApplicantProfile,
                    preferences: Mapping[str, Any] | Preferences | None = None,
                    sizes: Sequence[int] | None = None,
                    specialty_weights: Mapping[str, float] | None = None,
                    schedule: str = "2025", choose_signals: bool = False,
                    budget: float | None = None) -> dict[str, Any]:
        """The exact best single rank list across the preferred specialty and the backups
        (``applicant.backup_specialties``), preferred programs first, with at most
        ``sizes[s]`` programs of each specialty (``portfolio.best_joint_list``).

        ``choose_signals``: also choose which programs to send preference signals to, within
        each specialty's allotment (``SIGNAL_ALLOTMENTS``; the profile then gives none), exactly
        (``portfolio.best_signalled_list``); with it one specialty is enough. ``budget``: the
        sizes are maxima and the ERAS fees (and the USMLE transcript) must fit these dollars;
        the best split between the specialties is chosen (``portfolio.best_joint_list_within``).
        ``specialty_weights``: what a match in each specialty is worth to the applicant, as a
        multiple of U (default 1 for the preferred specialty and ``DEFAULT_BACKUP_WEIGHT`` for a
        backup: with equal weights the list trades preferred programs for backups of higher U,
        which few applicants mean). ERAS fees restart for each specialty. Returns the programs
        in rank-list order (each with its signal, and the list's corrected P(match) and fee down
        to it), P(match) (independence and corrected), P(match) in the preferred specialty
        (corrected), E[U] and the fee."""
        profile = _parse(ApplicantProfile, applicant, "applicant")
        prefs = preferences_for(profile, preferences)
        specs = profile.specialties
        if len(specs) < 2 and not choose_signals:
            raise InputError("applicant.backup_specialties: give at least one backup to plan "
                             "across specialties (plan() plans one)")
        if choose_signals and profile.signals:
            raise InputError("applicant.signals: give your own signals or let SmartPick choose "
                             "them (choose_signals), not both")
        weights = _across_inputs(specs, sizes, specialty_weights)
        self._check_signals(profile, specs)
        rows = [self._rows(s) for s in specs]
        closed = [self._closed(profile, r) != 0 for r in rows]
        qs = [np.where(c, 0.0, self._q(profile, r)) for r, c in zip(rows, closed, strict=True)]
        us = [self._utility(prefs, r) * weights[s] for r, s in zip(rows, specs, strict=True)]
        tier_names = [list(SIGNAL_ALLOTMENTS.get(s, {})) if choose_signals else [] for s in specs]
        signalled = [(self._signalled_q(profile, r, c, q, names), [SIGNAL_ALLOTMENTS[s][t]
                                                                  for t in names])
                     if names else None
                     for s, r, c, q, names in zip(specs, rows, closed, qs, tier_names,
                                                  strict=True)]
        budget = _dollars(budget, "budget")
        if budget is None:
            joint = best_joint_list(qs, us, [int(n) for n in sizes or ()], signalled)
        else:
            try:
                joint = best_joint_list_within(qs, us, [int(n) for n in sizes or ()], budget,
                                               schedule, signalled, USMLE_TRANSCRIPT_FEE_USD)
            except PortfolioInputError as exc:
                raise InputError(str(exc).replace("max_sizes", "sizes")
                                 .replace("budget_usd", "budget")) from None
        blocks = []
        for s, r, q, u, idx, tiers, sig, names in zip(
                specs, rows, qs, us, joint.chosen, joint.tiers, signalled, tier_names,
                strict=True):
            by_utility = np.argsort(-u[idx], kind="stable")  # the rank list within a specialty
            order, tier = idx[by_utility], tiers[by_utility]
            blocks.append(pd.DataFrame({
                "specialty": s, "program_id": self.programs["program_id"].to_numpy()[r[order]],
                "name": self.programs["name"].to_numpy()[r[order]],
                "signal": np.array(["none", *names], dtype=object)[tier],
                "q": q[order] if sig is None else sig[0][order, tier], "utility": u[order]}))
        programs = pd.concat(blocks, ignore_index=True)
        programs.insert(0, "rank", np.arange(1, len(programs) + 1))
        q_list = programs["q"].to_numpy()
        preferred = programs["specialty"].to_numpy() == specs[0]
        # down the list: its corrected P(match) and its fee so far (fees restart per specialty);
        # a list across specialties states the joint plans' calibration
        across = sum(len(chosen) > 0 for chosen in joint.chosen) > 1
        programs["p_match_corrected"] = (self.correct_p_match(q_list, profile.applicant_type,
                                                              planned=True, joint=across)
                                         if len(q_list) else q_list)
        fee_so_far = np.zeros(len(programs), np.int64)
        done = 0
        for s in specs:
            here = np.flatnonzero(programs["specialty"].to_numpy() == s)
            if len(here):
                fee_so_far[here] = done + fees_for_sizes(np.arange(1, len(here) + 1), schedule)
                done = int(fee_so_far[here[-1]])
        programs["fee_usd"] = fee_so_far + USMLE_TRANSCRIPT_FEE_USD

        q_preferred = q_list[preferred]
        return {"specialties": specs, "programs": programs, "p_match": joint.p_match,
                # the whole list's figure is the last row's, already computed down the list
                "p_match_corrected": (float(programs["p_match_corrected"].iloc[-1])
                                      if len(programs) else 0.0),
                "p_match_preferred_corrected": (
                    float(self.correct_p_match(q_preferred, profile.applicant_type,
                                               planned=True)[-1]) if len(q_preferred) else 0.0),
                "expected_utility": joint.expected_utility,
                "programs_per_specialty": {s: int(len(c)) for s, c in
                                           zip(specs, joint.chosen, strict=True)},
                "signals": {p: t for p, t in zip(programs["program_id"], programs["signal"],
                                                 strict=True) if t != "none"},
                "fee_usd": int(programs["fee_usd"].iloc[-1]) if len(programs) else 0}

    def _signalled_q(self, profile: ApplicantProfile, rows: np.ndarray, closed: np.ndarray,
                     q_unsignalled: np.ndarray, tiers: list[str]) -> np.ndarray:
        """q of each program of ``rows`` without a signal (column 0) and with each tier's."""
        ids = self.programs["program_id"].to_numpy()[rows]
        record = profile.model_dump()
        columns = [q_unsignalled, *(self.score_rows(record, rows, dict.fromkeys(ids, tier))
                                    for tier in tiers)]
        return np.where(closed[:, None], 0.0, np.column_stack(columns))

