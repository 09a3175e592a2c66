"""Evaluation of what SmartPick advises, in re-run simulated seasons (``plans``)."""
