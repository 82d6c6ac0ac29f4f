-- The four tables of CONTRACTS.md ("ClickHouse") and the columns the reports need.
-- Every table de-duplicates by its stable key (ReplacingMergeTree): a replayed batch adds no logical row.
-- Deduplication happens at merge time, so readers use FINAL (cases: the highest `revision` wins) or count
-- distinct keys. Partition keys use only columns that never change for a key (created_at, received_at, at,
-- minute), because ReplacingMergeTree only collapses rows that sit in the same partition.
-- Placeholders: ${db}, ${on_cluster}, ${table:NAME} (the table that stores rows), ${engine:...} (made
-- Replicated* in cluster mode), ${distributed:NAME:SHARDING_KEY} (a Distributed table in cluster mode only).

CREATE TABLE IF NOT EXISTS ${table:cases} ${on_cluster}
(
    case_id         String,
    category        String,
    discovered_by   String,              -- citizen | patrol | sensor: the source of the first report
    cell            String,              -- '' when the case could not be placed in a cell
    subdistrict     String,
    grid_kind       String,
    team            String,              -- enforcement | handling | supervision
    status          String,              -- new | dispatched | accepted | resolved | verified | closed
    priority        Int16,
    created_at      DateTime,
    due_at          Nullable(DateTime),
    closed_at       Nullable(DateTime),  -- NULL while open
    reports         UInt32,
    sources         Array(String),
    reopened        UInt16,
    rule_id         String,
    ruleset_version String,
    grid_version    String,
    revision        UInt64
)
ENGINE = ${engine:ReplacingMergeTree(revision)}
PARTITION BY toYYYYMM(created_at)
ORDER BY case_id;

${distributed:cases:sipHash64(subdistrict)};

CREATE TABLE IF NOT EXISTS ${table:events} ${on_cluster}
(
    event_id      String,
    source        String,                -- hotline | patrol | iot
    case_id       String,
    category      String,
    cell          String,
    subdistrict   String,
    grid_kind     String,
    received_at   DateTime,              -- when the source says it happened
    ingested_at   DateTime,
    lon           Nullable(Float64),
    lat           Nullable(Float64),
    snapped       UInt8,
    merged        UInt8,
    grid_version  String,
    request_type  String,
    sensor_type   String,
    value         Nullable(Float64),
    description   String                 -- masked by the worker: no phone or ID numbers
)
ENGINE = ${engine:ReplacingMergeTree()}
PARTITION BY toYYYYMM(received_at)
ORDER BY event_id;

${distributed:events:sipHash64(subdistrict)};

CREATE TABLE IF NOT EXISTS ${table:case_transitions} ${on_cluster}
(
    case_id  String,
    seq      UInt32,
    status   String,
    team     String,
    actor    String,
    at       DateTime,
    reason   String
)
ENGINE = ${engine:ReplacingMergeTree()}
PARTITION BY toYYYYMM(at)
ORDER BY (case_id, seq);

-- Transitions carry no sub-district; sharding by case id keeps a case's steps together on one shard.
${distributed:case_transitions:sipHash64(case_id)};

CREATE TABLE IF NOT EXISTS ${table:sensor_readings} ${on_cluster}
(
    sensor_id    String,
    sensor_type  String,
    minute       DateTime,
    readings     UInt32,
    last_value   Float64,
    max_value    Float64,
    cell         String
)
ENGINE = ${engine:ReplacingMergeTree()}
PARTITION BY toYYYYMM(minute)
ORDER BY (sensor_id, minute);

${distributed:sensor_readings:sipHash64(sensor_id)};
