"""SmartPick ML: a match-likelihood predictor for the US residency Match.

Stages, one module each, in the order a row travels:
``catalog`` -> ``simulate`` (with ``matching``) -> ``labels`` -> ``features`` -> ``train`` /
``evaluate`` -> ``inference`` -> ``portfolio``; plus ``schemas``, ``config``, ``io`` and ``cli``.
"""

__version__ = "0.1.0"
