"""The one YAML reader for configs and catalogues: bounded, strict, and every fault one line
naming file, line and key.

A config file is input like any other, and a reload reads it inside a running probe, so
reading it is bounded (docs/reliability.md section 4): only regular files are read (a FIFO
would block forever), at most MAX_CONFIG_BYTES; YAML aliases may not expand the document
past MAX_YAML_NODES (a 488-byte alias bomb took 4.3 s and 335 MB); every string must be
encodable (a lone surrogate from a "\\ud800" escape would pass here and then break every
round's metrics); duplicate keys are refused. Validation is pydantic's; this module adds
where in the YAML text a bad value stands, and config_errors words the problem.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from probe.inputs.config_errors import describe
from probe.inputs.schema import ConfigError

MAX_CONFIG_BYTES = 16 << 20
MAX_YAML_NODES = 1_000_000  # after alias expansion; a 50,000-target config has about 400,000


class _DuplicateKey(yaml.constructor.ConstructorError):
    def __init__(self, key: str, first: int, mark: yaml.Mark) -> None:
        super().__init__(None, None, f"duplicate key (first at line {first})", mark)
        self.key = key


class _StrictMappings:
    """Refuses duplicate keys (YAML would silently keep the last one: a pasted block must
    not override the one above without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is None:
                continue
            if key in seen:
                raise _DuplicateKey(str(key), seen[key], key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)  # type: ignore[misc]
        return mapping


class _LineLoader(_StrictMappings, yaml.SafeLoader):
    """The pure-Python loader: its error messages are the clearer ones."""


# libyaml's parser when PyYAML has it: a 10,000-target config parses several times faster.
_FastLoader: type[yaml.SafeLoader] = type(
    "_FastLoader", (_StrictMappings, getattr(yaml, "CSafeLoader", yaml.SafeLoader)), {})


class _Fallback(Exception):
    """What the event-driven reader does not handle: the composing loader reads it instead."""


_SCALAR_NODE = yaml.ScalarNode
_PLAIN_TAGS = frozenset({None, "!", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})
_SCALAR_TAGS = frozenset(f"tag:yaml.org,2002:{name}" for name in (
    "null", "bool", "int", "float", "binary", "timestamp", "str"))


def _load_events(text: str) -> Any:
    """`yaml.load(text, Loader=_FastLoader)` for the common document, built from the
    parser's events: a composing loader first builds a node tree with two marks per scalar
    (a 580 kB config of 10,000 baseline sites peaked at +34 MB for it), this holds only the
    result. Scalars are resolved and constructed exactly as the loader does (its own
    resolver and constructors). Anything else (anchors and aliases, merge keys, explicit
    tags on collections, a duplicate key, a second document, an error) raises _Fallback,
    and the composing loader reads the text, with its own results and error messages."""
    loader: Any = _FastLoader(text)  # PyYAML's stubs leave get_event and resolve untyped
    try:
        resolve, constructors = loader.resolve, loader.yaml_constructors
        stack: list[Any] = []  # open collections
        keys: list[Any] = []  # per open mapping: the key waiting for its value (or _NO_KEY)
        seen: list[set[str] | None] = []  # per open collection: a mapping's raw keys
        result: Any = None
        documents = 0
        while True:
            event = loader.get_event()
            kind = type(event)
            if kind is yaml.ScalarEvent:
                if event.anchor is not None:
                    raise _Fallback
                tag = event.tag
                if tag is None or tag == "!":
                    tag = resolve(_SCALAR_NODE, event.value, event.implicit)
                if tag not in _SCALAR_TAGS:
                    raise _Fallback
                value = constructors[tag](loader, _SCALAR_NODE(tag, event.value, None, None,
                                                                  event.style))
                raw: str | None = event.value
            elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
                if event.anchor is not None or event.tag not in _PLAIN_TAGS:
                    raise _Fallback
                mapping = kind is yaml.MappingStartEvent
                stack.append({} if mapping else [])
                keys.append(_NO_KEY)
                seen.append(set() if mapping else None)
                continue
            elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                value = stack.pop()
                keys.pop()
                seen.pop()
                raw = None
            elif kind is yaml.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise _Fallback
                continue
            elif kind is yaml.StreamEndEvent:
                return result
            elif kind is yaml.StreamStartEvent or kind is yaml.DocumentEndEvent:
                continue
            else:  # an alias
                raise _Fallback
            if not stack:
                result = value
                continue
            top = stack[-1]
            if type(top) is list:
                top.append(value)
                continue
            key = keys[-1]
            if key is _NO_KEY:
                names = seen[-1]
                if raw is None or names is None or raw in names:
                    raise _Fallback  # a collection as a key, or a duplicate key
                names.add(raw)
                hash(value)
                keys[-1] = value
            else:
                top[key] = value
                keys[-1] = _NO_KEY
    except _Fallback:
        raise
    except Exception:
        raise _Fallback from None
    finally:
        loader.dispose()


_NO_KEY = object()


def load_yaml(text: str) -> Any:
    """The document in `text`, as `yaml.load(text, Loader=_FastLoader)` reads it."""
    try:
        return _load_events(text)
    except _Fallback:
        return yaml.load(text, Loader=_FastLoader)


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int:
    """The 1-based line of the deepest node that `loc` reaches."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == part:
                    line, node = key_node.start_mark.line + 1, value_node
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def line_at(text: str, loc: tuple[int | str, ...]) -> int:
    """Where `loc` stands in the YAML text. Composed only for an error: nodes cost memory."""
    return _line_of(yaml.compose(text, Loader=_LineLoader), loc)


def key_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part not in ("function-after", "function-before") and "[" not in str(part):
            path += f".{part}" if path else str(part)
    return path or "(top level)"


M = TypeVar("M", bound=BaseModel)


def read_text(path: Path) -> str:
    """A config file's text; every failure is a one-line ConfigError. Only a regular file
    of at most MAX_CONFIG_BYTES is read: a FIFO or a device must not block or flood us."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if stat.S_ISDIR(info.st_mode):
                raise ConfigError(f"{path}: is a directory, not a config file")
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError(f"{path}: not a regular file (a FIFO, device or socket); "
                                  "a config is a YAML text file")
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MiB, the limit for a config")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte {exc.object[exc.start]:#04x}); "
                          "a config is a YAML text file") from None


