"""The README's config reference, generated from the pydantic fields (so they never drift).

    python -m sweep.config.docs                  # print it
    python -m sweep.config.docs --update-readme  # rewrite the README section
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel

from sweep.config import schema as c
from sweep.config.plugins import FAMILIES, SOURCES


def sections(*, builtin: bool = True) -> list[tuple[str, type[BaseModel]]]:
    """Every config section: the fixed ones, and each built-in family's and source's own
    (``builtin=False``: every registered plugin's too)."""
    out: list[tuple[str, type[BaseModel]]] = [("top level", c.ChainConfig)]
    for name, family in _plugins(FAMILIES.registered(), builtin):
        out.append((f"model (family: {name})", family.config))
        out += [(f"model.{field} ({name})", sub) for field, sub in _subsections(family.config)]
    for name, source in _plugins(SOURCES.registered(), builtin):
        out.append((f"data (source: {name})", source.config))
    out += [("recursion", c.RecursionConfig), ("curation", c.CurationConfig),
            ("sampling", c.SamplingConfig), ("collapse", c.CollapseConfig)]
    return out


def _plugins(registered: dict[str, Any], builtin: bool) -> list[tuple[str, Any]]:
    return [(name, plugin) for name, plugin in registered.items()
            if not builtin or plugin.config.__module__.startswith("sweep.")]


def _subsections(model: type[BaseModel]) -> list[tuple[str, type[BaseModel]]]:
    return [(name, field.annotation) for name, field in model.model_fields.items()
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)]


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(str(a) for a in typing.get_args(annotation))
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("|", "\\|")


def _default(field: Any) -> str:
    if field.default_factory is not None:
        return "(section)"
    return "" if field.default is None else f"`{field.default}`"


def reference() -> str:
    lines = []
    for title, model in sections():
        lines += [f"#### {title}", "", "| field | type | default | meaning |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            if name == "family" or name == "source":
                continue
            kind = _type_name(field.annotation)
            if "Annotated" in kind or "Union" in kind or "Config" in kind or len(kind) > 60:
                kind = "section"
            lines.append(f"| `{name}` | {kind} | {_default(field)} | {field.description or ''} |")
        lines.append("")
    return "\n".join(lines)


def update_readme(path: str = "README.md") -> bool:
    """Rewrite the README's generated section; True when it changed."""
    from pathlib import Path

    p = Path(path)
    text = p.read_text()
    start, end = "<!-- config-reference:start -->", "<!-- config-reference:end -->"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    new = f"{head}{start}\n{reference()}\n{end}{tail}"
    if new != text:
        p.write_text(new)
    return new != text


if __name__ == "__main__":  # pragma: no cover
    import sys

    if "--update-readme" in sys.argv:
        print("README.md updated" if update_readme() else "README.md already current")
    else:
        print(reference())
