-- The case lifecycle (docs/cases.md §3, §5, §8): the facts the service-level figures need on `cases`, one row
-- per dispatch round in `case_rounds`, and the views that say once what "open", "overdue", "on time" and
-- "discovered" mean. Reports (pipeline/reports) and dashboards (deploy/grafana) read these views, so they
-- cannot disagree.
--
-- ClickHouse 18.16 has no `ADD COLUMN IF NOT EXISTS`: `cityops db migrate` makes each such statement (one
-- column each) idempotent itself (pipeline/migrate.py). In cluster mode the Distributed table is altered as
-- well (`${ref:cases}`); on one server that is the same table and the second statement finds the column.

-- ---- cases: the lifecycle facts ----------------------------------------------------------------------------
-- Rows stored before this migration read '' / 0 / NULL: a problem case with no recorded dispatch or deadline.
ALTER TABLE ${table:cases} ${on_cluster} ADD COLUMN IF NOT EXISTS kind String DEFAULT 'problem';
ALTER TABLE ${table:cases} ${on_cluster} ADD COLUMN IF NOT EXISTS sensor_id String;
ALTER TABLE ${table:cases} ${on_cluster} ADD COLUMN IF NOT EXISTS recurrence_of String;
ALTER TABLE ${table:cases} ${on_cluster} ADD COLUMN IF NOT EXISTS previous_closed_at Nullable(DateTime);
ALTER TABLE ${table:cases} ${on_cluster} ADD COLUMN IF NOT EXISTS first_dispatched_at Nullable(DateTime);
ALTER TABLE ${table:cases} ${on_cluster} ADD COLUMN IF NOT EXISTS case_due_at Nullable(DateTime);
ALTER TABLE ${table:cases} ${on_cluster} ADD COLUMN IF NOT EXISTS resolved_at Nullable(DateTime);
ALTER TABLE ${table:cases} ${on_cluster} ADD COLUMN IF NOT EXISTS verify_due_at Nullable(DateTime);
ALTER TABLE ${table:cases} ${on_cluster} ADD COLUMN IF NOT EXISTS rejected UInt16;
ALTER TABLE ${table:cases} ${on_cluster} ADD COLUMN IF NOT EXISTS escalations UInt16;

ALTER TABLE ${ref:cases} ${on_cluster} ADD COLUMN IF NOT EXISTS kind String DEFAULT 'problem';
ALTER TABLE ${ref:cases} ${on_cluster} ADD COLUMN IF NOT EXISTS sensor_id String;
ALTER TABLE ${ref:cases} ${on_cluster} ADD COLUMN IF NOT EXISTS recurrence_of String;
ALTER TABLE ${ref:cases} ${on_cluster} ADD COLUMN IF NOT EXISTS previous_closed_at Nullable(DateTime);
ALTER TABLE ${ref:cases} ${on_cluster} ADD COLUMN IF NOT EXISTS first_dispatched_at Nullable(DateTime);
ALTER TABLE ${ref:cases} ${on_cluster} ADD COLUMN IF NOT EXISTS case_due_at Nullable(DateTime);
ALTER TABLE ${ref:cases} ${on_cluster} ADD COLUMN IF NOT EXISTS resolved_at Nullable(DateTime);
ALTER TABLE ${ref:cases} ${on_cluster} ADD COLUMN IF NOT EXISTS verify_due_at Nullable(DateTime);
ALTER TABLE ${ref:cases} ${on_cluster} ADD COLUMN IF NOT EXISTS rejected UInt16;
ALTER TABLE ${ref:cases} ${on_cluster} ADD COLUMN IF NOT EXISTS escalations UInt16;

