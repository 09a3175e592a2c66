"""The served model: what ``mlflow models serve -m models:/smartpick-match@champion`` runs.

``modelling.logged_model`` logs the model with a ``python_function`` flavour whose loader is this
module: :func:`_load_pyfunc` loads the skops file (trusted types only) and the catalog the model
was trained with, and returns a :class:`ServedMatchModel`.

Requests (``POST /invocations``, ``dataframe_split``), three tasks (``params.task``):

- ``score`` (default): applicant × program pairs, *lean* (the applicant's columns and
  ``program_id``; the program's fields come from the logged catalog) or *full* (every pair
  column). Answer: ``[[1 - q, q], ...]``, exactly ``MatchModel.predict_proba`` of the full pairs;
  rows whose program fields are the catalog's go through the compiled fast path.
- ``rank``: one applicant row; params ``specialty``, ``k``, ``explain``, ``preferences`` and
  ``signals`` as ``MatchPredictor.rank`` takes them. Answer: one record per program, best first.
- ``plan``: one applicant row; params ``specialty``, ``max_applications`` (0 = every eligible
  program), ``budget`` (0 = none), ``schedule``, ``preferences``, ``signals`` as
  ``MatchPredictor.plan`` takes them. Answer: its table, one record per list length h (the
  program added, P(match) and corrected, expected utility, fee); the last is the longest list.
  With ``sizes`` (a JSON array: at most this many programs of the preferred specialty and
  of each of ``backup_specialties``) and ``choose_signals``, it is ``MatchPredictor.plan_across``
  instead. Answer: the one rank list, one record per program (specialty, signal, q, and the
  list's corrected P(match) and fee down to it).

Every bad input raises an ``MlflowException`` with ``INVALID_PARAMETER_VALUE`` (HTTP 400) whose
message names the field. The request's columns are checked once, by :func:`validate_pairs`,
against the pairs contract (``contracts.pairs``); the signature has no input schema, because
MLflow's typed parsing is lossy for these columns and costs more than the rest of the request
(``docs/serving.md``). Requests share the numba kernels and buffers under one lock.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smartpick_ml.contracts.columns import MAX_QUOTED_CHARS, check_values, is_null, quote, rows_at
from smartpick_ml.contracts.errors import SmartPickError
from smartpick_ml.contracts.pairs import (
    APPLICANT_INPUTS,
    CATALOG_FIELDS,
    LEAN_REQUIRED_COLUMNS,
    PROGRAM_INPUTS,
    RANK_REQUIRED_COLUMNS,
    REQUEST_COLUMN_SPECS,
    REQUIRED_PAIR_COLUMNS,
    validate_pairs,
)
from smartpick_ml.data.synthetic import synthetic_pairs
from smartpick_ml.inference.portfolio import ERAS_FEE_SCHEDULES
from smartpick_ml.modelling.logged_model import PARAM_DEFAULTS, TASKS
from smartpick_ml.serving.replies import invalid_request
from smartpick_ml.serving.worker import (
    SERVER_MODEL_PATH_ENV,
    nodelay_on_listeners,
    prepare_server_worker,
)

log = logging.getLogger(__name__)

#: rows per request above which the fast path may use more than one numba thread
PARALLEL_ROWS = 2000



# ----------------------------------------------------------------------------- validation


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise equality where null equals null (floats: NaN; text: None)."""
    if a.dtype == object or b.dtype == object:
        return np.array([x == y for x, y in zip(a, b, strict=True)], dtype=bool)
    return (a == b) | (np.isnan(a) & np.isnan(b))


# ----------------------------------------------------------------------------- the model

