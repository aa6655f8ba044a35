"""evaluate: what it hands the evaluator, iou types, restored state, metrics hook."""

from __future__ import annotations

import logging

import pytest
import torch
from strategies import RecordingEvaluator, synthetic_detection_samples, tiny_detector
from torch import nn

from detkit.data import collate_fn
from detkit.engine import Evaluator, evaluate, infer_iou_types
from detkit.evaluation import CocoEvaluator


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    return synthetic_detection_samples(
        tmp_path_factory.mktemp("engine-eval"), num_images=5, masks=True
    )


def loader(samples, batch_size=2):
    return torch.utils.data.DataLoader(samples, batch_size=batch_size, collate_fn=collate_fn)


def test_iou_types_are_inferred_from_the_model():
    assert infer_iou_types(tiny_detector()) == ("bbox",)
    assert infer_iou_types(tiny_detector(masks=True)) == ("bbox", "segm")
    assert infer_iou_types(tiny_detector(keypoints=5)) == ("bbox", "keypoints")
    assert infer_iou_types(nn.DataParallel(tiny_detector(masks=True))) == ("bbox", "segm")
    assert infer_iou_types(nn.Linear(1, 1)) == ("bbox",)  # single-stage detectors: boxes only


class ThreadProbe(nn.Module):
    """Wraps a detector and records the thread count and grad mode it runs under."""

    def __init__(self, detector):
        super().__init__()
        self.detector = detector
        self.threads: list[int] = []
        self.inference: list[bool] = []

    def forward(self, images, targets=None):
        self.threads.append(torch.get_num_threads())
        self.inference.append(torch.is_inference_mode_enabled())
        return self.detector(images, targets)


def test_evaluate_hands_every_prediction_to_the_evaluator(samples):
    model = ThreadProbe(tiny_detector(masks=True))
    model.train()
    model.detector.backbone.eval()  # a part frozen in eval mode stays so
    evaluator = RecordingEvaluator()
    evaluator.update([{"boxes": torch.zeros(0, 4)}], [{"image_id": 99}])  # stale: reset drops it
    recorded = []
    threads = torch.get_num_threads()
    metrics = evaluate(
        model,
        loader(samples),
        "cpu",
        evaluator=evaluator,
        num_threads=1,
        scalar_hook=lambda tag, value, step: recorded.append((tag, value, step)),
        step=4,
        progress=False,
    )
    assert evaluator.resets == 1
    assert evaluator.updates == [(2, [0, 1]), (2, [2, 3]), (1, [4])]
    assert list(evaluator.merged) == [0, 1, 2, 3, 4]
    # Thread count set during evaluation, restored after; modes restored; inference mode.
    assert model.threads == [1, 1, 1] and torch.get_num_threads() == threads
    assert model.training and model.detector.training and model.detector.roi_heads.training
    assert not model.detector.backbone.training
    assert model.inference == [True, True, True]
    # The predictions are the model's, in eval mode, as a direct call gives them.
    detector = model.detector
    detector.eval()
    with torch.no_grad():
        direct = detector([samples[3][0]])[0]
    for key in ("boxes", "scores", "labels", "masks"):
        torch.testing.assert_close(evaluator.merged[3][key], direct[key])
    assert metrics == evaluator.compute()
    assert metrics["bbox"]["num_detections"] == sum(
        len(p["boxes"]) for p in evaluator.merged.values()
    )
    assert recorded == [
        ("val/num_images", 5.0, 4),
        ("val/bbox/num_detections", metrics["bbox"]["num_detections"], 4),
        ("val/bbox/score_sum", metrics["bbox"]["score_sum"], 4),
    ]


def test_state_is_restored_when_the_evaluator_fails(samples):
    class Broken(RecordingEvaluator):
        def update(self, predictions, targets):
            raise RuntimeError("evaluator failed")

    model = tiny_detector()
    threads = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="evaluator failed"):
        evaluate(model, loader(samples), "cpu", evaluator=Broken(), num_threads=1, progress=False)
    assert torch.get_num_threads() == threads and model.training


def test_evaluate_rejects_conflicting_options(samples):
    model = tiny_detector()
    with pytest.raises(ValueError, match="not both"):
        evaluate(model, loader(samples), "cpu", evaluator=RecordingEvaluator(), iou_types=["bbox"])
    with pytest.raises(ValueError, match="num_threads"):
        evaluate(model, loader(samples), "cpu", evaluator=RecordingEvaluator(), num_threads=0)


