"""The model across processes: wrapping it in ``DistributedDataParallel``, reaching inside
the wrapper, and giving every process rank 0's buffers.

Part of :mod:`detkit.distributed`; import the names from there.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from detkit.distributed.collectives import is_dist_avail_and_initialized

__all__ = ["broadcast_buffers", "unwrap_model", "wrap_ddp"]


def broadcast_buffers(model: nn.Module, *, src: int = 0) -> None:
    """Give every process rank ``src``'s buffers of ``model`` (no-op in a single process).

    Buffers are the model's state that is not learned by gradients: batch norm's running
    mean and variance (and its batch count). Under ``DistributedDataParallel`` the parameters
    are the same on every process, but the buffers are not: each process updates its batch
    norm statistics from its own batches. DDP's ``broadcast_buffers=True`` copies rank 0's at
    the start of each *training* forward, so they still differ by the last step's update, and
    not at all with ``broadcast_buffers=False``. Evaluating then uses per-process statistics:
    the metrics of a multi-process run would match no single model, and not the checkpoint
    (which holds rank 0's). :func:`detkit.engine.evaluate` and
    :func:`detkit.engine.save_checkpoint` call this first.

    Broadcasting, not averaging: after it every process holds exactly the model that rank 0
    saves, so a saved checkpoint evaluated alone gives the multi-process numbers, and a resumed
    run continues from what the uninterrupted one holds. An average of the running variances
    is not the variance of the processes' data together (it misses the spread between their
    means), and the result would be a model no process trained.

    A collective call: every process must call it, with the same model. The buffers are
    overwritten in place (one broadcast per dtype and device, not per tensor).

    Args:
        model: the model, wrapped or not.
        src: the rank whose buffers everyone gets.

    >>> layer = nn.BatchNorm1d(3)
    >>> broadcast_buffers(layer)      # a single process: nothing to do
    >>> layer.running_var
    tensor([1., 1., 1.])
    """
    if not is_dist_avail_and_initialized():
        return
    buffers = list(unwrap_model(model).buffers())
    groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for buffer in buffers:
        groups.setdefault((buffer.dtype, buffer.device), []).append(buffer)
    # Sorted, so that every process issues the broadcasts in the same order.
    for key in sorted(groups, key=lambda k: (str(k[0]), k[1].type)):
        tensors = groups[key]
        flat = torch.cat([t.detach().reshape(-1) for t in tensors])
        dist.broadcast(flat, src=src)
        with torch.no_grad():
            offset = 0
            for tensor in tensors:
                count = tensor.numel()
                tensor.copy_(flat[offset : offset + count].view_as(tensor))
                offset += count


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (else itself).

    >>> layer = nn.Linear(2, 2)
    >>> unwrap_model(nn.DataParallel(layer)) is layer
    True
    """
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def wrap_ddp(
    model: nn.Module,
    device: torch.device | str | None = None,
    *,
    sync_batchnorm: bool = False,
    find_unused_parameters: bool = False,
    **ddp_kwargs: Any,
) -> nn.Module:
    """Move ``model`` to ``device`` and wrap it in ``DistributedDataParallel`` when distributed.

    In a single process the model is only moved and comes back unwrapped, so the training
    code is the same in both cases. Use :func:`unwrap_model` to reach the model's own
    attributes (or to save its ``state_dict``) whether or not it is wrapped.

    Args:
        model: the model (not already wrapped).
        device: where to put it (default: leave it where it is). On CUDA the wrapper gets
            ``device_ids=[device.index]``.
        sync_batchnorm: convert ``BatchNorm*d`` layers to ``SyncBatchNorm`` (CUDA only;
            torchvision's detection backbones use frozen batch norm, unaffected either way).
        find_unused_parameters: passed to ``DistributedDataParallel``; needed when some
            parameters get no gradient in an iteration.
        **ddp_kwargs: further ``DistributedDataParallel`` arguments.

    Returns:
        The wrapped model under a process group, else ``model`` itself.

    Raises:
        ValueError: when ``model`` is already wrapped.

    >>> layer = nn.Linear(2, 2)
    >>> wrap_ddp(layer, "cpu") is layer     # single process: nothing to wrap
    True
    """
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        raise ValueError("wrap_ddp: the model is already wrapped; pass the bare model")
    if device is not None:
        device = torch.device(device)
        model = model.to(device)
    if not is_dist_avail_and_initialized():
        return model
    if sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [device.index] if device is not None and device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model,
        device_ids=device_ids,
        find_unused_parameters=find_unused_parameters,
        **ddp_kwargs,
    )
