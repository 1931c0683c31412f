"""The hooks a lenszoo plugin can implement.

Every hook receives a ``register`` callback rather than returning values, so a
plugin can register any number of things and the registry knows which plugin
registered each one.
"""

import pluggy

hookspec = pluggy.HookspecMarker("lenszoo")
hookimpl = pluggy.HookimplMarker("lenszoo")


@hookspec
def register_architectures(register):
    """Register model architectures.

    ``register(name, builder, *, tasks=("classify", "regress"), description="",
    paper="", input_size=(1, 64, 64), model_args={...}, role=None, order=None)`` where
    ``builder(task, **model_args)`` returns a ``torch.nn.Module`` mapping a
    ``(B, 1, 64, 64)`` batch to ``(B, 3)`` logits for ``classify`` or ``(B, 1)``
    for ``regress``. ``model_args`` are the builder's defaults (recorded in every
    checkpoint, overridden by ``create_model(name, key=value)``); the other keywords
    describe the architecture and are not model arguments: ``role`` (``"equivariant"``,
    ``"baseline"`` or ``"control"``) is what it is in the results page's comparisons and ``order``
    where the page lists it (architectures without one follow, by name). The model is run once on a
    zero batch when built, so a wrong output shape is reported with the plugin's name.
    """


@hookspec
def register_datasets(register):
    """Register dataset generators.

    ``register(name, factory, *, description="")`` where ``factory(**overrides)``
    returns a generator object (see ``docs/plugins.md``).
    """


@hookspec
def register_commands(register):
    """Register extra ``lenszoo`` CLI commands: ``register(click_command)``."""


@hookspec
def register_weights(register):
    """Register released weights shipped with a plugin package: ``register(manifest_path)``.

    The file is a ``weights_manifest.json`` like lenszoo's own (``docs/plugins.md``); its
    ``folder`` paths are relative to it. ``lenszoo.load(arch, task=, dataset=)`` then finds a
    plugin's weights the same way as lenszoo's (local folder, Hugging Face cache, pinned Hub).
    """