def _expanded_size(text: str, source: str) -> None:
    """Refuse a document whose aliases expand it past MAX_YAML_NODES, from the parser's
    events (no expansion happens here: each anchor's size is counted once)."""
    sizes: dict[str, int] = {}
    stack: list[list[Any]] = []
    total = 0
    for event in yaml.parse(text, Loader=_FastLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            stack.append([1, event.anchor])
            continue
        if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            size, anchor = stack.pop()
            if anchor is not None:
                sizes[anchor] = size
        elif isinstance(event, yaml.ScalarEvent):
            size = 1
            if event.anchor:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            size = sizes.get(event.anchor or "", 1)
        else:
            continue
        if stack:
            stack[-1][0] += size
            size = stack[-1][0]
        else:
            total += size
            size = total
        if size > MAX_YAML_NODES:
            line = event.start_mark.line + 1 if event.start_mark is not None else 1
            raise ConfigError(f"{source}:{line}: YAML aliases expand the "
                              f"document past {MAX_YAML_NODES:,} nodes (an alias bomb?)")


def _unencodable(data: Any, loc: tuple[int | str, ...] = ()) -> tuple[int | str, ...] | None:
    """Where the first string no output can encode (a lone surrogate) stands, if any."""
    if isinstance(data, str):
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:
            return loc
        return None
    if isinstance(data, dict):
        for key, value in data.items():
            found = _unencodable(key, loc) if isinstance(key, str) else None
            found = found if found is not None else _unencodable(value, (*loc, key))
            if found is not None:
                return found
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found = _unencodable(value, (*loc, index))
            if found is not None:
                return found
    return None


def validate_yaml(text: str, source: str, model: type[M], empty: str | None = None) -> M:
    """Parse YAML text into `model`: one ConfigError naming file, line and key for any fault.

    `empty`, when given, is what an empty or non-mapping document must be instead.
    """
    try:
        if "&" in text and "*" in text:  # anchors and aliases: bound what they expand to
            _expanded_size(text, source)
        try:
            data = load_yaml(text)
        except yaml.YAMLError:
            data = yaml.load(text, Loader=_LineLoader)  # rare: parse again for the clearer message
    except _DuplicateKey as exc:
        assert exc.problem_mark is not None
        raise ConfigError(f"{source}:{exc.problem_mark.line + 1}: {exc.key}: {exc.problem}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        at = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError(f"{at}: invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from None
    if data is None and empty is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: {empty or 'the file must be a YAML mapping'}")
    try:
        json.dumps(data, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        loc = _unencodable(data) or ()
        raise ConfigError(f"{source}:{line_at(text, loc)}: {key_path(loc)}: a lone surrogate "
                          "(a \\ud800-style escape) that no output can encode") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_validation_message(exc, text, source, model)) from None


def _validation_message(exc: ValidationError, text: str, source: str, model: type[BaseModel]) -> str:
    """The first problem in plain words with file, line and key; where the others are."""
    first, *others = exc.errors()
    loc = tuple(first["loc"])
    message = f"{source}:{line_at(text, loc)}: {key_path(loc)}: {describe(first, model)}"
    if others:
        where = ", ".join(f"line {line_at(text, tuple(e['loc']))} {key_path(tuple(e['loc']))}"
                          for e in others[:3])
        message += f" (also wrong: {where}{', ...' if len(others) > 3 else ''})"
    return message


