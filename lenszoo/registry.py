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
from typing import Any, Callable

import pluggy

from . import hookspecs
from .errors import LenszooError, PluginError, UnknownNameError
from .tasks import TASKS, check_task

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


@dataclass(frozen=True)
class Architecture:
    """A registered architecture: how to build it and what it is."""

    name: str
    builder: Callable[..., Any]
    tasks: tuple[str, ...]
    description: str
    paper: str
    input_size: tuple[int, int, int]
    default_kwargs: dict
    plugin: str
    package: str | None

    @property
    def default_config(self) -> dict:
        return {
            "input_size": list(self.input_size),
            "in_chans": self.input_size[0],
            "description": self.description,
            "paper": self.paper,
            "model_args": dict(self.default_kwargs),
        }

    def build(self, task: str = "classify", **kwargs):
        check_task(task)
        if task not in self.tasks:
            raise LenszooError(
                f"architecture {self.name!r} has no {task!r} head; it supports: {', '.join(self.tasks)}"
            )
        model_args = {**self.default_kwargs, **kwargs}
        model = self.builder(task, **model_args)
        # Provenance travels with the module so checkpoints can record it.
        model.lenszoo_config = {
            "arch": self.name,
            "task": task,
            "model_args": model_args,
            "input_size": list(self.input_size),
            "plugin": self.plugin,
            "package": self.package,
        }
        return model


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset generator."""

    name: str
    factory: Callable[..., Any]
    description: str
    plugin: str
    package: str | None

    def create(self, **overrides):
        return self.factory(**overrides)


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
                self._fail(info, f"import failed: {type(exc).__name__}: {exc}")
                continue
            info.hooks = self._hook_names(ep.name)

    def _hook_names(self, plugin_name):
        return tuple(
            caller.name
            for caller in self._pm.get_hookcallers(self._pm.get_plugin(plugin_name)) or ()
        )

    def _fail(self, info: PluginInfo, message: str):
        info.status = "failed"
        info.errors.append(message)
        warnings.warn(f"lenszoo plugin {info.name!r}: {message}", PluginWarning, stacklevel=3)

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
    def _collect(self, hook_name: str, make_entry: Callable, kind: str) -> dict:
        """Call each plugin's implementation of ``hook_name`` on its own, so a
        failure is charged to that plugin alone and each entry knows its plugin."""
        table: dict[str, Any] = {}
        hook = getattr(self.pm.hook, hook_name)
        for impl in reversed(hook.get_hookimpls()):  # registration order
            plugin = impl.plugin_name
            info = self._plugins.get(plugin) or PluginInfo(plugin, None, None, False)
            pending: list = []

            def register(*args, _pending=pending, _plugin=plugin, _info=info, **kwargs):
                _pending.append(make_entry(_plugin, _info.package, *args, **kwargs))

            try:
                impl.function(register=register)
            except Exception as exc:
                self._fail(info, f"{hook_name} failed: {type(exc).__name__}: {exc}")
                continue
            for name, entry in pending:
                if name in table:
                    first = table[name]
                    raise PluginError(
                        f"{kind} {name!r} is registered by both plugin {_label(first)} and plugin "
                        f"{_label(entry)}; uninstall one, or exclude it with {PLUGINS_ENV}"
                    )
                table[name] = entry
        return table

    def _ensure_tables(self) -> dict[str, dict]:
        with self._lock:
            if self._tables is None:
                self._tables = {
                    "architectures": self._collect("register_architectures", _make_arch, "architecture"),
                    "datasets": self._collect("register_datasets", _make_dataset, "dataset"),
                    "commands": self._collect("register_commands", _make_command, "command"),
                }
            return self._tables

    @property
    def architectures(self) -> dict[str, Architecture]:
        return self._ensure_tables()["architectures"]

    @property
    def datasets(self) -> dict[str, DatasetEntry]:
        return self._ensure_tables()["datasets"]

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


def _make_arch(plugin, package, name, builder, *, tasks=TASKS, description="", paper="",
               input_size=(1, 64, 64), **default_kwargs):
    if not callable(builder):
        raise TypeError(f"builder for architecture {name!r} is not callable")
    tasks = tuple(tasks)
    for task in tasks:
        check_task(task)
    arch = Architecture(name, builder, tasks, description, paper, tuple(input_size),
                        default_kwargs, plugin, package)
    return name, arch


def _make_dataset(plugin, package, name, factory, *, description=""):
    if not callable(factory):
        raise TypeError(f"factory for dataset {name!r} is not callable")
    return name, DatasetEntry(name, factory, description, plugin, package)


def _make_command(plugin, package, command):
    name = getattr(command, "name", None)
    if not name:
        raise TypeError("register_commands expects a click command")
    return name, ((plugin, package), command)


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
