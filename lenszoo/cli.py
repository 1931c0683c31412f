"""The ``lenszoo`` command line.

Core commands live here; plugins (lenszoo's own feature modules included) add
more through the ``register_commands`` hook. A ``LenszooError`` is printed as
one line and exits with status 1: users never see a traceback for their own
mistakes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import time

import click

from . import __version__
from .errors import TRACEBACK_ENV, LenszooError
from .registry import PLUGINS_ENV, registry



class LenszooGroup(click.Group):
    """A click group that adds plugin commands on demand and turns user errors into one line."""

    def list_commands(self, ctx):
        names = set(super().list_commands(ctx))
        names.update(_plugin_commands())
        return sorted(names)

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is None:
            command = _plugin_commands().get(name)
        return command

    def invoke(self, ctx):
        try:
            with quiet_libraries():
                return super().invoke(ctx)
        except LenszooError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            if exc.errno == errno.EPIPE or os.environ.get(TRACEBACK_ENV):
                raise
            raise click.ClickException(os_error_message(exc)) from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Click's main, but every error is one line on stderr: no usage block, no traceback."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            where = f"`{exc.ctx.command_path} --help`" if exc.ctx is not None else "`lenszoo --help`"
            click.echo(f"Error: {_one_line(exc.format_message())} (see {where})", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"Error: {_one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


@contextlib.contextmanager
def quiet_libraries():
    """Run a command without library warnings or log records on stderr: a user sees one line per
    error of theirs, not NumPy's overflow notes, PIL's, astropy's or torch's warnings, nor a dozen
    lines of the Hub client's retries. lenszoo's own warnings (``PluginWarning``, "Warning: ..."
    lines) still show; with LENSZOO_TRACEBACK=1 everything shows, for debugging."""
    import logging
    import warnings

    from .registry import PluginWarning

    if os.environ.get(TRACEBACK_ENV):
        yield
        return
    # lenszoo itself never logs; libraries configure their loggers as they are imported (during
    # the command), so logging is switched off as a whole rather than logger by logger
    previous = logging.root.manager.disable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("default", PluginWarning)
        logging.disable(logging.CRITICAL)
        try:
            yield
        finally:
            logging.disable(previous)


def _one_line(message: str) -> str:
    return " ".join(line.strip() for line in str(message).splitlines() if line.strip())


def os_error_message(exc: OSError) -> str:
    """One line for an operating-system error: what failed, on which path, and what to do."""
    what = exc.strerror or type(exc).__name__
    path = f" {exc.filename}" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = "free some disk space (or choose another --out) and run the same command again: it resumes"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        advice = "choose a path you may write to, or fix its permissions"
    elif exc.errno in (errno.ENOTDIR, errno.EISDIR, errno.ENOENT, errno.EEXIST):
        advice = "check the path"
    else:
        advice = f"check the path and the disk (set {TRACEBACK_ENV}=1 for details)"
    return f"{what}:{path}; {advice}"


def _show_plugin_warning(message, category, filename, lineno, file=None, line=None):
    # One line per broken plugin, not a source excerpt: the user can act on it.
    click.echo(f"Warning: {message}", err=True)


def _install_warning_format():
    import warnings

    from .registry import PluginWarning

    previous = warnings.showwarning

    def show(message, category, *args, **kwargs):
        if issubclass(category, PluginWarning):
            return _show_plugin_warning(message, category, *args, **kwargs)
        return previous(message, category, *args, **kwargs)

    warnings.showwarning = show


def _plugin_commands() -> dict:
    try:
        return registry.commands
    except LenszooError as exc:  # conflicting plugins: core commands still work
        click.echo(f"Warning: {exc}", err=True)
        return {}


def format_table(rows: list[list], headers: list[str]) -> str:
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


@click.group(cls=LenszooGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="lenszoo")
def main():
    """lenszoo: equivariant networks, lensing simulations and pretrained weights
    for dark-matter substructure studies."""


@main.command("list")
@click.argument("pattern", required=False)
@click.option("--task", type=click.Choice(["classify", "regress"]), help="Only architectures with this head.")
@click.option("--datasets", "show_datasets", is_flag=True, help="List dataset generators instead.")
@click.option("--no-params", is_flag=True, help="Skip building models to count parameters (faster).")
def list_command(pattern, task, show_datasets, no_params):
    """Registered architectures (or datasets), optionally matching PATTERN (fnmatch)."""
    from .registry import list_datasets, list_models

    if show_datasets:
        rows = []
        for name in list_datasets(pattern):
            entry = registry.dataset(name)
            rows.append([name, entry.plugin, entry.description])
        click.echo(format_table(rows, ["dataset", "plugin", "description"]))
        return
    from .pretrained.manifest import released_weights

    try:
        entries = released_weights()
    except LenszooError:
        entries = []
    rows = []
    for name in list_models(pattern, task=task):
        arch = registry.architecture(name)
        released = sorted({e["dataset"] for e in entries if e["arch"] == name})
        tags = sorted({e["tag"] for e in entries if e["arch"] == name and e.get("tag")})
        try:
            params = "-" if no_params else f"{arch.parameter_count(task or arch.tasks[0]):,}"
        except LenszooError as exc:  # one unbuildable plugin model must not hide the others
            click.echo(f"Warning: {exc}", err=True)
            params = "unavailable"
        rows.append([name, ",".join(arch.tasks), arch.plugin, params, ",".join(released) or "-",
                     ",".join(tags) or "-"])
    if not rows:
        raise LenszooError(f"no architecture matches {pattern!r}" + (f" with task {task!r}" if task else ""))
    click.echo(format_table(rows, ["name", "tasks", "plugin", "params", "weights for", "tags"]))


@main.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--traceback", "show_traceback", is_flag=True, help="Also print the full traceback of each failure.")
def plugins_command(as_json, show_traceback):
    """Installed plugins: built-in and external, their hooks and load errors."""
    plugins = registry.plugins()
    if as_json:
        click.echo(json.dumps([{k: v for k, v in p.__dict__.items() if show_traceback or k != "tracebacks"}
                               for p in plugins], indent=2, default=list))
        return
    rows = [
        [p.name, "built-in" if p.builtin else "external", p.package or "(in-process)", p.version or "-",
         ",".join(h.replace("register_", "") for h in p.hooks) or "-", p.status]
        for p in plugins
    ]
    click.echo(format_table(rows, ["plugin", "kind", "package", "version", "hooks", "status"]))
    for p in plugins:
        for error in p.errors:
            if p.status == "failed":
                click.echo(f"  {p.name}: {error}")
        if show_traceback:
            for text in p.tracebacks:
                click.echo(f"\n{p.name}:\n{text.rstrip()}")
    if any(p.status == "skipped" for p in plugins):
        click.echo(f"  (skipped plugins are not listed in {PLUGINS_ENV})")


@main.command("info")
@click.argument("name")
@click.option("--dataset", help="Also say what images this architecture's weights for DATASET expect "
              "(their input contract).")
def info_command(name, dataset):
    """What architecture or dataset NAME is, where it comes from, and its sizes; with --dataset,
    what images its released weights for that dataset expect."""
    archs, datasets = registry.architectures, registry.datasets
    if name not in archs and name in datasets:
        return _dataset_info(datasets[name])
    spec = registry.architecture(name)  # an unknown name fails here, with suggestions
    from .contract import describe
    from .pretrained.manifest import is_default, released_weights
    from .pretrained.source import describe_location

    try:
        entries = [e for e in released_weights() if e["arch"] == spec.name]
    except LenszooError:
        entries = []
    if dataset is not None:
        known = sorted({e["dataset"] for e in entries})
        if dataset not in known:
            raise LenszooError(f"{spec.name} has no released weights for dataset {dataset!r}; it has: "
                               f"{', '.join(known) or 'none'}")
        entries = [e for e in entries if e["dataset"] == dataset]
    click.echo(f"{spec.name}: {spec.description}")
    click.echo(f"  paper:       {spec.paper or '-'}")
    click.echo(f"  plugin:      {spec.plugin} (package {spec.package or 'in-process'})")
    click.echo(f"  input size:  {'x'.join(map(str, spec.input_size))}")
    click.echo(f"  model args:  {json.dumps(spec.default_kwargs) if spec.default_kwargs else '-'}")
    for task in spec.tasks:
        click.echo(f"  {task:<9}    {spec.parameter_count(task):,} parameters")
    for entry in entries:
        group = [e for e in entries if (e["task"], e["dataset"]) == (entry["task"], entry["dataset"])]
        tag = f" tag={entry['tag']}" if entry.get("tag") else ""
        default = " (default)" if len(group) > 1 and is_default(entry, group) else ""
        click.echo(f"  weights:     task={entry['task']} dataset={entry['dataset']}{tag}{default}: "
                   f"{describe_location(entry)}")
        if dataset is not None:
            rows = describe(entry.get("input_contract") or {})
            if not rows:
                click.echo("    expects:   not recorded for these weights")
            for what, value in rows:
                click.echo(f"    {what + ':':<24} {value}")
    if name in datasets:
        click.echo(f"  ({name} is also a dataset: its generator is described by `lenszoo list --datasets`)")


def _dataset_info(entry):
    from .data.interface import generator_image_shape, generator_info, generator_splits

    generator = entry.create()
    made_by = generator_info(generator)
    click.echo(f"{entry.name}: {entry.description or '-'} (dataset)")
    click.echo(f"  plugin:      {entry.plugin} (package {entry.package or 'in-process'})")
    click.echo(f"  generator:   {made_by['name']} version {made_by['version']}")
    click.echo(f"  classes:     {', '.join(generator.class_names)}")
    click.echo(f"  splits:      {', '.join(generator_splits(generator)) or 'any'}")
    click.echo(f"  image:       {'x'.join(map(str, generator_image_shape(generator)))}")
    instrument = (generator.config.get("instrument") or {}).get("description") if isinstance(
        generator.config, dict) else None
    if instrument:
        click.echo(f"  instrument:  {instrument}")
    click.echo(f"  config:      {len(json.dumps(generator.config)):,} bytes of settings; "
               "all are recorded in every dataset manifest and checkpoint")


@main.command("demo")
@click.option("--n-per-class", default=20, show_default=True,
              help="Fresh test-split lenses per class (of each dataset) scored by each released model.")
@click.option("--seed", default=7, show_default=True, help="Stream seed of the fresh lenses (never a training seed).")
@click.option("--figure", type=click.Path(), default="out/demo.png", show_default=True,
              help="PNG of sample lenses with their true and predicted classes.")
def demo_command(n_per_class, seed, figure):
    """Load every released model available here (offline, sha256-checked), score it on freshly
    simulated lenses beside its released metrics, and draw sample lenses with true and predicted
    classes. Checkpoints neither on this disk nor published (an installed lenszoo carries only the
    small ones) are skipped and named in one line."""
    from .demo import check_figure_path, sample_figure, score_released
    from .pretrained.source import skipped_summary

    started = time.perf_counter()
    figure_path = check_figure_path(figure)
    click.echo(f"lenszoo {__version__}")
    click.echo(format_table(
        [[p.name, "built-in" if p.builtin else "external", p.package or "-", p.status] for p in registry.plugins()],
        ["plugin", "kind", "package", "status"]))
    click.echo()
    rows, lenses, skipped = score_released(n_per_class, seed)
    if not rows and skipped:
        raise LenszooError(f"none of the released models can be loaded here: {skipped_summary(skipped, len(skipped))}")
    if not rows:
        click.echo("no released weights yet (weights_manifest.json is empty)")
        return
    table = []
    for row in rows:
        if row["task"] == "classify":
            now, released = f"{row['now']:.1%} of {row['n']}", _maybe(row["released"], ".2%")
        else:
            now, released = f"{row['now']:.3f} dex on {row['n']}", _maybe(row["released"], ".3f", " dex")
        table.append([row["arch"], row["task"], row["dataset"], now, released, f"{row['seconds']:.1f}"])
    click.echo(f"released models on fresh test-split lenses (seed {seed}; accuracy, or MAE of log10 m_a):")
    click.echo(format_table(table, ["arch", "task", "dataset", "now", "released (test)", "load+score s"]))
    sample_figure(rows, lenses, figure_path)
    click.echo(f"\nsample lenses with true and predicted classes: {figure_path}")
    if skipped:
        click.echo(skipped_summary(skipped, len(rows) + len(skipped)))
    click.echo(f"{len(rows)} models in {time.perf_counter() - started:.1f} s")


def _maybe(value, spec, suffix=""):
    return "-" if value is None else format(value, spec) + suffix


def run():
    """Console entry point (``lenszoo`` and ``python -m lenszoo``)."""
    _install_warning_format()
    main(prog_name="lenszoo")