def test_the_evaluator_interface_is_declared_and_checked_first(samples):
    assert isinstance(RecordingEvaluator(), Evaluator)
    assert isinstance(CocoEvaluator(["bbox"]), Evaluator)

    class NoSummary:  # forgot one method: said before any image is read
        def reset(self): ...
        def update(self, predictions, targets): ...
        def compute(self): ...

    assert not isinstance(NoSummary(), Evaluator)
    with pytest.raises(TypeError, match=r"NoSummary has no summary method.*Evaluator"):
        evaluate(tiny_detector(), loader(samples), "cpu", evaluator=NoSummary(), progress=False)


def test_compute_kwargs_that_compute_does_not_take_are_refused_before_any_image(samples):
    """A typo in compute_kwargs raised TypeError only after the whole validation set had run
    through the model, from compute() at the end."""
    seen = []

    class Counting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.detector = tiny_detector()

        def forward(self, images, targets=None):
            seen.append(len(images))
            return self.detector(images, targets)

    with pytest.raises(
        TypeError, match=r"compute_kwargs: CocoEvaluator.compute\(\) cannot take \['confidance'\]"
    ):
        evaluate(Counting(), loader(samples), "cpu", compute_kwargs={"confidance": 0.95})
    assert seen == []
    with pytest.raises(
        TypeError,
        match=r"compute_kwargs: RecordingEvaluator.compute\(\) cannot take \['confidence'\]",
    ):
        evaluate(
            Counting(),
            loader(samples),
            "cpu",
            evaluator=RecordingEvaluator(),
            compute_kwargs={"confidence": 0.95},
        )
    assert seen == []


class Oracle(nn.Module):
    """Predicts each image's ground truth exactly (score 1), found by the image's content."""

    def __init__(self, samples):
        super().__init__()
        self.samples = samples

    def forward(self, images, targets=None):
        outputs = []
        for image in images:
            target = next(t for im, t in self.samples if torch.equal(im, image))
            outputs.append(
                {
                    "boxes": target["boxes"],
                    "labels": target["labels"],
                    "scores": torch.ones(len(target["boxes"])),
                    "masks": target["masks"][:, None].float(),
                }
            )
        return outputs


def test_perfect_predictions_score_ap_1_through_the_real_evaluator(samples):
    metrics = evaluate(
        Oracle(samples), loader(samples), "cpu", iou_types=("bbox", "segm"), progress=False
    )
    assert metrics["num_images"] == len(samples)
    for iou_type in ("bbox", "segm"):
        assert metrics[iou_type]["AP"] == pytest.approx(1.0)
        assert metrics[iou_type]["AR100"] == pytest.approx(1.0)


def test_evaluate_equals_feeding_coco_evaluator_by_hand(samples, caplog):
    model = tiny_detector(masks=True)
    with caplog.at_level(logging.INFO, logger="detkit.engine"):
        metrics = evaluate(model, loader(samples), "cpu", progress=False)
    assert set(metrics) == {"num_images", "bbox", "segm"}  # inferred from the Mask R-CNN
    model.eval()
    evaluator = CocoEvaluator(("bbox", "segm"))
    with torch.no_grad():
        for images, targets in loader(samples, batch_size=3):
            evaluator.update(model(list(images)), targets)
    assert metrics == evaluator.compute()
    text = caplog.text
    assert "Averaged stats: model_time:" in text and "evaluator_time:" in text
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in text


def test_evaluate_refuses_images_in_0_255_and_names_the_batch_of_a_failing_model():
    from detkit.types import InvalidTargetError

    samples = [
        (torch.rand(3, 32, 32) * 255, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0).long(),
                                       "image_id": i})
        for i in (5, 6)
    ]  # fmt: skip
    data = torch.utils.data.DataLoader(samples, batch_size=2, collate_fn=collate_fn)
    model = tiny_detector()
    with pytest.raises(InvalidTargetError, match=r"image_id=5: field 'image'.*scale=True"):
        evaluate(model, data, "cpu", progress=False)

    class Broken(torch.nn.Module):
        def forward(self, images):
            raise RuntimeError("CUDA error: device-side assert triggered")

    scaled = [(image / 255, target) for image, target in samples]
    data = torch.utils.data.DataLoader(scaled, batch_size=2, collate_fn=collate_fn)
    with pytest.raises(
        RuntimeError, match=r"device-side assert triggered \[batch image_ids \[5, 6\]\]"
    ):
        evaluate(Broken(), data, "cpu", iou_types=["bbox"], progress=False)


