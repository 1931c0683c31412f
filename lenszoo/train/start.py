"""Where a run's weights start: the checkpoint ``--init`` names, copied into the freshly built
model, and the regression head's bias set to the mean target."""

from __future__ import annotations

from pathlib import Path

from ..errors import LenszooError


def init_checkpoint(config) -> Path:
    """The checkpoint folder ``--init`` names, checked to hold weights of this run's arch and task."""
    from ..checkpoint import read_config
    from ..pretrained.refs import resolve_name

    folder = resolve_name(config.init, accept=("run", "checkpoint")).checkpoint_folder
    saved = read_config(folder)
    if (saved.get("arch"), saved.get("task")) != (config.arch, config.task):
        raise LenszooError(f"--init {config.init} holds {saved.get('arch')} {saved.get('task')} weights, this run "
                           f"trains {config.arch} {config.task}; start from weights of the same --arch and --task")
    return folder


def load_init_weights(model, folder: Path) -> None:
    """Copy ``folder``'s weights into the freshly built ``model``."""
    from ..checkpoint import load_checkpoint

    source = load_checkpoint(folder, trainable=True)  # sha256-checked
    try:
        model.load_state_dict(source.state_dict())
    except RuntimeError as exc:  # another --model-arg: parameter names or shapes differ
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        raise LenszooError(f"--init {folder}: its weights do not fit this model ({lines[-1]}); "
                           f"train with the --model-arg values it was trained with") from None


def init_record(folder) -> dict:
    """What a checkpoint records of the weights its run started from."""
    from ..checkpoint import read_config

    record = {"from": str(folder)}
    try:
        saved = read_config(Path(folder))
    except LenszooError:  # resumed after the --init folder was moved: the path is what is known
        return record
    return {**record, **{key: saved.get(key) for key in ("weights_sha256", "dataset", "images_seen")}}


def init_regression_bias(model, value: float) -> bool:
    """Set the bias of the last single-output Linear/Conv layer to ``value``; False if none."""
    import torch

    for module in reversed(list(model.modules())):
        out = getattr(module, "out_features", getattr(module, "out_channels", None))
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and out == 1 and module.bias is not None:
            with torch.no_grad():
                module.bias.fill_(value)
            return True
    return False
