"""Weights from files and (local, fake) downloads: formats, reports, clear errors."""

from __future__ import annotations

import argparse
import logging
import socket
import time
import urllib.error
from collections import OrderedDict

import pytest
import torch
import torchvision
from torchvision.models import MobileNet_V2_Weights, ResNet18_Weights

from detkit.models import (
    LoadReport,
    WeightsDownloadError,
    detection_model,
    fasterrcnn,
    keypointrcnn,
    load_weights,
    maskrcnn,
    read_state_dict,
    replace_heads,
    trunk_backbone,
)
from detkit.models.weights import sources

SMALL = {"min_size": 64, "max_size": 64}


class NotData:
    """Something a weights-only unpickler must refuse."""


@pytest.fixture(scope="module")
def resnet18_state():
    torch.manual_seed(0)
    return torchvision.models.resnet18().state_dict()


def test_read_state_dict_accepts_the_usual_containers(tmp_path):
    small = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
    state_dict = small.state_dict()
    forms = {
        "plain.pth": state_dict,
        "detkit.pth": {"model": state_dict, "optimizer": {"state": {}}, "epoch": 4},
        "lightning.ckpt": {"state_dict": state_dict, "epoch": 1},
        "tutorial.pt": {"model_state_dict": state_dict},
        # torchvision's reference scripts store their argparse arguments next to the model
        "reference.pth": {"model": state_dict, "args": argparse.Namespace(lr=0.02)},
        "ddp.pth": OrderedDict((f"module.{k}", v) for k, v in state_dict.items()),
    }
    for name, obj in forms.items():
        torch.save(obj, tmp_path / name)
        state = read_state_dict(tmp_path / name)
        assert list(state) == list(state_dict), name
        assert torch.equal(state["0.weight"], state_dict["0.weight"]), name


def test_read_state_dict_keeps_version_metadata_through_the_ddp_prefix(tmp_path):
    wrapped = torch.nn.Sequential(torchvision.models.resnet18())  # key prefix "0."
    state = wrapped.state_dict()
    ddp = OrderedDict((f"module.{k}", v) for k, v in state.items())
    ddp._metadata = OrderedDict(
        [("module", {"version": 1})] + [(f"module.{k}", v) for k, v in state._metadata.items()]
    )
    torch.save(ddp, tmp_path / "ddp.pth")
    loaded = read_state_dict(tmp_path / "ddp.pth")
    assert loaded._metadata["0.bn1"] == state._metadata["0.bn1"]


def test_read_state_dict_errors_name_the_file(tmp_path, resnet18_state):
    torch.save({"model": resnet18_state, "extra": NotData()}, tmp_path / "unsafe.pth")
    with pytest.raises(ValueError) as info:
        read_state_dict(tmp_path / "unsafe.pth")
    assert str(info.value).startswith(
        f"cannot read weights file '{tmp_path / 'unsafe.pth'}' safely: it holds a pickled "
        f"{__name__}.NotData, which torch.load(weights_only=True) refuses to run. "
    )
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match=r"list\.pth holds no state dict: .* found list"):
        read_state_dict(tmp_path / "list.pth")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pth")
    with pytest.raises(ValueError, match=r"found \['epoch', 'lr'\]"):
        read_state_dict(tmp_path / "meta.pth")
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        read_state_dict(tmp_path / "nope.pth")


def test_a_damaged_weights_file_is_refused_not_loaded_as_wrong_values(tmp_path, resnet18_state):
    """torch.load does not check the CRC-32 torch.save writes per record: a file altered since
    (one flipped bit in a tensor's bytes) loaded with a wrong weight and no word."""
    path = tmp_path / "weights.pth"
    torch.save({"model": resnet18_state}, path)
    data = bytearray(path.read_bytes())
    start = data.index(b"weights/data/0") + 200  # inside the first tensor's bytes
    data[start] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError) as info:
        read_state_dict(path)
    assert str(info.value).startswith(
        f"weights file '{path}' is damaged: the bytes of weights/data/"
    )
    assert str(info.value).endswith(
        "do not match the checksums written with them (the file changed after it was saved: "
        "a bad copy, download or disk); fetch it again (its loaded values would be wrong "
        "without a word)"
    )


@pytest.fixture(scope="module")
def saved_mask_model(tmp_path_factory):
    """A Mask R-CNN with 3 classes (heads replaced), saved as a detkit checkpoint."""
    torch.manual_seed(0)
    model = replace_heads(maskrcnn("mobilenet_v3_small", num_classes=91, **SMALL), 3)
    path = tmp_path_factory.mktemp("weights") / "mask3.pth"
    torch.save({"model": model.state_dict(), "epoch": 1}, path)
    return model, path


