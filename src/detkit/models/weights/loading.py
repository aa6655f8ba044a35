"""Loading weights into a model with an honest report; reading state dicts from files.

:mod:`detkit.models.weights` says which function serves which job and what a weights source
may be.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import torch
from torch import nn
from torchvision.models import WeightsEnum
from torchvision.ops.misc import FrozenBatchNorm2d

from detkit.files import check_undamaged, load_error_reason
from detkit.models.heads import replaced_head_prefixes
from detkit.models.weights.sources import fetch_state_dict, uses_zero_batchnorm_eps

__all__ = ["LoadReport", "load_weights", "read_state_dict"]

logger = logging.getLogger(__name__)

#: What :func:`load_weights` takes: a weights source, or a state dict already in memory.
LoadSource: TypeAlias = WeightsEnum | str | os.PathLike[str] | Mapping[str, torch.Tensor]

_CHECKPOINT_KEYS = ("model", "state_dict", "model_state_dict")
_SHOWN = 5  # keys quoted in an error message


@dataclass
class LoadReport:
    """What :func:`load_weights` did.

    Attributes:
        source: the file path or weights name the tensors came from.
        loaded: number of tensors copied into the model.
        missing_keys: model keys the source lacks (left as initialised).
        unexpected_keys: source keys the model lacks (ignored).
        replaced_heads: head keys whose shape differs from the source (another number of
            classes or keypoints): these keep their fresh initialisation, which is the point of
            replacing heads, so they are not counted as missing.

    >>> LoadReport("resnet18.pth", loaded=122).ok
    True
    """

    source: str
    loaded: int = 0
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    replaced_heads: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every model tensor outside the replaced heads came from the source."""
        return not self.missing_keys and not self.unexpected_keys


