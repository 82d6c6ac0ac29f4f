-- Photos (README "Photos"): a resolve's "after" photo is kept on its `resolved` step of the timeline, beside
-- the reports' "before" photos (events.media_url: a ticket's media link or a patrol's photo_url).
--   photo_url   a link (http/https) or a path of the web server's photo store (/photos/<id>.jpg); '' otherwise
--
-- ClickHouse 18.16 has no `ADD COLUMN IF NOT EXISTS`: `cityops db migrate` makes each such statement idempotent
-- itself (pipeline/sink/migrate.py), as in 0007.
ALTER TABLE ${table:case_transitions} ${on_cluster} ADD COLUMN IF NOT EXISTS photo_url String;
ALTER TABLE ${ref:case_transitions} ${on_cluster} ADD COLUMN IF NOT EXISTS photo_url String;
