"""Errors a user can act on. Each names what is wrong and where; none wraps a pandas traceback."""

from __future__ import annotations


class SmartPickError(Exception):
    """Base class for every error SmartPick raises on purpose."""


class DataValidationError(SmartPickError, ValueError):
    """A table broke its data contract (see ``smartpick_ml.contracts.schemas``)."""

    def __init__(self, table: str, problems: list[str]):
        self.table = table
        self.problems = problems
        head = f"table '{table}' failed validation ({len(problems)} problem"
        head += "s):" if len(problems) != 1 else "):"
        super().__init__("\n  - ".join([head, *problems]))


class ConfigError(SmartPickError, ValueError):
    """A configuration file or parameter is invalid."""


class ModelIntegrityError(SmartPickError):
    """A saved model does not match its manifest or cannot be loaded safely."""