-- ---- case_rounds: one row per dispatch of a case to a team (§3.1) ----------------------------------------
-- The highest revision of (case_id, round) is its state. A round's dispatch time never changes, so all its
-- revisions share a partition (and FINAL collapses across partitions at read time anyway). Sharded like
-- `cases` (a case's sub-district is fixed by its book), so a case and its rounds live on one shard.
CREATE TABLE IF NOT EXISTS ${table:case_rounds} ${on_cluster}
(
    case_id             String,
    round               UInt16,              -- 1 for the first dispatch
    team                String,
    kind                String,              -- dispatch | reroute | rework
    rule_id             String,
    priority            Int16,
    dispatched_at       DateTime,
    due_at              DateTime,            -- the round's handling deadline
    accept_due_at       DateTime,
    accepted_at         Nullable(DateTime),
    resolved_at         Nullable(DateTime),  -- its resolution (kept when the round is verified or reworked)
    ended_at            Nullable(DateTime),
    outcome             String,              -- open | resolved | verified | reworked | rejected | superseded
    escalated_at        Nullable(DateTime),
    verify_due_at       Nullable(DateTime),
    verified_at         Nullable(DateTime),
    verified_by         String,              -- supervision | patrol, '' until verified
    verify_escalated_at Nullable(DateTime),
    category            String,
    case_kind           String,              -- problem | device_fault
    cell                String,
    subdistrict         String,
    revision            UInt64
)
ENGINE = ${engine:ReplacingMergeTree(revision)}
PARTITION BY toYYYYMM(dispatched_at)
ORDER BY (case_id, round);

${distributed:case_rounds:sipHash64(subdistrict)};

-- ---- the daily case aggregate goes ------------------------------------------------------------------------
-- `cases_daily` (0002) fixed a case's day, cell and first source when its first revision was inserted; a
-- report processed later that becomes the case's first report changes all three (docs/cases.md §1), so the
-- aggregate and the reports disagreed. `v_discovery_daily` below counts the latest state instead.
DROP TABLE IF EXISTS ${view:v_discovery_daily} ${on_cluster};
DROP TABLE IF EXISTS ${view:v_team_open} ${on_cluster};
DROP TABLE IF EXISTS ${view:v_cases} ${on_cluster};
DROP TABLE IF EXISTS ${view:cases_daily_mv} ${on_cluster};
DROP TABLE IF EXISTS ${ref:cases_daily} ${on_cluster};
DROP TABLE IF EXISTS ${table:cases_daily} ${on_cluster};

-- ---- the views: one definition of each figure ------------------------------------------------------------
-- The latest state of every case (FINAL: the highest revision of each case wins, across partitions: a case's
-- created_at moves earlier when an earlier report is processed late). `day` is its Asia/Shanghai day.
-- Derived columns (docs/cases.md §3, §8):
--   is_open                dispatched or accepted; resolved is awaiting verification, never open
--   awaiting_verification  resolved
--   closed_on_time         closed, its final resolution <= case_due_at, and verified <= verify_due_at
--   dispatch_s             first report -> first dispatch, seconds (NULL until dispatched)
--   is_overdue, verification_overdue, is_due: the same tests against now() (reports take an as-of time:
--   open AND due_at < as-of; resolved AND verify_due_at < as-of; case_due_at < as-of)
CREATE VIEW IF NOT EXISTS ${view:v_cases} ${on_cluster} AS
SELECT
    case_id, kind, category, discovered_by, cell, substring(cell, 1, 12) AS grid, subdistrict, grid_kind,
    team, status, priority, created_at, toDate(created_at, 'Asia/Shanghai') AS day, first_dispatched_at,
    due_at, case_due_at, resolved_at, verify_due_at, closed_at, reports, sources, reopened, rejected,
    escalations, rule_id, ruleset_version, grid_version, sensor_id, recurrence_of, previous_closed_at, revision,
    kind = 'problem' AS is_problem,
    status IN ('dispatched', 'accepted') AS is_open,
    status = 'resolved' AS awaiting_verification,
    status = 'closed' AS is_closed,
    status = 'closed' AND ifNull(resolved_at <= case_due_at, 0) AND ifNull(closed_at <= verify_due_at, 0)
        AS closed_on_time,
    toInt64(first_dispatched_at) - toInt64(created_at) AS dispatch_s,
    is_open AND ifNull(due_at < now(), 0) AS is_overdue,
    awaiting_verification AND ifNull(verify_due_at < now(), 0) AS verification_overdue,
    ifNull(case_due_at < now(), 0) AS is_due
FROM ${ref:cases} FINAL;

-- The latest state of every dispatch round. Derived columns (docs/cases.md §3.1, §8):
--   is_open                the team has it (dispatched or accepted)
--   awaiting_verification  resolved, not yet verified or sent back
--   held                   not rejected or superseded: the round was the team's to finish (it can be due)
--   is_resolved            the team resolved it (resolved, verified, or reworked: a failed fix is a fix late
--                          or on time by its own resolution, and counts as rework too)
--   resolved_on_time       resolved <= due_at; accepted_on_time: accepted <= accept_due_at;
--   verified_on_time       verified <= verify_due_at
--   verifier               who verifies (or verified) its resolution: supervision, or patrol when
--                          supervision resolved it
--   accept_s, resolve_s    dispatch -> acceptance / resolution, seconds
--   is_overdue, verification_overdue: against now(), as in v_cases
CREATE VIEW IF NOT EXISTS ${view:v_rounds} ${on_cluster} AS
SELECT
    case_id, round, team, kind, rule_id, priority, dispatched_at, due_at, accept_due_at, accepted_at,
    resolved_at, ended_at, outcome, escalated_at, verify_due_at, verified_at, verified_by, verify_escalated_at,
    category, case_kind, cell, substring(cell, 1, 12) AS grid, subdistrict, revision,
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
    awaiting_verification AND ifNull(verify_due_at < now(), 0) AS verification_overdue
FROM ${ref:case_rounds} FINAL;

-- Problem cases (device faults are the maintainers' work, §1) per Shanghai day, place, category and first
-- source, from the latest state: what `cityops report discovery` sums.
CREATE VIEW IF NOT EXISTS ${view:v_discovery_daily} ${on_cluster} AS
SELECT
    day, subdistrict, grid, cell, category,
    countIf(discovered_by = 'citizen') AS citizen,
    countIf(discovered_by = 'patrol') AS patrol,
    countIf(discovered_by = 'sensor') AS sensor,
    count() AS total
FROM ${view:v_cases}
WHERE is_problem
GROUP BY day, subdistrict, grid, cell, category;

-- Work per team right now (the case's current team: the team of its open or resolved round).
CREATE VIEW IF NOT EXISTS ${view:v_team_open} ${on_cluster} AS
SELECT
    team,
    countIf(is_open) AS open,
    countIf(is_overdue) AS overdue,
    countIf(awaiting_verification) AS awaiting_verification,
    countIf(verification_overdue) AS verification_overdue
FROM ${view:v_cases}
WHERE status != 'new'
GROUP BY team;
