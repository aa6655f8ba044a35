"""Write the intersphinx inventories the docs build reads, so that it never needs the network.

Run ``python docs/_inventories/make_inventories.py`` after the docs start to mention a
Python, PyTorch, torchvision, NumPy or Pillow name that is not listed below; the build
(``sphinx -n``) names each one it cannot resolve. Each name points at the page of the
project's real documentation that describes it. autodoc writes some names by the module that
defines them (``torch.nn.modules.module.Module``); those are listed too, pointing at the
public name's page and shown under the public name.

The files are Sphinx's inventory format, version 2: four header lines, then zlib-compressed
lines ``name domain:role priority uri dispname`` (``$`` ending a uri stands for the name,
``-`` as dispname for the name itself). tests/test_docs.py checks that the committed files
hold what this script writes.
"""

from __future__ import annotations

import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent

# An entry: (name, role, uri relative to the project's base URL, name shown or None).
Entry = tuple[str, str, str, str | None]


def _same_page(names: str, role: str, page: str) -> list[Entry]:
    """Names documented as anchors of one page (``page#name``)."""
    return [(name, role, f"{page}#$", None) for name in names.split()]


def _own_pages(names: str, role: str, pattern: str) -> list[Entry]:
    """Names with a page each, ``pattern`` formatted with the name (``generated/{}.html``)."""
    return [(name, role, pattern.format(name) + "#$", None) for name in names.split()]


def _prefixed(prefix: str, names: str) -> str:
    """``names`` (separated by spaces) each with ``prefix.`` in front."""
    return " ".join(f"{prefix}.{name}" for name in names.split())


def _aliases(pairs: dict[str, str], entries: list[Entry]) -> list[Entry]:
    """Private qualnames (``{private: public}``) pointing at their public name's page."""
    uri = {name: uri.replace("#$", f"#{name}") for name, _, uri, _ in entries}
    role = {name: role for name, role, _, _ in entries}
    return [(private, role[public], uri[public], public) for private, public in pairs.items()]


def python_entries() -> list[Entry]:
    entries = [
        ("collections.abc", "py:module", "library/collections.abc.html#module-$", None),
        ("logging", "py:module", "library/logging.html#module-$", None),
        ("random", "py:module", "library/random.html#module-$", None),
        ("json", "py:module", "library/json.html#module-$", None),
        ("os", "py:module", "library/os.html#module-$", None),
        ("typing", "py:module", "library/typing.html#module-$", None),
        ("str.format", "py:method", "library/stdtypes.html#$", None),
    ]
    entries += _same_page(
        "collections.abc.Callable collections.abc.Collection collections.abc.Generator "
        "collections.abc.Hashable collections.abc.Iterable collections.abc.Iterator "
        "collections.abc.Mapping collections.abc.MutableMapping collections.abc.Sequence "
        "collections.abc.Set collections.abc.Sized",
        "py:class",
        "library/collections.abc.html",
    )
    entries += _same_page("object int float bool type", "py:class", "library/functions.html")
    entries += _same_page(
        "str bytes list tuple dict set frozenset", "py:class", "library/stdtypes.html"
    )
    entries += _same_page("None True False", "py:data", "library/constants.html")
    entries += _same_page(
        "BaseException Exception ValueError TypeError KeyError IndexError OSError "
        "FileNotFoundError FileExistsError IsADirectoryError PermissionError RuntimeError "
        "FloatingPointError NotImplementedError ImportError ModuleNotFoundError "
        "UserWarning DeprecationWarning RuntimeWarning",
        "py:exception",
        "library/exceptions.html",
    )
    entries += _same_page("os.PathLike", "py:class", "library/os.html")
    entries += _same_page("os.fspath os.replace", "py:function", "library/os.html")
    entries += _same_page("pathlib.Path pathlib.PurePath", "py:class", "library/pathlib.html")
    entries += _same_page(
        "logging.Logger logging.Handler logging.StreamHandler logging.LogRecord",
        "py:class",
        "library/logging.html",
    )
    entries += _same_page(
        "logging.basicConfig logging.getLogger", "py:function", "library/logging.html"
    )
    entries += _same_page("functools.partial", "py:function", "library/functools.html")
    entries += _same_page("datetime.timedelta", "py:class", "library/datetime.html")
    entries += _same_page(
        "contextlib.closing contextlib.nullcontext", "py:class", "library/contextlib.html"
    )
    entries += _same_page("contextlib.contextmanager", "py:function", "library/contextlib.html")
    entries += _same_page("random.Random", "py:class", "library/random.html")
    entries += _same_page("random.seed random.getstate", "py:function", "library/random.html")
    entries += _same_page(
        "typing.Any typing.Literal typing.Optional typing.Union", "py:data", "library/typing.html"
    )
    entries += _same_page(
        "typing.TypedDict typing.Protocol typing.NamedTuple typing.TypeGuard",
        "py:class",
        "library/typing.html",
    )
    entries += _same_page("enum.Enum", "py:class", "library/enum.html")
    entries += _same_page("zipfile.ZipFile", "py:class", "library/zipfile.html")
    entries += _same_page("io.BytesIO", "py:class", "library/io.html")
    entries += _same_page("dataclasses.dataclass", "py:function", "library/dataclasses.html")
    entries += _same_page("warnings.warn", "py:function", "library/warnings.html")
    return entries


