"""Dispatch rules: YAML rulesets that route each located event to a team, and the engine that runs them.

Entry points: `rules.engine.load_ruleset`, `Ruleset.dispatch` / `dispatch_batch` / `explain`,
`rules.engine.RulesHolder` (hot reload), `rules.recurrence.RecurrenceHistory`, and `cityops rules ...`.
The rule language is described in rules/spec.py (file shape), rules/when.py (conditions) and rules/limits.py
(time limits).
"""
