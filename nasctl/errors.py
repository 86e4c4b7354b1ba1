"""One error type for bad user input: the CLI prints its message on one line and exits 2."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pydantic import ValidationError


class NasctlError(Exception):
    """Bad input from the user (file, schema, option). Never a bug in nasctl."""


def field_path(loc: Sequence[str | int]) -> str:
    """('stages', 2, 'kind', 0) -> 'stages[2].kind[0]'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<root>"


_FRIENDLY = {
    "greater_than": "must be > {gt} (got {input!r})",
    "greater_than_equal": "must be >= {ge} (got {input!r})",
    "too_short": "must not be empty",
    "missing": "is required",
    "extra_forbidden": "is not a known field",
    "int_type": "must be an integer (got {input!r})",
    "int_parsing": "must be an integer (got {input!r})",
    "int_from_float": "must be an integer (got {input!r})",
    "float_type": "must be a number (got {input!r})",
    "float_parsing": "must be a number (got {input!r})",
    "list_type": "must be a list (got {input!r})",
    "model_type": "must be a mapping (got {input!r})",
    "dict_type": "must be a mapping (got {input!r})",
    "string_type": "must be a string (got {input!r})",
    "bool_type": "must be true or false (got {input!r})",
}


_NOUNS = {"kind": "block kind", "activation": "activation", "stride": "stride"}


def _message(err: dict) -> str:
    kind = err.get("type", "")
    ctx = dict(err.get("ctx") or {})
    if kind == "literal_error":
        names = [p for p in err.get("loc", ()) if isinstance(p, str)]
        noun = _NOUNS.get(names[-1], "value") if names else "value"
        return f"unknown {noun} {err.get('input')!r} (expected {ctx.get('expected', '')})"
    if kind == "value_error":
        return str(ctx.get("error", err.get("msg", "")))
    template = _FRIENDLY.get(kind)
    if template:
        try:
            return template.format(input=err.get("input"), **ctx)
        except (KeyError, IndexError):
            pass
    return str(err.get("msg", "invalid value"))


def from_validation_error(
    exc: ValidationError,
    source: str,
    line_of: Callable[[Sequence[str | int]], int | None] | None = None,
) -> NasctlError:
    """Turn a pydantic error into one line: 'file:LINE: field.path: what is wrong'."""
    errors = exc.errors()
    first = errors[0]
    loc = tuple(p for p in first.get("loc", ()) if not (isinstance(p, str) and "[" in p))
    line = line_of(loc) if line_of else None
    where = f"{source}:{line}" if line else source
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return NasctlError(f"{where}: {field_path(loc)}: {_message(first)}{more}")
