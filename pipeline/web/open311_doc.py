"""Open311 documents in both formats: one answer, written as JSON or XML by the method's extension.

An answer is built once as plain data (lists, dicts, text, numbers, booleans, None) and written here:
- JSON (`application/json; charset=utf-8`): the data as it is. A list-wrapper element of the XML is the JSON
  array itself, as the GeoReport v2 spec's "Spark convention" maps XML to JSON: `services.json` is `[{...}]`.
- XML (`text/xml; charset=utf-8`): a tree built with `xml.etree.ElementTree` (never by pasting strings), under
  the method's root element. A list becomes its wrapper element holding one element per item, named as the
  spec names them (`<services><service>`, `<attributes><attribute>`, `<values><value>`,
  `<service_requests><request>`, `<errors><error>`, ...). None is an empty element (`<account_id/>`), a boolean
  `true`/`false`. Characters XML 1.0 cannot carry (control characters, unpaired surrogates) become U+FFFD, so
  every answer parses.

Errors are `errors` documents, `[{"code": <status>, "description": <reason>}]`, with the same status code in
both formats (the spec: 400 invalid, 403 wrong api_key, 404 unknown resource; cityops also answers 401 for a
missing api_key, 413, 429 and 503, each with its reason).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal
from xml.etree import ElementTree as ET

import orjson
from aiohttp import web

Fmt = Literal["json", "xml"]
FORMATS: tuple[Fmt, ...] = ("xml", "json")
CONTENT_TYPES: dict[str, str] = {"json": "application/json", "xml": "text/xml"}
MIME_TYPES: tuple[str, ...] = ("text/xml", "application/json")    # as the discovery document lists them

# A list's element -> the element of each of its items (the spec's names).
ITEM_OF: dict[str, str] = {
    "services": "service", "attributes": "attribute", "values": "value", "service_requests": "request",
    "notes": "note", "errors": "error", "endpoints": "endpoint", "formats": "format",
}
_XML_DECLARATION = b'<?xml version="1.0" encoding="utf-8"?>\n'
# what XML 1.0 allows: #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def fmt_of(request: web.Request) -> Fmt:
    """The answer format a request asks for by its path's extension (`.xml`; anything else is JSON)."""
    return "xml" if request.path.endswith(".xml") else "json"


def xml_text(value: Any) -> str:
    """A scalar as XML element text (None -> '', booleans lower-case, floats as Python writes them)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return _NOT_XML.sub("\ufffd", str(value))


def _fill(element: ET.Element, value: Any) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _fill(ET.SubElement(element, str(key)), item)
    elif isinstance(value, list | tuple):
        item_tag = ITEM_OF.get(element.tag)
        if item_tag is None:        # a programming error, not input: every list the answers hold is named above
            raise ValueError(f"no XML item element for a list in <{element.tag}>")
        for item in value:
            _fill(ET.SubElement(element, item_tag), item)
    else:
        element.text = xml_text(value)


def to_xml(root: str, body: Any) -> bytes:
    """`body` as an XML document under `root` (see the module docstring), with the XML declaration."""
    element = ET.Element(root)
    _fill(element, body)
    data: bytes = ET.tostring(element, encoding="utf-8", xml_declaration=False)
    return _XML_DECLARATION + data


def render(fmt: Fmt, root: str, body: Any, status: int = 200,
           headers: Mapping[str, str] | None = None) -> web.Response:
    """An answer in `fmt`: `body` as JSON, or as XML under `root`."""
    data = to_xml(root, body) if fmt == "xml" else orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)
    return web.Response(body=data, status=status, content_type=CONTENT_TYPES[fmt], charset="utf-8",
                        headers=headers)


def error(fmt: Fmt, status: int, description: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """An Open311 error answer: `[{"code": status, "description": ...}]` / `<errors><error>...`."""
    return render(fmt, "errors", [{"code": status, "description": description}], status=status, headers=headers)
