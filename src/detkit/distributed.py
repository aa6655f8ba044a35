"""torch.distributed helpers that degrade to no-ops in a single process.

Every function here works whether or not a process group is initialised, so library code and
training scripts call them unconditionally.
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist

__all__ = [
    "all_gather",
    "barrier",
    "get_rank",
    "get_world_size",
    "is_dist_avail_and_initialized",
    "is_main_process",
]


def is_dist_avail_and_initialized() -> bool:
    """Whether torch.distributed is available and a process group is initialised.

    >>> is_dist_avail_and_initialized()
    False
    """
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """Number of processes in the default group (1 without one).

    >>> get_world_size()
    1
    """
    return dist.get_world_size() if is_dist_avail_and_initialized() else 1


def get_rank() -> int:
    """This process's rank in the default group (0 without one).

    >>> get_rank()
    0
    """
    return dist.get_rank() if is_dist_avail_and_initialized() else 0


def is_main_process() -> bool:
    """Whether this process is rank 0 (always true in a single process).

    >>> is_main_process()
    True
    """
    return get_rank() == 0


def barrier() -> None:
    """Wait for every process of the default group (no-op in a single process).

    >>> barrier()
    """
    if is_dist_avail_and_initialized():
        dist.barrier()


def all_gather(obj: Any) -> list[Any]:
    """Gather a picklable Python object from every process, in rank order.

    Args:
        obj: any picklable object.

    Returns:
        ``[obj_from_rank_0, obj_from_rank_1, ...]``; ``[obj]`` in a single process.

    >>> all_gather({"images": 3})
    [{'images': 3}]
    """
    world_size = get_world_size()
    if world_size == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, obj)
    return gathered
