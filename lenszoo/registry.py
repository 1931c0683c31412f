"""The plugin registry.

One pluggy ``PluginManager`` owns every plugin. Plugins are modules named by
entry points of group ``lenszoo``; lenszoo's own architectures, datasets and
commands come in through its own entry points, exactly like a third-party
package's. Each kind of registration (architectures, datasets, commands, weights)
is its own table, built when first asked for by calling that one hook, as llm
does: resolving an architecture runs no command hook, so it imports no click.
An entry point is imported once, inside its own guard, when a table it may fill
is first asked for (see ``_may_implement``): a plugin that fails on import or
inside a hook is reported and every other plugin keeps working.

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
from .specs import Architecture, DatasetEntry, _make_arch, _make_command, _make_dataset, _make_weights
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
            self._pending: dict[str, object] = {}  # plugin name -> entry point not imported yet
            self._tables: dict[str, dict] = {}  # table -> name -> registration, for the tables built

    # -- loading ---------------------------------------------------------------
    @property
    def pm(self) -> pluggy.PluginManager:
        with self._lock:
            if self._pm is None:
                self._load_entry_points()
            return self._pm

    def _load_entry_points(self):
        """Find the entry points (importing none: ``_import_for`` does, per table)."""
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
            self._pending[ep.name] = ep

    def _import_for(self, hook_name: str | None):
        """Import the pending entry points that may implement ``hook_name`` (None: all of them)."""
        for name, ep in list(self._pending.items()):
            if hook_name is not None and not _may_implement(ep, hook_name):
                continue
            del self._pending[name]
            info = self._plugins[name]
            try:
                module = ep.load()
                self._pm.register(module, name=ep.name)
            except Exception as exc:  # a broken plugin must not break the others
                self._fail(info, f"import failed: {type(exc).__name__}: {exc}", exc)
                continue
            info.hooks = self._hook_names(ep.name)
            for table, (hook, _, _) in self._HOOKS.items():  # built before this plugin came in: again
                if hook in info.hooks:
                    self._tables.pop(table, None)

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
        self._ensure_all()
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
            self._tables.clear()

    def unregister_plugin(self, name: str):
        with self._lock:
            if self._pm is not None and self._pm.has_plugin(name):
                self._pm.unregister(name=name)
            self._plugins.pop(name, None)
            self._tables.clear()

    # -- collected registrations ----------------------------------------------
    _HOOKS = {"architectures": ("register_architectures", "architecture", _make_arch),
              "datasets": ("register_datasets", "dataset", _make_dataset),
              "commands": ("register_commands", "command", _make_command),
              "weights": ("register_weights", "weights manifest", _make_weights)}

    def _plugin_order(self) -> list[str]:
        """Built-ins first, then third-party plugins in discovery order, then in-process ones:
        where two plugins claim one name, the later one is quarantined."""
        names = [name for name in self.pm.list_name_plugin() if name[0] is not None]
        rank = {name: (0 if info.builtin else 1 if info.package else 2, i)
                for i, (name, info) in enumerate(self._plugins.items())}
        return sorted((name for name, _ in names), key=lambda name: rank.get(name, (3, 0)))

    def _registrations(self, plugin: str, info: PluginInfo, table: str) -> list | None:
        """What ``plugin`` registers in ``table``; None (and the plugin failed) if its hook raises."""
        hook_name, _, make = self._HOOKS[table]
        module = self.pm.get_plugin(plugin)
        found: list = []
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            if impl.plugin is not module:
                continue

            def register(*args, **kwargs):
                found.append(make(plugin, info.package, *args, **kwargs))

            try:
                impl.function(register=register)
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the others
                self._fail(info, f"{hook_name} failed: {type(exc).__name__}: {exc}", exc)
                return None
        return found

    def _table(self, table: str) -> dict:
        """One table, built on first use by calling its hook on every loaded plugin. A plugin that
        fails here (its hook raises, or it claims a taken name) is disabled in every table."""
        with self._lock:
            if table not in self._tables:
                hook_name = self._HOOKS[table][0]
                self.pm  # noqa: B018 - finds the entry points
                self._import_for(hook_name)
                built: dict = {}
                for plugin in self._plugin_order():
                    info = self._plugins.get(plugin) or PluginInfo(plugin, None, None, False)
                    if info.status != "loaded":
                        continue
                    found = self._registrations(plugin, info, table)
                    if found is None:
                        self._tables.clear()
                        continue
                    kind = self._HOOKS[table][1]
                    clashes = [f"{kind} {name!r} is already registered by plugin {_label(built[name])}"
                               for name, _ in found if name in built]
                    if clashes:
                        self._fail(info, f"{'; '.join(clashes)}: this plugin is disabled; uninstall one of the two, "
                                         f"or exclude it with {PLUGINS_ENV}")
                        self._tables.clear()  # what it registered elsewhere goes too
                        continue
                    for name, entry in found:
                        if name in built:  # registered twice by this same plugin
                            self._fail(info, f"registers {name!r} twice; fix the plugin")
                        built[name] = entry
                self._tables[table] = built
            return self._tables[table]

    def _ensure_all(self):
        """Every entry point imported and every table built: what ``lenszoo plugins`` reports."""
        with self._lock:
            self.pm  # noqa: B018
            self._import_for(None)
            for _ in range(2):  # a plugin disabled while building a later table is dropped from the earlier
                for table in self._HOOKS:
                    self._table(table)
                if all(table in self._tables for table in self._HOOKS):
                    break

    @property
    def architectures(self) -> dict[str, Architecture]:
        return self._table("architectures")

    @property
    def datasets(self) -> dict[str, DatasetEntry]:
        return self._table("datasets")

    @property
    def weight_manifests(self) -> dict:
        """plugin name -> the weights_manifest.json it ships."""
        return dict(self._table("weights"))

    @property
    def commands(self) -> dict:
        return {name: entry[1] for name, entry in self._table("commands").items()}

    def plugins(self) -> list[PluginInfo]:
        self._ensure_all()
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


def _may_implement(ep, hook_name: str) -> bool:
    """Whether an entry point's module may implement ``hook_name``, read from its source without
    importing it: a module that names some of lenszoo's hooks but not this one is left for when
    those are asked for. Anything else (no hook named, ``import *``, an object entry point, no
    readable source) may implement every hook, and is imported."""
    import importlib.util

    module, _, attr = ep.value.partition(":")
    if attr:
        return True
    try:
        spec = importlib.util.find_spec(module.strip())
        source = open(spec.origin, encoding="utf-8").read() if spec and spec.origin else None  # noqa: SIM115
    except (ImportError, ValueError, OSError, UnicodeDecodeError):
        return True
    if source is None or "import *" in source:
        return True
    named = [hook for hook in HOOK_NAMES if hook in source]
    return not named or hook_name in named


HOOK_NAMES = tuple(name for name in dir(hookspecs) if name.startswith("register_"))


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
