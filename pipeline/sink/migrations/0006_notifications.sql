-- The notifier's record (pipeline/notify, README "Notifications"): one row per attempt to deliver one
-- assignment to one channel of one target. `delivery_id` is the idempotency key the receiver saw. Statuses:
-- delivered | retry (failed, tried again) | failed (failed, given up: dead-lettered) | interrupted (the notifier
-- stopped while the attempt was on the wire; resent with the same key) | missing (no such target in the file).
-- A restarted notifier writes the attempts it restores again: ReplacingMergeTree keeps one row per
-- (delivery_id, attempt); `sent_at` never changes for an attempt, so copies share a partition.
-- No DateTime64 (ClickHouse 18.16 lacks it): sub-second times are the *_ms columns.

CREATE TABLE IF NOT EXISTS ${table:notifications} ${on_cluster}
(
    delivery_id          String,
    attempt              UInt16,
    assignment_id        String,
    case_id              String,
    target               String,
    channel              String,
    channel_kind         String,             -- webhook | wecom | dingtalk | sms | email
    kind                 String,             -- the assignment's: dispatch | reroute | rework | escalation
    priority             Int16,
    status               String,
    error                String,             -- why it failed (masked); '' when delivered
    sent_at              DateTime,           -- when the attempt started (UTC)
    latency_ms           UInt32,             -- how long the attempt took
    since_assignment_ms  UInt32              -- from the assignment on Kafka to the end of this attempt
)
ENGINE = ${engine:ReplacingMergeTree()}
PARTITION BY toYYYYMM(sent_at)
ORDER BY (case_id, delivery_id, attempt);

${distributed:notifications:sipHash64(case_id)};
