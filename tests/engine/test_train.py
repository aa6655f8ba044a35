"""train_one_epoch: learning, warmup, schedulers, accumulation, clipping, non-finite losses."""

from __future__ import annotations

import logging
import math
import re

import pytest
import torch
from strategies import synthetic_detection_samples, tiny_detector
from torch import nn

from detkit.data import collate_fn
from detkit.engine import NonFiniteLossError, move_to_device, train_one_epoch, warmup_factor_at
from detkit.types import InvalidTargetError


class LinearLossModel(nn.Module):
    """A model with the detection models' training interface and exactly known gradients.

    ``model(images, targets)`` returns two losses: the squared error of a linear map of each
    image's channel means against ``target["y"]`` (batch mean), and an L1 weight penalty.
    Used where the loop's arithmetic (warmup, accumulation, clipping) is under test, so the
    result can be compared with a hand-written computation.
    """

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.linear = nn.Linear(3, 1)
        self.seen: list[list[dict]] = []

    def forward(self, images, targets):
        self.seen.append(list(targets))
        features = torch.stack([image.mean(dim=(1, 2)) for image in images])
        y = torch.tensor([float(t["y"]) for t in targets])
        prediction = self.linear(features).squeeze(1)
        return {
            "loss_fit": ((prediction - y) ** 2).mean(),
            "loss_l1": 0.01 * self.linear.weight.abs().sum(),
        }


def linear_samples(n: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.rand(3, 4, 4, generator=generator), {"y": float(i % 3), "image_id": i})
        for i in range(n)
    ]


