import numpy as np
import pytest
import torch
from PIL import Image

from detkit.visualize import (
    COCO_PERSON_SKELETON,
    draw_instances,
    draw_prediction,
    draw_target,
    label_color,
    make_grid,
    save_image,
)


def blank(h=40, w=50):
    return torch.zeros(3, h, w, dtype=torch.uint8)


def test_box_outline_in_class_color():
    canvas = draw_instances(blank(), torch.tensor([[5.0, 6.0, 30.0, 35.0]]), torch.tensor([3]))
    color = torch.tensor(label_color(3), dtype=torch.uint8)
    assert torch.equal(canvas[:, 20, 5], color)  # left edge
    assert torch.equal(canvas[:, 20, 20], torch.zeros(3, dtype=torch.uint8))  # inside untouched
    assert label_color(3) != label_color(4)


def test_masks_are_blended_only_inside():
    masks = torch.zeros(1, 40, 50, dtype=torch.uint8)
    masks[0, 10:20, 10:20] = 1
    canvas = draw_instances(
        blank(),
        torch.tensor([[10.0, 10.0, 20.0, 20.0]]),
        torch.tensor([1]),
        masks=masks,
        mask_alpha=0.5,
        box_width=1,
    )
    assert canvas[:, 15, 15].sum() > 0
    assert canvas[:, 30, 40].sum() == 0


def test_keypoints_invisible_points_not_drawn():
    keypoints = torch.tensor([[[10.0, 10.0, 2.0], [40.0, 30.0, 0.0]]])
    canvas = draw_instances(
        blank(),
        torch.tensor([[0.0, 0.0, 1.0, 1.0]]),
        torch.tensor([1]),
        keypoints=keypoints,
        keypoint_radius=2,
    )
    assert canvas[:, 10, 10].sum() > 0
    assert canvas[:, 30, 40].sum() == 0


def test_prediction_threshold_and_float_image():
    masks = torch.zeros(2, 1, 40, 50)
    masks[0, 0, 2:20, 2:20] = 0.8
    masks[1, 0, 25:38, 25:45] = 0.9
    prediction = {
        "boxes": torch.tensor([[2.0, 2.0, 20.0, 20.0], [25.0, 25.0, 45.0, 38.0]]),
        "labels": torch.tensor([1, 2]),
        "scores": torch.tensor([0.9, 0.2]),
        "masks": masks,
    }
    canvas = draw_prediction(torch.zeros(3, 40, 50), prediction, score_threshold=0.5)
    assert canvas.dtype == torch.uint8
    assert canvas[:, 30, 30].sum() == 0  # the low-scoring detection is not drawn
    assert canvas[:, 10, 10].sum() > 0  # the high-scoring mask is
    assert torch.equal(canvas[:, 10, 2], torch.tensor(label_color(1), dtype=torch.uint8))


def test_inputs_not_mutated_and_empty():
    image = blank()
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    out = draw_target(image, target)
    assert torch.equal(out, image) and out is not image
    draw_target(image, {"boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0]]), "labels": torch.tensor([1])})
    assert image.sum() == 0


def test_pil_input_and_label_names():
    canvas = draw_target(
        Image.new("RGB", (50, 40)),
        {"boxes": torch.tensor([[1.0, 1.0, 30.0, 30.0]]), "labels": torch.tensor([1])},
        label_names={1: "person"},
        connectivity=COCO_PERSON_SKELETON,
    )
    assert canvas.shape == (3, 40, 50)


def test_errors():
    with pytest.raises(TypeError, match="image must be"):
        draw_instances(np.zeros((4, 4, 3)), torch.zeros(0, 4))
    with pytest.raises(ValueError, match="labels has 2 entries for 1 boxes"):
        draw_instances(blank(), torch.zeros(1, 4), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="masks of shape"):
        draw_instances(blank(), torch.zeros(1, 4), masks=torch.zeros(1, 5, 5))
    with pytest.raises(ValueError, match="at least one image"):
        make_grid([])


def test_grid_and_save(tmp_path):
    grid = make_grid([blank(10, 20), blank(30, 5), blank(4, 4)], ncols=2, padding=2)
    assert grid.shape == (3, 2 * 30 + 3 * 2, 2 * 20 + 3 * 2)
    assert int(grid[0, 0, 0]) == 255  # padding is white
    path = save_image(grid, tmp_path / "sub" / "grid.png")
    assert Image.open(path).size == (46, 66)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), grid.permute(1, 2, 0).numpy())


def test_save_image_is_atomic_and_names_the_file_on_a_full_disk(tmp_path, monkeypatch):
    import errno
    import os

    path = save_image(blank(6, 8), tmp_path / "picture.png")
    before = path.read_bytes()

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match=r"No space left on device: '.*picture\.png'"):
        save_image(torch.full((3, 6, 8), 255, dtype=torch.uint8), path)
    monkeypatch.undo()
    assert path.read_bytes() == before  # the previous picture, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["picture.png"]
    jpeg = save_image(blank(6, 8), tmp_path / "picture.JPG")
    assert Image.open(jpeg).format == "JPEG"
    with pytest.raises(ValueError, match=r"'.*picture\.txt'.*suffix '\.txt'"):
        save_image(blank(6, 8), tmp_path / "picture.txt")


def test_figures_are_saved_through_atomic_write(tmp_path, monkeypatch):
    import errno
    import os

    pytest.importorskip("matplotlib")
    from detkit.data import CocoJsonDataset, audit, write_synthetic_coco
    from detkit.visualize import plot_audit

    root = write_synthetic_coco(tmp_path / "data", num_images=4, seed=0)
    report = audit(CocoJsonDataset(root / "images", root / "annotations.json"))
    path = tmp_path / "audit.png"
    plot_audit(report, path)
    before = path.read_bytes()
    assert before.startswith(b"\x89PNG")

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match=r"No space left on device: '.*audit\.png'"):
        plot_audit(report, path)
    monkeypatch.undo()
    assert path.read_bytes() == before  # the previous figure, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.png", "data"]
