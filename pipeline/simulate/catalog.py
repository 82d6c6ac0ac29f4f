"""What people report: category mixes per source, descriptions, request types, channels, daily curves.

The mixes are shaped on published 12345 / digital-urban-management statistics of Shanghai districts (street
order, rubbish and illegal advertising dominate; emergencies are rare but urgent); the exact weights are ours.
Every code is checked against the taxonomy when the module is used (`check_codes`).
"""

from __future__ import annotations

import random
from bisect import bisect_right
from itertools import accumulate

from pipeline.model.taxonomy import Taxonomy

# Hotline tickets about urban management, by category (relative weights).
HOTLINE_MIX: dict[str, float] = {
    "E0501": 9, "E0504": 7, "E0505": 8, "E0506": 6, "E0507": 5, "E0508": 6, "E0503": 3, "E0510": 3,
    "E0502": 1.5, "E0511": 1.5, "E0513": 1, "E0509": 1, "E0512": 0.5,
    "E0102": 7, "E0103": 4, "E0104": 4, "E0101": 4, "E0116": 3, "E0108": 2, "E0107": 1.5, "E0106": 2,
    "E0113": 1, "E0110": 4, "E0112": 1, "E0115": 1, "E0118": 0.5, "E0117": 0.5,
    "E0201": 4, "E0202": 2, "E0203": 1, "E0204": 1, "E0205": 1,
    "E0301": 5, "E0302": 2, "E0303": 1.5, "E0304": 1.5, "E0305": 0.5,
    "E0404": 3, "E0406": 1.5, "E0402": 1, "E0401": 0.5, "E0408": 1, "E0403": 0.3,
    "P0101": 1.5, "P0102": 1.5, "P0103": 1, "P0104": 1, "P0118": 3, "P0305": 1.5, "P0301": 1.5,
    "P0402": 2, "P0405": 1, "P0209": 1, "P0210": 1, "P0211": 1, "P0126": 1, "P0407": 0.5,
}

# Patrol teams find street order, rubbish and advertising; they are proactive discovery.
PATROL_MIX: dict[str, float] = {
    "E0501": 8, "E0504": 8, "E0506": 7, "E0507": 6, "E0503": 3, "E0511": 3, "E0505": 4, "E0513": 2,
    "E0102": 8, "E0103": 4, "E0104": 4, "E0106": 3, "E0108": 2, "E0101": 2,
    "E0201": 7, "E0202": 3, "E0203": 2, "E0205": 1,
    "E0303": 2, "E0304": 2, "E0302": 1,
    "P0101": 1, "P0103": 1, "P0104": 1, "P0118": 2, "P0211": 1, "P0305": 2, "P0402": 1, "P0407": 1,
}

# Chronic hot spots that come back within a day (street order: the correlation window is a few hours).
HOTSPOT_CATEGORIES = ("E0501", "E0504", "E0510", "E0503")

REQUEST_TYPES = (("complaint", 52), ("report", 24), ("help", 12), ("consult", 8), ("suggestion", 4))
CHANNELS = (("phone", 62), ("app", 15), ("wechat", 17), ("web", 6))

# Share of 12345 tickets per local hour (0..23): quiet at night, a morning peak and an evening peak.
HOURLY_CURVE = (0.6, 0.35, 0.25, 0.2, 0.25, 0.6, 1.6, 3.2, 5.2, 6.8, 7.0, 6.2, 5.0, 5.2, 5.8, 5.9,
                5.6, 5.4, 5.6, 6.2, 6.4, 5.2, 3.3, 1.6)

DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    "E05": ("{where}有人摆摊占道经营，行人只能走机动车道", "{where}路边经营，晚上一直有人",
            "{where}人行道被占，影响通行", "{where}车辆乱停，堵住了小区出入口", "{where}共享单车堆满人行道",
            "{where}商铺外放音响，声音很大，噪音扰民"),
    "E01": ("{where}垃圾堆了好几天没人清运，气味很大", "{where}有人乱倒建筑垃圾", "{where}路面脏，落叶和垃圾很多",
            "{where}有人私自搭建棚子", "{where}饭店油烟直排，楼上住户没法开窗",
            "{where}路面坑洼，老人差点摔倒"),
    "E02": ("{where}墙上贴满小广告", "{where}有人发传单", "{where}店招牌歪了，担心掉下来砸到人",
            "{where}广告牌占了人行道"),
    "E03": ("{where}工地晚上还在施工，噪音很大", "{where}工地扬尘严重，没有覆盖", "{where}施工围挡占道，没有告示"),
    "E04": ("{where}下水道堵了，污水漫出来", "{where}路面积水很深，车辆无法通行",
            "{where}自来水管破了，水一直在冒",
            "{where}路面塌陷，有个大坑", "{where}电线掉下来了，很危险", "{where}闻到燃气味"),
    "P01": ("{where}井盖松动，车压过去响声很大", "{where}井盖丢失了，很危险", "{where}路灯不亮，晚上很黑",
            "{where}健身器材坏了"),
    "P": ("{where}设施损坏，请派人维修", "{where}交通护栏倒了", "{where}行道树倒伏挡路", "{where}垃圾箱坏了",
          "{where}公厕无法使用"),
}

PATROL_NOTES = ("巡查发现，已拍照取证", "现场核实，需处置", "巡查发现，已告知商户整改", "复查仍存在", "已现场劝导")
FEEDBACK_NOTES = {
    "accept": ("已接单", "收到，安排人员前往", "已派单至片区"),
    "resolve": ("已处置完毕", "现场整改完成", "已清运", "已修复", "已劝离并教育"),
    "verify": ("核查属实，已结案", "复核通过", "回访市民满意"),
    "reject": ("不属于本队职责范围", "非本部门职责，请重新派单", "职责不符，退回"),
    "reopen": ("复核未通过，问题依旧", "回访不满意，重新处理", "现场核查仍存在"),
    "extend": ("需协调产权单位，申请延期", "待配件到货，申请延期", "涉及多部门，申请延期处置"),
}


def description_for(category: str, rng: random.Random) -> str:
    """A caller's free-text account of a problem of `category` (with `{where}` left for the place)."""
    for prefix in (category[:3], category[:1]):
        if prefix in DESCRIPTIONS:
            return rng.choice(DESCRIPTIONS[prefix])
    return "{where}" + "有问题，请处理"


class Weighted:
    """Draws keys of a weight table with a given `random.Random` (deterministic for a seed)."""

    def __init__(self, table: dict[str, float] | tuple[tuple[str, float], ...]) -> None:
        items = sorted(table.items()) if isinstance(table, dict) else list(table)
        self.keys = [k for k, _ in items]
        self.cum = list(accumulate(float(w) for _, w in items))

    def draw(self, rng: random.Random) -> str:
        return self.keys[bisect_right(self.cum, rng.random() * self.cum[-1])]


def check_codes(taxonomy: Taxonomy) -> None:
    """Raise ValueError if a mix names a code the taxonomy does not know (it would be dead-lettered)."""
    unknown = sorted({*HOTLINE_MIX, *PATROL_MIX, *HOTSPOT_CATEGORIES} - set(taxonomy.codes()))
    if unknown:
        raise ValueError(f"simulator category mixes name codes outside the taxonomy: {', '.join(unknown)}")
