"""torch.distributed helpers that degrade to no-ops in a single process.

Every function here works whether or not a process group is initialised, so library code and
training scripts call them unconditionally. A multi-process run starts with
:func:`init_distributed` (which reads what ``torchrun`` puts in the environment) and wraps its
model with :func:`wrap_ddp`; see the training guide for a complete script.

Three modules, all re-exported here: ``launch`` (the process group: :func:`init_distributed`),
``collectives`` (this process's rank, and the calls every process makes together) and ``ddp``
(the model across processes).
"""

from detkit.distributed.collectives import (
    all_gather,
    barrier,
    get_rank,
    get_world_size,
    is_dist_avail_and_initialized,
    is_main_process,
    reduce_dict,
)
from detkit.distributed.ddp import broadcast_buffers, unwrap_model, wrap_ddp
from detkit.distributed.launch import (
    DistributedInfo,
    destroy_distributed,
    get_local_rank,
    init_distributed,
)

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
