"""The two tasks every architecture is built for, and the fixed class order."""

from .errors import LenszooError, UnknownNameError

# One fixed order, stored with every dataset and checkpoint; never implied by
# folder names (DeepLense's alphabetical order was axion, cdm, no_sub).
CLASS_NAMES = ("no_sub", "cdm", "axion")

# task -> number of network outputs
TASK_OUTPUTS = {"classify": len(CLASS_NAMES), "regress": 1}
TASKS = tuple(TASK_OUTPUTS)


def check_task(task):
    if task not in TASK_OUTPUTS:
        raise UnknownNameError("task", task, TASKS)
    return task


def num_outputs(task):
    """Width of the network's final layer for ``task``."""
    return TASK_OUTPUTS[check_task(task)]


__all__ = ["CLASS_NAMES", "TASKS", "check_task", "num_outputs", "LenszooError"]