def sgd_epoch(model, data_loader, **options):
    """One epoch of plain SGD (learning rate 0.1) on the CPU, without a progress bar."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return train_one_epoch(model, optimizer, data_loader, "cpu", 0, progress=False, **options)


def loader(samples, batch_size, **kwargs):
    return torch.utils.data.DataLoader(
        samples, batch_size=batch_size, collate_fn=collate_fn, **kwargs
    )


@pytest.fixture(scope="module")
def detection_samples(tmp_path_factory):
    return synthetic_detection_samples(tmp_path_factory.mktemp("engine-train"), num_images=16)


def test_tiny_detector_losses_are_finite_and_fall(detection_samples):
    torch.manual_seed(0)
    model = tiny_detector()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = loader(detection_samples, 4, shuffle=True)
    epochs = [
        train_one_epoch(model, optimizer, data, "cpu", epoch, progress=False) for epoch in range(6)
    ]
    for losses in epochs:
        assert set(losses) == {
            "loss",
            "loss_classifier",
            "loss_box_reg",
            "loss_objectness",
            "loss_rpn_box_reg",
        }
        assert all(math.isfinite(v) for v in losses.values())
        components = sum(v for k, v in losses.items() if k != "loss")
        assert losses["loss"] == pytest.approx(components, rel=1e-5)
    # 24 iterations: the last epoch's mean loss is well below the first's (about 0.7x).
    assert epochs[-1]["loss"] < 0.85 * epochs[0]["loss"], [round(e["loss"], 3) for e in epochs]


def test_returned_averages_are_the_means_of_the_per_batch_losses():
    model = LinearLossModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # weights stay: losses are known
    recorded: list[tuple[str, float, int]] = []
    losses = train_one_epoch(
        model,
        optimizer,
        loader(linear_samples(8), 2),
        "cpu",
        3,
        scalar_hook=lambda tag, value, step: recorded.append((tag, value, step)),
        progress=False,
    )
    expected = {}
    for name in ("loss_fit", "loss_l1"):
        values = []
        for batch in range(4):
            images = [s[0] for s in linear_samples(8)[2 * batch : 2 * batch + 2]]
            targets = [s[1] for s in linear_samples(8)[2 * batch : 2 * batch + 2]]
            with torch.no_grad():
                values.append(float(LinearLossModel()(images, targets)[name]))
        expected[name] = sum(values) / 4
    expected["loss"] = expected["loss_fit"] + expected["loss_l1"]
    assert losses == pytest.approx(expected)
    # The hook saw every batch: tags, global steps epoch * len(loader) + i, learning rate.
    assert [step for tag, _, step in recorded if tag == "train/loss"] == [12, 13, 14, 15]
    assert {tag for tag, _, _ in recorded} == {
        "train/loss",
        "train/loss_fit",
        "train/loss_l1",
        "train/lr",
    }
    fits = [value for tag, value, _ in recorded if tag == "train/loss_fit"]
    assert sum(fits) / 4 == pytest.approx(expected["loss_fit"])


def recorded_lrs(**kwargs) -> list[float]:
    lrs: list[float] = []
    train_one_epoch(
        scalar_hook=lambda tag, value, step: lrs.append(value) if tag == "train/lr" else None,
        progress=False,
        **kwargs,
    )
    return lrs


def test_default_warmup_matches_the_reference_linear_lr():
    model = LinearLossModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    lrs = recorded_lrs(
        model=model,
        optimizer=optimizer,
        data_loader=loader(linear_samples(20), 2),
        device="cpu",
        epoch=0,
    )
    # The reference scripts: LinearLR(start_factor=1/1000, total_iters=min(1000, len - 1)).
    reference = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LinearLR(reference, start_factor=1e-3, total_iters=9)
    expected = []
    for _ in range(10):
        expected.append(reference.param_groups[0]["lr"])
        reference.step()
        scheduler.step()
    assert lrs == pytest.approx(expected)
    # The optimizer keeps the un-warmed rate, and epoch 1 has no warmup.
    assert optimizer.param_groups[0]["lr"] == 0.1
    lrs = recorded_lrs(
        model=model,
        optimizer=optimizer,
        data_loader=loader(linear_samples(20), 2),
        device="cpu",
        epoch=1,
    )
    assert lrs == [0.1] * 10


def test_warmup_composes_with_a_per_iteration_scheduler_and_spans_epochs():
    model = LinearLossModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    step_lr = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)
    data = loader(linear_samples(12), 2)  # 6 steps per epoch, warmup over 8 steps
    lrs = []
    for epoch in range(2):
        lrs += recorded_lrs(
            model=model,
            optimizer=optimizer,
            data_loader=data,
            device="cpu",
            epoch=epoch,
            lr_scheduler=step_lr,
            lr_scheduler_interval="iteration",
            warmup_iters=8,
            warmup_factor=0.2,
        )
    expected = [
        0.1 * 0.5 ** (k // 4) * warmup_factor_at(k, warmup_iters=8, warmup_factor=0.2)
        for k in range(12)
    ]
    assert lrs == pytest.approx(expected)
    assert step_lr.last_epoch == 12


def test_epoch_scheduler_steps_once_per_epoch():
    model = LinearLossModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.1)
    lrs = recorded_lrs(
        model=model,
        optimizer=optimizer,
        data_loader=loader(linear_samples(6), 2),
        device="cpu",
        epoch=1,
        lr_scheduler=scheduler,
        lr_scheduler_interval="epoch",
    )
    assert lrs == pytest.approx([0.1, 0.1, 0.1])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01)


@pytest.mark.parametrize("num_samples", [8, 10])
def test_gradient_accumulation_equals_larger_batches(num_samples):
    # 10 samples in batches of 2 with accumulation 2: groups of 2, 2 and 1 batches, the last
    # one averaged over its own size, as batches of 4, 4 and 2 would be.
    samples = linear_samples(num_samples)
    accumulated, big = LinearLossModel(), LinearLossModel()
    for model, batch_size, steps in ((accumulated, 2, 2), (big, 4, 1)):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
        train_one_epoch(
            model,
            optimizer,
            loader(samples, batch_size),
            "cpu",
            1,
            accumulation_steps=steps,
            progress=False,
        )
    assert torch.allclose(accumulated.linear.weight, big.linear.weight, atol=1e-6)
    assert torch.allclose(accumulated.linear.bias, big.linear.bias, atol=1e-6)
    assert not torch.allclose(big.linear.weight, LinearLossModel().linear.weight)


def test_gradient_clipping_matches_a_hand_written_step():
    samples = linear_samples(4)
    model, manual = LinearLossModel(), LinearLossModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    train_one_epoch(
        model, optimizer, loader(samples, 4), "cpu", 1, max_grad_norm=0.05, progress=False
    )
    losses = manual([s[0] for s in samples], [s[1] for s in samples])
    sum(losses.values()).backward()
    norm = torch.nn.utils.clip_grad_norm_(manual.parameters(), 0.05)
    assert norm > 0.05  # the clip is active
    with torch.no_grad():
        for p in manual.parameters():
            p -= 0.5 * p.grad
    assert torch.allclose(model.linear.weight, manual.linear.weight, atol=1e-7)
    assert torch.allclose(model.linear.bias, manual.linear.bias, atol=1e-7)


class NaNLossFor(nn.Module):
    """The tiny detector with a fault injected: ``loss_box_reg`` is NaN for batches holding
    ``image_id`` ``bad_id``. (A NaN box in a real target also gives a NaN loss, but
    torchvision's ROI pooling may crash the process on it: see the next test.)"""

    def __init__(self, bad_id: int) -> None:
        super().__init__()
        self.detector = tiny_detector()
        self.bad_id = bad_id

    def forward(self, images, targets):
        losses = self.detector(images, targets)
        if any(t["image_id"] == self.bad_id for t in targets):
            losses["loss_box_reg"] = losses["loss_box_reg"] * float("nan")
        return losses


def test_nan_loss_raises_naming_losses_and_image_ids_and_keeps_the_weights(detection_samples):
    model = NaNLossFor(bad_id=detection_samples[1][1]["image_id"])
    # The first batch trains normally; the second one holds the bad image.
    data = loader([detection_samples[i] for i in (3, 4, 5, 0, 1, 2)], 3)
    snapshot = {}

    class Snapshot(torch.optim.SGD):
        def step(self, closure=None):
            out = super().step(closure)
            snapshot.update({k: v.clone() for k, v in model.state_dict().items()})
            return out

    optimizer = Snapshot(model.parameters(), lr=0.01, momentum=0.9)
    with pytest.raises(NonFiniteLossError) as caught:
        train_one_epoch(model, optimizer, data, "cpu", 2, progress=False)
    error = caught.value
    message = str(error)
    expected_ids = [detection_samples[i][1]["image_id"] for i in (0, 1, 2)]
    assert f"image_ids: {expected_ids}" in message
    assert "epoch 2, iteration 1" in message
    assert "loss_box_reg=nan" in message and "loss_classifier=" in message
    assert error.image_ids == expected_ids
    assert math.isnan(error.losses["loss_box_reg"]) and math.isnan(error.losses["loss"])
    assert math.isfinite(error.losses["loss_classifier"])
    assert (error.epoch, error.iteration) == (2, 1)
    assert isinstance(error, FloatingPointError)
    # The optimizer stepped on the first batch only, not on the bad one.
    state = model.state_dict()
    assert snapshot and all(torch.equal(state[k], snapshot[k]) for k in state)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_validate_targets_names_the_bad_sample_before_the_forward(detection_samples):
    model = tiny_detector()
    image, target = detection_samples[1]
    bad = dict(target, image_id=41, boxes=torch.tensor([[10.0, 10.0, float("nan"), 50.0]]))
    bad["labels"], bad["area"], bad["iscrowd"] = torch.tensor([1]), torch.ones(1), torch.zeros(1)
    bad["iscrowd"] = bad["iscrowd"].long()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    data = loader([detection_samples[0], (image, bad)], 2)
    with pytest.raises(InvalidTargetError, match=r"image_id=41.*'boxes'.*NaN"):
        train_one_epoch(model, optimizer, data, "cpu", 0, validate_targets=True, progress=False)


def test_non_finite_gradient_norm_raises_when_clipping():
    class InfiniteGradient(LinearLossModel):
        def forward(self, images, targets):
            losses = super().forward(images, targets)
            # Finite loss, infinite gradient: sqrt's derivative at 0.
            losses["loss_sqrt"] = torch.sqrt(self.linear.bias.sum() * 0)
            return losses

    model = InfiniteGradient()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.linear.weight.detach().clone()
    with pytest.raises(NonFiniteLossError, match="non-finite gradient norm"):
        train_one_epoch(
            model,
            optimizer,
            loader(linear_samples(4), 2),
            "cpu",
            0,
            max_grad_norm=1.0,
            progress=False,
        )
    assert torch.equal(model.linear.weight, before)


def test_bfloat16_autocast_on_cpu_trains_the_detector(detection_samples):
    model = tiny_detector()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    before = [p.detach().clone() for p in model.parameters()]
    losses = train_one_epoch(
        model,
        optimizer,
        loader(detection_samples[:4], 2),
        "cpu",
        1,
        autocast_dtype=torch.bfloat16,
        progress=False,
    )
    assert all(math.isfinite(v) for v in losses.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_targets_move_to_the_device_and_image_ids_stay_ints():
    images = [torch.zeros(3, 4, 4)]
    targets = [{"boxes": torch.zeros(1, 4), "labels": torch.ones(1), "image_id": 9}]
    moved_images, moved = move_to_device(images, targets, "meta")
    assert moved_images[0].device.type == "meta"
    assert moved[0]["boxes"].device.type == "meta" and moved[0]["labels"].device.type == "meta"
    assert moved[0]["image_id"] == 9 and type(moved[0]["image_id"]) is int
    assert targets[0]["boxes"].device.type == "cpu"  # inputs untouched
    # train_one_epoch hands the model the moved targets, image ids unchanged.
    model = LinearLossModel()
    sgd_epoch(model, loader(linear_samples(4), 2))
    assert [t["image_id"] for batch in model.seen for t in batch] == [0, 1, 2, 3]


@pytest.mark.parametrize("box_format", ["XYWH", "CXCYWH"])
def test_the_model_gets_xyxy_boxes_whatever_format_the_targets_carry(box_format):
    """The contract converts BoundingBoxes of other formats to XYXY; train_one_epoch handed
    them to the model as they were, which read [2, 3, 10, 20] XYWH as the XYXY box
    [2, 3, 10, 20], not [2, 3, 12, 23] (validate_targets=True converted, and passed)."""
    from torchvision import tv_tensors
    from torchvision.ops import box_convert

    xyxy = torch.tensor([[2.0, 3.0, 12.0, 23.0]])
    carried = tv_tensors.BoundingBoxes(
        box_convert(xyxy, "xyxy", box_format.lower()), format=box_format, canvas_size=(32, 32)
    )
    samples = [
        (
            torch.rand(3, 32, 32),
            {"y": 1.0, "image_id": i, "boxes": carried, "labels": torch.ones(1, dtype=torch.int64)},
        )
        for i in range(2)
    ]
    model = LinearLossModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train_one_epoch(
        model, optimizer, loader(samples, 2), "cpu", 0, validate_targets=True, progress=False
    )
    seen = model.seen[0][0]["boxes"]
    assert seen.tolist() == xyxy.tolist()
    assert getattr(seen, "format", None) == tv_tensors.BoundingBoxFormat.XYXY
    assert samples[0][1]["boxes"].format.name == box_format  # the input is not modified
    _, moved = move_to_device([samples[0][0]], [samples[0][1]], "cpu")
    assert moved[0]["boxes"].tolist() == xyxy.tolist()


def test_model_is_put_in_training_mode():
    model = LinearLossModel().eval()
    sgd_epoch(model, loader(linear_samples(2), 2))
    assert model.training


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"accumulation_steps": 0}, "accumulation_steps"),
        ({"warmup_factor": 0.0}, "warmup_factor"),
        ({"warmup_iters": -1}, "warmup_iters"),
        ({"max_grad_norm": 0.0}, "max_grad_norm"),
        ({"print_freq": 0}, "print_freq"),
        ({"epoch": -1}, "epoch"),
        ({"lr_scheduler": "scheduler"}, "lr_scheduler_interval"),
    ],
)
def test_bad_options_raise_value_errors(options, match):
    model = LinearLossModel()
    kwargs = {"epoch": 0, **options}
    with pytest.raises(ValueError, match=match):
        train_one_epoch(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            loader(linear_samples(2), 2),
            "cpu",
            progress=False,
            **kwargs,
        )


