"""Training checkpoints: plain data, atomic writes, exact resume.

The random generator states a checkpoint holds come from ``detkit.engine.rng``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from detkit.distributed import (
    all_gather,
    barrier,
    broadcast_buffers,
    get_rank,
    get_world_size,
    is_main_process,
)
from detkit.distributed import unwrap_model as _unwrap
from detkit.engine._compatibility import check_restorable, type_family
from detkit.engine.rng import get_rng_state, set_rng_state
from detkit.files import atomic_write, check_undamaged, load_error_reason

__all__ = ["get_rng_state", "load_checkpoint", "save_checkpoint", "set_rng_state"]

_log = logging.getLogger(__name__)
_FORMAT = "detkit.checkpoint"
_VERSION = 1
_SCALARS = (str, bytes, int, float, bool, type(None))
_RESTORED_NOTHING = "nothing was restored: resume from another checkpoint"
_TORCH_VALUES = (torch.Tensor, torch.Size, torch.dtype, torch.device)


def _plain(value: Any, where: str) -> Any:
    """``value`` as data that ``torch.load(weights_only=True)`` can read, or a TypeError."""
    if type(value) in _SCALARS or isinstance(value, _TORCH_VALUES):
        return value
    # Subclasses (enums, torch.__version__'s TorchVersion) are not plain for weights_only.
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, argparse.Namespace):
        value = vars(value)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        out = OrderedDict() if isinstance(value, OrderedDict) else {}
        for key, item in value.items():
            if type(key) not in _SCALARS:
                raise TypeError(
                    f"{where}: key {key!r} is a {type(key).__name__}; checkpoint keys must be "
                    "str, int, float, bool or None"
                )
            out[key] = _plain(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        items = [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise TypeError(
        f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which "
        "torch.load(weights_only=True) cannot read: store plain data (dicts, lists, str, "
        "numbers, bools, None, tensors) instead"
    )


def _check_plain(value: Any, where: str) -> None:
    """Raise TypeError naming the first entry of ``value`` that is not plain data.

    State dicts are checked rather than converted, so that they are saved as they are
    (``OrderedDict`` metadata included).
    """
    if type(value) in _SCALARS or isinstance(value, _TORCH_VALUES):
        return
    if isinstance(value, Mapping) and type(value) in (dict, OrderedDict):
        for key, item in value.items():
            if type(key) not in _SCALARS:
                raise TypeError(f"{where}: key {key!r} is a {type(key).__name__}, not plain data")
            _check_plain(item, f"{where}[{key!r}]")
        return
    if type(value) in (list, tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which "
        "torch.load(weights_only=True) cannot read"
    )


def _state(obj: Any, where: str) -> Any:
    if obj is None:
        return None
    state = obj.state_dict()
    _check_plain(state, where)
    return state


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    epoch: int,
    optimizer: torch.optim.Optimizer | None = None,
    lr_scheduler: Any = None,
    scaler: torch.amp.GradScaler | None = None,
    step: int = 0,
    config: Any = None,
    generators: Mapping[str, torch.Generator] | None = None,
    extra: Any = None,
) -> Path:
    """Write a training checkpoint atomically, as plain data.

    The file holds the model's ``state_dict`` (unwrapped from ``DistributedDataParallel``),
    the optimizer's, scheduler's and scaler's states, ``epoch`` and ``step``, every
    process's random generator states (:func:`get_rng_state`), the states of ``generators``,
    and ``config``/``extra`` as plain data, so ``torch.load(path, weights_only=True)`` reads
    it without executing pickled code. It is written with :func:`detkit.files.atomic_write`
    (a temporary file in the same folder, flushed to disk, then renamed over ``path``): a
    crash or a full disk while saving leaves the previous checkpoint intact.

    Under ``torch.distributed`` this is a collective call: **every process calls it** (as
    with the reference scripts' ``save_on_master``); their RNG states are gathered, the main
    process writes, and all return once the file is complete. The model's buffers (batch norm
    statistics, which each process updates from its own batches) are first broadcast from
    rank 0 (:func:`detkit.distributed.broadcast_buffers`), so every process goes on with the
    model that was saved, as a resumed run would.

    Args:
        path: the checkpoint file.
        model: the model (its parameters and buffers are saved).
        epoch: the last *completed* epoch; resume with ``epoch + 1``.
        optimizer: its state (momentum buffers, learning rates), if any.
        lr_scheduler: its state, if any.
        scaler: the ``torch.amp.GradScaler``'s state, if any.
        step: optimizer steps done so far (for your own bookkeeping and logs).
        config: the run's settings: a dict, ``argparse.Namespace`` or dataclass of plain
            values (paths become strings, numpy scalars Python numbers).
        generators: ``{name: torch.Generator}`` that drive data order besides torch's global
            generator (e.g. a ``DataLoader(generator=...)``).
        extra: any further plain data (e.g. the best metric so far).

    Returns:
        ``Path(path)``.

    Raises:
        TypeError: naming the entry (e.g. ``config['transform']``) that is not plain data.
        ValueError: for a negative ``epoch`` or ``step``.
        OSError: when the file cannot be written (a full disk, no permission), naming
            ``path`` and the system's reason; the previous file at ``path`` is unchanged.

    >>> import tempfile
    >>> model = nn.Linear(2, 1)
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> path = save_checkpoint(Path(tempfile.mkdtemp()) / "last.pt", model=model,
    ...                        optimizer=optimizer, epoch=3, config={"lr": 0.1})
    >>> checkpoint = torch.load(path, weights_only=True)
    >>> checkpoint["epoch"], checkpoint["config"]
    (3, {'lr': 0.1})
    """
    if not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
    if not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    path = Path(path)
    # Every process continues with the buffers (batch norm statistics) that are saved.
    broadcast_buffers(model)
    rng = all_gather(get_rng_state())
    if is_main_process():
        payload = {
            "format": _FORMAT,
            "version": _VERSION,
            "epoch": epoch,
            "step": step,
            "world_size": get_world_size(),
            "model": _state(_unwrap(model), "model"),
            "optimizer": _state(optimizer, "optimizer"),
            "lr_scheduler": _state(lr_scheduler, "lr_scheduler"),
            "scaler": _state(scaler, "scaler"),
            "rng": rng,
            "generators": {
                str(name): generator.get_state() for name, generator in (generators or {}).items()
            },
            "config": _plain(config, "config"),
            "extra": _plain(extra, "extra"),
            "types": {
                name: type_family(obj)
                for name, obj in (("optimizer", optimizer), ("lr_scheduler", lr_scheduler))
                if obj is not None
            },
            "torch_version": str(torch.__version__),
        }
        with atomic_write(path) as file:
            torch.save(payload, file)
    barrier()
    return path


def _read(path: Path, map_location: Any) -> Any:
    """``torch.load(path, weights_only=True)``, each way it can fail a ValueError naming the
    file and the cause: damage (the records' CRC-32, which torch does not check), a
    ``map_location`` this machine lacks, or what :func:`load_error_reason` tells."""
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # corrupt, truncated, or holding pickled objects
        check_undamaged(path, "checkpoint", _RESTORED_NOTHING)  # the cause, not an effect
        if map_location not in (None, "cpu") and _readable_on_cpu(path):
            raise ValueError(
                f"cannot load checkpoint '{path}' with map_location={map_location!r} (the "
                f"file itself reads on the CPU): {load_error_reason(error)}"
            ) from error
        raise ValueError(
            f"cannot read checkpoint '{path}' safely: {load_error_reason(error, path)}. "
            "save_checkpoint writes plain data, so this file was not written by it (or is "
            "damaged); load it with torch.load(weights_only=False) only if you trust it"
        ) from error
    check_undamaged(path, "checkpoint", _RESTORED_NOTHING)  # torch.load does not check CRCs
    return checkpoint


def _readable_on_cpu(path: Path) -> bool:
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False
    return True


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    lr_scheduler: Any = None,
    scaler: torch.amp.GradScaler | None = None,
    generators: Mapping[str, torch.Generator] | None = None,
    restore_rng: bool = True,
    map_location: str | torch.device | None = "cpu",
    strict: bool = True,
) -> dict[str, Any]:
    """Read a checkpoint of :func:`save_checkpoint` and restore the given objects from it.

    The file is read with ``torch.load(weights_only=True)``. Each object passed gets its
    state back; with ``restore_rng`` this process's random generators get the state this
    rank had when saving, so data order and random sampling continue exactly (a process
    whose rank did not exist at save time keeps its generators and a warning is logged).
    Continue training with epoch ``checkpoint["epoch"] + 1``.

    Args:
        path: the checkpoint file.
        model: the model to load the weights into (wrapped or not).
        optimizer: the optimizer to restore (built over the same parameters).
        lr_scheduler: the scheduler to restore.
        scaler: the ``GradScaler`` to restore.
        generators: ``{name: torch.Generator}`` to restore, as passed to
            :func:`save_checkpoint`.
        restore_rng: restore the global random generators.
        map_location: where tensors are loaded (``"cpu"`` by default; the optimizer moves
            its state to its parameters' device itself).
        strict: passed to ``model.load_state_dict``.

    Returns:
        The checkpoint as a dict: ``epoch``, ``step``, ``config``, ``extra``, the states.

    Raises:
        FileNotFoundError: when ``path`` does not exist (or is a folder).
        ValueError: naming the file, when it cannot be read with ``weights_only=True``
            (corrupt, cut short, or holding pickled objects), its bytes fail the CRC-32
            checksums ``torch.save`` wrote with them (altered since: ``torch.load`` itself
            does not check them), it is not a detkit checkpoint,
            lacks a state asked for, or does not fit the objects passed. Everything is checked
            before anything is restored, and on this error nothing has been: the model's
            tensor names (with ``strict``) and shapes, told as class or keypoint counts where
            they say so ("checkpoint has 3 classes, model has 5"); the optimizer's type
            ("checkpoint's optimizer is SGD, yours is Adam"), parameter groups and state
            shapes; the scheduler's type; a GradScaler's state; the generators' states.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "last.pt"
    >>> path = save_checkpoint(path, model=nn.Linear(2, 1), epoch=0)
    >>> model = nn.Linear(2, 1)
    >>> load_checkpoint(path, model=model)["epoch"]
    0
    """
    path = Path(path)
    if not path.is_file():
        kind = "is a directory, not a file" if path.is_dir() else "not found"
        raise FileNotFoundError(f"checkpoint {kind}: '{path}'")
    checkpoint = _read(path, map_location)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != _FORMAT:
        keys = (
            sorted(map(str, checkpoint))[:8]
            if isinstance(checkpoint, dict)
            else type(checkpoint).__name__
        )
        raise ValueError(
            f"'{path}' is not a detkit checkpoint (written by save_checkpoint); found {keys}. "
            "For a bare state_dict use model.load_state_dict(torch.load(path, weights_only=True))"
        )
    if checkpoint.get("version", 0) > _VERSION:
        raise ValueError(
            f"'{path}' has checkpoint format version {checkpoint['version']}, newer than this "
            f"detkit understands ({_VERSION}): upgrade detkit"
        )
    for name, target in (
        ("optimizer", optimizer),
        ("lr_scheduler", lr_scheduler),
        ("scaler", scaler),
    ):
        if target is not None and checkpoint.get(name) is None:
            raise ValueError(f"'{path}' holds no {name} state, but an {name} was passed to restore")
    unwrapped = None if model is None else _unwrap(model)
    # Everything is checked before anything is restored: all of it, or nothing.
    check_restorable(
        path,
        checkpoint,
        model=unwrapped,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        scaler=scaler,
        generators=generators,
        strict=strict,
    )
    if unwrapped is not None:
        unwrapped.load_state_dict(checkpoint["model"], strict=strict)
    if optimizer is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
    if lr_scheduler is not None:
        lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
    if scaler is not None:
        scaler.load_state_dict(checkpoint["scaler"])
    saved_generators = checkpoint.get("generators") or {}
    for name, generator in (generators or {}).items():
        generator.set_state(saved_generators[name].cpu())
    if restore_rng:
        states = checkpoint.get("rng") or []
        rank = get_rank()
        if rank < len(states):
            set_rng_state(states[rank])
        else:
            _log.warning(
                "checkpoint '%s' has random states for %d process(es); rank %d keeps its own",
                path,
                len(states),
                rank,
            )
    return checkpoint