def test_heads_of_another_class_count_are_replaced_quietly(saved_mask_model, caplog):
    model, path = saved_mask_model
    other = maskrcnn("mobilenet_v3_small", num_classes=5, **SMALL)
    with caplog.at_level(logging.DEBUG, logger="detkit.models.weights"):
        report = load_weights(other, path)
    heads = [
        "roi_heads.box_predictor.cls_score.weight",
        "roi_heads.box_predictor.cls_score.bias",
        "roi_heads.box_predictor.bbox_pred.weight",
        "roi_heads.box_predictor.bbox_pred.bias",
        "roi_heads.mask_predictor.mask_fcn_logits.weight",
        "roi_heads.mask_predictor.mask_fcn_logits.bias",
    ]
    assert report.replaced_heads == heads
    assert report.missing_keys == report.unexpected_keys == [] and report.ok
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    source = model.state_dict()
    for key, value in other.state_dict().items():
        if key not in heads:
            assert torch.equal(value, source[key]), key
    assert other.roi_heads.box_predictor.cls_score.out_features == 5


def test_missing_and_unexpected_keys_are_reported(saved_mask_model, caplog):
    model, _ = saved_mask_model
    state = dict(model.state_dict())
    del state["backbone.fpn.layer_blocks.0.0.weight"]
    state["extra.weight"] = torch.zeros(1)
    target = maskrcnn("mobilenet_v3_small", num_classes=3, **SMALL)
    with pytest.raises(
        ValueError,
        match=r"state dict does not fit MaskRCNN: the model has 1 tensors the source lacks "
        r"\('backbone\.fpn\.layer_blocks\.0\.0\.weight'\) and the source has 1 the model lacks "
        r"\('extra\.weight'\)\. Pass strict=False",
    ):
        load_weights(target, state)
    with caplog.at_level(logging.WARNING, logger="detkit.models.weights"):
        report = load_weights(target, state, strict=False)
    assert report.missing_keys == ["backbone.fpn.layer_blocks.0.0.weight"]
    assert report.unexpected_keys == ["extra.weight"] and not report.ok
    assert "1 model tensors stay as initialised" in caplog.text


def test_wrong_architecture_file_is_a_clear_error(saved_mask_model, tmp_path, resnet18_state):
    _, path = saved_mask_model
    resnet_fpn = maskrcnn("resnet18", num_classes=3, **SMALL)
    with pytest.raises(
        ValueError,
        match=r"weights file '.*mask3\.pth' does not fit MaskRCNN: \d+ tensors differ in shape: "
        r"'backbone\.fpn\.inner_blocks\.0\.0\.weight' \[256, 16, 1, 1\] in the source, "
        r"\[256, 64, 1, 1\] in the model",
    ):
        load_weights(resnet_fpn, path)
    torch.save(resnet18_state, tmp_path / "resnet18.pth")
    with pytest.raises(ValueError, match=r"none of its 122 tensors .* pass it as weights_backbone"):
        load_weights(resnet_fpn, tmp_path / "resnet18.pth")


def test_load_report_example():
    report = LoadReport("x.pth", loaded=3, missing_keys=["a"])
    assert not report.ok


# -- downloads, against a server on 127.0.0.1 only ----------------------------------------------


def use_url(monkeypatch, url: str) -> None:
    monkeypatch.setattr(ResNet18_Weights.IMAGENET1K_V1.value, "url", url)


def test_download_404_says_how_to_use_a_local_file(monkeypatch, weights_server, empty_hub):
    base, _, requests = weights_server
    use_url(monkeypatch, f"{base}/models/resnet18-f37072fd.pth")
    with pytest.raises(WeightsDownloadError) as info:
        trunk_backbone("resnet18", weights="DEFAULT")
    message = str(info.value)
    cached = empty_hub / "checkpoints" / "resnet18-f37072fd.pth"
    assert "could not get weights=ResNet18_Weights.IMAGENET1K_V1" in message
    assert "HTTP Error 404" in message and f"{base}/models/resnet18-f37072fd.pth" in message
    assert "weights='/path/to/resnet18-f37072fd.pth'" in message and str(cached) in message
    assert isinstance(info.value, OSError) and isinstance(
        info.value.__cause__, urllib.error.URLError
    )
    assert requests == ["/models/resnet18-f37072fd.pth"]
    assert not cached.exists()


def test_refused_connection_and_corrupt_file(monkeypatch, weights_server, empty_hub, closed_port):
    use_url(monkeypatch, f"http://127.0.0.1:{closed_port}/resnet18-f37072fd.pth")
    with pytest.raises(WeightsDownloadError, match=r"the download failed \(URLError: .*[Rr]efused"):
        trunk_backbone("resnet18", weights=ResNet18_Weights.IMAGENET1K_V1)
    base, root, _ = weights_server
    (root / "resnet18-f37072fd.pth").write_bytes(b"not the weights")
    use_url(monkeypatch, f"{base}/resnet18-f37072fd.pth")
    with pytest.raises(
        WeightsDownloadError, match=r"the download is corrupt \(RuntimeError: .*hash"
    ):
        trunk_backbone("resnet18", weights="IMAGENET1K_V1")
    assert not (empty_hub / "checkpoints" / "resnet18-f37072fd.pth").exists()


