"""Evaluation of q(a, p) models: calibration, discrimination, P(match) reliability, and plots.

A ranked application list is only as good as its probabilities (``match-model.md`` §6), so this
module puts calibration first: expected calibration error (scikit-learn has none), log-loss and
Brier next to the AUCs, every metric split by applicant type with IMGs first, and each model's
log-loss as a ratio to a reference (the oracle, whose log-loss is the floor on simulated data).

It also checks the step from per-program q to what a person asks, ``P(match) = 1 - prod(1 - q)``
(§3): that formula assumes outcomes independent given the applicant, and
:func:`applicant_match_table` / :func:`reliability_by_decile` test it against realised matches.

Plots are written atomically as PNG (temporary name beside the target, then ``os.replace``) so a
killed run never leaves a half-written image where a report or MLflow expects one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from sklearn.metrics import average_precision_score, roc_auc_score

from smartpick_ml.contracts.errors import SmartPickError
from smartpick_ml.contracts.numeric import log_loss
from smartpick_ml.contracts.reference import APPLICANT_TYPE_LABELS
from smartpick_ml.data.io import atomic_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Applicant types in report order: IMGs first, because a model calibrated on average but
#: over-confident for non-US IMGs fails the people SmartPick is for (match-model.md §6).
REPORT_TYPE_ORDER: tuple[str, ...] = ("non_us_img", "us_img", "us_do_senior", "us_md_senior")
#: The group label of the row that pools every applicant type.
ALL_GROUP = "all"
#: Probabilities are clipped to [EPS, 1 - EPS] for log-loss, so one confident miss costs ~34.5 nats
#: instead of infinity (the same clip as ``smartpick_ml.simulation.oracle``).
EPS = 1e-15
METRIC_COLUMNS: tuple[str, ...] = ("n", "base_rate", "mean_prediction", "roc_auc", "pr_auc",
                                   "log_loss", "brier", "ece")
DPI = 110

BinStrategy = Literal["quantile", "uniform"]


# --------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------

def _as_float_1d(values: ArrayLike, name: str) -> NDArray[np.float64]:
    """``values`` as a 1-D float array, or a ValueError that names the argument."""
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:  # e.g. strings, or pd.NA that numpy cannot cast
        raise ValueError(f"{name} must be numeric: {exc}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {arr.shape}")
    return arr


def _check_binary_inputs(y_true: ArrayLike, y_prob: ArrayLike, *, allow_empty: bool = False
                         ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Validate labels in {0, 1} and finite probabilities in [0, 1] of the same length."""
    y = _as_float_1d(y_true, "y_true")
    p = _as_float_1d(y_prob, "y_prob")
    if y.shape[0] != p.shape[0]:
        raise ValueError(f"y_true and y_prob must have the same length, got {y.shape[0]} and "
                         f"{p.shape[0]}")
    if y.shape[0] == 0 and not allow_empty:
        raise ValueError("y_true and y_prob are empty")
    if not np.isfinite(y).all():
        raise ValueError("y_true contains NaN or infinite values (drop censored labels first)")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y_true must contain only 0 and 1")
    if not np.isfinite(p).all():
        raise ValueError("y_prob contains NaN or infinite values")
    if (p < 0).any() or (p > 1).any():
        raise ValueError(f"y_prob must lie in [0, 1], got range [{p.min():.4g}, {p.max():.4g}]")
    return y, p


# --------------------------------------------------------------------------------------------
# Calibration and the per-row metrics
# --------------------------------------------------------------------------------------------

