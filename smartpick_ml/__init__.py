"""SmartPick ML: a match-likelihood predictor for the US residency Match.

Stages, one module each, in the order a row travels:
``catalog`` -> ``simulate`` (with ``matching``, ``oracle``) -> ``labels`` -> ``features`` ->
``model`` / ``train`` / ``evaluate`` -> ``inference`` -> ``portfolio``; plus ``schemas``,
``config``, ``io``, ``persist``, ``tracking`` and ``cli``.

For services::

    from smartpick_ml import MatchPredictor
    predictor = MatchPredictor.load("models")
    predictor.rank({"applicant_type": "non_us_img", "step2_ck": 248, "graduation_year": 2022,
                    "needs_visa": True}, specialty="Internal Medicine", k=20)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["MatchPredictor", "__version__"]

if TYPE_CHECKING:
    from smartpick_ml.inference.predictor import MatchPredictor


def __getattr__(name: str) -> Any:
    # imported lazily: `import smartpick_ml` stays cheap for the CLI and tools
    if name == "MatchPredictor":
        from smartpick_ml.inference.predictor import MatchPredictor

        return MatchPredictor
    raise AttributeError(name)
