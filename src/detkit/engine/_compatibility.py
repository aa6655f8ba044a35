"""Whether a checkpoint fits the objects it is to be restored into, checked before any is touched.

:func:`~detkit.engine.load_checkpoint` calls :func:`check_restorable` first and restores nothing
unless everything fits: torch's own ``load_state_dict`` methods fail half-way (a model already
overwritten when the optimizer's state turns out not to fit) and with messages that name
neither the file nor the cause (``KeyError: 'step'`` for SGD's state loaded into Adam).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

_SHOWN = 3
# Optimizer state entries shaped like their parameter, in torch's optimizers.
_PARAMETER_SHAPED = (
    "momentum_buffer",
    "exp_avg",
    "exp_avg_sq",
    "max_exp_avg_sq",
    "square_avg",
    "acc_delta",
    "sum",
    "grad_avg",
    "exp_inf",
    "prev",
    "ax",
    "mu_product",
)


def type_family(obj: Any) -> str:
    """The torch class ``obj`` is (or derives from): ``"SGD"`` for ``SGD`` and its subclasses.

    Checkpoints record it for the optimizer and the scheduler, so that loading SGD's state into
    Adam is refused with a message instead of failing inside torch.

    >>> model = torch.nn.Linear(2, 1)
    >>> class MySGD(torch.optim.SGD):
    ...     pass
    >>> type_family(MySGD(model.parameters(), lr=0.1))
    'SGD'
    """
    for cls in type(obj).__mro__:
        if cls.__module__.startswith("torch.optim") and cls.__name__ not in (
            "Optimizer",
            "LRScheduler",
            "_LRScheduler",
        ):
            return cls.__name__
    return type(obj).__name__


def _shape(value: Any) -> list[int]:
    return list(value.shape) if isinstance(value, torch.Tensor) else []


def _count_phrase(
    key: str, saved: list[int], own: list[int], model: nn.Module
) -> tuple[str, str] | None:
    """``(what, phrase)`` when a shape mismatch says the class or keypoint counts differ."""
    if key.endswith(("box_predictor.cls_score.weight", "mask_predictor.mask_fcn_logits.weight")):
        return "classes", f"checkpoint has {saved[0]} classes, model has {own[0]}"
    if key.endswith("keypoint_predictor.kps_score_lowres.weight") and len(saved) > 1:
        return "keypoints", f"checkpoint has {saved[1]} keypoints, model has {own[1]}"
    if key.endswith("head.classification_head.cls_logits.weight"):
        anchors = getattr(
            getattr(getattr(model, "head", None), "classification_head", None), "num_anchors", None
        )
        if isinstance(anchors, int) and anchors > 0:
            return "classes", (
                f"checkpoint has {saved[0] // anchors} classes, model has {own[0] // anchors}"
            )
    return None


def _model_problems(model: nn.Module, saved: Mapping[str, Any], strict: bool) -> list[str]:
    own = model.state_dict()
    counts: dict[str, str] = {}
    shapes = []
    for key, value in saved.items():
        if key in own and _shape(value) != _shape(own[key]):
            found = _count_phrase(key, _shape(value), _shape(own[key]), model)
            if found is not None:
                counts.setdefault(*found)
            shapes.append(f"'{key}' is {_shape(value)} there, {_shape(own[key])} in the model")
    problems = list(counts.values())
    if counts:
        problems[-1] += (
            " (build the model with the checkpoint's counts to resume; to start a new run "
            "from its weights, use detkit.models.load_weights, which re-initialises the heads)"
        )
    elif shapes:
        more = f" and {len(shapes) - _SHOWN} more" if len(shapes) > _SHOWN else ""
        problems.append(
            f"{len(shapes)} model tensors differ in shape: " + "; ".join(shapes[:_SHOWN]) + more
        )
    if strict:
        missing = [k for k in own if k not in saved]
        unexpected = [k for k in saved if k not in own]
        if missing:
            problems.append(f"the model has {_keys(missing)} that the checkpoint lacks")
        if unexpected:
            problems.append(f"the checkpoint has {_keys(unexpected)} that the model lacks")
        if missing or unexpected:
            problems[-1] += " (a model built differently? strict=False loads what matches)"
    return problems


def _keys(keys: list[str]) -> str:
    shown = ", ".join(f"'{k}'" for k in keys[:_SHOWN])
    more = f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return f"{len(keys)} tensor{'s' if len(keys) > 1 else ''} ({shown}{more})"


def _optimizer_problems(
    optimizer: torch.optim.Optimizer, saved: Mapping[str, Any], saved_type: str | None
) -> list[str]:
    mine = type_family(optimizer)
    if saved_type is not None and saved_type != mine:
        return [f"checkpoint's optimizer is {saved_type}, yours is {mine}"]
    groups = optimizer.param_groups
    saved_groups = saved.get("param_groups")
    if not isinstance(saved_groups, list) or not isinstance(saved.get("state"), Mapping):
        return ["its optimizer state is not an optimizer state_dict"]
    if saved_type is None and groups and saved_groups:
        # Checkpoints of older detkit versions do not record the type: tell by the options.
        options, saved_options = set(groups[0]) - {"params"}, set(saved_groups[0]) - {"params"}
        if len(options - saved_options) >= 2 and len(saved_options - options) >= 2:
            return [
                f"checkpoint's optimizer has the options {', '.join(sorted(saved_options - options))}, "
                f"yours ({mine}) has {', '.join(sorted(options - saved_options))}: they are "
                "different optimizer types"
            ]
    if len(saved_groups) != len(groups):
        return [
            f"checkpoint's optimizer has {len(saved_groups)} parameter groups, yours has "
            f"{len(groups)}"
        ]
    sizes = [len(g["params"]) for g in groups]
    saved_sizes = [len(g.get("params", ())) for g in saved_groups]
    if sizes != saved_sizes:
        return [
            f"checkpoint's optimizer parameter groups hold {saved_sizes} parameters, yours "
            f"{sizes} (built over other parameters, e.g. another set of frozen layers?)"
        ]
    params = [p for g in groups for p in g["params"]]
    shapes = []
    for index, state in saved["state"].items():
        if not isinstance(index, int) or not 0 <= index < len(params):
            return [
                f"checkpoint's optimizer state names parameter {index!r}, yours has {len(params)}"
            ]
        for name in _PARAMETER_SHAPED:
            value = state.get(name) if isinstance(state, Mapping) else None
            if isinstance(value, torch.Tensor) and value.shape != params[index].shape:
                shapes.append(
                    f"parameter {index}'s {name} is {_shape(value)}, the parameter is "
                    f"{list(params[index].shape)}"
                )
                break
    if shapes:
        return [
            "checkpoint's optimizer state does not fit your parameters (another model, or "
            "another parameter order): " + "; ".join(shapes[:_SHOWN])
        ]
    return []


def _scheduler_problems(
    scheduler: Any, saved: Any, saved_type: str | None, groups: int | None
) -> list[str]:
    mine = type_family(scheduler)
    if saved_type is not None and saved_type != mine:
        return [f"checkpoint's lr_scheduler is {saved_type}, yours is {mine}"]
    if not isinstance(saved, Mapping):
        return ["its lr_scheduler state is not a state_dict"]
    base = saved.get("base_lrs")
    if groups is not None and isinstance(base, list) and len(base) != groups:
        return [f"checkpoint's lr_scheduler drives {len(base)} parameter groups, yours {groups}"]
    return []


def _scaler_problems(scaler: torch.amp.GradScaler, saved: Any) -> list[str]:
    if scaler.is_enabled() and not saved:
        return [
            "checkpoint's GradScaler was disabled (no state), yours is enabled: pass "
            "scaler=None to load_checkpoint and let yours start afresh"
        ]
    return []


def _generator_problems(
    generators: Mapping[str, torch.Generator], saved: Mapping[str, Any]
) -> list[str]:
    problems = []
    for name, generator in generators.items():
        if name not in saved:
            problems.append(f"it holds no state for generator {name!r} (saved: {sorted(saved)})")
        elif saved[name].numel() != generator.get_state().numel():
            problems.append(
                f"generator {name!r}'s saved state does not fit yours (another device type?)"
            )
    return problems


def check_restorable(
    path: str | Path,
    checkpoint: Mapping[str, Any],
    *,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    lr_scheduler: Any = None,
    scaler: torch.amp.GradScaler | None = None,
    generators: Mapping[str, torch.Generator] | None = None,
    strict: bool = True,
) -> None:
    """Raise ValueError, naming ``path`` and every mismatch, unless all objects fit the checkpoint.

    Checked: the model's tensor names (with ``strict``) and shapes, told as class and keypoint
    counts where the shapes say so; the optimizer's type, parameter groups and state shapes;
    the scheduler's type and group count; a GradScaler's state; the generators' states.

    Args:
        path: the checkpoint's file, for the message.
        checkpoint: what :func:`~detkit.engine.save_checkpoint` wrote, as read.
        model: the (unwrapped) model to restore, or ``None``.
        optimizer, lr_scheduler, scaler, generators: the other objects to restore, or ``None``.
        strict: also require the model's and the checkpoint's tensor names to agree.

    >>> import tempfile
    >>> from detkit.engine import save_checkpoint
    >>> model = torch.nn.Linear(2, 1)
    >>> path = save_checkpoint(tempfile.mkdtemp() + "/a.pt", model=model, epoch=0,
    ...                        optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    >>> saved = torch.load(path, weights_only=True)
    >>> check_restorable(path, saved, optimizer=torch.optim.Adam(model.parameters()))
    Traceback (most recent call last):
    ...
    ValueError: cannot restore from checkpoint '...a.pt': checkpoint's optimizer is SGD, yours is Adam
    """
    types = checkpoint.get("types") or {}
    problems = []
    if model is not None:
        problems += _model_problems(model, checkpoint.get("model") or {}, strict)
    if optimizer is not None:
        problems += _optimizer_problems(
            optimizer, checkpoint.get("optimizer") or {}, types.get("optimizer")
        )
    if lr_scheduler is not None:
        groups = len(optimizer.param_groups) if optimizer is not None else None
        problems += _scheduler_problems(
            lr_scheduler, checkpoint.get("lr_scheduler"), types.get("lr_scheduler"), groups
        )
    if scaler is not None:
        problems += _scaler_problems(scaler, checkpoint.get("scaler"))
    if generators:
        problems += _generator_problems(generators, checkpoint.get("generators") or {})
    if problems:
        raise ValueError(f"cannot restore from checkpoint '{path}': {'; '.join(problems)}")