def torch_entries() -> list[Entry]:
    entries = [
        ("torch", "py:module", "torch.html#module-$", None),
        ("torch.nn", "py:module", "nn.html#module-$", None),
        ("torch.optim", "py:module", "optim.html#module-$", None),
        ("torch.utils.data", "py:module", "data.html#module-$", None),
        ("torch.distributed", "py:module", "distributed.html#module-$", None),
        ("torch.amp", "py:module", "amp.html#module-$", None),
        ("torch.Tensor", "py:class", "tensors.html#$", None),
        ("torch.Size", "py:class", "size.html#$", None),
        ("torch.optim.Optimizer", "py:class", "optim.html#$", None),
    ]
    entries += _same_page("torch.device torch.dtype", "py:class", "tensor_attributes.html")
    entries += _same_page("torch.amp.GradScaler torch.autocast", "py:class", "amp.html")
    entries += _same_page(
        "torch.utils.data.Dataset torch.utils.data.IterableDataset torch.utils.data.DataLoader "
        "torch.utils.data.Subset torch.utils.data.ConcatDataset torch.utils.data.Sampler "
        "torch.utils.data.BatchSampler torch.utils.data.SequentialSampler "
        "torch.utils.data.RandomSampler torch.utils.data.distributed.DistributedSampler",
        "py:class",
        "data.html",
    )
    entries += _same_page(
        "torch.utils.data.default_collate torch.utils.data.get_worker_info",
        "py:function",
        "data.html",
    )
    entries += _same_page(
        "torch.distributed.init_process_group torch.distributed.destroy_process_group "
        "torch.distributed.is_available torch.distributed.is_initialized "
        "torch.distributed.get_rank torch.distributed.get_world_size torch.distributed.barrier "
        "torch.distributed.all_reduce torch.distributed.all_gather_object "
        "torch.distributed.gather_object torch.distributed.broadcast_object_list",
        "py:function",
        "distributed.html",
    )
    entries += _own_pages(
        "torch.Generator torch.no_grad torch.inference_mode torch.nn.Module "
        "torch.nn.Sequential torch.nn.ModuleDict torch.nn.ModuleList torch.nn.Conv2d "
        "torch.nn.BatchNorm2d torch.nn.Identity torch.optim.SGD torch.optim.AdamW "
        "torch.optim.lr_scheduler.LRScheduler torch.optim.lr_scheduler.LambdaLR "
        "torch.optim.lr_scheduler.MultiStepLR torch.optim.lr_scheduler.CosineAnnealingLR",
        "py:class",
        "generated/{}.html",
    )
    entries += _own_pages(
        "torch.as_tensor torch.tensor torch.from_numpy torch.load torch.save "
        "torch.manual_seed torch.set_num_threads torch.get_rng_state torch.set_rng_state "
        "torch.use_deterministic_algorithms torch.compile torch.cuda.is_available "
        "torch.nn.utils.clip_grad_norm_",
        "py:function",
        "generated/{}.html",
    )
    entries += _same_page(
        _prefixed("torch.nn.Module", "load_state_dict state_dict train eval to parameters"),
        "py:method",
        "generated/torch.nn.Module.html",
    )
    entries += _aliases(
        {
            "torch.nn.modules.module.Module": "torch.nn.Module",
            "torch.nn.modules.container.Sequential": "torch.nn.Sequential",
            "torch.nn.modules.container.ModuleDict": "torch.nn.ModuleDict",
            "torch.nn.modules.container.ModuleList": "torch.nn.ModuleList",
            "torch.nn.modules.conv.Conv2d": "torch.nn.Conv2d",
            "torch.nn.modules.batchnorm.BatchNorm2d": "torch.nn.BatchNorm2d",
            "torch._C.Generator": "torch.Generator",
            "torch.optim.optimizer.Optimizer": "torch.optim.Optimizer",
            "torch.optim.lr_scheduler._LRScheduler": "torch.optim.lr_scheduler.LRScheduler",
            "torch.amp.grad_scaler.GradScaler": "torch.amp.GradScaler",
            "torch.utils.data.dataset.Dataset": "torch.utils.data.Dataset",
            "torch.utils.data.dataset.IterableDataset": "torch.utils.data.IterableDataset",
            "torch.utils.data.dataset.Subset": "torch.utils.data.Subset",
            "torch.utils.data.dataset.ConcatDataset": "torch.utils.data.ConcatDataset",
            "torch.utils.data.dataloader.DataLoader": "torch.utils.data.DataLoader",
            "torch.utils.data.sampler.Sampler": "torch.utils.data.Sampler",
            "torch.utils.data.sampler.BatchSampler": "torch.utils.data.BatchSampler",
        },
        entries,
    )
    return entries


