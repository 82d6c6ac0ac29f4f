-- Views for dashboards (deploy/grafana) and ad-hoc SQL: the same tables the reports read, already
-- de-duplicated. The management grid of a cell is the first 12 digits of its 15-digit code.

-- The latest state of every case (FINAL: the highest revision of each case_id wins).
CREATE VIEW IF NOT EXISTS ${view:v_cases} ${on_cluster} AS
SELECT
    case_id, category, discovered_by, cell, substring(cell, 1, 12) AS grid, subdistrict, grid_kind, team,
    status, priority, created_at, due_at, closed_at, reports, sources, reopened, rule_id, ruleset_version,
    grid_version, revision,
    status != 'closed' AS is_open,
    status != 'closed' AND ifNull(due_at < now(), 0) AS is_overdue
FROM ${ref:cases} FINAL;

-- Cases per Shanghai day, place, category and first source (from the daily aggregate).
CREATE VIEW IF NOT EXISTS ${view:v_discovery_daily} ${on_cluster} AS
SELECT
    day, subdistrict, substring(cell, 1, 12) AS grid, category,
    uniqExactMergeIf(cases, discovered_by = 'citizen') AS citizen,
    uniqExactMergeIf(cases, discovered_by = 'patrol') AS patrol,
    uniqExactMergeIf(cases, discovered_by = 'sensor') AS sensor,
    uniqExactMerge(cases) AS total
FROM ${ref:cases_daily}
GROUP BY day, subdistrict, grid, category;

-- Open work per team right now.
CREATE VIEW IF NOT EXISTS ${view:v_team_open} ${on_cluster} AS
SELECT
    team,
    countIf(status != 'closed') AS open,
    countIf(status != 'closed' AND ifNull(due_at < now(), 0)) AS overdue
FROM ${ref:cases} FINAL
GROUP BY team;

-- Each event once (the events table may hold a replayed copy until its next merge).
CREATE VIEW IF NOT EXISTS ${view:v_events} ${on_cluster} AS
SELECT event_id, source, case_id, category, cell, substring(cell, 1, 12) AS grid, subdistrict, received_at,
       ingested_at, merged
FROM ${ref:events} FINAL;