def tiny_retinanet(seed: int = 0):
    """A randomly initialised RetinaNet on a batch-norm backbone: a model outside R-CNN."""
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        backbone = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU(),
        )  # fmt: skip
        backbone.out_channels = 32
        return RetinaNet(
            backbone,
            num_classes=2,
            min_size=96,
            max_size=96,
            anchor_generator=AnchorGenerator(((16, 32),), ((0.5, 1.0, 2.0),)),
        )


def reference_losses(model, samples, batch_size):
    """What training computes on these batches at the evaluation size, with batch norm in eval
    mode, under the sampling seed evaluate uses: the model called in training mode with
    every batch norm layer and the transform switched back to eval mode, per batch."""
    import copy

    from detkit.engine._validation_loss import batch_seed

    model = copy.deepcopy(model).train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) or module is model.transform:
            module.eval()
    sums, count = {}, 0
    with torch.no_grad():
        for images, targets in loader(samples, batch_size):
            with torch.random.fork_rng():
                torch.manual_seed(batch_seed(targets))
                losses = model(list(images), list(targets))
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + float(value) * len(images)
            count += len(images)
    averages = {name: value / count for name, value in sums.items()}
    return {"loss": sum(averages.values()), **averages}


@pytest.mark.parametrize("kind", ["faster", "mask", "batchnorm", "retinanet"])
def test_validation_losses_come_with_unchanged_detections_and_model(samples, kind):
    from engine.ddp_worker import batchnorm_detector

    model = {
        "faster": lambda: tiny_detector(),
        "mask": lambda: tiny_detector(masks=True),
        "batchnorm": lambda: batchnorm_detector(),
        "retinanet": lambda: tiny_retinanet(),
    }[kind]()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    plain, with_losses = RecordingEvaluator(), RecordingEvaluator()
    evaluate(model, loader(samples), "cpu", evaluator=plain, progress=False)
    rng_after_plain = torch.get_rng_state()  # the data loader draws a seed
    torch.set_rng_state(rng)
    metrics = evaluate(
        model, loader(samples), "cpu", evaluator=with_losses, losses=True, progress=False
    )
    # The detections are exactly those of an evaluation without losses.
    assert list(plain.merged) == list(with_losses.merged) == [0, 1, 2, 3, 4]
    for image_id, prediction in plain.merged.items():
        for key, value in prediction.items():
            assert torch.equal(value, with_losses.merged[image_id][key]), (image_id, key)
    # Nothing learned or updated (batch norm statistics included), modes and RNG as before.
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(module.training for module in model.modules())
    assert torch.equal(rng_after_plain, torch.get_rng_state())  # the losses drew nothing
    # The losses are those of training's forward with batch norm in eval mode.
    expected = reference_losses(model, samples, batch_size=2)
    assert list(metrics["losses"]) == list(expected)
    for name, value in expected.items():
        assert metrics["losses"][name] == pytest.approx(value, rel=1e-12), name
    assert metrics["losses"]["loss"] > 0
    names = {
        "faster": ["loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"],
        "retinanet": ["classification", "bbox_regression"],
    }
    names["mask"] = [*names["faster"][:2], "loss_mask", *names["faster"][2:]]
    names["batchnorm"] = names["faster"]
    assert list(metrics["losses"]) == ["loss", *names[kind]]


def test_validation_losses_repeat_and_reach_the_scalar_hook(samples):
    model = tiny_detector(masks=True)
    recorded = []
    first = evaluate(
        model,
        loader(samples),
        "cpu",
        losses=True,
        progress=False,
        scalar_hook=lambda tag, value, step: recorded.append((tag, value, step)),
        step=2,
    )
    again = evaluate(model, loader(samples), "cpu", losses=True, progress=False)
    assert first == again  # sampling seeded by the batch's image ids
    assert ("val/losses/loss_mask", first["losses"]["loss_mask"], 2) in recorded
    assert ("val/losses/loss", first["losses"]["loss"], 2) in recorded