_FETCH_AGAIN = "fetch it again (its loaded values would be wrong without a word)"


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from a local file, safely (``weights_only=True``), onto the CPU.

    Args:
        path: a file holding a state dict, or a checkpoint dict with the state dict under
            ``"model"``, ``"state_dict"`` or ``"model_state_dict"``. The ``module.`` prefix
            that ``DistributedDataParallel`` adds is removed. ``argparse.Namespace`` objects
            (torchvision's reference scripts store their arguments that way) are allowed.

    Returns:
        The state dict (its ``_metadata``, which version-aware modules need, kept).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file cannot be read safely, is damaged (its records fail the CRC-32
            checksums ``torch.save`` wrote, which ``torch.load`` does not check), or holds
            no state dict.

    >>> import tempfile, torch
    >>> path = tempfile.mkdtemp() + "/checkpoint.pth"
    >>> torch.save({"model": torch.nn.Linear(2, 1).state_dict(), "epoch": 3}, path)
    >>> sorted(read_state_dict(path))
    ['bias', 'weight']
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        check_undamaged(path, "weights file", _FETCH_AGAIN)  # the cause, not an effect
        raise ValueError(
            f"cannot read weights file {str(path)!r} safely: {load_error_reason(error, path)}. "
            "If you trust the file, load it yourself with weights_only=False and save only its "
            "state dict: torch.save(checkpoint['model'], 'weights.pth')"
        ) from error
    check_undamaged(path, "weights file", _FETCH_AGAIN)  # torch.load does not check CRCs
    return _unwrap(obj, str(path))


def _unwrap(obj: Any, source: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in _CHECKPOINT_KEYS:
            if isinstance(obj.get(key), Mapping) and _is_state_dict(obj[key]):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not _is_state_dict(obj):
        keys = sorted(obj)[:_SHOWN] if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(
            f"{source} holds no state dict: expected a dict of tensors, or a checkpoint with "
            f"one under {' / '.join(repr(k) for k in _CHECKPOINT_KEYS)}; found {keys}"
        )
    metadata = getattr(obj, "_metadata", None)
    if obj and all(k.startswith("module.") for k in obj):
        # Saved from a DistributedDataParallel wrapper: its child is the real model.
        obj = OrderedDict((k[len("module.") :], v) for k, v in obj.items())
        if metadata is not None:
            metadata = OrderedDict(
                ("" if k == "module" else k[len("module.") :], v)
                for k, v in metadata.items()
                if k == "module" or k.startswith("module.")
            )
    state = OrderedDict(obj)
    if metadata is not None:
        state._metadata = metadata  # type: ignore[attr-defined]
    return state


def _is_state_dict(obj: Mapping) -> bool:
    return bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def load_weights(
    model: nn.Module, source: LoadSource, *, strict: bool = True, progress: bool = True
) -> LoadReport:
    """Load weights into ``model`` (in place), tolerating only heads of another class count.

    Args:
        model: any module; for torchvision detection models, the class-dependent heads (see
            :func:`~detkit.models.heads.replace_heads`) may differ in shape from the source.
        source: a torchvision weights enum, a local file (see :func:`read_state_dict`), or
            a state dict.
        strict: raise when, outside those heads, the model has tensors the source lacks or
            the source has tensors the model lacks. With ``strict=False`` those are logged
            as a warning and returned in the report. Shape mismatches outside the heads
            always raise, as does a source sharing no key with the model.
        progress: show a progress bar when an enum's file must be downloaded.

    Returns:
        A :class:`LoadReport`.

    Raises:
        ValueError: the source does not fit the model's architecture; the message names the
            source and the first mismatching keys with their shapes. On this error the model
            may be partly loaded, as with ``torch.nn.Module.load_state_dict``.
        WeightsDownloadError: an enum's file could not be downloaded.

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    >>> state = torch.nn.Sequential(torch.nn.Linear(4, 2)).state_dict()
    >>> load_weights(model, state).loaded
    2
    >>> wrong = {"0.weight": torch.zeros(3, 4), "0.bias": torch.zeros(3)}
    >>> load_weights(model, wrong)
    Traceback (most recent call last):
    ...
    ValueError: state dict does not fit Sequential: 2 tensors differ in shape: ...
    """
    if isinstance(source, WeightsEnum):
        state = fetch_state_dict(source, "source", progress=progress)
    elif isinstance(source, (str, os.PathLike)):
        state = read_state_dict(source)
    elif isinstance(source, Mapping):
        state = _unwrap(source, "state dict")
    else:
        raise TypeError(
            "source must be a weights enum, a file path or a state dict, "
            f"got {type(source).__name__}"
        )
    report = load_state(model, state, source=source, strict=strict)
    if not isinstance(source, Mapping):
        match_batchnorm_eps(model, source)
    return report


def match_batchnorm_eps(model: nn.Module, source: WeightsEnum | Path | str) -> None:
    """Give ``model``'s frozen batch norm the ``eps`` that ``source``'s weights expect.

    Torchvision's first COCO detectors were trained with ``eps=0`` (see
    :func:`~detkit.models.weights.sources.uses_zero_batchnorm_eps`); torchvision's builders set
    it after loading them, and every detkit route does the same. Call it after batch norm is
    frozen: a batch norm frozen later copies its own ``eps``. Other weights change nothing.
    """
    if uses_zero_batchnorm_eps(source):
        for module in model.modules():
            if isinstance(module, FrozenBatchNorm2d):
                module.eps = 0.0


def _describe(source: Any) -> tuple[str, str]:
    """``(name, quoted)`` of a weights source: its name in reports and its name in errors."""
    if isinstance(source, WeightsEnum):
        return repr(source), repr(source)
    if isinstance(source, Mapping):
        return "state dict", "state dict"
    return str(source), f"weights file {str(source)!r}"


def load_state(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, source: Any, strict: bool
) -> LoadReport:
    """The step of :func:`load_weights` after reading: ``state`` into ``model``, in place.

    For builders that read the weights first (to learn the class count from them) and load
    them once the model exists; messages and the report name ``source`` (the enum or the
    file ``state`` came from, or a state dict), as :func:`load_weights` does.
    """
    source, quoted = _describe(source)
    kind = type(model).__name__
    own = model.state_dict()
    filtered, replaced = _set_heads_aside(state, own, replaced_head_prefixes(model), quoted, kind)
    try:
        result = model.load_state_dict(filtered, strict=False)
    except RuntimeError as error:
        raise ValueError(f"{quoted} does not fit {kind}: {error}") from error

    def real(keys: list[str]) -> list[str]:
        # Batch-norm step counters differ between BatchNorm2d and FrozenBatchNorm2d models.
        return [k for k in keys if not k.endswith("num_batches_tracked") and k not in replaced]

    missing, unexpected = real(result.missing_keys), real(result.unexpected_keys)
    loaded = len(filtered) - len(result.unexpected_keys)
    if loaded == 0:
        raise ValueError(
            f"{quoted} does not fit {kind}: none of its {len(state)} tensors has a name the model "
            f"knows; the source's keys look like {_sample(list(state))}, the model's like "
            f"{_sample(list(own))}" + _backbone_hint(state)
        )
    if strict and (missing or unexpected):
        raise ValueError(
            f"{quoted} does not fit {kind}: the model has {len(missing)} tensors the source "
            f"lacks ({_sample(missing)}) and the source has {len(unexpected)} the model lacks "
            f"({_sample(unexpected)}). Pass strict=False to load the tensors that match."
        )
    report = LoadReport(source, loaded, missing, unexpected, replaced)
    _log(report, kind)
    return report


def _set_heads_aside(
    state: Mapping[str, torch.Tensor],
    own: Mapping[str, torch.Tensor],
    prefixes: tuple[str, ...],
    quoted: str,
    kind: str,
) -> tuple[OrderedDict[str, torch.Tensor], list[str]]:
    """The tensors to load, and the replaced heads' keys left out; other shape errors raise."""
    filtered: OrderedDict[str, torch.Tensor] = OrderedDict()
    replaced, mismatched = [], []
    for key, value in state.items():
        target = own.get(key)
        if target is not None and target.shape != value.shape:
            if key.startswith(prefixes):
                replaced.append(key)
                continue
            mismatched.append(
                f"{key!r} {list(value.shape)} in the source, {list(target.shape)} in the model"
            )
            continue
        filtered[key] = value
    if mismatched:
        raise ValueError(
            f"{quoted} does not fit {kind}: {len(mismatched)} tensors differ in shape: "
            + "; ".join(mismatched[:_SHOWN])
            + _hint(len(mismatched))
        )
    if hasattr(state, "_metadata"):
        filtered._metadata = state._metadata  # type: ignore[attr-defined]
    return filtered, replaced


def _log(report: LoadReport, kind: str) -> None:
    missing, unexpected = report.missing_keys, report.unexpected_keys
    if missing or unexpected:
        logger.warning(
            "loaded %d tensors from %s into %s; %d model tensors stay as initialised (%s), "
            "%d source tensors are ignored (%s)",
            report.loaded,
            report.source,
            kind,
            len(missing),
            _sample(missing),
            len(unexpected),
            _sample(unexpected),
        )
    else:
        logger.info("loaded %d tensors from %s into %s", report.loaded, report.source, kind)
    if report.replaced_heads:
        logger.debug(
            "heads re-initialised for a new class count: %s", ", ".join(report.replaced_heads)
        )


def _sample(keys: list[str]) -> str:
    if not keys:
        return "none"
    shown = ", ".join(repr(k) for k in keys[:_SHOWN])
    return shown + (f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")


def _hint(count: int) -> str:
    more = f" and {count - _SHOWN} more" if count > _SHOWN else ""
    return (
        f"{more}. Was it saved from a model built with the same arguments (backbone, fpn, "
        "trainable parts do not matter)?"
    )


def _backbone_hint(state: Mapping[str, torch.Tensor]) -> str:
    if any(k.startswith(("fc.", "classifier.")) for k in state):
        return "; it looks like a classification model's weights: pass it as weights_backbone"
    return ""
