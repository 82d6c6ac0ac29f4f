"""Malformed messages, the kind real upstream systems send: each one must end in the dead-letter topic.

Every variant is built from a valid-looking message and broken in one way the worker's decoder refuses
(pipeline.stages.decode). Raw text that is not a JSON object never carries a caller's name: the dead-letter topic keeps
such bytes nearly as they came, so a name there could not be masked.
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

import orjson

from pipeline.simulate.config import SHANGHAI


def _local(at: datetime) -> str:
    return at.astimezone(SHANGHAI).isoformat(timespec="seconds")


def hotline(at: datetime, n: int, rng: random.Random, caller: dict[str, str]) -> tuple[str, bytes, str]:
    """(key, bytes, what is wrong) of a broken 12345 ticket."""
    ticket = f"BAD{at.astimezone(SHANGHAI):%Y%m%d}{n:05d}"
    base: dict[str, Any] = {"service_request_id": ticket, "requested_datetime": _local(at),
                            "service_code": "E0501", "description": "路口有人摆摊", "request_type": "complaint",
                            "channel": "phone", "lat": 31.2651, "long": 121.4905, "caller": caller}
    kind = rng.choice(("no_code", "unknown_code", "swapped", "naive_time", "future", "half_coords",
                       "truncated", "not_object", "not_utf8", "text"))
    msg = dict(base)
    if kind == "no_code":
        del msg["service_code"]
    elif kind == "unknown_code":
        msg["service_code"] = "E9999"
    elif kind == "swapped":
        msg["lat"], msg["long"] = base["long"], base["lat"]
    elif kind == "naive_time":
        msg["requested_datetime"] = at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")
    elif kind == "future":
        msg["requested_datetime"] = "2099-01-01T08:00:00+08:00"
    elif kind == "half_coords":
        del msg["long"]
    else:
        del msg["caller"]
        raw = orjson.dumps(msg)
        if kind == "truncated":
            return ticket, raw[: len(raw) // 2], kind
        if kind == "not_object":
            return ticket, orjson.dumps([msg]), kind
        if kind == "not_utf8":
            return ticket, raw.replace("摆摊".encode(), "摆摊".encode("gb18030")), kind
        return ticket, f"工单 {ticket} 路口有人摆摊".encode(), kind
    return ticket, orjson.dumps(msg), kind


def patrol(at: datetime, n: int, rng: random.Random) -> tuple[str, bytes, str]:
    rid = f"BADXC{at.astimezone(SHANGHAI):%Y%m%d}-{n:05d}"
    msg: dict[str, Any] = {"report_id": rid, "observed_at": _local(at), "team": "patrol-310109009-1",
                           "inspector": "XC0001", "category": "E0102", "lat": 31.2652, "lon": 121.4906}
    kind = rng.choice(("no_position", "unknown_code", "bad_time", "lat_string", "truncated"))
    if kind == "no_position":
        del msg["lat"], msg["lon"]
    elif kind == "unknown_code":
        msg["category"] = "X0102"
    elif kind == "bad_time":
        msg["observed_at"] = "yesterday afternoon"
    elif kind == "lat_string":
        msg["lat"] = "31.2652"
    else:
        raw = orjson.dumps(msg)
        return rid, raw[: len(raw) - 7], kind
    return rid, orjson.dumps(msg), kind


def reading(at: datetime, rng: random.Random, sensor_id: str, sensor_type: str, other_type: str,
            ) -> tuple[str, bytes, str]:
    """A broken reading of a registered sensor (so a wrong type is caught against the registry)."""
    msg: dict[str, Any] = {"sensor_id": sensor_id, "sensor_type": sensor_type, "value": 1.0,
                           "measured_at": at.strftime("%Y-%m-%dT%H:%M:%SZ")}
    kind = rng.choice(("value_text", "no_time", "wrong_type", "value_null", "garbage"))
    if kind == "value_text":
        msg["value"] = "ERR"
    elif kind == "no_time":
        del msg["measured_at"]
    elif kind == "wrong_type":
        msg["sensor_type"] = other_type
    elif kind == "value_null":
        msg["value"] = None
    else:
        return sensor_id, b"\x00\x17\xff" + sensor_id.encode() + b"\xfe\x00", kind
    return sensor_id, orjson.dumps(msg), kind


def update(at: datetime, rng: random.Random, case_id: str) -> tuple[str, bytes, str]:
    msg: dict[str, Any] = {"case_id": case_id, "action": "resolve", "team": "handling", "actor": "CZ0001",
                           "at": _local(at)}
    kind = rng.choice(("unknown_action", "unknown_team", "not_case_id", "no_actor"))
    if kind == "unknown_action":
        msg["action"] = "close"
    elif kind == "unknown_team":
        msg["team"] = "police"
    elif kind == "not_case_id":
        msg["case_id"] = f"{rng.randrange(10**6):06d}"
    else:
        del msg["actor"]
    return str(msg["case_id"]), orjson.dumps(msg), kind
