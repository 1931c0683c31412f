"""What a registration holds, and the contract every model it builds meets.

``Architecture.build`` is the one door through which models come: it checks the arguments
(registration metadata is not a model argument), names a plugin whose builder fails or whose
model returns the wrong shape, and fits every model with its provenance (``lenszoo_config``),
its preprocessing (``preprocess``) and the input check (``InputContract``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import LenszooError
from .names import check_name
from .tasks import TASKS, check_task


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
    parameters: dict = field(default_factory=dict)  # task -> count at the default model_args, if declared
    # builds the plain-torch inference form (an untrained skeleton for an exported state dict),
    # for architectures whose trainable form needs a heavy library (escnn)
    inference_builder: Callable[..., Any] | None = None
    # what the architecture is in comparisons (one of ROLES, or None) and where the results page
    # puts it: registered architectures by ``order``, then the rest by name
    role: str | None = None
    order: int | None = None

    def build_inference(self, task: str, **kwargs):
        """The inference-form skeleton of the model ``build(task, **kwargs)`` makes, or None."""
        if self.inference_builder is None:
            return None
        model_args = {**self.default_kwargs, **kwargs}
        model = self.inference_builder(task, **model_args)
        model.lenszoo_config = {"arch": self.name, "task": task, "model_args": model_args,
                                "input_size": list(self.input_size), "plugin": self.plugin, "package": self.package}
        model.register_forward_pre_hook(InputContract(self.name, self.input_size))
        return model

    def parameter_count(self, task: str) -> int:
        """Parameters of the default model for ``task``: declared by the registration (no build,
        no torch import), else counted on a built model."""
        if task in self.parameters:
            return self.parameters[task]
        return sum(p.numel() for p in self.build(task).parameters())

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
        """A freshly initialised model for ``task``, checked once against the model contract:
        a ``(N, *input_size)`` float batch in, ``(N, outputs)`` out. The model carries its
        provenance (``lenszoo_config``) and the preprocessing its inputs need (``preprocess``)."""
        check_task(task)
        if task not in self.tasks:
            raise LenszooError(
                f"architecture {self.name!r} has no {task!r} head; it supports: {', '.join(self.tasks)}"
            )
        metadata = sorted(set(kwargs) & REGISTRATION_KEYWORDS)
        if metadata:
            raise LenszooError(
                f"{', '.join(metadata)} of {self.name!r} is fixed by its registration "
                f"({self.name} takes {'x'.join(map(str, self.input_size))} images); "
                "register a variant with its own name to change it")
        model_args = {**self.default_kwargs, **kwargs}
        if model_args != self.default_kwargs or task not in self.parameters:
            # sized before anything is allocated, where the builder can build on the meta device
            check_model_size(self, model_args, self._meta_size(task, model_args))
        model = self._call_builder(task, model_args)
        check_model_size(self, model_args, model_size(model))
        check_model_output(self, model, task)
        # Provenance travels with the module so checkpoints can record it.
        model.lenszoo_config = {
            "arch": self.name,
            "task": task,
            "model_args": model_args,
            "input_size": list(self.input_size),
            "plugin": self.plugin,
            "package": self.package,
        }
        from .preprocess import NORMALIZATION, Preprocess

        model.preprocess = Preprocess(NORMALIZATION, self.input_size)
        model.register_forward_pre_hook(InputContract(self.name, self.input_size))
        return model

    def _meta_size(self, task, model_args) -> int | None:
        """The numbers (parameters and buffers) the model would hold, from a build on the meta device
        (no memory), or None where the builder cannot build there (the real build is then checked)."""
        import torch

        try:
            with torch.device("meta"):
                model = self.builder(task, **model_args)
        except LenszooError:
            raise
        except Exception:  # noqa: BLE001 - e.g. a library that computes with tensors while building
            return None
        return model_size(model) if isinstance(model, torch.nn.Module) else None

    def _call_builder(self, task, model_args):
        origin = f"plugin {self.plugin!r}" + (f" (package {self.package!r})" if self.package else "")
        try:
            model = self.builder(task, **model_args)
        except LenszooError:
            raise
        except ImportError as exc:
            missing = exc.name or str(exc)
            raise LenszooError(f"architecture {self.name!r} from {origin} needs {missing!r}, which is not installed "
                               f"({exc}); install it, e.g. `pip install {missing.split('.')[0]}`") from None
        except Exception as exc:  # noqa: BLE001 - bad arguments or a broken plugin: one line, naming both
            changed = {k: v for k, v in model_args.items() if self.default_kwargs.get(k, object()) != v}
            given = ", ".join(f"{k}={v!r}" for k, v in sorted(changed.items())) or "its default arguments"
            raise LenszooError(f"architecture {self.name!r} ({origin}) cannot be built with {given}: "
                               f"{type(exc).__name__}: {_first_line(exc)}; see `lenszoo info {self.name}` for its "
                               "model arguments") from None
        import torch

        if not isinstance(model, torch.nn.Module):
            raise LenszooError(f"the builder of architecture {self.name!r} ({origin}) returned "
                               f"{type(model).__name__}, not a torch.nn.Module; fix or uninstall the plugin")
        return model


# The largest model lenszoo builds: 4x ResNet-50; 1.6 GB of weights, gradients and Adam's moments in
# float32. A model that large on 64x64 lenses is a typing mistake, and would take the machine's
# memory (and the other jobs') before it failed.
MAX_PARAMETERS = 100_000_000
BYTES_TO_TRAIN = 16  # per number: float32 weights, gradients and Adam's two moments


def model_size(model) -> int:
    """Numbers held by ``model``: parameters and buffers (shared tensors once)."""
    seen = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        seen[id(tensor)] = tensor.numel()
    return sum(seen.values())


def memory_bytes() -> int | None:
    """Physical memory of this machine, where the system says."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_model_size(arch: "Architecture", model_args: dict, size: int | None):
    """A one-line error if a model of ``size`` numbers is beyond ``MAX_PARAMETERS`` or more than this
    machine's memory can train."""
    if size is None:
        return
    memory = memory_bytes()
    limit = min(MAX_PARAMETERS, memory // BYTES_TO_TRAIN) if memory else MAX_PARAMETERS
    if size <= limit:
        return
    changed = {k: v for k, v in model_args.items() if arch.default_kwargs.get(k, object()) != v}
    given = ", ".join(f"{k}={v!r}" for k, v in sorted(changed.items())) or "its default arguments"
    raise LenszooError(f"architecture {arch.name!r} with {given} would hold {size:,} parameters "
                       f"(~{size * BYTES_TO_TRAIN / 1e9:.1f} GB to train); lenszoo builds at most {limit:,} "
                       f"(its limit, or this machine's memory): choose smaller model arguments "
                       f"(`lenszoo info {arch.name}` shows the defaults)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


# Registration keywords that describe an architecture; they are not model arguments.
REGISTRATION_KEYWORDS = frozenset({"tasks", "description", "paper", "input_size", "role", "order"})
# equivariant: a network built to be rotation-equivariant; baseline: the plain network they are
# measured against; control: a model blind to what the task is about (a margin over it is signal)
ROLES = ("equivariant", "baseline", "control")


def check_model_output(arch: "Architecture", model, task: str):
    """One forward pass on a zero batch of two images (eval mode, no gradients): the output must be
    ``(2, outputs)``. A plugin whose model disagrees is named now, not after an epoch of training."""
    import torch

    from .tasks import num_outputs

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model(torch.zeros(2, *arch.input_size))
    except LenszooError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure here is the plugin's, and says so
        raise LenszooError(f"architecture {arch.name!r} (plugin {arch.plugin!r}) fails on a (2, "
                           f"{', '.join(map(str, arch.input_size))}) batch: {type(exc).__name__}: {exc}") from None
    finally:
        model.train(was_training)
    expected = (2, num_outputs(task))
    if not isinstance(output, torch.Tensor) or tuple(output.shape) != expected:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise LenszooError(f"architecture {arch.name!r} (plugin {arch.plugin!r}) returns {shape} for a batch of 2 "
                           f"{task} inputs; a {task} model must return {expected}: fix or uninstall the plugin")


class InputContract:
    """A forward pre-hook: inputs are ``(N, *input_size)`` tensors of the model's float dtype."""

    def __init__(self, arch: str, input_size):
        self.arch, self.input_size = arch, tuple(input_size)

    def __call__(self, module, args):
        import torch

        x = args[0] if args else None
        shape = "x".join(map(str, self.input_size))
        if not isinstance(x, torch.Tensor):
            raise LenszooError(f"{self.arch} expects a torch.Tensor of shape (N, {', '.join(map(str, self.input_size))}),"
                               f" got {type(x).__name__}; convert images with model.preprocess(images)")
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_size:
            raise LenszooError(f"{self.arch} takes batches of {shape} images, shape (N, "
                               f"{', '.join(map(str, self.input_size))}); got {tuple(x.shape)}: "
                               "crop or resize the images and add the batch and channel axes")
        parameter = next(module.parameters(), None)
        expected = parameter.dtype if parameter is not None else torch.float32
        if x.dtype != expected and not (x.dtype == torch.float32 and torch.is_autocast_enabled(x.device.type)):
            raise LenszooError(f"{self.arch} expects {str(expected).removeprefix('torch.')} images, got "
                               f"{str(x.dtype).removeprefix('torch.')}; pass them through model.preprocess(images), "
                               "which converts and normalises them")
        return None


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


def _make_arch(plugin, package, name, builder, *, tasks=TASKS, description="", paper="",
               input_size=(1, 64, 64), model_args=None, parameters=None, inference_builder=None, role=None,
               order=None, **keyword_model_args):
    """An ``Architecture``: metadata keywords describe it, ``model_args`` are its builder's defaults
    (extra keywords are taken as default model arguments too)."""
    check_name("architecture", name, f"plugin {plugin!r}")
    if model_args is not None and not isinstance(model_args, dict):
        raise TypeError(f"model_args of architecture {name!r} must be a dict")
    clash = sorted(set(model_args or {}) & set(keyword_model_args))
    if clash:
        raise TypeError(f"architecture {name!r} gives {', '.join(clash)} both in model_args and as keywords")
    default_kwargs = {**keyword_model_args, **(model_args or {})}
    if not callable(builder):
        raise TypeError(f"builder for architecture {name!r} is not callable")
    tasks = tuple(tasks)
    for task in tasks:
        check_task(task)
    if parameters is not None and not (isinstance(parameters, dict) and set(parameters) <= set(tasks)
                                       and all(isinstance(v, int) and v > 0 for v in parameters.values())):
        raise TypeError(f"parameters of architecture {name!r} must map its tasks to positive counts")
    if inference_builder is not None and not callable(inference_builder):
        raise TypeError(f"inference_builder of architecture {name!r} is not callable")
    if role is not None and role not in ROLES:
        raise TypeError(f"role of architecture {name!r} must be one of {', '.join(ROLES)}, got {role!r}")
    if order is not None and (isinstance(order, bool) or not isinstance(order, int)):
        raise TypeError(f"order of architecture {name!r} must be a whole number")
    arch = Architecture(name, builder, tasks, description, paper, tuple(input_size),
                        default_kwargs, plugin, package, dict(parameters or {}), inference_builder, role, order)
    return name, arch


def _make_dataset(plugin, package, name, factory, *, description=""):
    check_name("dataset", name, f"plugin {plugin!r}")
    if not callable(factory):
        raise TypeError(f"factory for dataset {name!r} is not callable")
    return name, DatasetEntry(name, factory, description, plugin, package)


def _make_command(plugin, package, command):
    name = getattr(command, "name", None)
    if not name:
        raise TypeError("register_commands expects a click command")
    return name, ((plugin, package), command)


def _make_weights(plugin, package, manifest):
    from pathlib import Path

    path = Path(manifest)
    if path.name != "weights_manifest.json":
        raise TypeError(f"register_weights expects the path of a weights_manifest.json, got {manifest!r}")
    return plugin, path