def calibration_bins(y_true: ArrayLike, y_prob: ArrayLike, n_bins: int = 15,
                     strategy: BinStrategy = "quantile"
                     ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """Non-empty calibration bins: (mean predicted, observed rate, count) per bin.

    Bin edges follow ``sklearn.calibration.calibration_curve``: ``uniform`` splits [0, 1] into
    ``n_bins`` equal widths; ``quantile`` puts edges at quantiles of ``y_prob`` so bins hold about
    equal counts. Unlike ``calibration_curve`` the counts are returned, and empty bins (always
    possible with ``uniform``; with ``quantile`` when many predictions tie) are dropped rather than
    averaged as 0/0.
    """
    y, p = _check_binary_inputs(y_true, y_prob)
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    if strategy == "quantile":
        edges = np.quantile(p, np.linspace(0.0, 1.0, n_bins + 1))
    elif strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    else:
        raise ValueError(f"strategy must be 'quantile' or 'uniform', got {strategy!r}")
    # Same assignment as calibration_curve: interior edges only, so p == 0 and p == 1 land in the
    # first and last bins, and a value on an interior edge goes to the lower bin.
    ids = np.searchsorted(edges[1:-1], p)
    counts = np.bincount(ids, minlength=n_bins)
    sum_p = np.bincount(ids, weights=p, minlength=n_bins)
    sum_y = np.bincount(ids, weights=y, minlength=n_bins)
    keep = counts > 0
    return (sum_p[keep] / counts[keep], sum_y[keep] / counts[keep],
            counts[keep].astype(np.int64))


def expected_calibration_error(y_true: ArrayLike, y_prob: ArrayLike, n_bins: int = 15,
                               strategy: BinStrategy = "quantile") -> float:
    """Expected calibration error: the count-weighted mean of |observed rate - mean predicted|.

    ``strategy="quantile"`` (default) gives bins of about equal counts, so every bin's observed
    rate has similar noise; match probabilities crowd near 0, and uniform bins would leave most rows
    in one or two bins and the rest nearly empty. ``strategy="uniform"`` uses equal-width bins on
    [0, 1], the textbook ECE, comparable across models with different prediction ranges.

    ECE is biased upward by sampling noise (about ``sqrt(p(1-p)/bin count)`` per bin), so compare
    models on the same rows and bins, not to zero.

    Raises:
        ValueError: naming the argument, if lengths differ, the input is empty, ``y_true`` is not
            0/1, ``y_prob`` is not finite or outside [0, 1], or ``n_bins``/``strategy`` is invalid.
    """
    mean_p, rate, counts = calibration_bins(y_true, y_prob, n_bins, strategy)
    ece = float(np.sum(counts * np.abs(rate - mean_p)) / np.sum(counts))
    return min(max(ece, 0.0), 1.0)  # guard against float round-off just outside [0, 1]


def binary_metrics(y_true: ArrayLike, y_prob: ArrayLike) -> dict[str, float]:
    """roc_auc, pr_auc (average precision), log_loss, brier, ece, mean_prediction, base_rate, n.

    Where ``y_true`` holds a single class the AUCs are NaN (they are undefined, and a per-type
    table must not fail because one small group had no positives). An empty input gives NaN for
    every metric and ``n = 0``.
    """
    y, p = _check_binary_inputs(y_true, y_prob, allow_empty=True)
    n = y.shape[0]
    if n == 0:
        return {"n": 0.0, **{k: math.nan for k in METRIC_COLUMNS if k != "n"}}
    # numeric.log_loss rather than sklearn's: that one raises on a single-class subset unless
    # labels= is passed, and its clip depends on the dtype.
    loss = log_loss(y, p, EPS)
    two_classes = 0 < y.sum() < n
    return {
        "n": float(n),
        "base_rate": float(y.mean()),
        "mean_prediction": float(p.mean()),
        "roc_auc": float(roc_auc_score(y, p)) if two_classes else math.nan,
        "pr_auc": float(average_precision_score(y, p)) if two_classes else math.nan,
        "log_loss": loss,
        "brier": float(np.mean((p - y) ** 2)),
        "ece": expected_calibration_error(y, p),
    }


def _group_order(values: pd.Series) -> list[str]:
    """Groups present in ``values``: known applicant types IMGs first, then any others sorted."""
    present = set(values.dropna().astype(str).unique())
    known = [g for g in REPORT_TYPE_ORDER if g in present]
    return known + sorted(present - set(known))


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], argument: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{argument}: column(s) {missing} not in frame "
                         f"(columns: {list(frame.columns)})")


