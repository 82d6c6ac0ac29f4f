-- Patrol reports per inspector (监督员上报, issue #20: 有效上报率). One row per patrol report id and what became of
-- it, written by the worker:
--   filed        the report opened a case (cases stage)
--   joined       the report was merged into an existing case (cases stage)
--   duplicate    the same report id came again after it was applied (cases stage; counted once per report id)
--   dead_letter  the report was refused at ingest (malformed, a category not in the taxonomy, a position that
--                is no WGS84 point), with the refusal's reason; only when its inspector can still be read from it
-- Inspectors are staff: their ids are stored; a patrol report carries no caller's personal data. A report id
-- that has no readable id in a dead letter is keyed `dead:<topic>:<partition>:<offset>`.
-- ReplacingMergeTree by (inspector, report_id, outcome): a replayed batch writes the same keys again.

CREATE TABLE IF NOT EXISTS ${table:patrol_reports} ${on_cluster}
(
    report_id    String,
    inspector    String,
    team         String,
    observed_at  DateTime,          -- when the patrol says it observed the problem (UTC); the refusal time if unreadable
    outcome      String,            -- filed | joined | duplicate | dead_letter
    reason       String,            -- a dead letter's reason (masked); '' otherwise
    case_id      String,            -- the case it opened or joined; '' otherwise
    subdistrict  String             -- the located report's sub-district; '' for a dead letter
)
ENGINE = ${engine:ReplacingMergeTree()}
PARTITION BY toYYYYMM(observed_at)
ORDER BY (inspector, report_id, outcome);

${distributed:patrol_reports:sipHash64(inspector)};
