"""The process group as the rest of detkit sees it: this process's rank, and the calls every
process makes together (a barrier, gathering objects, reducing losses).

Part of :mod:`detkit.distributed`; import the names from there. Each works whether or not
a process group is initialised: in a single process it is a no-op.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "all_gather",
    "barrier",
    "get_rank",
    "get_world_size",
    "is_dist_avail_and_initialized",
    "is_main_process",
    "reduce_dict",
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


def reduce_dict(
    values: Mapping[str, torch.Tensor], *, average: bool = True
) -> dict[str, torch.Tensor]:
    """Sum or average a dict of scalar tensors over all processes (one collective call).

    Every process must pass the same keys; the result is the same on every process. The
    input is not modified. In a single process the values come back unchanged, in a new
    dict. Typical use: the loss dict a detection model returns, for logging.

    Args:
        values: ``{name: Tensor[]}``, 0-d tensors on this process's device.
        average: divide the sums by the world size.

    Returns:
        A new dict with the same keys, in the same order, holding detached tensors when a
        process group is in use.

    Raises:
        TypeError: for a value that is not a tensor.
        ValueError: for a value that is not 0-d.

    >>> losses = {"loss_classifier": torch.tensor(0.5)}
    >>> reduce_dict({**losses, "loss_box_reg": torch.tensor(0.25)})
    {'loss_classifier': tensor(0.5000), 'loss_box_reg': tensor(0.2500)}
    """
    for name, value in values.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"reduce_dict: values[{name!r}] must be a tensor, got {type(value).__name__}"
            )
        if value.dim() != 0:
            raise ValueError(
                f"reduce_dict: values[{name!r}] must be a 0-d tensor, got shape {tuple(value.shape)}"
            )
    world_size = get_world_size()
    if world_size == 1 or not values:
        return dict(values)
    # Sorted keys give every rank the same stacking order whatever its dict's insertion order.
    names = sorted(values)
    stacked = torch.stack([values[name].detach() for name in names])
    dist.all_reduce(stacked)
    if average:
        stacked = stacked / world_size
    reduced = dict(zip(names, stacked.unbind(0)))
    return {name: reduced[name] for name in values}
