"""The one plugin manager, the lazy loading of plugins, and the registries they fill.

Every plugin, built-in or third-party, is a module named by an entry point in the group
``bench_harness``. ``BENCH_HARNESS_PLUGINS`` (comma-separated entry-point names) limits which load;
``BENCH_HARNESS_TRACE_PLUGINS=1`` prints every registration to stderr, which helps when two plugins
fight over a name.
"""

from __future__ import annotations

import os
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Iterator

import pluggy

from bench_harness import hookspecs
from bench_harness.errors import CONTAINED, UserError
from bench_harness.pruner import validate_pruner_class
from bench_harness.registry import Registry

ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME
LOAD_ENV = "BENCH_HARNESS_PLUGINS"
TRACE_ENV = "BENCH_HARNESS_TRACE_PLUGINS"

pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
pm.add_hookspecs(hookspecs)

_plugin_sources: dict[str, "PluginInfo"] = {}
_loaded = False


@dataclass(frozen=True)
class PluginInfo:
    """Where a loaded plugin came from, as ``bench list`` shows it."""

    name: str
    module: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...] = field(default=())

    @property
    def source(self) -> str:
        """``module (distribution version)``, or just the module for a plugin registered by hand."""
        if self.distribution:
            return f"{self.module} ({self.distribution} {self.version})"
        return self.module


def load_plugins() -> None:
    """Load every plugin of the entry-point group once (honouring ``BENCH_HARNESS_PLUGINS``)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    wanted = _wanted_names()
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if wanted is not None and entry_point.name not in wanted:
            continue
        if pm.get_plugin(entry_point.name) is not None:
            continue
        try:
            module = entry_point.load()
        except CONTAINED as exc:  # a broken third-party plugin (even one calling sys.exit) must not take the harness down
            warnings.warn(f"Plugin '{entry_point.name}' ({entry_point.value}) failed to load and was skipped: {exc}")
            continue
        dist = entry_point.dist
        register_plugin(module, entry_point.name, dist.name if dist else None, dist.version if dist else None)
    _check_hook_names()


def _check_hook_names() -> None:
    # A hook implementation with a misspelt name would otherwise be silently ignored.
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise UserError(f"{exc}; check the hook's spelling against bench_harness.hookspecs.") from None


def _wanted_names() -> set[str] | None:
    raw = os.environ.get(LOAD_ENV)
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


_installed_names: list[str] = []


def check_plugin_filter() -> None:
    """``BENCH_HARNESS_PLUGINS`` may name only installed plugins: a typo would otherwise load
    nothing, and every command would fail later with a misleading message."""
    wanted = _wanted_names()
    if wanted is None:
        return
    if not _installed_names:
        _installed_names.extend(sorted({entry_point.name for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP)}))
    installed = ", ".join(_installed_names)
    if not wanted:
        raise UserError(f"{LOAD_ENV} is set but names no plugin; name some of {installed}, or unset it to load them all.")
    unknown = sorted(wanted - set(_installed_names) - set(_plugin_sources))
    if unknown:
        raise UserError(
            f"{LOAD_ENV} names {', '.join(unknown)}, which no installed package provides as a plugin; installed plugins: "
            f"{installed} (unset {LOAD_ENV} to load them all)."
        )


def _filter_hint() -> str:
    """A note for 'unknown name' messages when the environment limits the plugins loaded."""
    raw = os.environ.get(LOAD_ENV)
    return f" ({LOAD_ENV}={raw} limits the plugins loaded; datasets and models are plugins too)" if raw is not None else ""


def register_plugin(plugin: Any, name: str, distribution: str | None = None, version: str | None = None) -> None:
    """Register a plugin object by hand (tests, notebooks); entry-point plugins arrive via load_plugins."""
    pm.register(plugin, name=name)
    try:
        _check_hook_names()
    except UserError:
        pm.unregister(plugin, name=name)
        raise
    module = getattr(plugin, "__name__", type(plugin).__name__)
    hooks = tuple(sorted(caller.name for caller in pm.get_hookcallers(plugin) or ()))
    _plugin_sources[name] = PluginInfo(name, module, distribution, version, hooks)
    _registries_cache.clear()


def unregister_plugin(name: str) -> None:
    """Remove a plugin registered by hand (and forget the registries built with it)."""
    plugin = pm.get_plugin(name)
    if plugin is not None:
        pm.unregister(plugin, name=name)
    _plugin_sources.pop(name, None)
    _registries_cache.clear()


@contextmanager
def registered_plugin(plugin: Any, name: str) -> Iterator[Any]:
    """Register a plugin object by hand for the duration of a ``with`` block, then remove it."""
    register_plugin(plugin, name)
    try:
        yield plugin
    finally:
        unregister_plugin(name)


def plugin_infos() -> list[PluginInfo]:
    """Every loaded plugin with its source and hooks, in load order."""
    load_plugins()
    return list(_plugin_sources.values())


@dataclass
class Registries:
    """The three registries filled by the plugins' ``register_*`` hooks."""

    pruners: Registry
    datasets: Registry
    models: Registry


_registries_cache: dict[str, Registries] = {}


def registries() -> Registries:
    """Call every plugin's register hooks once and return the filled registries."""
    check_plugin_filter()
    load_plugins()
    if "current" not in _registries_cache:
        hint = _filter_hint()
        found = Registries(Registry("pruner", hint), Registry("dataset", hint), Registry("model", hint))
        _fill(found.pruners, "register_pruners", lambda pruner: pruner.name, validate_pruner_class)
        _fill(found.datasets, "register_datasets", lambda spec: spec.name)
        _fill(found.models, "register_models", lambda spec: spec.name)
        _registries_cache["current"] = found
    return _registries_cache["current"]


def _fill(registry: Registry, hook_name: str, name_of: Callable[[Any], str], validate: Callable[[Any], None] | None = None) -> None:
    # Each implementation is called on its own, rather than through one broadcast hook call, so the
    # harness knows which plugin registered what and can name both sources of a clash.
    trace = bool(os.environ.get(TRACE_ENV))
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        info = _plugin_sources.get(impl.plugin_name)
        source = info.source if info else impl.plugin_name
        provenance = {
            "plugin": impl.plugin_name, "module": info.module if info else None,
            "distribution": info.distribution if info else None, "version": info.version if info else None,
        }

        def register(obj: Any, _source: str = source, _provenance: dict = provenance) -> None:
            try:
                if validate is not None:
                    validate(obj)
                name = name_of(obj)
                if not name or not isinstance(name, str):
                    raise TypeError(f"{obj!r} has no name")
            except (TypeError, AttributeError) as exc:
                raise UserError(
                    f"Plugin {_source} registered something unusable through {hook_name} ({exc}); "
                    f"fix or uninstall it, or leave it out with {LOAD_ENV}."
                ) from None
            if trace:
                print(f"[bench-harness] {hook_name}: {name} from {_source}", file=sys.stderr)
            registry.add(name, obj, _source, _provenance)

        kwargs = {"register": register}
        before = set(registry.names())
        try:
            impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
        except UserError:
            raise
        except CONTAINED as exc:  # like a plugin that fails to load: skipped whole, with a warning
            for name in set(registry.names()) - before:
                registry.remove(name)
            warnings.warn(
                f"Plugin {source} failed in {hook_name} ({type(exc).__name__}: {exc}) and was skipped; fix or "
                f"uninstall it, or leave it out with {LOAD_ENV}."
            )