def test_float16_autocast_without_a_scaler_is_warned_about(caplog):
    """float16 gradients below ~6e-8 flush to zero: without a GradScaler, parts of the model
    silently stop learning. bfloat16 (float32's range) and float16 with a scaler say nothing."""
    settings = (
        ({"autocast_dtype": torch.float16}, 1),
        ({"autocast_dtype": torch.bfloat16}, 0),
        ({"autocast_dtype": torch.float16, "scaler": torch.amp.GradScaler("cpu")}, 0),
    )
    for options, warnings in settings:
        model = LinearLossModel()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="detkit.engine"):
            sgd_epoch(model, loader(linear_samples(2), 2), **options)
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warned) == warnings, options
        if warnings:
            assert "autocast_dtype=torch.float16 without a scaler" in warned[0]
            assert "torch.amp.GradScaler" in warned[0]


def test_reduce_lr_on_plateau_is_refused():
    model = LinearLossModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        train_one_epoch(
            model,
            optimizer,
            loader(linear_samples(2), 2),
            "cpu",
            0,
            lr_scheduler=plateau,
            lr_scheduler_interval="epoch",
        )


def test_empty_loader_and_non_dict_outputs_are_reported():
    model = LinearLossModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    empty = loader(linear_samples(1), 2, drop_last=True)
    with pytest.raises(ValueError, match="no batch"):
        train_one_epoch(model, optimizer, empty, "cpu", 0, progress=False)

    class ReturnsList(LinearLossModel):
        def forward(self, images, targets):
            return [super().forward(images, targets)]

    model = ReturnsList()
    with pytest.raises(TypeError, match="dict of losses"):
        sgd_epoch(model, loader(linear_samples(2), 2))