def test_validation_losses_need_the_fields_training_needs(samples):
    no_masks = [
        (image, {k: v for k, v in target.items() if k != "masks"}) for image, target in samples
    ]
    model = tiny_detector(masks=True)
    evaluate(model, loader(no_masks), "cpu", iou_types=["bbox"], progress=False)  # fine
    with pytest.raises(Exception, match=r"batch image_ids \[0, 1\]") as caught:
        evaluate(model, loader(no_masks), "cpu", iou_types=["bbox"], losses=True, progress=False)
    assert "mask" in str(caught.value)
    degenerate = [(samples[0][0], {**samples[0][1], "boxes": samples[0][1]["boxes"].clone()})]
    degenerate[0][1]["boxes"][0, 2] = degenerate[0][1]["boxes"][0, 0]
    with pytest.raises(AssertionError, match=r"positive height and width.*\[batch image_ids \[0\]"):
        evaluate(tiny_detector(), loader(degenerate), "cpu", losses=True, progress=False)


class HalfOracle(Oracle):
    """The oracle on images whose first sample index is even; nothing on the others, so that
    AP differs from image to image and a bootstrap over images has a spread."""

    def forward(self, images, targets=None):
        outputs = super().forward(images)
        for image, output in zip(images, outputs):
            index = next(i for i, (im, _) in enumerate(self.samples) if torch.equal(im, image))
            if index % 2:
                for key in ("boxes", "labels", "scores", "masks"):
                    output[key] = output[key][:0]
        return outputs


def test_compute_kwargs_give_the_bootstrap_intervals_of_the_evaluator(samples):
    options = {"confidence": 0.9, "resamples": 50, "seed": 3}
    model = HalfOracle(samples)
    metrics = evaluate(
        model, loader(samples), "cpu", iou_types=("bbox", "segm"), progress=False,
        compute_kwargs=options,
    )  # fmt: skip
    evaluator = CocoEvaluator(("bbox", "segm"))
    for images, targets in loader(samples, batch_size=5):
        evaluator.update(model(list(images)), targets)
    assert metrics == evaluator.compute(**options)
    for iou_type in ("bbox", "segm"):
        low, high = metrics[iou_type]["AP50_interval"]
        assert 0.0 < metrics[iou_type]["AP50"] < 1.0  # some images found, some missed
        assert low < high and low <= metrics[iou_type]["AP50"] <= high
        assert metrics[iou_type]["AP_interval"][0] <= metrics[iou_type]["AP_interval"][1]
    # No intervals unless asked: they cost several times the plain computation.
    plain = evaluate(model, loader(samples), "cpu", iou_types=("bbox",), progress=False)
    assert "AP_interval" not in plain["bbox"] and "AP50_interval" not in plain["bbox"]


def test_validation_losses_refuse_fewer_keypoints_than_the_model_predicts():
    """With fewer keypoints per target than the model has, torchvision's keypoint loss reads
    other keypoints' heatmaps without an error: the validation loss would be wrong."""
    keypoints = torch.zeros(1, 3, 3)
    keypoints[0, :, 0], keypoints[0, :, 1], keypoints[0, :, 2] = 20.0, 30.0, 2.0
    target = {
        "boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0]]),
        "labels": torch.tensor([1]),
        "keypoints": keypoints,
        "image_id": 7,
    }
    samples = [(torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(0)), target)]
    with pytest.raises(ValueError, match=r"image_id 7: keypoints \[N, 3, 3\] but the model "):
        evaluate(tiny_detector(keypoints=5), loader(samples), "cpu", losses=True, progress=False)


def test_autocast_evaluation_hands_the_evaluator_float32_predictions(samples, caplog):
    evaluator = RecordingEvaluator()
    with caplog.at_level(logging.WARNING, logger="detkit.engine"):
        evaluate(
            tiny_detector(masks=True),
            loader(samples),
            "cpu",
            evaluator=evaluator,
            autocast_dtype=torch.bfloat16,
            progress=False,
        )
    assert evaluator.predictions
    for prediction in evaluator.predictions.values():
        assert prediction["boxes"].dtype == prediction["masks"].dtype == torch.float32
    assert "low precision" not in caplog.text


class BFloat16Oracle(Oracle):
    """A model whose own decoding returns bfloat16 boxes: detkit cannot reach its layers."""

    def forward(self, images, targets=None):
        outputs = super().forward(images)
        for output in outputs:
            output["boxes"] = output["boxes"].bfloat16()
        return outputs


def test_boxes_left_in_bfloat16_by_an_unknown_model_get_a_warning(samples, caplog):
    with caplog.at_level(logging.WARNING, logger="detkit.engine"):
        evaluate(
            BFloat16Oracle(samples),
            loader(samples),
            "cpu",
            iou_types=("bbox",),
            autocast_dtype=torch.bfloat16,
            progress=False,
        )
    assert caplog.text.count("returned torch.bfloat16 boxes under autocast") == 1
