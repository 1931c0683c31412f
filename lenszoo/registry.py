"""The plugin registry.

One pluggy ``PluginManager`` owns every plugin. Plugins are modules named by
entry points of group ``lenszoo``; lenszoo's own architectures, datasets and
commands come in through its own entry points, exactly like a third-party
package's. Entry points are loaded lazily (on first use) and once, each inside
its own guard: a plugin that fails on import or inside a hook is reported and
every other plugin keeps working.

``LENSZOO_PLUGINS`` (comma-separated distribution or entry-point names)
restricts which third-party plugins load; set but empty means built-ins only.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import os
import threading
import warnings
from dataclasses import dataclass, field


import pluggy

from . import hookspecs
from .errors import PluginError, UnknownNameError
from .specs import (  # noqa: F401 - Architecture and DatasetEntry were defined here before 0.2
    Architecture,
    DatasetEntry,
    InputContract,
    _make_arch,
    _make_command,
    _make_dataset,
    _make_weights,
)
from .tasks import check_task

ENTRY_POINT_GROUP = "lenszoo"
BUILTIN_PACKAGE = "lenszoo"
PLUGINS_ENV = "LENSZOO_PLUGINS"


class PluginWarning(UserWarning):
    """A plugin failed to load or to register; the others are unaffected."""


@dataclass
class PluginInfo:
    name: str
    package: str | None  # distribution that provides it (None: registered in-process)
    version: str | None
    builtin: bool
    status: str = "loaded"  # loaded | failed | skipped
    errors: list[str] = field(default_factory=list)
    hooks: tuple[str, ...] = ()
    tracebacks: list[str] = field(default_factory=list)  # `lenszoo plugins --traceback`


def _allowed_third_party() -> set[str] | None:
    value = os.environ.get(PLUGINS_ENV)
    if value is None:
        return None
    return {item.strip() for item in value.split(",") if item.strip()}


def _dist_name(ep) -> str | None:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else None


class Registry:
    """Plugins, architectures, datasets and commands, loaded on first use."""

    def __init__(self):
        self._lock = threading.RLock()
        self.reset()

    def reset(self):
        """Forget everything; the next use re-reads entry points and the environment."""
        with getattr(self, "_lock", threading.RLock()):
            self._pm: pluggy.PluginManager | None = None
            self._plugins: dict[str, PluginInfo] = {}
            self._tables: dict[str, dict] | None = None

    # -- loading ---------------------------------------------------------------
    @property
    def pm(self) -> pluggy.PluginManager:
        with self._lock:
            if self._pm is None:
                self._load_entry_points()
            return self._pm

    def _load_entry_points(self):
        pm = pluggy.PluginManager("lenszoo")
        pm.add_hookspecs(hookspecs)
        self._pm = pm
        allowed = _allowed_third_party()
        seen = set()
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            package = _dist_name(ep)
            key = (package, ep.name)
            if key in seen:  # the same distribution found twice on sys.path
                continue
            seen.add(key)
            builtin = package == BUILTIN_PACKAGE
            version = ep.dist.version if getattr(ep, "dist", None) is not None else None
            info = PluginInfo(ep.name, package, version, builtin)
            if ep.name in self._plugins:
                other = self._plugins[ep.name]
                self._fail(
                    info,
                    f"plugin name {ep.name!r} is already taken by package {other.package!r}; "
                    f"uninstall one of {other.package!r} and {package!r}",
                )
                self._plugins[f"{ep.name} ({package})"] = info
                continue
            self._plugins[ep.name] = info
            if not builtin and allowed is not None and not ({ep.name, package} & allowed):
                info.status = "skipped"
                info.errors.append(f"not in {PLUGINS_ENV}")
                continue
            try:
                module = ep.load()
                pm.register(module, name=ep.name)
            except Exception as exc:  # a broken plugin must not break the others
                self._fail(info, f"import failed: {type(exc).__name__}: {exc}", exc)
                continue
            info.hooks = self._hook_names(ep.name)

    def _hook_names(self, plugin_name):
        return tuple(
            caller.name
            for caller in self._pm.get_hookcallers(self._pm.get_plugin(plugin_name)) or ()
        )

    def _fail(self, info: PluginInfo, message: str, exc: BaseException | None = None):
        info.status = "failed"
        info.errors.append(message)
        if exc is not None:
            import traceback

            info.tracebacks.append("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        warnings.warn(f"lenszoo plugin {info.name!r}: {message}", PluginWarning, stacklevel=3)

    def failed_plugins_of(self, package: str | None) -> list[PluginInfo]:
        """The plugins of distribution ``package`` that failed to import or register."""
        self._ensure_tables()
        return [p for p in self._plugins.values() if p.package == package and p.status == "failed"]

    def register_plugin(self, plugin, name: str):
        """Register a plugin object or module in-process (tests, notebooks)."""
        with self._lock:
            pm = self.pm
            if pm.has_plugin(name) or name in self._plugins:
                raise PluginError(f"a plugin named {name!r} is already registered; unregister it first")
            pm.register(plugin, name=name)
            info = PluginInfo(name, None, None, builtin=False)
            info.hooks = self._hook_names(name)
            self._plugins[name] = info
            self._tables = None

    def unregister_plugin(self, name: str):
        with self._lock:
            if self._pm is not None and self._pm.has_plugin(name):
                self._pm.unregister(name=name)
            self._plugins.pop(name, None)
            self._tables = None

    # -- collected registrations ----------------------------------------------
    _HOOKS = (("architectures", "register_architectures", "architecture"),
              ("datasets", "register_datasets", "dataset"),
              ("commands", "register_commands", "command"),
              ("weights", "register_weights", "weights manifest"))

    def _plugin_order(self) -> list[str]:
        """Built-ins first, then third-party plugins in discovery order, then in-process ones:
        where two plugins claim one name, the later one is quarantined."""
        names = [name for name in self.pm.list_name_plugin() if name[0] is not None]
        rank = {name: (0 if info.builtin else 1 if info.package else 2, i)
                for i, (name, info) in enumerate(self._plugins.items())}
        return sorted((name for name, _ in names), key=lambda name: rank.get(name, (3, 0)))

    def _registrations(self, plugin: str, info: PluginInfo) -> dict[str, list] | None:
        """Everything ``plugin`` registers, per table; None (and the plugin failed) if a hook raises.
        Each hook is called on its own, so a failure is charged to that plugin alone."""
        makers = {"architectures": _make_arch, "datasets": _make_dataset, "commands": _make_command,
                  "weights": _make_weights}
        found: dict[str, list] = {}
        module = self.pm.get_plugin(plugin)
        for table, hook_name, _ in self._HOOKS:
            impls = [impl for impl in getattr(self.pm.hook, hook_name).get_hookimpls() if impl.plugin is module]
            pending: list = []
            for impl in impls:
                def register(*args, _pending=pending, **kwargs):
                    _pending.append(makers[table](plugin, info.package, *args, **kwargs))

                try:
                    impl.function(register=register)
                except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the others
                    self._fail(info, f"{hook_name} failed: {type(exc).__name__}: {exc}", exc)
                    return None
            found[table] = pending
        return found

    def _ensure_tables(self) -> dict[str, dict]:
        with self._lock:
            if self._tables is None:
                tables: dict[str, dict] = {table: {} for table, _, _ in self._HOOKS}
                for plugin in self._plugin_order():
                    info = self._plugins.get(plugin) or PluginInfo(plugin, None, None, False)
                    if info.status != "loaded":
                        continue
                    found = self._registrations(plugin, info)
                    if found is None:
                        continue
                    clashes = [f"{kind} {name!r} is already registered by plugin {_label(tables[table][name])}"
                               for table, _, kind in self._HOOKS for name, _ in found[table] if name in tables[table]]
                    if clashes:
                        self._fail(info, f"{'; '.join(clashes)}: this plugin is disabled; uninstall one of the two, "
                                         f"or exclude it with {PLUGINS_ENV}")
                        continue
                    for table, entries in found.items():
                        for name, entry in entries:
                            if name in tables[table]:  # registered twice by this same plugin
                                self._fail(info, f"registers {name!r} twice; fix the plugin")
                            tables[table][name] = entry
                self._tables = tables
            return self._tables

    @property
    def architectures(self) -> dict[str, Architecture]:
        return self._ensure_tables()["architectures"]

    @property
    def datasets(self) -> dict[str, DatasetEntry]:
        return self._ensure_tables()["datasets"]

    @property
    def weight_manifests(self) -> dict:
        """plugin name -> the weights_manifest.json it ships."""
        return dict(self._ensure_tables()["weights"])

    @property
    def commands(self) -> dict:
        return {name: entry[1] for name, entry in self._ensure_tables()["commands"].items()}

    def plugins(self) -> list[PluginInfo]:
        self._ensure_tables()
        return sorted(self._plugins.values(), key=lambda p: (not p.builtin, p.name))

    def architecture(self, name: str) -> Architecture:
        archs = self.architectures
        if name not in archs:
            raise UnknownNameError("architecture", name, archs, hint="see `lenszoo list`")
        return archs[name]

    def dataset(self, name: str) -> DatasetEntry:
        datasets = self.datasets
        if name not in datasets:
            raise UnknownNameError("dataset", name, datasets, hint="see `lenszoo list --datasets`")
        return datasets[name]


def _label(entry) -> str:
    plugin, package = (entry.plugin, entry.package) if hasattr(entry, "plugin") else entry[0]
    return f"{plugin!r} (package {package!r})" if package else f"{plugin!r}"


registry = Registry()


def list_models(pattern: str | list[str] | None = None, task: str | None = None) -> list[str]:
    """Names of registered architectures, optionally filtered by fnmatch pattern(s) and task."""
    if task is not None:
        check_task(task)
    patterns = [pattern] if isinstance(pattern, str) else list(pattern or [])
    names = []
    for name, arch in registry.architectures.items():
        if patterns and not any(fnmatch.fnmatchcase(name, p) for p in patterns):
            continue
        if task is not None and task not in arch.tasks:
            continue
        names.append(name)
    return sorted(names)


def get_architecture(name: str) -> Architecture:
    return registry.architecture(name)


def create_model(name: str, task: str = "classify", **kwargs):
    """A freshly initialised model of architecture ``name`` for ``task``."""
    return registry.architecture(name).build(task, **kwargs)


def list_datasets(pattern: str | None = None) -> list[str]:
    names = registry.datasets
    return sorted(n for n in names if pattern is None or fnmatch.fnmatchcase(n, pattern))


def get_dataset(name: str, **overrides):
    """A dataset generator instance for registered dataset ``name``."""
    return registry.dataset(name).create(**overrides)