def torchvision_entries() -> list[Entry]:
    detection = "torchvision.models.detection"
    entries = [
        ("torchvision.tv_tensors", "py:module", "tv_tensors.html#module-$", None),
        ("torchvision.transforms.v2", "py:module", "transforms.html#module-$", None),
        ("torchvision.ops", "py:module", "ops.html#module-$", None),
        ("torchvision.models", "py:module", "models.html#module-$", None),
        ("torchvision.utils", "py:module", "utils.html#module-$", None),
    ]
    entries += _own_pages(
        "torchvision.tv_tensors.TVTensor torchvision.tv_tensors.Image "
        "torchvision.tv_tensors.BoundingBoxes torchvision.tv_tensors.BoundingBoxFormat "
        "torchvision.tv_tensors.Mask torchvision.tv_tensors.KeyPoints "
        "torchvision.tv_tensors.Video torchvision.transforms.InterpolationMode "
        "torchvision.ops.FrozenBatchNorm2d torchvision.ops.FeaturePyramidNetwork "
        "torchvision.ops.MultiScaleRoIAlign torchvision.datasets.CocoDetection",
        "py:class",
        "generated/{}.html",
    )
    entries += _own_pages(
        _prefixed(
            "torchvision.transforms.v2",
            "Transform Compose ToImage ToDtype PILToTensor ToPureTensor "
            "RandomHorizontalFlip RandomVerticalFlip RandomPhotometricDistort RandomIoUCrop "
            "RandomZoomOut ScaleJitter RandomShortestSize Resize SanitizeBoundingBoxes "
            "ClampBoundingBoxes Normalize",
        ),
        "py:class",
        "generated/{}.html",
    )
    entries += _own_pages(
        "torchvision.tv_tensors.wrap torchvision.ops.masks_to_boxes torchvision.ops.box_convert "
        "torchvision.ops.box_iou torchvision.ops.box_area torchvision.ops.nms "
        "torchvision.ops.batched_nms torchvision.ops.clip_boxes_to_image "
        "torchvision.ops.remove_small_boxes torchvision.utils.draw_bounding_boxes "
        "torchvision.utils.draw_segmentation_masks torchvision.utils.draw_keypoints "
        "torchvision.utils.make_grid torchvision.io.decode_image torchvision.io.read_image "
        "torchvision.models.get_weight torchvision.models.get_model "
        "torchvision.models.get_model_weights torchvision.models.list_models "
        "torchvision.models.feature_extraction.create_feature_extractor "
        "torchvision.datasets.wrap_dataset_for_transforms_v2 "
        "torchvision.transforms.v2.functional.horizontal_flip "
        "torchvision.transforms.v2.functional.vertical_flip "
        "torchvision.transforms.v2.functional.resize torchvision.transforms.v2.functional.crop "
        "torchvision.transforms.v2.functional.pad torchvision.transforms.v2.functional.to_dtype "
        "torchvision.transforms.v2.functional.to_image",
        "py:function",
        "generated/{}.html",
    )
    builders = (
        "fasterrcnn_resnet50_fpn fasterrcnn_resnet50_fpn_v2 fasterrcnn_mobilenet_v3_large_fpn "
        "fasterrcnn_mobilenet_v3_large_320_fpn maskrcnn_resnet50_fpn maskrcnn_resnet50_fpn_v2 "
        "keypointrcnn_resnet50_fpn retinanet_resnet50_fpn retinanet_resnet50_fpn_v2 "
        "fcos_resnet50_fpn ssd300_vgg16 ssdlite320_mobilenet_v3_large"
    )
    entries += _own_pages(
        _prefixed(detection, builders),
        "py:function",
        "generated/{}.html",
    )
    entries += _own_pages(
        _prefixed(
            "torchvision.models",
            "resnet18 resnet34 resnet50 resnet101 resnet152 resnext50_32x4d "
            "mobilenet_v2 mobilenet_v3_large mobilenet_v3_small efficientnet_b0 "
            "convnext_tiny regnet_y_400mf vgg16",
        ),
        "py:function",
        "generated/{}.html",
    )
    # torchvision documents the detection models by family pages and builder functions,
    # not their classes: the classes point at their family's page.
    families = {
        "FasterRCNN": "faster_rcnn",
        "MaskRCNN": "mask_rcnn",
        "KeypointRCNN": "keypoint_rcnn",
        "RetinaNet": "retinanet",
        "FCOS": "fcos",
        "SSD": "ssd",
    }
    for name, page in families.items():
        uri = f"models/{page}.html"
        entries.append((f"{detection}.{name}", "py:class", uri, None))
        entries.append((f"{detection}.{page}.{name}", "py:class", uri, f"{detection}.{name}"))
    # Classes torchvision exports from their family's module only.
    for qualname, page in {
        "faster_rcnn.FastRCNNPredictor": "faster_rcnn",
        "faster_rcnn.TwoMLPHead": "faster_rcnn",
        "mask_rcnn.MaskRCNNPredictor": "mask_rcnn",
        "mask_rcnn.MaskRCNNHeads": "mask_rcnn",
        "keypoint_rcnn.KeypointRCNNPredictor": "keypoint_rcnn",
        "keypoint_rcnn.KeypointRCNNHeads": "keypoint_rcnn",
        "anchor_utils.AnchorGenerator": "faster_rcnn",
        "backbone_utils.BackboneWithFPN": "faster_rcnn",
    }.items():
        entries.append((f"{detection}.{qualname}", "py:class", f"models/{page}.html", None))
    entries.append(
        (f"{detection}.backbone_utils.resnet_fpn_backbone", "py:function",
         "models/faster_rcnn.html", None)
    )  # fmt: skip
    entries += [
        # Undocumented FPN building blocks: the FeaturePyramidNetwork page describes them.
        (
            f"torchvision.ops.feature_pyramid_network.{name}",
            "py:class",
            "generated/torchvision.ops.FeaturePyramidNetwork.html",
            None,
        )
        for name in ("ExtraFPNBlock", "LastLevelMaxPool", "LastLevelP6P7")
    ]
    entries += [
        ("torchvision.models.WeightsEnum", "py:class",
         "models.html#general-information-on-pre-trained-weights", None),
        ("torchvision.models._api.WeightsEnum", "py:class",
         "models.html#general-information-on-pre-trained-weights", "torchvision.models.WeightsEnum"),
    ]  # fmt: skip
    entries += _aliases(
        {
            "torchvision.tv_tensors._tv_tensor.TVTensor": "torchvision.tv_tensors.TVTensor",
            "torchvision.tv_tensors._image.Image": "torchvision.tv_tensors.Image",
            "torchvision.tv_tensors._bounding_boxes.BoundingBoxes": (
                "torchvision.tv_tensors.BoundingBoxes"
            ),
            "torchvision.tv_tensors._bounding_boxes.BoundingBoxFormat": (
                "torchvision.tv_tensors.BoundingBoxFormat"
            ),
            "torchvision.tv_tensors._mask.Mask": "torchvision.tv_tensors.Mask",
            "torchvision.tv_tensors._keypoints.KeyPoints": "torchvision.tv_tensors.KeyPoints",
            "torchvision.transforms.v2._transform.Transform": "torchvision.transforms.v2.Transform",
            "torchvision.transforms.v2.InterpolationMode": (
                "torchvision.transforms.InterpolationMode"
            ),
            "torchvision.transforms.functional.InterpolationMode": (
                "torchvision.transforms.InterpolationMode"
            ),
            "torchvision.ops.misc.FrozenBatchNorm2d": "torchvision.ops.FrozenBatchNorm2d",
            "torchvision.ops.feature_pyramid_network.FeaturePyramidNetwork": (
                "torchvision.ops.FeaturePyramidNetwork"
            ),
            "torchvision.ops.poolers.MultiScaleRoIAlign": "torchvision.ops.MultiScaleRoIAlign",
        },
        entries,
    )
    return entries