def test_grad_scaler_unscales_before_clipping():
    # A scaled loss clipped before unscaling would be clipped 1024 times too hard: with the
    # scaler, the step must equal the unscaled one.
    samples = linear_samples(8)
    plain, scaled = LinearLossModel(), LinearLossModel()
    train_one_epoch(
        plain,
        torch.optim.SGD(plain.parameters(), lr=0.5),
        loader(samples, 4),
        "cpu",
        1,
        max_grad_norm=0.05,
        autocast_dtype=torch.bfloat16,
        progress=False,
    )
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    assert scaler.is_enabled()
    train_one_epoch(
        scaled,
        torch.optim.SGD(scaled.parameters(), lr=0.5),
        loader(samples, 4),
        "cpu",
        1,
        max_grad_norm=0.05,
        scaler=scaler,
        autocast_dtype=torch.bfloat16,  # as above: only the scaler differs
        progress=False,
    )
    assert scaler.get_scale() == 1024.0  # no overflow, no change before growth_interval
    assert torch.allclose(plain.linear.weight, scaled.linear.weight, atol=1e-6)
    assert torch.allclose(plain.linear.bias, scaled.linear.bias, atol=1e-6)


# -- non-finite gradients, errors inside the model, images in the wrong range --------------------


class InfiniteGradient(LinearLossModel):
    """Finite losses, an infinite gradient (sqrt's derivative at 0) on the bias."""

    def forward(self, images, targets):
        losses = super().forward(images, targets)
        losses["loss_sqrt"] = torch.sqrt(self.linear.bias.sum() * 0)
        return losses


