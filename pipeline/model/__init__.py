"""The vocabulary every layer shares: the event model, categories, stored rows, cases, personal-data masking.

Imports nothing from the rest of pipeline; rules/ and grid/ import only this package."""