def numpy_entries() -> list[Entry]:
    entries = [("numpy", "py:module", "reference/index.html#module-$", None)]
    entries += _own_pages("numpy.ndarray numpy.dtype", "py:class", "reference/generated/{}.html")
    entries += _own_pages(
        "numpy.asarray numpy.array numpy.zeros", "py:function", "reference/generated/{}.html"
    )
    entries += _same_page("numpy.random.Generator", "py:class", "reference/random/generator.html")
    entries += _same_page(
        "numpy.random.default_rng", "py:function", "reference/random/generator.html"
    )
    return entries


def pil_entries() -> list[Entry]:
    entries = [
        ("PIL.Image", "py:module", "reference/Image.html#module-$", None),
        ("PIL.ImageFont", "py:module", "reference/ImageFont.html#module-$", None),
    ]
    entries += _same_page("PIL.Image.Image", "py:class", "reference/Image.html")
    entries += _same_page("PIL.Image.open", "py:function", "reference/Image.html")
    entries += _same_page(
        "PIL.ImageFont.ImageFont PIL.ImageFont.FreeTypeFont", "py:class", "reference/ImageFont.html"
    )
    entries += _same_page(
        "PIL.ImageFont.truetype PIL.ImageFont.load_default", "py:function",
        "reference/ImageFont.html",
    )  # fmt: skip
    return entries