def test_a_server_that_never_answers_times_out(monkeypatch, empty_hub):
    """A proxy or firewall that accepts the connection and then says nothing (the listening
    socket below never calls accept) used to hang the builder forever: torch.hub downloads
    without a timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        use_url(monkeypatch, f"http://127.0.0.1:{silent.getsockname()[1]}/resnet18-f37072fd.pth")
        monkeypatch.setattr(sources, "DOWNLOAD_TIMEOUT", 0.5)
        before = socket.getdefaulttimeout()
        start = time.monotonic()
        with pytest.raises(WeightsDownloadError, match=r"the download failed \(.*timed out"):
            trunk_backbone("resnet18", weights="DEFAULT")
        assert time.monotonic() - start < 10
        assert socket.getdefaulttimeout() == before  # the process's default is left alone


def test_download_then_cache(monkeypatch, weights_server, empty_hub, resnet18_state):
    base, root, requests = weights_server
    torch.save(resnet18_state, root / "resnet18_local.pth")  # no hash in the name: no check
    use_url(monkeypatch, f"{base}/resnet18_local.pth")
    for _ in range(2):
        backbone = trunk_backbone("resnet18", weights="ResNet18_Weights.IMAGENET1K_V1")
        assert torch.equal(backbone.conv1.weight, resnet18_state["conv1.weight"])
        torch.testing.assert_close(backbone.bn1.running_var, resnet18_state["bn1.running_var"])
    assert requests == ["/resnet18_local.pth"]  # the second build read torch.hub's cache
    assert (empty_hub / "checkpoints" / "resnet18_local.pth").is_file()


def test_detector_builder_reports_the_failing_argument(monkeypatch, weights_server, empty_hub):
    base, _, _ = weights_server
    monkeypatch.setattr(
        torchvision.models.MobileNet_V3_Large_Weights.DEFAULT.value, "url", f"{base}/x.pth"
    )
    with pytest.raises(WeightsDownloadError, match=r"could not get weights_backbone=.*x\.pth"):
        detection_model("ssdlite320_mobilenet_v3_large", num_classes=2, weights_backbone="DEFAULT")


@pytest.mark.parametrize(
    ("build", "enum"),
    [
        (lambda: fasterrcnn("mobilenet_v2", fpn=False, num_classes=2, weights_backbone="DEFAULT"),
         "MobileNet_V2_Weights.IMAGENET1K_V2"),
        (lambda: maskrcnn("resnet18", num_classes=2, weights_backbone="IMAGENET1K_V1"),
         "ResNet18_Weights.IMAGENET1K_V1"),
        (lambda: keypointrcnn(torchvision.models.resnet18(), num_classes=2,
                              weights_backbone=ResNet18_Weights.IMAGENET1K_V1),
         "ResNet18_Weights.IMAGENET1K_V1"),
    ],
)  # fmt: skip
def test_offline_builders_name_weights_backbone_not_weights(empty_hub, build, enum):
    """Offline (no name resolves), the message names the argument the user gave."""
    with pytest.raises(WeightsDownloadError) as info:
        build()
    message = str(info.value)
    assert message.startswith(f"could not get weights_backbone={enum}: the download failed")
    assert "pass its path, weights_backbone='/path/to/" in message
    assert " weights=" not in message and "weights='" not in message


def test_offline_load_weights_names_its_source_argument(empty_hub):
    with pytest.raises(WeightsDownloadError) as info:
        load_weights(torchvision.models.resnet18(), ResNet18_Weights.IMAGENET1K_V1)
    assert str(info.value).startswith("could not get source=ResNet18_Weights.IMAGENET1K_V1")
    assert "pass its path, source='/path/to/resnet18-f37072fd.pth'" in str(info.value)


def test_weights_arguments_are_checked(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=r"weights='NOPE' is neither a name of ResNet18_Weights \(IMAGENET1K_V1, DEFAULT\) "
        r"nor an existing file",
    ):
        trunk_backbone("resnet18", weights="NOPE")
    with pytest.raises(
        TypeError,
        match=r"weights=MobileNet_V2_Weights\.IMAGENET1K_V2 does not fit this model: expected ResNet18_Weights",
    ):
        trunk_backbone("resnet18", weights=MobileNet_V2_Weights.DEFAULT)
    with pytest.raises(
        TypeError,
        match="weights must be a torchvision weights enum, its name, or a file path; got int",
    ):
        trunk_backbone("resnet18", weights=3)
    with pytest.raises(FileNotFoundError, match=r"weights='.*missing\.pth' is neither"):
        trunk_backbone("resnet18", weights=str(tmp_path / "missing.pth"))
