"""Starting and ending a multi-process run: the process group from torchrun's environment.

Part of :mod:`detkit.distributed`; import the names from there.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any, overload

import torch
import torch.distributed as dist

from detkit.distributed.collectives import get_rank, get_world_size, is_dist_avail_and_initialized

__all__ = ["DistributedInfo", "destroy_distributed", "get_local_rank", "init_distributed"]

_log = logging.getLogger("detkit.distributed")


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
        # LOCAL_RANK alone still picks the device, as get_local_rank() reports it.
        local = _env_int("LOCAL_RANK", default=0) if local_rank is None else local_rank
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