def metrics_table(frame: pd.DataFrame, prob_columns: Mapping[str, str],
                  label: str = "would_take", group: str | None = "applicant_type",
                  reference: str | None = None) -> pd.DataFrame:
    """One row per (model, group) with :func:`binary_metrics`, IMGs first and ``all`` last.

    ``prob_columns`` maps a model name to the column of ``frame`` holding its q. Rows whose label
    is missing (censored: ranked below the match in real data) are left out, and so, per model,
    are rows where that model has no prediction. With ``reference`` (a key of ``prob_columns``,
    e.g. the oracle) a ``log_loss_vs_reference`` column gives model log-loss / reference log-loss
    on the rows both score; 1.0 is as good as the reference, and on simulated data the oracle is
    the floor, so a model's ratio is how far above the floor it sits.

    Rows are ordered by model (in ``prob_columns`` order), then group: ``non_us_img``, ``us_img``,
    ``us_do_senior``, ``us_md_senior``, any other group, ``all``.
    """
    if not prob_columns:
        raise ValueError("prob_columns must name at least one model")
    if reference is not None and reference not in prob_columns:
        raise ValueError(f"reference {reference!r} is not a key of prob_columns "
                         f"({list(prob_columns)})")
    _require_columns(frame, [label], "label")
    _require_columns(frame, list(prob_columns.values()), "prob_columns")
    if group is not None:
        _require_columns(frame, [group], "group")

    labelled = frame[frame[label].notna()]
    y_all = labelled[label].to_numpy(dtype=float)
    probs = {m: labelled[c].to_numpy(dtype=float, na_value=np.nan)
             for m, c in prob_columns.items()}
    groups: list[tuple[str, NDArray[np.bool_]]] = []
    if group is not None:
        g_values = labelled[group].astype(str)
        groups = [(g, (g_values == g).to_numpy()) for g in _group_order(labelled[group])]
    groups.append((ALL_GROUP, np.ones(len(labelled), dtype=bool)))

    rows: list[dict[str, Any]] = []
    for model in prob_columns:
        p_all = probs[model]
        for g, in_group in groups:
            sel = in_group & ~np.isnan(p_all)
            row: dict[str, Any] = {"model": model, "group": g,
                                   **binary_metrics(y_all[sel], p_all[sel])}
            if reference is not None:
                row["log_loss_vs_reference"] = _log_loss_ratio(
                    y_all, p_all, probs[reference], in_group)
            rows.append(row)
    out = pd.DataFrame(rows)
    out["n"] = out["n"].astype(np.int64)
    return out


def _log_loss_ratio(y: NDArray[np.float64], p: NDArray[np.float64], p_ref: NDArray[np.float64],
                    in_group: NDArray[np.bool_]) -> float:
    """Model / reference log-loss on the rows of the group that both score (NaN if none)."""
    both = in_group & ~np.isnan(p) & ~np.isnan(p_ref)
    if not both.any():
        return math.nan
    model_ll = log_loss(y[both], p[both], EPS)
    ref_ll = log_loss(y[both], p_ref[both], EPS)
    return model_ll / ref_ll if ref_ll > 0 else math.nan


# --------------------------------------------------------------------------------------------
# From q to P(match), per applicant
# --------------------------------------------------------------------------------------------

