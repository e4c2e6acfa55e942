"""Named plugins (model families, data sources, scorers), found the same way for everyone.

A name in a config is looked up in this order:

1. registered in this process. The built-ins register themselves with the same public call
   a user's package uses (``sweep.problems.register_family``) when their module is imported;
   a registry imports that module (``builtins``, named, not imported here) on first use;
2. a dotted path ``"package.module:ATTRIBUTE"`` (e.g. ``model: {family: "mypkg.fam:FAMILY"}``),
   imported and registered under that path;
3. an installed entry point of the registry's group (e.g. ``collapse_sweep.families``), loaded
   on first use and registered under its name.

This module is the lowest layer that needs plugins (``sweep.config`` validates a config's
``model:`` / ``data:`` sections through it), so it knows nothing of what a plugin is: a
registry holds objects, and the layer above decides their type.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

T = TypeVar("T")


class PluginError(LookupError):
    """A name that no registered plugin, dotted path or entry point provides."""


class Registry(Generic[T]):
    """Plugins of one kind by name: ``register``, ``get`` (with dotted paths and entry points)."""

    def __init__(self, kind: str, *, entry_point_group: str, builtins: str | None = None,
                 check: Callable[[str, object], T] | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self.builtins = builtins
        self._check = check
        self._items: dict[str, T] = {}
        self._builtins_loaded = builtins is None

    def _load_builtins(self) -> None:
        # The project's own plugins, registered by importing the module that defines them
        # (a higher layer: named here as an entry point would name it, never imported at
        # module level).
        if not self._builtins_loaded:
            self._builtins_loaded = True
            importlib.import_module(self.builtins)  # type: ignore[arg-type]

    def register(self, name: str, plugin: T, *, replace: bool = False) -> T:
        """Make ``name`` available; a second plugin under a taken name needs ``replace=True``."""
        if not replace and name in self._items and self._items[name] is not plugin:
            raise ValueError(f"{self.kind}: {name!r} is registered already "
                             "(pass replace=True to override it)")
        self._items[name] = self._checked(name, plugin)
        return plugin

    def get(self, name: str) -> T:
        """The plugin called ``name``: registered, a dotted path, or an entry point."""
        self._load_builtins()
        if name in self._items:
            return self._items[name]
        if ":" in name:
            return self.register(name, self._import(name))
        for ep in entry_points(group=self.entry_point_group):
            if ep.name == name:
                return self.register(name, ep.load())
        allowed = ", ".join(repr(n) for n in self.names())
        raise PluginError(f"{self.kind}: unknown value {name!r} (allowed: {allowed}; "
                          "or a 'package.module:NAME' path)")

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
        except (PluginError, ImportError, AttributeError, TypeError, ValueError):
            return False
        return True

    def names(self) -> list[str]:
        """Registered names (in registration order), then installed entry points not loaded yet."""
        self._load_builtins()
        installed = [ep.name for ep in entry_points(group=self.entry_point_group)]
        return [*self._items, *sorted(n for n in installed if n not in self._items)]

    def registered(self) -> dict[str, T]:
        self._load_builtins()
        return dict(self._items)

    def _import(self, path: str) -> object:
        module_name, _, attr = path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise PluginError(f"{self.kind}: {path!r}: cannot import {module_name!r} ({exc})") from None
        try:
            return getattr(module, attr)
        except AttributeError:
            raise PluginError(f"{self.kind}: {path!r}: {module_name} has no {attr!r}") from None

    def _checked(self, name: str, plugin: object) -> T:
        return self._check(name, plugin) if self._check is not None else plugin  # type: ignore[return-value]


# --------------------------------------------------------------------------- what config reads
class FamilyRules(Protocol):
    """What config validation reads of a model family (``sweep.problems.Family`` has it all)."""

    @property
    def name(self) -> str: ...
    @property
    def config(self) -> type[BaseModel]: ...
    @property
    def sources(self) -> tuple[str, ...]: ...
    @property
    def tokens(self) -> bool: ...
    @property
    def samples_per_generation(self) -> int | None: ...
    @property
    def default_init(self) -> str | None: ...
    @property
    def metrics(self) -> tuple[str, ...]: ...


class SourceRules(Protocol):
    """What config validation reads of a data source (``sweep.problems.DataSource``)."""

    @property
    def name(self) -> str: ...
    @property
    def config(self) -> type[BaseModel]: ...
    @property
    def has_truth(self) -> bool: ...
    @property
    def metrics(self) -> tuple[str, ...]: ...


def _check_record(kind: str) -> Callable[[str, object], Any]:
    def check(name: str, plugin: object) -> Any:
        config = getattr(plugin, "config", None)
        if not (isinstance(config, type) and issubclass(config, BaseModel)):
            raise TypeError(f"{kind} {name!r}: expected a record with a pydantic `config` "
                            f"model, got {type(plugin).__name__}")
        return plugin
    return check


def _check_scorer(name: str, plugin: object) -> Any:
    if not callable(plugin):
        raise TypeError(f"curation.scorer {name!r}: expected a callable, got {type(plugin).__name__}")
    return plugin


#: Model families (``model.family``); ``sweep.problems`` registers the built-ins.
FAMILIES: Registry[FamilyRules] = Registry(
    "model.family", entry_point_group="collapse_sweep.families", builtins="sweep.problems",
    check=_check_record("model.family"))
#: Real-data sources (``data.source``); ``sweep.problems`` registers the built-ins.
SOURCES: Registry[SourceRules] = Registry(
    "data.source", entry_point_group="collapse_sweep.sources", builtins="sweep.problems",
    check=_check_record("data.source"))
#: Curation scorers (``curation.scorer``); ``sweep.engine.curation`` registers the built-ins.
SCORERS: Registry[Callable[..., Any]] = Registry(
    "curation.scorer", entry_point_group="collapse_sweep.scorers",
    builtins="sweep.engine.curation", check=_check_scorer)
