"""The Open311 services: the taxonomy as services, with the attributes of pipeline/data/service_attributes.yaml.

`load_catalogue()` reads the attributes file strictly (rules.nodes: every mistake names file:line:column and the
key; all of a file's mistakes are reported at once, as `ServiceAttributesError.problems`). A `Catalogue` answers
the service list, each service definition, the service notice, and checks a POST's attribute answers:

- an attribute the service does not declare: refused;
- a required attribute without an answer: refused;
- `number` must be a finite number (within `min`/`max` when given), `datetime` an ISO 8601 date or time,
  `string` one line, `text` at most 1,000 characters, `singlevaluelist` one of its keys, `multivaluelist` one
  or more of its keys (each once).

The answers come back normalized (numbers as written by Python, lists as lists) for the hotline message's
`attributes` object. A refusal is an `InvalidEvent` whose reason names the attribute as the POST named it:
`attribute[STALLS]: ...`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from yaml.nodes import Node

from pipeline.model.taxonomy import Taxonomy, default_taxonomy
from pipeline.stages.fields import ATTRIBUTE_CODE, MAX_ATTRIBUTE_TEXT, InvalidEvent
from rules.errors import RulesError
from rules.nodes import NodeReader, compose_file

ATTRIBUTES_FILE = Path(__file__).resolve().parent.parent / "data" / "service_attributes.yaml"
KIND = "cityops-open311-services"
DATATYPES = ("string", "number", "datetime", "text", "singlevaluelist", "multivaluelist")
LISTS = ("singlevaluelist", "multivaluelist")
DEFAULT_NOTICE = "已受理，将派遣至处置队伍 received; it will be dispatched to a team"
_ATTRIBUTE_KEYS = ("code", "datatype", "required", "variable", "order", "description", "datatype_description",
                   "min", "max", "values")
Json = dict[str, Any]


class ServiceAttributesError(ValueError):
    """An attributes file that cannot be used; `problems` holds one `file:line:column: key: message` each."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class Value:
    """One option of a list attribute: `key` is what a client sends, `name` what a person reads."""

    key: str
    name: str


@dataclass(frozen=True)
class Attribute:
    """One question of a service definition (GeoReport v2 `attribute`)."""

    code: str
    datatype: str
    order: int
    description: str
    required: bool = False
    variable: bool = True
    datatype_description: str | None = None
    values: tuple[Value, ...] = ()
    minimum: float | None = None
    maximum: float | None = None

    def to_doc(self) -> Json:
        """The spec's `attribute` element, fields in the spec's order."""
        return {"variable": self.variable, "code": self.code, "datatype": self.datatype,
                "required": self.required, "datatype_description": self.datatype_description,
                "order": self.order, "description": self.description,
                "values": [{"key": v.key, "name": v.name} for v in self.values]}

    def check(self, answers: list[str]) -> str | list[str]:
        """The normalized answer to this attribute (InvalidEvent naming it when the answer does not fit)."""
        where = f"attribute[{self.code}]"
        if self.datatype == "multivaluelist":
            allowed = {v.key for v in self.values}
            wrong = [a for a in answers if a not in allowed]
            if wrong:
                raise InvalidEvent(f"{where}: {wrong[0][:40]!r} is not one of {', '.join(sorted(allowed))}")
            if len(set(answers)) != len(answers):
                raise InvalidEvent(f"{where}: a value is given twice")
            return answers
        if len(answers) != 1:
            raise InvalidEvent(f"{where}: takes one value ({self.datatype}), got {len(answers)}")
        answer = answers[0]
        if self.datatype == "singlevaluelist":
            keys = [v.key for v in self.values]
            if answer not in keys:
                raise InvalidEvent(f"{where}: {answer[:40]!r} is not one of {', '.join(keys)}")
        elif self.datatype == "number":
            return self._number(answer, where)
        elif self.datatype == "datetime":
            _iso_time(answer, where)
        elif len(answer) > MAX_ATTRIBUTE_TEXT:
            raise InvalidEvent(f"{where}: longer than {MAX_ATTRIBUTE_TEXT} characters")
        elif self.datatype == "string" and ("\n" in answer or "\r" in answer):
            raise InvalidEvent(f"{where}: one line only (datatype string; text allows line breaks)")
        return answer

    def _number(self, answer: str, where: str) -> str:
        try:
            value = float(answer)
        except ValueError:
            raise InvalidEvent(f"{where}: must be a number, got {answer[:40]!r}") from None
        if not math.isfinite(value):
            raise InvalidEvent(f"{where}: must be a finite number")
        if self.minimum is not None and value < self.minimum:
            raise InvalidEvent(f"{where}: {answer} is below the smallest accepted value {self.minimum:g}")
        if self.maximum is not None and value > self.maximum:
            raise InvalidEvent(f"{where}: {answer} is above the largest accepted value {self.maximum:g}")
        return f"{value:g}" if value.is_integer() and abs(value) < 1e15 else repr(value)