def applicant_match_table(frame: pd.DataFrame, prob_column: str, label: str = "would_take",
                          rank_column: str | None = "rank_position",
                          matched_column: str = "matched") -> pd.DataFrame:
    """Per applicant: predicted ``p_match = 1 - prod(1 - q)`` beside realised ``matched``.

    The product runs over the programs on the applicant's rank list (rows with a non-null
    ``rank_column``); if ``rank_column`` is None or not in ``frame``, over all their applications.
    An applicant with an empty rank list keeps a row with ``p_match = 0`` (nobody can take them),
    so the table counts every applicant in ``frame``.

    ``matched`` is True if any of the applicant's rows is matched. Without ``matched_column`` it
    falls back to "some program on the list would take them" from ``label``, which is the same
    event under applicant-proposing deferred acceptance (cutoff characterisation, §2).

    Which rows to use: q conditions only on having applied, while a rank list is known only after
    interviews. Over the rank list the product drops every non-interviewed program yet keeps the
    pre-interview q of the interviewed ones, so it is biased low even for a perfect q (the oracle on
    a 0.05-scale 2025 season: mean p_match 0.52 against 0.73 realised). To check the planning-time
    P(match) that SmartPick shows a person, pass ``rank_column=None`` (same season: 0.81 against
    0.73; that gap is the independence assumption itself).

    Returns columns ``applicant_id, applicant_type, p_match, matched, n_programs`` (programs in the
    product), one row per applicant in order of first appearance.
    """
    _require_columns(frame, ["applicant_id", "applicant_type", prob_column], "frame")
    if matched_column not in frame.columns:
        _require_columns(frame, [label], "label (needed because matched_column is absent)")
    q = _as_float_1d(frame[prob_column].to_numpy(dtype=float, na_value=np.nan), "prob_column")
    if rank_column is not None and rank_column in frame.columns:
        on_list = frame[rank_column].notna().to_numpy()
    else:
        on_list = np.ones(len(frame), dtype=bool)
    q_list = q[on_list]
    if np.isnan(q_list).any() or (q_list < 0).any() or (q_list > 1).any():
        raise ValueError(f"prob_column {prob_column!r} must hold probabilities in [0, 1] for "
                         "every program in the product (no missing values)")

    # Sum of log(1 - q) rather than a running product: long lists of small q stay accurate, and
    # q = 1 gives log(0) = -inf -> p_match = 1 exactly.
    with np.errstate(divide="ignore"):
        log_miss = np.where(on_list, np.log1p(-np.where(on_list, q, 0.0)), 0.0)
    if matched_column in frame.columns:
        hit = frame[matched_column].fillna(False).astype(bool).to_numpy()
    else:  # label, restricted to the list: a program not ranked can never be the match
        hit = (frame[label].fillna(0).to_numpy(dtype=float) == 1) & on_list
    work = pd.DataFrame({"applicant_id": frame["applicant_id"].to_numpy(),
                         "applicant_type": frame["applicant_type"].to_numpy(),
                         "log_miss": log_miss, "hit": hit, "on_list": on_list})
    per = work.groupby("applicant_id", sort=False).agg(
        applicant_type=("applicant_type", "first"), log_miss=("log_miss", "sum"),
        matched=("hit", "any"), n_programs=("on_list", "sum")).reset_index()
    per["p_match"] = -np.expm1(per["log_miss"].to_numpy())
    per["matched"] = per["matched"].astype(bool)
    per["n_programs"] = per["n_programs"].astype(np.int64)
    return per[["applicant_id", "applicant_type", "p_match", "matched", "n_programs"]]


def _equal_count_bins(p: NDArray[np.float64], n_bins: int) -> NDArray[np.int64]:
    """Bin index 1..k (k = min(n_bins, len(p))) with counts differing by at most one.

    Deciles by rank rather than by quantile edges: with many tied p (e.g. every applicant whose
    list is empty has p_match = 0) edges would collapse and leave some deciles empty.
    """
    k = min(n_bins, p.shape[0])
    order = np.argsort(p, kind="stable")
    ids = np.empty(p.shape[0], dtype=np.int64)
    for i, chunk in enumerate(np.array_split(order, k), start=1):
        ids[chunk] = i
    return ids


