"""Where a computation runs: device, torch.distributed process group, threads, precision.

Shared by training, evaluation and loading; nothing here knows about models or data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import LenszooError

PRECISIONS = ("fp32", "bf16")


def rank_positions(first: int, count: int, rank: int, world_size: int) -> range:
    """The positions of ``[first, first + count)`` that ``rank`` of ``world_size`` takes:
    every ``world_size``-th, starting at ``first + rank`` (ranks interleave)."""
    return range(first + rank, first + count, world_size)


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def enabled(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0

    def all_reduce_sum(self, tensor):
        if self.enabled:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_int(self, value: int, device) -> int:
        if not self.enabled:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.int64, device=device)
        dist.broadcast(t, 0)
        return int(t.item())

    def barrier(self):
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()


def resolve_device(name, local_rank: int = 0):
    """A ``torch.device`` for ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, or a one-line error
    saying what this machine has."""
    import torch

    if isinstance(name, torch.device):
        name = str(name)
    if not isinstance(name, str):
        raise LenszooError(f"device must be a string such as 'cpu' or 'cuda:0', got {type(name).__name__}")
    name = name.strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise LenszooError("device 'mps' (Apple GPU) is not available on this machine; use cpu or auto")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise LenszooError(f"device {name!r} asked for but no CUDA GPU is visible; use cpu or auto")
        if name == "cuda":
            return torch.device(f"cuda:{local_rank}")
        index = name.removeprefix("cuda:")
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise LenszooError(f"device {name!r}: this machine has {torch.cuda.device_count()} GPU(s), "
                               f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        return torch.device(name)
    raise LenszooError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")


def init_distributed(device_name: str):
    """``(context, device, created)``: joins torchrun's process group (gloo on CPU, nccl on GPU)."""
    import torch

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    ctx = DistContext(int(os.environ.get("RANK", "0")), world_size, int(os.environ.get("LOCAL_RANK", "0")),
                      int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size))))
    device = resolve_device(device_name, ctx.local_rank)
    created = False
    if ctx.enabled:
        import torch.distributed as dist

        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
            created = True
    return ctx, device, created


def autocast(precision: str, device):
    """The forward pass's precision: fp32, or bfloat16 autocast (weights, loss and optimizer stay fp32)."""
    import contextlib

    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


# CPU flags of native bfloat16 arithmetic (AVX512-BF16, AMX): without them torch emulates bf16,
# several times slower than fp32.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    """The instruction-set flags /proc/cpuinfo lists (empty where there is none: not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def native_bf16(device) -> bool:
    """Whether ``device`` computes in bfloat16 natively: a CUDA GPU that supports it, or a CPU
    with one of ``BF16_CPU_FLAGS``."""
    if device.type == "cuda":
        import torch

        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool(set(BF16_CPU_FLAGS) & cpu_flags())
    return False


def hardware_name(device) -> str:
    """What a run trained on, for its checkpoint's record: the GPU's or the CPU's model name."""
    import platform

    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({available_cores()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({available_cores()} cores)"


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def end_with_parent(parent: int | None = None):
    """Make this worker process end quietly when the process that started it (``parent``, by
    default the current parent) dies, even by SIGKILL or the OOM killer: a forked worker would
    otherwise wait forever on a queue nobody reads, holding its memory and its inherited files.
    Linux delivers SIGTERM on the parent's death (PR_SET_PDEATHSIG); elsewhere a thread watches."""
    import signal

    parent = os.getppid() if parent is None else parent
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # a write to a dead parent ends the worker silently
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, signal.SIGTERM, 0, 0, 0) == 0:  # PR_SET_PDEATHSIG
            if os.getppid() != parent:  # it died before the request took effect
                os._exit(0)
            return
    except (OSError, AttributeError):
        pass
    import threading

    def watch():
        import time

        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
