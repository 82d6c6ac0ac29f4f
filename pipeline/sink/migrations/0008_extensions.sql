-- Deadline extensions (延期, docs/cases.md §4.6; issue #20): the team holding a case may have its handling
-- deadline extended before it passes. A round counts the extensions granted to it; `v_rounds` (0004) is made
-- again with `extensions` and `is_extended`, the same definitions otherwise. Rows stored before this migration
-- read 0: no extension.

ALTER TABLE ${table:case_rounds} ${on_cluster} ADD COLUMN IF NOT EXISTS extensions UInt16;
ALTER TABLE ${ref:case_rounds} ${on_cluster} ADD COLUMN IF NOT EXISTS extensions UInt16;

DROP TABLE IF EXISTS ${view:v_rounds} ${on_cluster};

CREATE VIEW IF NOT EXISTS ${view:v_rounds} ${on_cluster} AS
SELECT
    case_id, round, team, kind, rule_id, priority, dispatched_at, due_at, accept_due_at, accepted_at,
    resolved_at, ended_at, outcome, escalated_at, verify_due_at, verified_at, verified_by, verify_escalated_at,
    category, case_kind, cell, substring(cell, 1, 12) AS grid, subdistrict, revision, extensions,
    outcome = 'open' AS is_open,
    outcome = 'resolved' AS awaiting_verification,
    outcome NOT IN ('rejected', 'superseded') AS held,
    outcome IN ('resolved', 'verified', 'reworked') AND resolved_at IS NOT NULL AS is_resolved,
    is_resolved AND ifNull(resolved_at <= due_at, 0) AS resolved_on_time,
    accepted_at IS NOT NULL AS is_accepted,
    ifNull(accepted_at <= accept_due_at, 0) AS accepted_on_time,
    verified_at IS NOT NULL AS is_verified,
    ifNull(verified_at <= verify_due_at, 0) AS verified_on_time,
    outcome = 'reworked' AS is_reworked,
    if(verified_by != '', verified_by, if(team = 'supervision', 'patrol', 'supervision')) AS verifier,
    toInt64(accepted_at) - toInt64(dispatched_at) AS accept_s,
    toInt64(resolved_at) - toInt64(dispatched_at) AS resolve_s,
    is_open AND due_at < now() AS is_overdue,
    awaiting_verification AND ifNull(verify_due_at < now(), 0) AS verification_overdue,
    extensions > 0 AS is_extended
FROM ${ref:case_rounds} FINAL;