def reliability_by_decile(per_applicant: pd.DataFrame, n_bins: int = 10,
                          by: str | None = None) -> pd.DataFrame:
    """Reliability table of P(match): per decile of ``p_match``, mean predicted vs realised rate.

    Deciles are equal-count bins of applicants sorted by ``p_match`` (``n_bins`` of them, fewer if
    there are fewer applicants). With ``by="applicant_type"`` the deciles are formed within each
    type (IMGs first), so each type's table has its own ten bins.

    Returns columns ``[by,] decile, mean_predicted, realised_rate, count``.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    _require_columns(per_applicant, ["p_match", "matched"], "per_applicant")
    columns = ["decile", "mean_predicted", "realised_rate", "count"]
    if by is None:
        return _deciles(per_applicant, n_bins)[columns]
    _require_columns(per_applicant, [by], "by")
    parts = []
    for g in _group_order(per_applicant[by]):
        part = _deciles(per_applicant[per_applicant[by].astype(str) == g], n_bins)
        part.insert(0, by, g)
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=[by, *columns])
    return pd.concat(parts, ignore_index=True)[[by, *columns]]


def _deciles(per_applicant: pd.DataFrame, n_bins: int) -> pd.DataFrame:
    p = per_applicant["p_match"].to_numpy(dtype=float)
    m = per_applicant["matched"].to_numpy(dtype=float)
    if p.shape[0] == 0:
        return pd.DataFrame({"decile": pd.Series(dtype=np.int64),
                             "mean_predicted": pd.Series(dtype=float),
                             "realised_rate": pd.Series(dtype=float),
                             "count": pd.Series(dtype=np.int64)})
    ids = _equal_count_bins(p, n_bins)
    out = pd.DataFrame({"decile": ids, "p": p, "m": m}).groupby("decile").agg(
        mean_predicted=("p", "mean"), realised_rate=("m", "mean"), count=("p", "size"))
    out = out.reset_index()
    out["count"] = out["count"].astype(np.int64)
    return out


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------

def pyplot() -> Any:
    """pyplot on the non-interactive Agg backend (set here, not at import, so importing this module
    never changes the backend of a notebook that does not plot)."""
    try:
        import matplotlib
    except ModuleNotFoundError:  # a service's lean install: plots belong to the training stack
        raise SmartPickError("plots need matplotlib: pip install 'smartpick-ml[train]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as PNG atomically (temporary file beside ``path``, then os.replace)."""
    with atomic_path(path) as tmp:
        # format= because the temporary name does not end in .png
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    return Path(path)


def _type_label(group: str) -> str:
    if group == ALL_GROUP:
        return "All applicants"
    return APPLICANT_TYPE_LABELS.get(group, group)


def _grid(plt: Any, n_panels: int, ncols: int, panel_size: tuple[float, float]
          ) -> tuple[Figure, list[Axes]]:
    """A figure with ``n_panels`` axes on a grid; unused cells are hidden."""
    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows),
                             squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n_panels:]:
        ax.set_visible(False)
    return fig, flat[:n_panels]


def _zoomed_upper(values: list[np.ndarray]) -> float:
    """The upper end of a reliability panel's axes: the panel's largest point with a margin,
    rounded up to a 0.05 step, so a group whose q stays below 0.2 is not squeezed into a corner."""
    top = max((float(np.nanmax(v)) for v in values if np.size(v) and np.isfinite(v).any()),
              default=1.0)
    return float(min(1.0, max(0.1, math.ceil(top * 1.1 / 0.05) * 0.05)))


def _reliability_panel(ax: Axes, title: str, xlabel: str, ylabel: str, upper: float = 1.0,
                       legend: bool = True) -> None:
    """Finish one reliability panel: the diagonal of perfect calibration, axes from 0 to
    ``upper`` on both sides, labels, and the legend beside the panel (never over the curves)."""
    ax.plot([0, upper], [0, upper], linestyle="--", color="0.6", linewidth=1,
            label="perfectly calibrated")
    ax.set_xlim(0, upper)
    ax.set_ylim(0, upper)
    ax.set_aspect("equal")
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if legend:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)