class ServedMatchModel:
    """Pair scoring and ranking for the scoring server (see the module docstring)."""

    def __init__(self, model: Any, programs: pd.DataFrame, warm_up: bool = True):
        from smartpick_ml.inference.fastpath import usable_fast_scorer
        from smartpick_ml.inference.predictor import MatchPredictor

        self.model = model
        self.programs = programs.reset_index(drop=True)
        # the compiled scorer checks itself against predict_proba when built; where it cannot
        # be built or disagrees, every row (and ranking) is scored through predict_proba
        self.scorer = usable_fast_scorer(model, self.programs)
        self.fast_path = self.scorer is not None
        self.predictor = MatchPredictor(model, self.programs, fast_scorer=self.scorer)
        self._lock = threading.Lock()
        self._row = {pid: i for i, pid in enumerate(self.programs["program_id"])}
        # the catalog's program fields, normalised like a validated request (NaN / None = null)
        self._catalog = {c: check_values(REQUEST_COLUMN_SPECS[c],
                                          self.programs[c].astype(object).tolist())
                         for c in PROGRAM_INPUTS
                         if c in self.programs.columns and c in REQUEST_COLUMN_SPECS}
        # where each catalog field is null (what a full request's absent optional column equals)
        self._catalog_null = {c: np.array([is_null(v) for v in ref], dtype=bool)
                              for c, ref in self._catalog.items()}
        self._example = synthetic_pairs(4, seed=3)  # one of each applicant type
        if warm_up:
            self._warm_up()

    def _warm_up(self) -> None:
        """Run every path once at load, so no client pays for first-call set-up."""
        pairs = self._example.copy()
        sample = self.programs.sample(n=len(pairs), replace=True, random_state=0)
        for c in PROGRAM_INPUTS:  # catalog programs: the fast path
            if c in sample.columns:
                pairs[c] = sample[c].to_numpy()
        self.predict(pairs)
        self.predict(pairs.assign(program_id="NOT-IN-CATALOG"))  # the fallback
        self.predict(pairs[[c for c in APPLICANT_INPUTS if c in pairs.columns]].head(1),
                     {"task": "rank", "k": 5})

    # ---------------------------------------------------------------- entry point

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        try:
            p = {**PARAM_DEFAULTS, **(params or {})}
            if p["task"] not in TASKS:
                raise ValueError(f"params.task: must be one of {list(TASKS)}, "
                                 f"got {quote(p['task'])}")
            with self._lock:
                import numba

                numba.set_num_threads(1)
                if p["task"] == "rank":
                    return self._rank(model_input, p)
                if p["task"] == "plan":
                    return self._plan(model_input, p)
                return self._score(model_input)
        except (SmartPickError, ValueError) as exc:
            raise invalid_request(str(exc)) from None

    # ---------------------------------------------------------------- pairs

    def _score(self, frame: Any) -> np.ndarray:
        # lean request: no program field but program_id -> the program from the catalog
        lean = isinstance(frame, pd.DataFrame) and set(frame.columns.tolist()).isdisjoint(
            CATALOG_FIELDS)
        cols = validate_pairs(frame, LEAN_REQUIRED_COLUMNS if lean else REQUIRED_PAIR_COLUMNS)
        n = len(frame)
        q = np.full(n, np.nan)
        row_of = self._row
        idx = np.fromiter((row_of.get(p, -1) for p in cols["program_id"]), np.int64, count=n)
        if lean:
            unknown = np.flatnonzero(idx < 0).tolist()
            if unknown:
                raise ValueError(
                    "pairs.program_id: not in the catalog the model was logged with (a request "
                    "without the program's columns takes them from it; send every program "
                    f"column to score another program), got {rows_at(unknown, cols['program_id'])}")
            fast = np.full(n, self.fast_path)
        else:
            fast = (idx >= 0) & self.fast_path
            for c, ref in self._catalog.items():
                if not fast.any():
                    break
                if c in cols:
                    fast[fast] &= _same(cols[c][fast], ref[idx[fast]])
                else:  # absent = null
                    fast[fast] &= self._catalog_null[c][idx[fast]]
        if fast.any():
            self._score_fast(cols, idx, fast, q)
        slow = np.flatnonzero(np.isnan(q))
        if len(slow):
            from smartpick_ml.modelling.threads import one_openmp_thread

            rows = self._with_catalog(frame, slow, idx) if lean else frame.iloc[slow]
            # OpenMP threads for a few rows only fight over the cores (and with other requests)
            with one_openmp_thread(len(rows) < PARALLEL_ROWS):
                q[slow] = self.model.predict_proba(rows)[:, 1]
        if not np.isfinite(q).all():  # a service must never hand out NaN
            raise SmartPickError("model produced non-finite probabilities")
        return np.column_stack([1.0 - q, q])

    def _with_catalog(self, frame: pd.DataFrame, rows: np.ndarray, idx: np.ndarray
                      ) -> pd.DataFrame:
        """Rows of a lean request completed with their program's catalog fields: the pairs frame
        ``predict_proba`` takes."""
        own = frame.iloc[rows].reset_index(drop=True)
        fields = [c for c in CATALOG_FIELDS if c in self.programs.columns]
        return pd.concat([own, self.programs.iloc[idx[rows]][fields].reset_index(drop=True)],
                         axis=1)

    def _score_fast(self, cols: dict[str, np.ndarray], idx: np.ndarray, fast: np.ndarray,
                    q: np.ndarray) -> None:
        """q of catalog programs through the fast path, one call per distinct applicant."""
        present = [c for c in APPLICANT_INPUTS if c in cols]
        keys = list(zip(*(cols[c] for c in present), strict=True))
        groups: dict[tuple, list[int]] = {}
        for r in np.flatnonzero(fast):
            groups.setdefault(keys[r], []).append(int(r))
        signal = cols.get("signal")
        for key, rows in groups.items():
            applicant = dict(zip(present, key, strict=True))
            applicant["needs_visa"] = applicant.get("needs_visa") == 1.0
            rows_arr = np.asarray(rows)
            prog = idx[rows_arr]
            if len(np.unique(prog)) != len(prog):
                continue  # a program twice for one applicant: left to the fallback
            signals = {}
            if signal is not None:
                signals = {str(cols["program_id"][r]): str(signal[r]) for r in rows
                           if signal[r] is not None and signal[r] != "none"}
            if len(rows) > PARALLEL_ROWS:
                import numba

                numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
            q[rows_arr] = self.scorer.score(applicant, signals or None, prog)

    # ---------------------------------------------------------------- ranking

    def _applicant(self, frame: Any, p: dict[str, Any]) -> dict[str, Any]:
        """The one applicant row of a ``rank`` or ``plan`` request, with its JSON params."""
        task = p["task"]
        if isinstance(frame, pd.DataFrame) and len(frame) != 1:
            raise ValueError(f"{task}: send exactly one applicant row, got {len(frame)}")
        cols = validate_pairs(frame, required=RANK_REQUIRED_COLUMNS)
        extra = [c for c in frame.columns if c not in APPLICANT_INPUTS]
        if extra:
            raise ValueError(f"{task}: send the applicant's columns only; unexpected column(s) "
                             f"{extra[:5]}")
        applicant: dict[str, Any] = {}
        for c in APPLICANT_INPUTS:
            if c not in cols:
                continue
            v = cols[c][0]
            if c == "needs_visa":
                applicant[c] = bool(v == 1.0)
            elif isinstance(v, float):
                if not math.isnan(v):
                    applicant[c] = int(v)
            else:
                applicant[c] = v
        applicant["signals"] = self._json_param(p, "signals")
        applicant["backup_specialties"] = self._json_param(p, "backup_specialties", list)
        return applicant

    @staticmethod
    def _records(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame.astype(object)
        return out.where(out.notna(), None)  # JSON null, not NaN

    def _rank(self, frame: Any, p: dict[str, Any]) -> pd.DataFrame:
        applicant = self._applicant(frame, p)
        k = p["k"]
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
            raise ValueError(f"params.k: must be a whole number ≥ 0 (0 = all), got {quote(k)}")
        ranked = self.predictor.rank(applicant, self._json_param(p, "preferences"),
                                     specialty=p["specialty"] or None, k=int(k) or None,
                                     explain=bool(p["explain"]))
        return self._records(ranked)

    def _plan(self, frame: Any, p: dict[str, Any]) -> pd.DataFrame:
        applicant = self._applicant(frame, p)
        if not isinstance(p["choose_signals"], bool | np.bool_):
            raise ValueError(f"params.choose_signals: must be true or false, got "
                             f"{quote(p['choose_signals'])}")
        n = p["max_applications"]
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError("params.max_applications: must be a whole number ≥ 0 (0 = every "
                             f"eligible program), got {quote(n)}")
        budget = p["budget"]
        if isinstance(budget, bool) or not isinstance(budget, int | float) or \
                not math.isfinite(budget) or budget < 0:
            raise ValueError(f"params.budget: must be a number of dollars ≥ 0 (0 = no budget), "
                             f"got {quote(budget)}")
        if p["schedule"] not in ERAS_FEE_SCHEDULES:
            raise ValueError(f"params.schedule: must be one of {list(ERAS_FEE_SCHEDULES)}, "
                             f"got {quote(p['schedule'])}")
        if p["sizes"] or p["choose_signals"]:
            sizes = self._json_param(p, "sizes", list)
            if not sizes:
                raise ValueError("params.sizes: give a JSON array of the most programs of each "
                                 "specialty, preferred first (e.g. [40, 15])")
            across = self.predictor.plan_across(applicant, self._json_param(p, "preferences"),
                                                sizes, schedule=p["schedule"],
                                                choose_signals=bool(p["choose_signals"]),
                                                budget=float(budget) or None)
            return self._records(across["programs"])
        result = self.predictor.plan(applicant, self._json_param(p, "preferences"),
                                     specialty=p["specialty"] or None,
                                     max_applications=int(n) or None,
                                     budget=float(budget) or None, schedule=p["schedule"])
        return self._records(result["table"])

    @staticmethod
    def _json_param(p: dict[str, Any], name: str, kind: type = dict) -> Any:
        """A JSON-text param: an object (``kind`` dict) or an array (list); empty if not sent."""
        what = "a JSON object" if kind is dict else "a JSON array"
        text = p.get(name, "")
        if not text:
            return kind()
        try:
            value = json.loads(text)
        except RecursionError:
            raise ValueError(f"params.{name}: nested too deeply to read") from None
        except (TypeError, ValueError) as exc:  # ValueError: bad JSON, or a number too long
            raise ValueError(f"params.{name}: not {what} "
                             f"({str(exc)[:MAX_QUOTED_CHARS]})") from None
        if not isinstance(value, kind):
            raise ValueError(f"params.{name}: must be {what}, got {type(value).__name__}")
        return value


# ----------------------------------------------------------------------------- MLflow glue


def _load_pyfunc(path: str, model_config: Any = None) -> ServedMatchModel:
    """``mlflow.pyfunc`` loader: the skops file (trusted types only) and the catalog it was
    logged with, checked against its recorded hash."""
    from smartpick_ml.modelling.logged_model import load_logged_folder
    from smartpick_ml.modelling.persist import load_saved_catalog

    root = Path(path)
    if root.is_file():
        root = root.parent
    model, manifest = load_logged_folder(root, str(path))
    programs, _ = load_saved_catalog(root, manifest)
    served = ServedMatchModel(model, programs)
    if nodelay_on_listeners():
        log.info("TCP_NODELAY set on the server's listening socket (uvicorn --workers > 1)")
    if os.environ.get(SERVER_MODEL_PATH_ENV):
        prepare_server_worker()
    return served


