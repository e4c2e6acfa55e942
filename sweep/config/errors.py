"""Config errors as one line for the user: ``field: problem (allowed: ...)``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from sweep.config.schema import ChainConfig, SectionError


class ConfigError(ValueError):
    """A configuration problem, phrased as one line for the user."""


def format_validation_error(exc: ValidationError, *, root: type[BaseModel] = ChainConfig,
                            prefix: str = "") -> str:
    """First error of a pydantic ValidationError as ``field: problem (allowed: ...)``.

    ``root`` is the model that was validated (for the 'allowed' field names) and ``prefix``
    its place in the config: a plugin's ``model:`` / ``data:`` section is validated by the
    plugin's own model (``SectionError``) and reported under its path (``model.dim``).
    """
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    field = ".".join([prefix, *loc] if prefix else loc) or prefix or "config"
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        parent = _fields_at(root, loc[:-1])
        allowed = f" (allowed: {', '.join(parent)})" if parent else ""
        return f"{field}: unknown field{allowed}"
    if kind == "literal_error":
        return f"{field}: got {err.get('input')!r} (allowed: {ctx.get('expected')})"
    if kind == "value_error":
        inner = ctx.get("error")
        if isinstance(inner, SectionError):
            return format_validation_error(inner.error, root=inner.model, prefix=inner.section)
        msg = str(inner if inner is not None else err["msg"])
        return msg if ":" in msg.split(" ")[0] else f"{field}: {msg}"
    if kind == "finite_number":
        return f"{field}: must be a finite number, got {err.get('input')!r}"
    msg = err["msg"][:1].lower() + err["msg"][1:]  # keep the case of patterns and values
    return f"{field}: {msg}, got {err.get('input')!r}"


def _fields_at(root: type[BaseModel], loc: list[str]) -> list[str]:
    """Field names of the section at ``loc`` under ``root`` (for 'allowed' hints)."""
    section: type[BaseModel] | None = root
    for part in loc:
        if section is None or part not in section.model_fields:
            return []
        section = _first_model(section.model_fields[part].annotation)
    return list(section.model_fields) if section else []


def _first_model(annotation: Any) -> type[BaseModel] | None:
    """The first pydantic model in ``annotation`` (a model, or a union / optional of one)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _first_model(arg)
        if found:
            return found
    return None
