"""Tiny test architectures registered in-process, shared by several test files."""

import contextlib

import lenszoo
from lenszoo.registry import registry


def build_probe(task, width=4):
    """A small plain CNN: (B, 1, 64, 64) -> (B, 3) or (B, 1)."""
    import torch.nn as nn

    return nn.Sequential(nn.Conv2d(1, width, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, 3 if task == "classify" else 1))


class ProbePlugin:
    """Registers ``build_probe`` under each of ``names`` (the last one in the pre-0.2 keyword form)."""

    def __init__(self, *names, legacy: str | None = None):
        self.names, self.legacy = names, legacy

    @lenszoo.hookimpl
    def register_architectures(self, register):
        for name in self.names:
            register(name, build_probe, description="tiny test net", model_args={"width": 4})
        if self.legacy:
            register(self.legacy, build_probe, width=4)  # default model args as keywords


@contextlib.contextmanager
def registered(plugin, name: str):
    registry.register_plugin(plugin, name=name)
    try:
        yield
    finally:
        registry.unregister_plugin(name)
