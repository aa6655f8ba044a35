"""torch.distributed helpers that degrade to no-ops in a single process.

Every function here works whether or not a process group is initialised, so library code and
training scripts call them unconditionally. A multi-process run starts with
:func:`init_distributed` (which reads what ``torchrun`` puts in the environment) and wraps its
model with :func:`wrap_ddp`; see the training guide for a complete script.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, overload

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistributedInfo",
    "all_gather",
    "barrier",
    "broadcast_buffers",
    "destroy_distributed",
    "get_local_rank",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_dist_avail_and_initialized",
    "is_main_process",
    "reduce_dict",
    "unwrap_model",
    "wrap_ddp",
]

_log = logging.getLogger(__name__)


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


def get_local_rank() -> int:
    """This process's rank on its machine: ``LOCAL_RANK`` as torchrun sets it (0 without it).

    >>> get_local_rank()
    0
    """
    return _env_int("LOCAL_RANK", default=0)


@dataclass(frozen=True)
class DistributedInfo:
    """Where this process stands in a run, as returned by :func:`init_distributed`.

    Attributes:
        rank: global rank (0 in a single process).
        world_size: number of processes (1 in a single process).
        local_rank: rank on this machine; the CUDA device index under ``nccl``.
        backend: ``"gloo"``, ``"nccl"``, ... or ``None`` when no process group was created.
        device: the device this process should put its model and data on.

    >>> DistributedInfo(rank=0, world_size=1, local_rank=0, backend=None,
    ...                 device=torch.device("cpu")).distributed
    False
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str | None
    device: torch.device

    @property
    def distributed(self) -> bool:
        """Whether a process group is in use."""
        return self.backend is not None

    @property
    def is_main_process(self) -> bool:
        """Whether this is rank 0."""
        return self.rank == 0


@overload
def _env_int(name: str, *, default: int) -> int: ...


@overload
def _env_int(name: str, *, default: None = None) -> int | None: ...


def _env_int(name: str, *, default: int | None = None) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def _default_device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(
    backend: str | None = None,
    *,
    init_method: str | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    local_rank: int | None = None,
    timeout: datetime.timedelta | None = None,
) -> DistributedInfo:
    """Create the default process group from torchrun's environment, or stay single-process.

    Under ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``
    and ``MASTER_PORT``) this joins the process group; with none of these variables set and
    no ``rank``/``world_size`` argument it creates nothing and returns a single-process
    description, so one script serves both cases. ``nccl`` is chosen when CUDA is
    available, else ``gloo``; under ``nccl`` the process's CUDA device is set to its local
    rank (``torch.cuda.set_device``). Calling it again once a group exists only describes
    that group.

    Args:
        backend: ``"gloo"``, ``"nccl"``, ... (default: ``"nccl"`` with CUDA, else ``"gloo"``).
        init_method: a URL such as ``"tcp://127.0.0.1:29500"`` instead of ``MASTER_ADDR``
            and ``MASTER_PORT`` (``"env://"`` by default).
        rank: global rank, instead of ``RANK``.
        world_size: number of processes, instead of ``WORLD_SIZE``.
        local_rank: rank on this machine, instead of ``LOCAL_RANK`` (default: ``rank``).
        timeout: how long collectives wait before failing (PyTorch's default otherwise).

    Returns:
        A :class:`DistributedInfo` with the rank, world size and the device to use.

    Raises:
        ValueError: for a rank outside ``[0, world_size)``, only one of rank and world size
            given, ``MASTER_ADDR``/``MASTER_PORT`` missing without ``init_method``, or
            ``nccl`` without enough CUDA devices.

    >>> info = init_distributed()       # a plain ``python script.py`` run
    >>> info.rank, info.world_size, info.backend
    (0, 1, None)
    """
    if is_dist_avail_and_initialized():
        # As on the first call: LOCAL_RANK, else the global rank (one process per device).
        local = _env_int("LOCAL_RANK", default=get_rank()) if local_rank is None else local_rank
        name = str(dist.get_backend())
        device = _default_device(local) if name == "nccl" else torch.device("cpu")
        return DistributedInfo(get_rank(), get_world_size(), local, name, device)
    rank = _env_int("RANK") if rank is None else rank
    world_size = _env_int("WORLD_SIZE") if world_size is None else world_size
    if rank is None and world_size is None:
        local = 0 if local_rank is None else local_rank
        return DistributedInfo(0, 1, local, None, _default_device(local))
    if rank is None or world_size is None:
        raise ValueError(
            f"rank and world size go together: got rank={rank}, world_size={world_size} "
            "(torchrun sets both RANK and WORLD_SIZE)"
        )
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"rank must lie in [0, world_size): got rank={rank}, world_size={world_size}"
        )
    if local_rank is None:
        local_rank = _env_int("LOCAL_RANK", default=rank)
    if init_method is None:
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
        if missing:
            raise ValueError(
                f"environment variable(s) {', '.join(missing)} not set: start the script with "
                "torchrun, or pass init_method='tcp://<host>:<port>'"
            )
        init_method = "env://"
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise ValueError(
                f"backend 'nccl' needs one CUDA device per process: local rank {local_rank} but "
                f"{count} device(s) visible"
            )
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    kwargs: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    dist.init_process_group(
        backend=backend, init_method=init_method, rank=rank, world_size=world_size, **kwargs
    )
    _log.info("process group initialised: rank %d of %d, backend %s", rank, world_size, backend)
    return DistributedInfo(rank, world_size, local_rank, backend, device)


def destroy_distributed() -> None:
    """Destroy the default process group, if any (call it at the end of a run).

    >>> destroy_distributed()   # nothing to do in a single process
    """
    if is_dist_avail_and_initialized():
        dist.destroy_process_group()


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
