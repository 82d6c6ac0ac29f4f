-- Daily aggregates for the discovery report and dashboards, kept up to date by materialized views.
-- They count DISTINCT ids (uniqExact states), so a replayed insert, a retried batch or a case's later
-- revisions never inflate them: merging a state with a copy of itself changes nothing. They group only by
-- values that are fixed when a case or event is created (day, place, category, first source).
-- Days are Asia/Shanghai days: that is the calendar the district reports in.

CREATE TABLE IF NOT EXISTS ${table:cases_daily} ${on_cluster}
(
    day            Date,
    subdistrict    String,
    cell           String,
    category       String,
    discovered_by  String,
    cases          AggregateFunction(uniqExact, String)
)
ENGINE = ${engine:AggregatingMergeTree()}
PARTITION BY toYYYYMM(day)
ORDER BY (day, subdistrict, cell, category, discovered_by);

${distributed:cases_daily:sipHash64(subdistrict)};

CREATE MATERIALIZED VIEW IF NOT EXISTS ${view:cases_daily_mv} ${on_cluster} TO ${local:cases_daily}
AS SELECT
    toDate(created_at, 'Asia/Shanghai') AS day,
    subdistrict, cell, category, discovered_by,
    uniqExactState(case_id) AS cases
FROM ${local:cases}
GROUP BY day, subdistrict, cell, category, discovered_by;

-- Rows stored before this migration: the same aggregation, safe to repeat (distinct counts).
INSERT INTO ${ref:cases_daily}
SELECT toDate(created_at, 'Asia/Shanghai') AS day, subdistrict, cell, category, discovered_by,
       uniqExactState(case_id) AS cases
FROM ${ref:cases}
GROUP BY day, subdistrict, cell, category, discovered_by;

CREATE TABLE IF NOT EXISTS ${table:events_daily} ${on_cluster}
(
    day          Date,
    subdistrict  String,
    cell         String,
    category     String,
    source       String,
    events       AggregateFunction(uniqExact, String),
    merged       AggregateFunction(uniqExact, String)
)
ENGINE = ${engine:AggregatingMergeTree()}
PARTITION BY toYYYYMM(day)
ORDER BY (day, subdistrict, cell, category, source);

${distributed:events_daily:sipHash64(subdistrict)};

CREATE MATERIALIZED VIEW IF NOT EXISTS ${view:events_daily_mv} ${on_cluster} TO ${local:events_daily}
AS SELECT
    toDate(received_at, 'Asia/Shanghai') AS day,
    subdistrict, cell, category, source,
    uniqExactState(event_id) AS events,
    uniqExactStateIf(event_id, merged = 1) AS merged
FROM ${local:events}
GROUP BY day, subdistrict, cell, category, source;

INSERT INTO ${ref:events_daily}
SELECT toDate(received_at, 'Asia/Shanghai') AS day, subdistrict, cell, category, source,
       uniqExactState(event_id) AS events, uniqExactStateIf(event_id, merged = 1) AS merged
FROM ${ref:events}
GROUP BY day, subdistrict, cell, category, source;