def test_an_infinite_gradient_with_finite_losses_raises_before_the_step_without_clipping():
    model = InfiniteGradient()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(NonFiniteLossError) as caught:
        train_one_epoch(model, optimizer, loader(linear_samples(4), 2), "cpu", 0, progress=False)
    message = str(caught.value)
    assert "non-finite gradient norm (nan) with finite losses" in message
    assert "first parameters with NaN or infinite gradients: linear.bias" in message
    assert "epoch 0, iteration 0" in message and "batch image_ids: [0, 1]" in message
    assert caught.value.image_ids == [0, 1]
    assert math.isfinite(caught.value.losses["loss"])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_with_accumulation_the_error_names_every_image_of_the_group():
    model = InfiniteGradient()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(NonFiniteLossError) as caught:
        train_one_epoch(
            model,
            optimizer,
            loader(linear_samples(4), 2),
            "cpu",
            0,
            accumulation_steps=2,
            progress=False,
        )
    assert caught.value.image_ids == [0, 1, 2, 3]
    assert "iteration 1" in str(caught.value)


def test_a_grad_scaler_still_skips_steps_with_infinite_gradients():
    model = InfiniteGradient()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    train_one_epoch(
        model,
        optimizer,
        loader(linear_samples(4), 2),
        "cpu",
        0,
        scaler=scaler,
        autocast_dtype=torch.bfloat16,
        progress=False,
    )
    assert scaler.get_scale() == 256.0  # two skipped steps halve the scale twice
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def keypoint_sample(image_id, *, num_keypoints=17, box=(10.0, 10.0, 50.0, 60.0), label=1):
    keypoints = torch.zeros(1, num_keypoints, 3)
    keypoints[0, :, 0], keypoints[0, :, 1], keypoints[0, :, 2] = 20.0, 30.0, 2.0
    target = {
        "boxes": torch.tensor([box]),
        "labels": torch.tensor([label]),
        "keypoints": keypoints,
        "image_id": image_id,
    }
    return torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(image_id)), target