def _float(bound: float | bool | None) -> float | None:
    return bound if isinstance(bound, float) else None


def _iso_time(answer: str, where: str) -> None:
    try:
        if len(answer) == 10:
            date.fromisoformat(answer)
        else:
            datetime.fromisoformat(answer.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidEvent(f"{where}: not an ISO 8601 date or time: {answer[:40]!r}") from None


@dataclass(frozen=True)
class ServiceSpec:
    """What the attributes file says about one service."""

    code: str
    attributes: tuple[Attribute, ...] = ()
    notice: str | None = None


@dataclass(frozen=True)
class Catalogue:
    """The services: every taxonomy category, with the attributes and notices of the attributes file."""

    taxonomy: Taxonomy
    specs: Mapping[str, ServiceSpec] = field(default_factory=dict)

    def service_list(self) -> list[Json]:
        """GET services: one entry per category (`group` = its major class)."""
        majors = self.taxonomy.majors()
        out = []
        for code in self.taxonomy.codes():
            cat = self.taxonomy.categories[code]
            kind = "部件 part" if cat.kind == "part" else "事件 event"
            out.append({"service_code": code, "service_name": cat.name,
                        "description": f"{cat.major_name} / {cat.name}",
                        "metadata": bool(self.attributes(code)), "type": "realtime",
                        "keywords": f"{kind}, {cat.major_name}, {cat.name}",
                        "group": f"{cat.major_code} {majors.get(cat.major_code, '')}".strip()})
        return out

    def attributes(self, code: str) -> tuple[Attribute, ...]:
        spec = self.specs.get(code)
        return spec.attributes if spec is not None else ()

    def definition(self, code: str) -> Json:
        """GET services/{code}: the service definition (attributes in their order)."""
        return {"service_code": code, "attributes": [a.to_doc() for a in self.attributes(code)]}

    def notice(self, code: str | None) -> str:
        spec = self.specs.get(code or "")
        return spec.notice if spec is not None and spec.notice else DEFAULT_NOTICE

    def label(self, code: str, attribute: str) -> str:
        """The question of an attribute (its code when the service no longer declares it)."""
        found = next((a for a in self.attributes(code) if a.code == attribute), None)
        return found.description if found is not None else attribute

    def check(self, code: str, answers: Mapping[str, list[str]]) -> dict[str, str | list[str]]:
        """A POST's attribute answers (code -> the values given) checked against the service's definition;
        returns them normalized. InvalidEvent names the first attribute that does not fit."""
        declared = {a.code: a for a in self.attributes(code)}
        for given in answers:
            if given not in declared:
                known = ", ".join(declared) or "none"
                raise InvalidEvent(f"attribute[{given[:64]}]: not an attribute of service {code} "
                                   f"(its attributes: {known})")
        out: dict[str, str | list[str]] = {}
        for attribute in sorted(declared.values(), key=lambda a: a.order):
            values = [v.strip() for v in answers.get(attribute.code, []) if v.strip()]
            if not values:
                if attribute.required:
                    raise InvalidEvent(f"attribute[{attribute.code}]: required ({attribute.description})")
                continue
            if not attribute.variable:
                raise InvalidEvent(f"attribute[{attribute.code}]: is information only and takes no answer")
            out[attribute.code] = attribute.check(values)
        return out


def load_catalogue(taxonomy: Taxonomy, path: Path = ATTRIBUTES_FILE, text: str | None = None) -> Catalogue:
    """The catalogue of `taxonomy` with the attributes file at `path` (ServiceAttributesError when it is wrong)."""
    try:
        root = compose_file(path, text)
    except RulesError as err:
        raise ServiceAttributesError(err.problems) from err
    reader = NodeReader(str(path))
    specs = _Parser(reader, taxonomy).file(root)
    if reader.problems:
        raise ServiceAttributesError(reader.problems)
    return Catalogue(taxonomy, specs)


@lru_cache(maxsize=1)
def default_catalogue() -> Catalogue:
    """The shipped attributes file over the shipped taxonomy (read once)."""
    return load_catalogue(default_taxonomy())


class _Parser:
    def __init__(self, reader: NodeReader, taxonomy: Taxonomy) -> None:
        self.r = reader
        self.taxonomy = taxonomy

    def file(self, root: Node | None) -> dict[str, ServiceSpec]:
        top = self.r.mapping(root, "", allowed=("version", "kind", "shared", "services"),
                             required=("version", "kind", "services"))
        if top is None:
            return {}
        if "version" in top:
            self.r.integer(top["version"].value, "version", 1, 1)
        kind = self.r.text(top["kind"].value, "kind") if "kind" in top else None
        if kind is not None and kind != KIND:
            self.r.problem(top["kind"].value, "kind", f"must be {KIND!r}")
        services = self.r.mapping(top["services"].value, "services") if "services" in top else None
        specs: dict[str, ServiceSpec] = {}
        for code, entry in (services or {}).items():
            key = f"services.{code}"
            if code not in self.taxonomy:
                self.r.problem(entry.key_node, key, "not a category code of the taxonomy (taxonomy.csv)")
                continue
            spec = self.service(code, entry.value, key)
            if spec is not None:
                specs[code] = spec
        return specs

    def service(self, code: str, node: Node, key: str) -> ServiceSpec | None:
        fields = self.r.mapping(node, key, allowed=("notice", "attributes"))
        if fields is None:
            return None
        notice = self.r.text(fields["notice"].value, f"{key}.notice") if "notice" in fields else None
        attributes: list[Attribute] = []
        items = self.r.items(fields["attributes"].value, f"{key}.attributes", allow_scalar=False) \
            if "attributes" in fields else []
        for item, item_key in items or []:
            attribute = self.attribute(item, item_key)
            if attribute is None:
                continue
            if any(a.code == attribute.code for a in attributes):
                self.r.problem(item, f"{item_key}.code", f"{attribute.code!r} is declared twice")
            elif any(a.order == attribute.order for a in attributes):
                self.r.problem(item, f"{item_key}.order", f"order {attribute.order} is used twice")
            else:
                attributes.append(attribute)
        return ServiceSpec(code, tuple(sorted(attributes, key=lambda a: a.order)), notice)

    def attribute(self, node: Node, key: str) -> Attribute | None:
        f = self.r.mapping(node, key, allowed=_ATTRIBUTE_KEYS, required=("code", "datatype", "order",
                                                                          "description"))
        if f is None or not {"code", "datatype", "order", "description"} <= set(f):
            return None
        code = self.r.text(f["code"].value, f"{key}.code")
        if code is not None and not ATTRIBUTE_CODE.fullmatch(code):
            self.r.problem(f["code"].value, f"{key}.code", "1-64 of A-Z a-z 0-9 _ . - (it is a POST parameter)")
            code = None
        datatype = self.r.text(f["datatype"].value, f"{key}.datatype")
        if datatype is not None and datatype not in DATATYPES:
            self.r.problem(f["datatype"].value, f"{key}.datatype", f"must be one of {', '.join(DATATYPES)}")
            datatype = None
        order = self.r.integer(f["order"].value, f"{key}.order", 1, 1000)
        description = self.r.text(f["description"].value, f"{key}.description")
        required = self._flag(f, "required", key, False)
        variable = self._flag(f, "variable", key, True)
        hint = self.r.text(f["datatype_description"].value, f"{key}.datatype_description") \
            if "datatype_description" in f else None
        values = self.values(f, key, datatype)
        low, high = (self._bound(f, name, key, datatype) for name in ("min", "max"))
        if required and variable is False:
            self.r.problem(node, f"{key}.required", "an attribute that takes no input cannot be required")
        if None in (code, datatype, order, description, required, variable, values) or False in (low, high):
            return None
        assert code is not None and datatype is not None and order is not None and description is not None
        return Attribute(code, datatype, order, description, bool(required), bool(variable), hint,
                         tuple(values or ()), _float(low), _float(high))

    def _flag(self, f: dict[str, Any], name: str, key: str, default: bool) -> bool | None:
        return self.r.boolean(f[name].value, f"{key}.{name}") if name in f else default

    def _bound(self, f: dict[str, Any], name: str, key: str, datatype: str | None) -> float | None | bool:
        """A `min`/`max` (number attributes only); False after a problem, None when absent."""
        if name not in f:
            return None
        if datatype != "number":
            self.r.problem(f[name].value, f"{key}.{name}", "only number attributes have bounds")
            return False
        value = self.r.number(f[name].value, f"{key}.{name}")
        return False if value is None else value

    def values(self, f: dict[str, Any], key: str, datatype: str | None) -> list[Value] | None:
        """The options of a list attribute ([] for other types); None after a problem."""
        if datatype not in LISTS:
            if "values" in f:
                self.r.problem(f["values"].value, f"{key}.values", f"only {' and '.join(LISTS)} have values")
                return None
            return []
        if "values" not in f:
            self.r.problem(f["datatype"].value, f"{key}.values", f"a {datatype} needs values")
            return None
        out: list[Value] = []
        for item, item_key in self.r.items(f["values"].value, f"{key}.values", allow_scalar=False) or []:
            fields = self.r.mapping(item, item_key, allowed=("key", "name"), required=("key", "name"))
            if fields is None or len(fields) != 2:
                return None
            value_key = self.r.text(fields["key"].value, f"{item_key}.key")
            name = self.r.text(fields["name"].value, f"{item_key}.name")
            if value_key is None or name is None:
                return None
            if any(v.key == value_key for v in out):
                self.r.problem(fields["key"].value, f"{item_key}.key", f"{value_key!r} is listed twice")
                return None
            if "," in value_key:
                self.r.problem(fields["key"].value, f"{item_key}.key", "a key has no comma (answers are listed "
                                                                      "comma-separated)")
                return None
            out.append(Value(value_key, name))
        return out or None
