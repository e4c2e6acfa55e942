"""Config errors as one line for the user: ``field: problem (allowed: ...)``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from sweep.config.schema import ChainConfig


class ConfigError(ValueError):
    """A configuration problem, phrased as one line for the user."""


def format_validation_error(exc: ValidationError) -> str:
    """First error of a pydantic ValidationError as ``field: problem (allowed: ...)``."""
    err = exc.errors()[0]
    # Drop the union-tag segment pydantic inserts (model.gaussian.dim -> model.dim).
    loc = [str(p) for p in err["loc"] if not (isinstance(p, str) and p in _UNION_TAGS)]
    field = ".".join(loc) or "config"
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        parent = _fields_at([str(p) for p in err["loc"][:-1]])
        allowed = f" (allowed: {', '.join(parent)})" if parent else ""
        return f"{field}: unknown field{allowed}"
    if kind == "union_tag_invalid":
        field = f"{field}.{str(ctx.get('discriminator', '')).strip(chr(39))}".rstrip(".")
        return f"{field}: unknown value {ctx.get('tag')!r} (allowed: {ctx.get('expected_tags')})"
    if kind == "literal_error":
        return f"{field}: got {err.get('input')!r} (allowed: {ctx.get('expected')})"
    if kind == "value_error":
        msg = str(ctx.get("error", err["msg"]))
        return msg if ":" in msg.split(" ")[0] else f"{field}: {msg}"
    if kind == "finite_number":
        return f"{field}: must be a finite number, got {err.get('input')!r}"
    msg = err["msg"][:1].lower() + err["msg"][1:]  # keep the case of patterns and values
    return f"{field}: {msg}, got {err.get('input')!r}"


_UNION_TAGS = {"gaussian", "linreg", "categorical", "gmm", "gpt", "truth", "truth-lm", "text"}


def _fields_at(loc: list[str]) -> list[str]:
    """Field names of the section at ``loc`` (best effort, for 'allowed' hints)."""
    section: type[BaseModel] | None = ChainConfig
    annotation: Any = None
    for part in loc:
        if part in _UNION_TAGS and annotation is not None:  # model.gpt...: the gpt member
            section = _first_model(annotation, tag=part)
            continue
        if section is None or part not in section.model_fields:
            return []
        annotation = section.model_fields[part].annotation
        section = _first_model(annotation)
    return list(section.model_fields) if section else []


def _first_model(annotation: Any, *, tag: str | None = None) -> type[BaseModel] | None:
    """The first pydantic model in ``annotation`` (a union), or its member tagged ``tag``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if tag is None:
            return annotation
        field = annotation.model_fields.get("family") or annotation.model_fields.get("source")
        return annotation if field is not None and field.default == tag else None
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _first_model(arg, tag=tag)
        if found:
            return found
    return None
