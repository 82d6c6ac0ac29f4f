"""The web side of cityops: operations centre, team feeds and the Open311 ingest API (issue #7).

Modules, in flow order:
- `users`     the users file (YAML): people with a role and a team, ingest clients with API keys;
- `auth`      the server secret, signed session tokens, CSRF tokens, role checks;
- `live`      `LiveBoard`: the latest state of every case, kept in memory, and the views computed from it
              (queues per team and sub-district, cell counts and health, hot spots, team feeds);
- `feed`      the background Kafka consumer that keeps a `LiveBoard` current, and the consumer-lag probe;
- `outbox`    what the web writes to Kafka (case updates, patrol reports, hotline tickets);
- `archive`   history of a case from ClickHouse (its reports and its timeline);
- `open311`   the GeoReport v2 ingest API for the hotline;
- `ratelimit`, `metrics`, `mapdata`, `warnings`;
- `app`       the aiohttp application: routes, middlewares, pages and the live stream (SSE);
- `cli`       `cityops web` and `cityops web adduser`.
"""
