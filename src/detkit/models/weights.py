"""Weights from torchvision's enums, their names, or local files, loaded with an honest report.

Every detkit model builder takes detector weights (``weights``) and backbone weights
(``weights_backbone``) in any of these forms (the type ``WeightsSource`` in signatures):

* a torchvision weights enum, e.g. ``ResNet50_Weights.IMAGENET1K_V2``;
* its name, ``"DEFAULT"`` or ``"IMAGENET1K_V2"``, or the full ``"ResNet50_Weights.IMAGENET1K_V2"``;
* a local file: a plain state dict, or a checkpoint dict holding it under ``"model"`` (what
  detkit's engine writes), ``"state_dict"`` or ``"model_state_dict"``. Files are read with
  ``torch.load(..., weights_only=True)``: no code in a file runs. A state dict saved from a
  ``DistributedDataParallel`` model (keys starting ``module.``) is accepted as well.

When a download is impossible (no network), :class:`WeightsDownloadError` says which file could
not be fetched from where, and how to pass it as a local file instead.

Loading (:func:`load_weights`) is strict about the architecture but not about the heads that
:func:`~detkit.models.replace_heads` changes on purpose: a box/mask/keypoint predictor or
classification head whose shape differs from the file (another number of classes) keeps its
fresh initialisation, and that is logged at ``DEBUG`` level, not reported as a problem.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import WeightsEnum
from torchvision.ops.misc import FrozenBatchNorm2d

from detkit.files import load_error_reason
from detkit.models._sources import (
    WeightsDownloadError,
    fetch,
    legacy_eps_zero,
)
from detkit.models.heads import _head_prefixes

# Raised by the download helpers in ``_sources``; public here, where users look for it.
WeightsDownloadError.__module__ = __name__

__all__ = [
    "LoadReport",
    "WeightsDownloadError",
    "load_weights",
    "read_state_dict",
]

logger = logging.getLogger(__name__)

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
        ValueError: the file cannot be read safely, or holds no state dict.

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
        raise ValueError(
            f"cannot read weights file {str(path)!r} safely: {load_error_reason(error, path)}. "
            "If you trust the file, load it yourself with weights_only=False and save only its "
            "state dict: torch.save(checkpoint['model'], 'weights.pth')"
        ) from error
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


def _set_frozen_batchnorm_eps(model: nn.Module, eps: float) -> None:
    for module in model.modules():
        if isinstance(module, FrozenBatchNorm2d):
            module.eps = eps


def load_weights(
    model: nn.Module,
    source: WeightsEnum | str | os.PathLike[str] | Mapping[str, torch.Tensor],
    *,
    strict: bool = True,
    progress: bool = True,
) -> LoadReport:
    """Load weights into ``model`` (in place), tolerating only heads of another class count.

    Args:
        model: any module; for torchvision detection models, the class-dependent heads (see
            :func:`~detkit.models.replace_heads`) may differ in shape from the source.
        source: a torchvision weights enum, a local file (see :func:`read_state_dict`), or a
            state dict.
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
            may be partly loaded, as with :meth:`torch.nn.Module.load_state_dict`.
        WeightsDownloadError: an enum's file could not be downloaded.

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    >>> load_weights(model, torch.nn.Sequential(torch.nn.Linear(4, 2)).state_dict())
    LoadReport(source='state dict', loaded=2, missing_keys=[], unexpected_keys=[], replaced_heads=[])
    >>> load_weights(model, {"0.weight": torch.zeros(3, 4), "0.bias": torch.zeros(3)})
    Traceback (most recent call last):
    ...
    ValueError: state dict does not fit Sequential: 2 tensors differ in shape: '0.weight' [3, 4] in the source, [2, 4] in the model; ...
    """
    if isinstance(source, WeightsEnum):
        state = fetch(source, "source", progress=progress)
    elif isinstance(source, (str, os.PathLike)):
        state = read_state_dict(source)
    elif isinstance(source, Mapping):
        state = _unwrap(source, "state dict")
    else:
        raise TypeError(
            f"source must be a weights enum, a file path or a state dict, got {type(source).__name__}"
        )
    report = _load_state(model, state, source, strict=strict)
    if not isinstance(source, Mapping) and legacy_eps_zero(source):
        _set_frozen_batchnorm_eps(model, 0.0)
    return report


def _describe(source: Any) -> tuple[str, str]:
    """``(name, quoted)`` of a weights source: its name in reports and its name in errors."""
    if isinstance(source, WeightsEnum):
        return repr(source), repr(source)
    if isinstance(source, Mapping):
        return "state dict", "state dict"
    return str(source), f"weights file {str(source)!r}"


def _load_state(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: Any, *, strict: bool
) -> LoadReport:
    """Load ``state`` (read from ``source``: an enum, a path or a state dict) into ``model``."""
    source, quoted = _describe(source)
    kind = type(model).__name__
    own = model.state_dict()
    prefixes = _head_prefixes(model)
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
    if hasattr(state, "_metadata"):
        filtered._metadata = state._metadata  # type: ignore[attr-defined]
    if mismatched:
        raise ValueError(
            f"{quoted} does not fit {kind}: {len(mismatched)} tensors differ in shape: "
            + "; ".join(mismatched[:_SHOWN])
            + _hint(len(mismatched))
        )
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
    if missing or unexpected:
        logger.warning(
            "loaded %d tensors from %s into %s; %d model tensors stay as initialised (%s), "
            "%d source tensors are ignored (%s)",
            loaded,
            source,
            kind,
            len(missing),
            _sample(missing),
            len(unexpected),
            _sample(unexpected),
        )
    else:
        logger.info("loaded %d tensors from %s into %s", loaded, source, kind)
    if replaced:
        logger.debug("heads re-initialised for a new class count: %s", ", ".join(replaced))
    return report


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
