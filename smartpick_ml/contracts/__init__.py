"""What every stage agrees on: published reference figures, run configurations, the column rules
of every table and request, the errors a user can act on, and two numeric definitions.

Imports nothing else of the package."""
