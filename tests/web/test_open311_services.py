"""The service attributes file (pipeline/data/service_attributes.yaml): read strictly, every mistake named by file,
line, column and key; and the answers a POST gives checked against it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.model.taxonomy import default_taxonomy
from pipeline.stages.fields import InvalidEvent
from pipeline.web.open311_services import (
    ATTRIBUTES_FILE,
    Attribute,
    ServiceAttributesError,
    Value,
    default_catalogue,
    load_catalogue,
)

HEAD = "version: 1\nkind: cityops-open311-services\n"
GOOD_ATTRIBUTE = "      - {code: A, datatype: string, order: 1, description: a question}\n"


def problems(text: str) -> list[str]:
    with pytest.raises(ServiceAttributesError) as err:
        load_catalogue(default_taxonomy(), Path("attrs.yaml"), text)
    return err.value.problems


def test_the_shipped_file_loads_and_declares_realistic_services() -> None:
    """Every service is a taxonomy code; list attributes offer at least two values; orders start at 1."""
    catalogue = load_catalogue(default_taxonomy(), ATTRIBUTES_FILE)
    assert {"P0101", "E0501", "E0505", "E0508"} <= set(catalogue.specs)
    for code, spec in catalogue.specs.items():
        assert code in default_taxonomy()
        assert [a.order for a in spec.attributes] == sorted(a.order for a in spec.attributes)
        for a in spec.attributes:
            assert a.datatype not in ("singlevaluelist", "multivaluelist") or len(a.values) >= 2, (code, a.code)
    assert catalogue.definition("E0505")["attributes"][0]["code"] == "PLATE_VISIBLE"
    assert catalogue.notice("E0102").startswith("已受理")


@pytest.mark.parametrize(("body", "where"), [
    ("services: {}\nextra: 1\n", "attrs.yaml:4:1: extra: unknown key"),
    ("services:\n  X9999: {}\n", "attrs.yaml:4:3: services.X9999: not a category code"),
    ("services:\n  E0501:\n    atributes: []\n", "attrs.yaml:5:5: services.E0501.atributes: unknown key; did you mean "
                                                  "'attributes'?"),
    ("services:\n  E0501:\n    attributes:\n      - {code: A, datatype: sting, order: 1, description: q}\n",
     "attrs.yaml:6:29: services.E0501.attributes[0].datatype: must be one of string, number"),
    ("services:\n  E0501:\n    attributes:\n      - {code: A, order: 1, description: q}\n",
     "attrs.yaml:6:9: services.E0501.attributes[0]: missing required key 'datatype'"),
    ("services:\n  E0501:\n    attributes:\n" + GOOD_ATTRIBUTE + GOOD_ATTRIBUTE.replace("order: 1", "order: 2"),
     "services.E0501.attributes[1].code: 'A' is declared twice"),
    ("services:\n  E0501:\n    attributes:\n" + GOOD_ATTRIBUTE + GOOD_ATTRIBUTE.replace("code: A", "code: B"),
     "services.E0501.attributes[1].order: order 1 is used twice"),
    ("services:\n  E0501:\n    attributes:\n      - {code: A, datatype: singlevaluelist, order: 1, description: q}\n",
     "services.E0501.attributes[0].values: a singlevaluelist needs values"),
    ("services:\n  E0501:\n    attributes:\n      - {code: A, datatype: string, order: 1, description: q, "
     "values: [{key: a, name: b}]}\n", "services.E0501.attributes[0].values: only singlevaluelist and "
                                       "multivaluelist have values"),
    ("services:\n  E0501:\n    attributes:\n      - {code: A, datatype: text, order: 1, description: q, min: 1}\n",
     "services.E0501.attributes[0].min: only number attributes have bounds"),
    ("services:\n  E0501:\n    attributes:\n      - {code: A, datatype: text, order: 1, description: q, "
     "required: true, variable: false}\n", "services.E0501.attributes[0].required: an attribute that takes no input"),
    ("services:\n  E0501:\n    attributes:\n      - {code: 'A B', datatype: text, order: 1, description: q}\n",
     "services.E0501.attributes[0].code: 1-64 of A-Z a-z 0-9 _ . -"),
    ("services:\n  E0501:\n    attributes:\n      - {code: A, datatype: multivaluelist, order: 1, description: q, "
     "values: [{key: a, name: x}, {key: a, name: y}]}\n", "services.E0501.attributes[0].values[1].key: 'a' is "
                                                          "listed twice"),
    ("services:\n  E0501:\n    attributes:\n      - {code: A, datatype: multivaluelist, order: 1, description: q, "
     "values: [{key: 'a,b', name: x}]}\n", "services.E0501.attributes[0].values[0].key: a key has no comma"),
    ("services:\n  E0501:\n    attributes:\n      - {code: A, datatype: number, order: 0, description: q}\n",
     "services.E0501.attributes[0].order: 0 is out of range 1..1000"),
    ("services:\n  E0501:\n    attributes:\n      - {code: A, datatype: number, order: 1, description: q, "
     "required: yes please}\n", "services.E0501.attributes[0].required: expected true or false"),
    ("services:\n  E0501: {}\n  E0501: {}\n", "attrs.yaml:5:3: services.E0501: duplicate key"),
    ("services: [\n", "attrs.yaml:4:1: (yaml):"),
])
def test_a_broken_file_is_refused_with_file_line_and_key(body: str, where: str) -> None:
    """Each mistake is one problem naming the file, line, column and the dotted key."""
    found = problems(HEAD + body)
    assert any(p.startswith(where) or where in p for p in found), found


def test_every_mistake_of_a_file_is_reported_at_once() -> None:
    found = problems("version: 2\nkind: other\nservices:\n  X1: {}\n  E0501: {notice: ''}\n")
    assert len(found) >= 3
    assert any(p.startswith("attrs.yaml:1:10: version: 2 is out of range 1..1") for p in found), found
    assert any(p.startswith("attrs.yaml:2:7: kind: must be 'cityops-open311-services'") for p in found), found
    assert any("services.X1: not a category code" in p for p in found), found


def test_answers_are_checked_by_datatype() -> None:
    """datetime is ISO 8601, string is one line, text may break lines, an information-only attribute takes no
    answer; answers are normalized."""
    when = Attribute("SINCE", "datetime", 1, "since when?")
    assert when.check(["2026-05-01T21:30:00+08:00"]) == "2026-05-01T21:30:00+08:00"
    assert when.check(["2026-05-01"]) == "2026-05-01"
    with pytest.raises(InvalidEvent, match=r"attribute\[SINCE\]: not an ISO 8601"):
        when.check(["last night"])
    line = Attribute("MARK", "string", 1, "mark?")
    with pytest.raises(InvalidEvent, match="one line only"):
        line.check(["上水\n电力"])
    assert Attribute("NOTE", "text", 1, "note?").check(["上水\n电力"]) == "上水\n电力"
    with pytest.raises(InvalidEvent, match="takes one value"):
        Attribute("K", "singlevaluelist", 1, "k?", values=(Value("y", "yes"), Value("n", "no"))).check(["y", "n"])
    assert Attribute("N", "number", 1, "n?").check(["007"]) == "7"
    with pytest.raises(InvalidEvent, match="finite"):
        Attribute("N", "number", 1, "n?").check(["nan"])
    catalogue = default_catalogue()
    assert catalogue.check("E0102", {}) == {}
    with pytest.raises(InvalidEvent, match=r"attribute\[X\]: not an attribute of service E0102 \(its attributes: "
                                           r"none\)"):
        catalogue.check("E0102", {"X": ["1"]})
