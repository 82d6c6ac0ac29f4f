"""The one YAML reader of cityops's own files (users, gazetteer, ...): safe loading that remembers where each
mapping starts, so a refusal can name the file, the line and the key.

`load_with_lines(text, source)` returns the document with every mapping carrying its line under `LINE`; a text
that is not YAML raises the caller's error type (default `YamlFileError`) as `<source>:<line>: <what>: ...`.
"""

from __future__ import annotations

from typing import Any

import yaml

LINE = "__line__"       # the key under which a loaded mapping keeps its first line (1-based)


class YamlFileError(ValueError):
    """A file that cannot be used; the message names the file, line and key."""


class LineLoader(yaml.SafeLoader):
    """SafeLoader that records the line of every mapping as `__line__`."""


def _mapping_with_line(loader: LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    mapping[LINE] = node.start_mark.line + 1
    return mapping  # type: ignore[return-value]


LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_with_line)


def load_with_lines(text: str, source: str, error: type[Exception] = YamlFileError, what: str = "not YAML") -> Any:
    """The document in `text` (read from `source`), mappings with their lines; `error` when it is not YAML."""
    try:
        return yaml.load(text, Loader=LineLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise error(f"{source}{line}: {what}: {getattr(err, 'problem', err)}") from None


def line_of(node: Any) -> int | str:
    """The line a loaded mapping started on ("?" for anything else)."""
    return node.get(LINE, "?") if isinstance(node, dict) else "?"
