"""Scale-out on torch.distributed as torchrun sets it up: rank, world size, device, barrier.

Nothing here schedules work: torchrun (``torchrun --nproc_per_node=N --no-python i3d-convert ...``,
or several nodes through its rendezvous) starts the processes and sets ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK``; each process takes every ``WORLD_SIZE``-th item of one sorted list.
Without those variables the run is one process and torch.distributed is not touched.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import List, Sequence, TypeVar

import torch

from i3d_convert.device import resolve_device
from i3d_convert.errors import I3DConvertError

T = TypeVar("T")
#: Ranks wait for the slowest one at the final barrier; a dataset run can take hours.
BARRIER_TIMEOUT = timedelta(hours=72)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise I3DConvertError(f"environment variable {name}={value!r} is not an integer") from None


def context_from_environment() -> DistContext:
    """Rank, world size and local rank from torchrun's variables (one process without them)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise I3DConvertError(f"RANK={rank} does not fit WORLD_SIZE={world}")
    return DistContext(rank, world, _env_int("LOCAL_RANK", 0))


def select_device(context: DistContext, requested: str) -> torch.device:
    """``auto``: ``cuda:LOCAL_RANK`` when CUDA is present, else the CPU; ``cuda`` means this rank's GPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        requested = f"cuda:{context.local_rank}"
    return resolve_device(requested)


def start(context: DistContext, device: torch.device, until_exit: bool = False) -> None:
    """Join the process group (NCCL on CUDA, gloo on the CPU) when the run has several ranks;
    ``until_exit``: stay in it for the rest of the process (left at exit), for callers that run
    several times in one process."""
    import torch.distributed as dist

    if context.distributed and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, rank=context.rank, world_size=context.world_size, timeout=BARRIER_TIMEOUT)
        if until_exit:
            atexit.register(finish, context)


def barrier(context: DistContext) -> None:
    """Wait until every rank got here (a no-op for one process)."""
    import torch.distributed as dist

    if context.distributed and dist.is_initialized():
        dist.barrier()


def all_sum(context: DistContext, value: int) -> int:
    """The sum of ``value`` over all ranks (``value`` itself for one process)."""
    import torch.distributed as dist

    if not (context.distributed and dist.is_initialized()):
        return value
    tensor = torch.tensor([value], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return int(tensor.item())


def finish(context: DistContext) -> None:
    """Leave the process group."""
    import torch.distributed as dist

    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def shard(items: Sequence[T], context: DistContext) -> List[T]:
    """This rank's items: every ``world_size``-th one, starting at ``rank`` (deterministic)."""
    return list(items[context.rank::context.world_size])
