-- Open311 GeoReport v2 (README "Open311"): what a service request answer shows that the events table did not
-- keep. Hotline tickets only; every other row (and every row stored before this migration) reads ''.
--   address     the ticket's address_string, masked like its description (no phone or ID numbers)
--   address_id  the id of that address in an address register (Open311 `address_id`), masked the same way
--   media_url   a link (http/https) to the caller's photo or video
--   attributes  the answers to the service's attributes as a JSON object text, {"CODE": "value" | ["v1", ...]}
--
-- ClickHouse 18.16 has no `ADD COLUMN IF NOT EXISTS`: `cityops db migrate` makes each such statement (one
-- column each) idempotent itself (pipeline/migrate.py). In cluster mode the Distributed table is altered as
-- well (`${ref:events}`); on one server that is the same table and the second statement finds the column.
ALTER TABLE ${table:events} ${on_cluster} ADD COLUMN IF NOT EXISTS address String;
ALTER TABLE ${table:events} ${on_cluster} ADD COLUMN IF NOT EXISTS address_id String;
ALTER TABLE ${table:events} ${on_cluster} ADD COLUMN IF NOT EXISTS media_url String;
ALTER TABLE ${table:events} ${on_cluster} ADD COLUMN IF NOT EXISTS attributes String;

ALTER TABLE ${ref:events} ${on_cluster} ADD COLUMN IF NOT EXISTS address String;
ALTER TABLE ${ref:events} ${on_cluster} ADD COLUMN IF NOT EXISTS address_id String;
ALTER TABLE ${ref:events} ${on_cluster} ADD COLUMN IF NOT EXISTS media_url String;
ALTER TABLE ${ref:events} ${on_cluster} ADD COLUMN IF NOT EXISTS attributes String;