def forward_failure(model, samples):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with pytest.raises(Exception) as caught:
        train_one_epoch(model, optimizer, loader(samples, 2), "cpu", 0, progress=False)
    return caught.value


def test_a_degenerate_box_inside_the_model_names_the_image():
    error = forward_failure(
        tiny_detector(),
        [keypoint_sample(3, num_keypoints=5), keypoint_sample(42, box=(10.0, 10.0, 10.0, 60.0))],
    )
    assert type(error) is AssertionError  # torchvision's own type, for code that catches it
    assert isinstance(error.__cause__, AssertionError)
    assert str(error).startswith(str(error.__cause__))  # torchvision's message comes first
    assert "for target at index 1" in str(error.__cause__)
    assert str(error).endswith(
        "[batch image_ids [3, 42]; target index 1: sample image_id=42: field 'boxes': box 0 "
        "[10.0, 10.0, 10.0, 60.0] has zero or negative width or height (x2 <= x1 or y2 <= y1)]"
    )
    assert error.image_ids == [3, 42]


@pytest.mark.parametrize("given", [17, 3])
def test_a_keypoint_count_mismatch_is_refused_before_the_model_runs(given):
    """Targets with more keypoints than the model made torchvision's loss fail with an index
    error; with fewer, it read other keypoints' heatmaps and trained on them without a word.
    Both are refused before the first step, naming the image, with the weights untouched."""
    model = tiny_detector(keypoints=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    samples = [keypoint_sample(3, num_keypoints=5), keypoint_sample(42, num_keypoints=given)]
    error = forward_failure(model, samples)
    assert type(error) is ValueError
    assert str(error) == (
        f"target index 1 = image_id 42: keypoints [N, {given}, 3] but the model predicts 5 "
        f"keypoints: build it with num_keypoints={given} (detkit.models.replace_heads), or "
        "give targets of 5 keypoints"
    )
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_label_beyond_the_model_classes_says_so():
    error = forward_failure(tiny_detector(), [keypoint_sample(3), keypoint_sample(42, label=7)])
    assert "target index 1 = image_id 42 has label 7, but the model has 2 classes" in str(error)


def test_any_error_in_the_model_names_the_batch_without_escape_codes():
    class Fails(LinearLossModel):
        def forward(self, images, targets):
            raise ValueError("\x1b[31mboom\x1b[0m")

    error = forward_failure(Fails(), linear_samples(2))
    assert type(error) is ValueError
    assert str(error) == "boom [batch image_ids [0, 1]]"

    class Odd(Exception):
        def __init__(self, code, detail):
            super().__init__(f"{code}: {detail}")

    class FailsOddly(LinearLossModel):
        def forward(self, images, targets):
            raise Odd(3, "odd")

    error = forward_failure(FailsOddly(), linear_samples(2))
    assert type(error) is RuntimeError and isinstance(error.__cause__, Odd)
    assert str(error) == "Odd: 3: odd [batch image_ids [0, 1]]"


@pytest.mark.parametrize(
    ("scale", "shift", "advice"),
    [(255.0, 0.0, "scale=True"), (4.0, -2.0, "normalise inside")],
)
def test_float_images_outside_0_1_are_refused_on_the_first_batch(scale, shift, advice):
    samples = [(image * scale + shift, target) for image, target in linear_samples(4)]
    model = LinearLossModel()
    with pytest.raises(InvalidTargetError, match=rf"image_id=0: field 'image'.*{advice}"):
        train_one_epoch(
            model, torch.optim.SGD(model.parameters(), lr=0.1), loader(samples, 2), "cpu", 0
        )
    assert model.seen == []  # refused before the first forward pass


def test_a_loader_without_length_ending_mid_group_checks_the_gradients_too():
    model = InfiniteGradient()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = iter(list(loader(linear_samples(4), 2)))  # no len(): the group is cut short
    with pytest.raises(NonFiniteLossError) as caught:
        train_one_epoch(model, optimizer, batches, "cpu", 0, accumulation_steps=4, progress=False)
    assert caught.value.image_ids == [0, 1, 2, 3]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


class LongerThanItsLength:
    """A loader yielding more batches than its len(): an IterableDataset split between two
    workers (each ends with a short batch of its own: 10 samples in batches of 4 give 4
    batches, len() says 3) or, wrongly, not split at all (every worker yields everything)."""

    def __init__(self, batches, length: int) -> None:
        self.batches, self.length = batches, length

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        return iter(self.batches)


def count_steps(optimizer):
    steps = []
    real_step = optimizer.step

    def step(*args, **kwargs):
        steps.append(1)
        return real_step(*args, **kwargs)

    optimizer.step = step
    return steps


def test_batches_beyond_the_announced_length_each_get_their_step_and_a_warning(caplog):
    """Past len(data_loader) no batch ended its accumulation group: every further batch's
    gradients were summed into one late step at the end of the epoch (3 optimizer steps for
    4 batches with a length of 2), without a word. Now they are grouped as for a loader
    without a length, and a warning names the length."""
    batches = list(loader(linear_samples(8), 2))
    honest, longer = LinearLossModel(), LinearLossModel()
    steps = {}
    for model, data in ((honest, batches), (longer, LongerThanItsLength(batches, 2))):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
        steps[model] = count_steps(optimizer)
        with caplog.at_level(logging.WARNING, logger="detkit.engine"):
            train_one_epoch(model, optimizer, data, "cpu", 0, warmup_iters=0, progress=False)
    assert len(steps[honest]) == len(steps[longer]) == 4
    assert torch.equal(longer.linear.weight, honest.linear.weight)
    assert torch.equal(longer.linear.bias, honest.linear.bias)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1
    assert "data_loader yielded more than the 2 batches its len() announces" in warned[0]


def test_fewer_batches_than_the_announced_length_are_warned_about(caplog):
    """An IterableDataset that skips unreadable samples yields fewer batches than its len():
    the last accumulation group was planned for more batches (each loss divided by 2 here,
    for one batch), and warmup and schedules for the longer epoch, without a word."""
    batches = list(loader(linear_samples(10), 2))
    model = LinearLossModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    with caplog.at_level(logging.WARNING, logger="detkit.engine"):
        train_one_epoch(
            model,
            optimizer,
            LongerThanItsLength(batches, 6),
            "cpu",
            0,
            accumulation_steps=2,
            progress=False,
        )
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1
    assert warned[0].startswith("data_loader yielded 5 batches, fewer than the 6 batches its")


def test_beyond_the_length_accumulation_groups_as_without_a_length():
    """len() 2, 5 batches, groups of 2: [0, 1] as planned, then [2, 3] and the short [4], as a
    loader without a length groups them (each loss divided by 2)."""
    batches = list(loader(linear_samples(10), 2))
    longer, without = LinearLossModel(), LinearLossModel()
    for model, data in ((longer, LongerThanItsLength(batches, 2)), (without, iter(batches))):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        steps = count_steps(optimizer)
        train_one_epoch(
            model, optimizer, data, "cpu", 0, accumulation_steps=2, warmup_iters=0, progress=False
        )
        assert len(steps) == 3
    assert torch.equal(longer.linear.weight, without.linear.weight)


# -- the loop against the reference scripts' loop, and the learning rate it reports ------------


@pytest.mark.parametrize("max_grad_norm", [None, 1.0])
def test_weights_are_bit_identical_to_the_reference_loop(detection_samples, max_grad_norm):
    """torchvision's references/detection/engine.py steps, without warmup: forward, sum the
    losses, zero_grad, backward, (clip,) step, scheduler step: the same weights, bit for bit."""
    data = loader(detection_samples[:8], 2, shuffle=True)

    def setup():
        model = tiny_detector()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        return model, optimizer, torch.optim.lr_scheduler.StepLR(optimizer, 3, gamma=0.5)

    ours, optimizer, scheduler = setup()
    torch.manual_seed(0)  # the shuffle and the detector's sampling of anchors and proposals
    for epoch in range(2):
        train_one_epoch(
            ours,
            optimizer,
            data,
            "cpu",
            epoch,
            warmup_iters=0,
            lr_scheduler=scheduler,
            lr_scheduler_interval="iteration",
            max_grad_norm=max_grad_norm,
            progress=False,
        )
    reference, optimizer, scheduler = setup()
    torch.manual_seed(0)
    reference.train()
    for _ in range(2):
        for images, targets in data:
            loss_dict = reference(list(images), list(targets))
            losses = sum(loss for loss in loss_dict.values())
            optimizer.zero_grad()
            losses.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(reference.parameters(), max_grad_norm)
            optimizer.step()
            scheduler.step()
    trained = ours.state_dict()
    assert not torch.equal(
        trained["roi_heads.box_predictor.cls_score.weight"],
        tiny_detector().state_dict()["roi_heads.box_predictor.cls_score.weight"],
    )
    assert all(torch.equal(trained[k], v) for k, v in reference.state_dict().items())


class RecordingSGD(torch.optim.SGD):
    """SGD that records the learning rate of its first group at each step it takes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.applied: list[float] = []

    def step(self, closure=None):
        self.applied.append(self.param_groups[0]["lr"])
        return super().step(closure)


@pytest.mark.parametrize(
    "options",
    [
        {},  # the default warmup
        {"warmup_iters": 5, "warmup_factor": 0.1, "accumulation_steps": 2},
        {
            "warmup_iters": 3,
            "lr_scheduler": "cosine",
            "lr_scheduler_interval": "iteration",
            "accumulation_steps": 3,
        },
    ],
)
def test_the_logged_learning_rate_is_the_one_the_step_applied(options, caplog):
    model = LinearLossModel()
    optimizer = RecordingSGD(model.parameters(), lr=0.1)
    if options.get("lr_scheduler") == "cosine":
        options = {
            **options,
            "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10),
        }
    steps = options.get("accumulation_steps", 1)
    hooked: list[float] = []
    with caplog.at_level(logging.INFO, logger="detkit.engine"):
        for epoch in range(2):
            train_one_epoch(
                model,
                optimizer,
                loader(linear_samples(14), 2),
                "cpu",
                epoch,
                print_freq=1,
                scalar_hook=lambda tag, value, _: hooked.append(value) if tag == "train/lr" else 0,
                progress=False,
                **options,
            )
    logged = [float(m) for r in caplog.records for m in re.findall(r"  lr: (\S+)", r.getMessage())]
    # Each batch reports the rate of the step that applies its gradients (its group's): 7
    # batches per epoch in groups of `steps`, the last one shorter.
    groups = [min(steps, 7 - start) for start in range(0, 7, steps)]
    per_batch = [lr for lr, size in zip(optimizer.applied, groups * 2) for _ in range(size)]
    assert len(optimizer.applied) == 2 * len(groups)
    assert hooked == per_batch
    assert logged == [round(lr, 6) for lr in per_batch]
    assert optimizer.applied[0] == pytest.approx(0.1 * options.get("warmup_factor", 1e-3))