def plot_reliability(frame: pd.DataFrame, prob_columns: Mapping[str, str],
                     path: str | os.PathLike[str], label: str = "would_take",
                     group: str = "applicant_type", n_bins: int = 10,
                     strategy: BinStrategy = "quantile") -> Path:
    """Reliability curves of q: one panel per applicant type (IMGs first), one line per model.

    Each point is a calibration bin (mean predicted q, observed share that would take); the
    legend carries each model's ECE on that panel. Rows with a missing label or prediction are
    left out, as in :func:`metrics_table`.
    """
    _require_columns(frame, [label, group, *prob_columns.values()], "frame")
    plt = pyplot()
    labelled = frame[frame[label].notna()]
    groups = _group_order(labelled[group])
    fig, axes = _grid(plt, max(len(groups), 1), ncols=2, panel_size=(6.6, 4.4))
    try:
        for ax, g in zip(axes, groups, strict=True):
            sub = labelled[labelled[group].astype(str) == g]
            y = sub[label].to_numpy(dtype=float)
            plotted: list[np.ndarray] = []
            for model, col in prob_columns.items():
                p = sub[col].to_numpy(dtype=float, na_value=np.nan)
                ok = ~np.isnan(p)
                if not ok.any():
                    continue
                mean_p, rate, _ = calibration_bins(y[ok], p[ok], n_bins, strategy)
                ece = expected_calibration_error(y[ok], p[ok], n_bins, strategy)
                ax.plot(mean_p, rate, marker="o", markersize=4, linewidth=1.5,
                        label=f"{model} (ECE {ece:.3f})")
                plotted += [mean_p, rate]
            _reliability_panel(ax, f"{_type_label(g)} (n = {len(sub):,})",
                               "Predicted q (bin mean)", "Observed share that would take",
                               upper=_zoomed_upper(plotted))
        fig.suptitle("Calibration of q(applicant, program) by applicant type")
        fig.tight_layout()
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def plot_roc_pr(frame: pd.DataFrame, prob_columns: Mapping[str, str],
                path: str | os.PathLike[str], label: str = "would_take") -> Path:
    """ROC and precision-recall curves of every model on all labelled rows, side by side."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    _require_columns(frame, [label, *prob_columns.values()], "frame")
    plt = pyplot()
    labelled = frame[frame[label].notna()]
    y_all = labelled[label].to_numpy(dtype=float)
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(10.5, 4.6))
    try:
        for model, col in prob_columns.items():
            p = labelled[col].to_numpy(dtype=float, na_value=np.nan)
            ok = ~np.isnan(p)
            m = binary_metrics(y_all[ok], p[ok])
            if math.isnan(m["roc_auc"]):  # one class only: no curve to draw
                continue
            fpr, tpr, _ = roc_curve(y_all[ok], p[ok])
            ax_roc.plot(fpr, tpr, linewidth=1.5, label=f"{model} (AUC {m['roc_auc']:.3f})")
            precision, recall, _ = precision_recall_curve(y_all[ok], p[ok])
            ax_pr.plot(recall, precision, linewidth=1.5, label=f"{model} (AP {m['pr_auc']:.3f})")
        ax_roc.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="chance")
        ax_roc.set(title="ROC", xlabel="False positive rate", ylabel="True positive rate",
                   xlim=(0, 1), ylim=(0, 1.01))
        if y_all.size:
            # A random ranking's precision is the base rate: the PR curve's floor.
            ax_pr.axhline(y_all.mean(), linestyle="--", color="0.6", linewidth=1,
                          label=f"base rate {y_all.mean():.3f}")
        ax_pr.set(title="Precision-recall", xlabel="Recall", ylabel="Precision",
                  xlim=(0, 1), ylim=(0, 1.01))
        for ax in (ax_roc, ax_pr):
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8, loc="lower right" if ax is ax_roc else "upper right")
        fig.suptitle(f"Would the program take the applicant? (n = {len(labelled):,} applications)")
        fig.tight_layout()
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def plot_pmatch_deciles(per_applicant_by_model: Mapping[str, pd.DataFrame],
                        path: str | os.PathLike[str], n_bins: int = 10) -> Path:
    """Reliability of P(match) by decile: all applicants, then each applicant type (IMGs first).

    ``per_applicant_by_model`` maps a model name to its :func:`applicant_match_table`. Points far
    from the diagonal where q itself is calibrated point at the independence assumption of
    ``1 - prod(1 - q)``, not at the model.
    """
    if not per_applicant_by_model:
        raise ValueError("per_applicant_by_model must hold at least one model")
    plt = pyplot()
    types = _group_order(pd.concat([t["applicant_type"] for t in per_applicant_by_model.values()]))
    panels = [ALL_GROUP, *types]
    # one panel a group plus one cell for the legend, which names the same lines everywhere
    fig, cells = _grid(plt, len(panels) + 1, ncols=3, panel_size=(4.0, 4.0))
    axes, legend_cell = cells[:-1], cells[-1]
    try:
        for ax, g in zip(axes, panels, strict=True):
            n_applicants = 0
            for model, table in per_applicant_by_model.items():
                sub = table if g == ALL_GROUP else table[table["applicant_type"].astype(str) == g]
                n_applicants = max(n_applicants, len(sub))
                if sub.empty:
                    continue
                rel = reliability_by_decile(sub, n_bins)
                ax.plot(rel["mean_predicted"], rel["realised_rate"], marker="o", markersize=4,
                        linewidth=1.5, label=model)
            _reliability_panel(ax, f"{_type_label(g)} (n = {n_applicants:,})",
                               "Predicted P(match), decile mean", "Realised match rate",
                               legend=False)
        legend_cell.axis("off")
        legend_cell.legend(*axes[0].get_legend_handles_labels(), loc="center", fontsize=9,
                           title="P(match) from")
        fig.suptitle("P(match) = 1 - \u220f(1 - q) against realised matches, by decile")
        fig.tight_layout()
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def plot_importance(importances: pd.DataFrame, path: str | os.PathLike[str],
                    title: str = "Permutation importance", max_features: int = 30) -> Path:
    """Horizontal bar chart of feature importance (mean +/- std), most important on top.

    ``importances`` has columns ``feature, importance_mean, importance_std`` (e.g. from
    ``sklearn.inspection.permutation_importance``); only the ``max_features`` largest are drawn so
    the labels stay readable.
    """
    _require_columns(importances, ["feature", "importance_mean", "importance_std"], "importances")
    plt = pyplot()
    df = importances.sort_values("importance_mean", ascending=False).head(max_features)
    df = df.iloc[::-1]  # barh draws bottom-up; reverse so the largest bar is at the top
    height = min(1.2 + 0.32 * max(len(df), 1), 11.0)
    fig, ax = plt.subplots(figsize=(7.5, height))
    try:
        ax.barh(df["feature"].astype(str), df["importance_mean"], xerr=df["importance_std"],
                color="tab:blue", alpha=0.85, error_kw={"elinewidth": 1, "capsize": 2})
        ax.axvline(0, color="0.4", linewidth=0.8)
        ax.set_xlabel("Importance (mean \u00b1 std over repeats)")
        ax.set_title(title)
        ax.grid(True, axis="x", alpha=0.3)
        fig.tight_layout()
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def plot_plan(table: pd.DataFrame, path: str | os.PathLike[str], title: str = "") -> Path:
    """P(match) of the best list of each length, with the ERAS fee on a second axis."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    try:
        ax.plot(table["h"], 100 * table["p_match"], color="tab:blue", label="P(match), optimal")
        if "naive_p_match" in table:
            ax.plot(table["h"], 100 * table["naive_p_match"], color="tab:blue", linestyle=":",
                    label="P(match), top-h by EV")
        if "p_match_corrected" in table:
            ax.plot(table["h"], 100 * table["p_match_corrected"], color="tab:green",
                    label="P(match), corrected for correlated decisions")
        ax.set_xlabel("programs applied to (h)")
        ax.set_ylabel("P(match) %")
        ax.set_ylim(0, 100)
        ax.grid(True, alpha=0.3)
        ax2 = ax.twinx()
        ax2.plot(table["h"], table["fee_usd"], color="tab:red", label="ERAS fee (USD)")
        ax2.set_ylabel("fee (USD)", color="tab:red")
        lines = ax.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="lower right", fontsize=8)
        heading = "P(match) and ERAS fees by list length"
        ax.set_title(f"{heading} — {title}" if title else heading)
        fig.tight_layout()
        return save_figure(fig, path)
    finally:
        plt.close(fig)
