"""Config validation errors in plain words, for the one line `probe` prints.

Why not pydantic's own text: "String should match pattern '^[A-Z]{2}$'" tells a regular
expression to someone who wanted to know that a country is two capital letters, and an
unknown key deserves the key that was probably meant (difflib), not only "unknown key".
config.py adds the file, line and key path; this module only words the problem.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import re
import types
from collections.abc import Sequence
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

# What each pattern used in config.py means, said the way a person would say it.
PATTERN_WORDS: dict[str, str] = {
    r"^[A-Z]{2}$": "two capital letters (an ISO 3166 country code, like IR)",
    r"^[A-Za-z0-9_.-]{1,64}$": "1 to 64 letters, digits, '_', '.' or '-'",
    r"^[A-Za-z0-9_.-]{1,32}$": "1 to 32 letters, digits, '_', '.' or '-'",
    r"^[A-Za-z0-9.-]{1,253}$": "a host name (letters, digits, '.' and '-')",
    r"^https?://": "a URL starting with http:// or https://",
    r"^https://": "a URL starting with https://",
}

TYPE_WORDS: dict[str, str] = {
    "int_parsing": "a whole number", "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_parsing": "a number", "float_type": "a number",
    "bool_parsing": "true or false", "bool_type": "true or false",
    "string_type": "text", "list_type": "a list", "tuple_type": "a list",
    "dict_type": "a mapping (key: value lines)", "model_type": "a mapping (key: value lines)",
    "model_attributes_type": "a mapping (key: value lines)",
}

BOUND_WORDS: dict[str, tuple[str, str]] = {
    "greater_than_equal": ("ge", "at least"), "greater_than": ("gt", "more than"),
    "less_than_equal": ("le", "at most"), "less_than": ("lt", "less than"),
}


_HEX_SECRET = re.compile(r"(?:[0-9a-fA-F]{2}){16,}")
_BASE64_SECRET = re.compile(r"[A-Za-z0-9+/_-]{22,}={0,2}")


def looks_secret(value: object) -> bool:
    """Whether a config value looks like a key or an MTProxy secret (16 bytes or more as
    hex, or base64 of 16 bytes, or of dd/ee + 16 bytes + a domain): such a value is never
    repeated in an error, and refused where the config expects a name."""
    if not isinstance(value, str):
        return False
    text = value.strip()
    if _HEX_SECRET.fullmatch(text):
        return True
    if not _BASE64_SECRET.fullmatch(text):
        return False
    try:
        raw = base64.urlsafe_b64decode(text.replace("+", "-").replace("/", "_").rstrip("=")
                                       + "=" * (-len(text.rstrip("=")) % 4))
    except (ValueError, binascii.Error):
        return False
    mixed = all(any(test(c) for c in text) for test in (str.isupper, str.islower, str.isdigit))
    return (len(raw) == 16 and mixed) or (len(raw) >= 17 and raw[0] in (0xDD, 0xEE))


def _show(value: Any) -> str:
    if looks_secret(value):
        return "the value (it looks like a secret: not shown)"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _model_in(annotation: Any) -> Any:
    """The model, list or dict an annotation stands for (Optional and Annotated unwrapped)."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        for arg in get_args(annotation):
            if arg is not type(None):
                found = _model_in(arg)
                if found is not None:
                    return found
        return None
    if origin is not None and hasattr(annotation, "__metadata__"):  # Annotated
        return _model_in(get_args(annotation)[0])
    return annotation


def keys_at(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The keys a mapping at `loc` may have, or [] when it is not a model's mapping."""
    current: Any = model
    for part in loc:
        current = _model_in(current)
        origin = get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return []
            current = field.annotation
        elif origin in (list, tuple) and isinstance(part, int):
            current = get_args(current)[0]
        elif origin is dict:
            current = get_args(current)[1]
        else:
            return []
    current = _model_in(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def describe(error: ErrorDetails, model: type[BaseModel]) -> str:
    """One validation error in plain words, without the file, line or key."""
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    loc = tuple(error["loc"])
    if kind == "extra_forbidden":
        known = keys_at(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.75)
        hint = f"; did you mean '{close[0]}'?" if close else (
            f" (known keys: {', '.join(known)})" if known else "")
        return f"unknown key{hint}"
    if kind == "missing":
        return "required key is missing"
    if kind == "string_pattern_mismatch":
        words = PATTERN_WORDS.get(str(ctx.get("pattern")), "the expected form")
        return f"{_show(value)} is not {words}"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"{_show(value)} is not one of: {expected}"
    if kind == "enum":
        expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"{_show(value)} is not one of: {expected}"
    if kind in BOUND_WORDS:
        key, words = BOUND_WORDS[kind]
        return f"{_show(value)} is too {'small' if kind.startswith('greater') else 'large'}: " \
               f"must be {words} {_number(ctx.get(key))}"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"has too many items (at most {ctx.get('max_length')})"
    if kind == "string_too_long":
        return f"is too long (at most {ctx.get('max_length')} characters)"
    if kind in TYPE_WORDS:
        return f"{_show(value)} is not {TYPE_WORDS[kind]}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return message.replace("Input should be", "should be")