#: project file name: (project name, version, entries).
PROJECTS = {
    "python": ("Python", "3", python_entries),
    "torch": ("PyTorch", "stable", torch_entries),
    "torchvision": ("Torchvision", "stable", torchvision_entries),
    "numpy": ("NumPy", "stable", numpy_entries),
    "PIL": ("Pillow", "stable", pil_entries),
}


def inventory_header(project: str, version: str) -> bytes:
    return (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    ).encode()


def inventory_body(entries: list[Entry]) -> bytes:
    """The uncompressed lines, sorted, one name per role (a repeated name is an error)."""
    seen: set[tuple[str, str]] = set()
    lines = []
    for name, role, uri, shown in entries:
        if (name, role) in seen:
            raise ValueError(f"{name} ({role}) is listed twice")
        seen.add((name, role))
        if "$" in uri[:-1]:
            raise ValueError(f"{name}: '$' may only end a uri: {uri}")
        lines.append(f"{name} {role} 1 {uri} {shown or '-'}\n")
    return "".join(sorted(lines)).encode()


def inventory(name: str) -> bytes:
    """The ``objects.inv`` contents of the project ``name`` (a key of :data:`PROJECTS`)."""
    project, version, entries = PROJECTS[name]
    return inventory_header(project, version) + zlib.compress(inventory_body(entries()), 9)


def main() -> None:
    for name in PROJECTS:
        path = HERE / f"{name}.inv"
        path.write_bytes(inventory(name))
        print(f"wrote {path.relative_to(HERE.parents[1])}")


if __name__ == "__main__":
    main()
