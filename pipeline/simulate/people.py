"""Fake hotline callers and field staff: names and phone numbers that look real and are all made up.

Caller names are what the privacy tests search the pipeline's outputs for, so each one must be specific: three
characters, and never a substring of any other text the simulator writes (road names, descriptions, ...).
Phone numbers use real mainland mobile prefixes and Shanghai landlines, with random subscriber digits.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

SURNAMES = ("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘"
            "蒋蔡余杜叶程苏魏吕丁沈姚陆顾钱严汪金")
GIVEN = ("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红玲建国文斌志宏俊峰晓雯佳怡欣悦子涵浩宇梓轩"
         "雨婷嘉琪思远振华美琴国平月娥金宝凤珍桂芳荣根")
MOBILE_PREFIXES = ("130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152", "153",
                   "155", "156", "158", "159", "177", "180", "181", "182", "183", "185", "186", "187", "188",
                   "189", "199")


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    phone: str


class CallerBook:
    """Makes distinct callers; some callers call more than once (the same person, the same phone)."""

    def __init__(self, rng: random.Random, forbidden_text: str) -> None:
        self.rng = rng
        self.forbidden = forbidden_text
        self.callers: list[Caller] = []
        self._names: set[str] = set()
        self._phones: set[str] = set()

    def caller(self) -> Caller:
        if self.callers and self.rng.random() < 0.06:      # a repeat caller
            return self.rng.choice(self.callers)
        rng = self.rng
        while True:
            name = rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN)
            if name not in self._names and name not in self.forbidden and name[1:] not in self.forbidden:
                break
        while True:
            if rng.random() < 0.85:
                phone = rng.choice(MOBILE_PREFIXES) + f"{rng.randrange(10**8):08d}"
            else:
                phone = f"021-{rng.choice('5623'):s}{rng.randrange(10**7):07d}"
            if phone not in self._phones:
                break
        c = Caller(name, phone)
        self.callers.append(c)
        self._names.add(name)
        self._phones.add(phone)
        return c


    def mark(self) -> int:
        """A point to `forget` back to."""
        return len(self.callers)

    def forget(self, mark: int) -> None:
        """Forget the callers made since `mark`: the calls of a planned incident that found no place never
        happen, and a month's discarded attempts would otherwise use up the names (and become repeat callers
        who never called)."""
        for c in self.callers[mark:]:
            self._names.discard(c.name)
            self._phones.discard(c.phone)
        del self.callers[mark:]


def staff_id(team: str, rng: random.Random) -> str:
    """A field officer's staff number (never a person's name on the wire)."""
    prefix = {"enforcement": "ZF", "handling": "CZ", "supervision": "JD", "patrol": "XC"}.get(team, "GZ")
    return f"{prefix}{rng.randrange(1, 400):04d}"
