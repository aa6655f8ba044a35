import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from strategies import integer_boxes

from detkit.visualize import (
    COCO_PERSON_SKELETON,
    caption_font,
    class_colors,
    draw_captions,
    draw_instances,
    draw_prediction,
    draw_target,
    label_color,
    make_grid,
    plot_training_curves,
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
        captions=False,
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


# -- captions: a tab of the class's colour, text that contrasts with it -----------------------

YELLOW, NAVY = (255, 255, 0), (0, 0, 128)


def tab_rect(canvas, color, below):
    """(top, left, bottom, right) of the pixels of ``color`` above row ``below``."""
    match = (canvas[:, :below] == torch.tensor(color, dtype=torch.uint8)[:, None, None]).all(0)
    rows, cols = torch.nonzero(match, as_tuple=True)
    return int(rows.min()), int(cols.min()), int(rows.max()), int(cols.max())


def test_caption_on_a_tab_above_the_box_in_a_contrasting_colour():
    boxes = torch.tensor([[10.0, 30.0, 70.0, 58.0]])
    for color, text in ((YELLOW, (0, 0, 0)), (NAVY, (255, 255, 255))):
        canvas = draw_instances(
            blank(60, 80), boxes, torch.tensor([1]), label_names={1: "cat"}, colors={1: color}
        )
        top, left, bottom, right = tab_rect(canvas, color, below=30)
        assert (left, bottom) == (10, 29)  # sitting on the box's top-left corner
        assert bottom - top + 1 >= 11 and right - left > 10
        tab = canvas[:, top : bottom + 1, left : right + 1].permute(1, 2, 0).reshape(-1, 3)
        # Text pixels are the contrasting colour (anti-aliased edges lie in between).
        distance_to_text = (tab.int() - torch.tensor(text)).abs().sum(1)
        assert int((distance_to_text < 30).sum()) >= 10
        # Only the box (and its tab) was drawn: the image around them is untouched.
        assert canvas[:, :top].sum() == 0 and canvas[:, :30, right + 1 :].sum() == 0


def test_text_colour_follows_luminance():
    from detkit.visualize import style

    assert style._text_color((255, 255, 255)) == (0, 0, 0)
    assert style._text_color((0, 0, 0)) == (255, 255, 255)
    assert style._text_color((255, 0, 0)) == (0, 0, 0)  # contrast 5.3 vs 4.0 with white
    assert style._text_color((0, 0, 255)) == (255, 255, 255)
    assert style._text_color(label_color(1)) == (0, 0, 0)


def test_tab_goes_inside_at_the_top_edge_and_stays_in_the_picture():
    color = (0, 200, 0)
    canvas = draw_instances(
        blank(60, 80),
        torch.tensor([[70.0, 0.0, 80.0, 50.0]]),
        torch.tensor([1]),
        label_names={1: "pedestrian"},
        colors=color,
        box_width=1,
    )
    top, left, _, right = tab_rect(canvas, color, below=30)
    assert top == 0 and right == 79 and left < 70  # inside the box, shifted left to fit


def test_overlapping_tabs_are_stacked_and_the_first_is_on_top():
    boxes = torch.tensor([[10.0, 30.0, 70.0, 58.0], [10.0, 30.0, 60.0, 50.0]])
    canvas = draw_instances(
        blank(60, 80), boxes, torch.tensor([1, 2]), colors={1: YELLOW, 2: NAVY}, box_width=1
    )
    top, _, bottom, _ = tab_rect(canvas, YELLOW, below=30)
    assert bottom == 29  # the first instance keeps the place above the box
    # The second one went inside its box, just below: its last row (padding) is navy.
    last_row = canvas[:, 30 + bottom - top, 11:20]
    assert torch.equal(last_row, torch.tensor(NAVY, dtype=torch.uint8)[:, None].expand(3, 9))


def test_default_font_grows_with_the_image_and_font_size_is_honoured():
    def tab_height(size, **kwargs):
        canvas = draw_instances(
            blank(size, size),
            torch.tensor([[4.0, size / 2, size - 4.0, size - 4.0]]),
            colors=YELLOW,
            **kwargs,
        )
        top, _, bottom, _ = tab_rect(canvas, YELLOW, below=size // 2)
        return bottom - top + 1

    small, large = tab_height(160), tab_height(800)
    assert 11 < small < 20 and large > 20
    assert tab_height(160, font_size=30) > 30 > tab_height(160, font_size=12) > 12


def test_one_class_one_colour_everywhere():
    masks = torch.zeros(2, 60, 80, dtype=torch.uint8)
    masks[0, 35:45, 15:25] = 1
    masks[1, 35:45, 45:55] = 1
    keypoints = torch.tensor([[[20.0, 50.0, 2.0]], [[50.0, 50.0, 2.0]]])
    red, blue = (255, 0, 0), (0, 0, 255)
    canvas = draw_instances(
        blank(60, 80),
        torch.tensor([[10.0, 30.0, 30.0, 58.0], [40.0, 30.0, 60.0, 58.0]]),
        torch.tensor([3, 7]),
        masks=masks,
        keypoints=keypoints,
        colors=lambda label: red if label == 3 else "#0000ff",
        mask_alpha=1.0,
    )
    for color, (x0, mask_x, kp_x) in ((red, (10, 20, 20)), (blue, (40, 50, 50))):
        expected = torch.tensor(color, dtype=torch.uint8)
        assert torch.equal(canvas[:, 40, x0], expected)  # box outline
        assert torch.equal(canvas[:, 38, mask_x], expected)  # mask
        assert torch.equal(canvas[:, 50, kp_x], expected)  # keypoint
        assert torch.equal(canvas[:, 29, x0], expected)  # caption tab
    # By default a class has the same colour whatever else is in the picture.
    box = torch.tensor([[10.0, 30.0, 30.0, 58.0]])
    alone = draw_instances(blank(60, 80), box, torch.tensor([5]))
    pair = draw_instances(blank(60, 80), box.repeat(2, 1), torch.tensor([1, 5]))
    expected = torch.tensor(label_color(5), dtype=torch.uint8)
    assert torch.equal(alone[:, 40, 10], expected) and torch.equal(pair[:, 40, 10], expected)


def test_colour_mapping_falls_back_and_bad_colours_are_named():
    assert class_colors([1, 2, 1], {2: (1, 2, 3)}) == [label_color(1), (1, 2, 3), label_color(1)]
    assert class_colors(torch.tensor([4]), "white") == [(255, 255, 255)]
    with pytest.raises(ValueError, match="unknown colour 'reddish' for label 2"):
        class_colors([2], {2: "reddish"})
    with pytest.raises(ValueError, match=r"label 2 is not a colour"):
        draw_instances(
            blank(),
            torch.tensor([[1.0, 1.0, 9.0, 9.0]]),
            torch.tensor([2]),
            colors={2: (300, 0, 0)},
        )


def test_captions_can_be_switched_off():
    canvas = draw_instances(blank(60, 80), torch.tensor([[10.0, 30.0, 70.0, 58.0]]), captions=False)
    assert canvas[:, :30].sum() == 0


def test_tv_tensors_are_read_as_their_format_says_and_left_untouched():
    from torchvision import tv_tensors

    from detkit.tv_tensors import KeyPointsWithVisibility

    image = tv_tensors.Image(torch.rand(3, 40, 50))
    masks = torch.zeros(1, 40, 50, dtype=torch.uint8)
    masks[0, 10:30, 5:20] = 1
    plain_target = {
        "boxes": torch.tensor([[5.0, 10.0, 20.0, 30.0]]),
        "labels": torch.tensor([2]),
        "masks": masks,
        "keypoints": torch.tensor([[[8.0, 12.0, 2.0], [15.0, 25.0, 0.0]]]),
    }
    tv_target = {
        "boxes": tv_tensors.BoundingBoxes(
            [[5.0, 10.0, 15.0, 20.0]], format="XYWH", canvas_size=(40, 50)
        ),
        "labels": torch.tensor([2]),
        "masks": tv_tensors.Mask(masks.clone()),
        "keypoints": KeyPointsWithVisibility(
            plain_target["keypoints"].clone(), canvas_size=(40, 50)
        ),
    }
    before = {k: v.clone() for k, v in tv_target.items()}
    image_before = image.clone()
    expected = draw_target(image.as_subclass(torch.Tensor), plain_target)
    drawn = draw_target(image, tv_target)
    assert type(drawn) is torch.Tensor and drawn.dtype == torch.uint8
    assert torch.equal(drawn, expected)
    assert torch.equal(image, image_before)
    assert all(torch.equal(tv_target[k], before[k]) for k in before)


def test_scores_must_match_the_boxes():
    with pytest.raises(ValueError, match="scores has 2 entries for 1 boxes"):
        draw_instances(blank(), torch.zeros(1, 4), scores=torch.tensor([0.5, 0.4]))


@given(
    boxes=integer_boxes(48, 64, max_instances=6),
    font_size=st.sampled_from([None, 8, 30]),
)
@settings(max_examples=40, deadline=None)
def test_captions_never_edit_the_input_and_keep_the_picture_size(boxes, font_size):
    image = torch.randint(0, 256, (3, 48, 64), dtype=torch.uint8)
    original = image.clone()
    boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    labels = torch.arange(1, len(boxes) + 1)
    texts = [f"class {i} 0.{i}" for i in range(len(boxes))]
    out = draw_captions(image, boxes_t, texts, class_colors(labels), font_size=font_size)
    assert out.shape == image.shape and out.dtype == torch.uint8
    assert torch.equal(image, original)
    # The first caption is drawn last, on top of any other: it is always in the picture.
    if boxes:
        first = torch.tensor(class_colors(labels)[0], dtype=torch.uint8)
        assert (out == first[:, None, None]).all(0).any()


# -- fonts: a scalable font wherever one can be found ----------------------------------------


def test_caption_font_prefers_the_given_file_then_matplotlibs_dejavu(tmp_path):
    from PIL import ImageFont

    font = caption_font(17)
    assert isinstance(font, ImageFont.FreeTypeFont) and font.size == 17
    assert Path(font.path).name == "DejaVuSans.ttf"
    chosen = caption_font(9, font.path)
    assert chosen.size == 9 and chosen.path == font.path
    with pytest.raises(OSError, match=r"font: cannot read '.*nofont\.ttf' as a font"):
        caption_font(9, tmp_path / "nofont.ttf")
    with pytest.raises(ValueError, match="font_size must be an int >= 1, got 0"):
        caption_font(0)


def hide_matplotlib(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "matplotlib" else find_spec(name, *args),
    )


def test_without_matplotlib_pillows_scalable_font(monkeypatch):
    from PIL import ImageFont

    hide_matplotlib(monkeypatch)
    font = caption_font(23)
    if not hasattr(ImageFont, "load_default_imagefont"):
        pytest.skip("Pillow < 10.1 has no scalable default font")
    assert isinstance(font, ImageFont.FreeTypeFont) and font.size == 23
    assert "DejaVu" not in font.getname()[0]


def test_without_a_scalable_font_the_bitmap_one_with_a_note(monkeypatch, caplog):
    from PIL import ImageFont

    from detkit.visualize import style

    if not hasattr(ImageFont, "load_default_imagefont"):
        pytest.skip("needs Pillow >= 10.1 to imitate an older one")
    bitmap = ImageFont.load_default_imagefont

    def old_pillow(size=None):
        if size is not None:
            raise TypeError("load_default() got an unexpected keyword argument 'size'")
        return bitmap()

    hide_matplotlib(monkeypatch)
    monkeypatch.setattr(ImageFont, "load_default", old_pillow)
    monkeypatch.setattr(style, "_bitmap_font_noted", False)
    with caplog.at_level("INFO", logger="detkit.visualize.style"):
        assert not isinstance(caption_font(23), ImageFont.FreeTypeFont)
        canvas = draw_instances(
            blank(60, 80), torch.tensor([[10.0, 30.0, 70.0, 58.0]]), colors=YELLOW
        )
    notes = [r.getMessage() for r in caplog.records if "bitmap font" in r.getMessage()]
    assert len(notes) == 1 and "pip install" in notes[0]  # said once, not per picture
    assert tab_rect(canvas, YELLOW, below=30)[2] == 29  # captions still drawn


# -- training curves ------------------------------------------------------------------------


def history_of(epochs=3):
    """A run's metrics.json "epochs" as the example writes them (segm from epoch 1 only)."""
    history = []
    for epoch in range(epochs):
        record = {
            "epoch": epoch,
            "lr": 0.02 * 0.1 ** (epoch // 2),
            "seconds": 10.0,
            "losses": {"loss": 3.0 - epoch, "loss_classifier": 1.0 - epoch / 4},
            "bbox": {"AP": 0.1 * epoch, "AP50": 0.2 * epoch, "APl": -1.0},
        }
        if epoch:
            record["segm"] = {"AP": 0.05 * epoch, "AP50": -1.0 if epoch == 1 else 0.3}
        history.append(record)
    return history


def lines_by_label(axes):
    return {line.get_label(): line for line in axes.get_lines()}


def test_training_curves_draw_every_recorded_series(tmp_path):
    path = tmp_path / "run" / "curves.png"
    figure = plot_training_curves(history_of(), path)
    assert Image.open(path).format == "PNG"
    assert sorted(p.name for p in path.parent.iterdir()) == ["curves.png"]  # no temporary
    loss_ax, lr_ax, ap_ax = figure.axes
    losses = lines_by_label(loss_ax)
    assert list(losses) == ["total", "classifier"]  # the total first
    np.testing.assert_allclose(losses["total"].get_ydata(), [3.0, 2.0, 1.0])
    np.testing.assert_allclose(losses["classifier"].get_xdata(), [0, 1, 2])
    (rate,) = lr_ax.get_lines()
    np.testing.assert_allclose(rate.get_ydata(), [0.02, 0.02, 0.002])
    assert lr_ax.get_yscale() == "log"
    ap = ap_ax.get_lines()
    assert [line.get_label() for line in ap if not line.get_label().startswith("_")] == [
        "bbox",
        "segm",
    ]
    bbox_ap, bbox_ap50, segm_ap, segm_ap50 = (line.get_ydata() for line in ap)
    np.testing.assert_allclose(bbox_ap, [0.0, 0.1, 0.2])
    np.testing.assert_allclose(bbox_ap50, [0.0, 0.2, 0.4])
    np.testing.assert_allclose(segm_ap, [np.nan, 0.05, 0.1])  # no segm at epoch 0
    np.testing.assert_allclose(segm_ap50, [np.nan, np.nan, 0.3])  # COCO's -1: absent
    assert ap[1].get_linestyle() == "--" and ap[0].get_color() == ap[1].get_color()


def test_training_curves_take_metrics_json_and_validation_losses():
    history = history_of(2)
    for i, record in enumerate(history):
        record["val_losses"] = {"loss": 3.5 - i, "loss_classifier": 1.2}
    figure = plot_training_curves({"config": {}, "epochs": history})
    losses = lines_by_label(figure.axes[0])
    assert list(losses) == ["total", "total (val)", "classifier", "classifier (val)"]
    np.testing.assert_allclose(losses["total (val)"].get_ydata(), [3.5, 2.5])
    assert losses["total (val)"].get_linestyle() == "--"
    assert losses["total (val)"].get_color() == losses["total"].get_color()


def test_training_curves_with_little_recorded():
    figure = plot_training_curves([{"losses": {"loss": 1.0}}])  # no epoch, lr or AP
    loss_ax, lr_ax, ap_ax = figure.axes
    np.testing.assert_allclose(loss_ax.get_lines()[0].get_xdata(), [0])
    assert lr_ax.get_lines() == [] and ap_ax.get_lines() == []
    assert [t.get_text() for t in ap_ax.texts] == ["no evaluation recorded"]
    assert [t.get_text() for t in lr_ax.texts] == ["no learning rate recorded"]


def test_training_curves_bad_history():
    with pytest.raises(ValueError, match="history has no epochs"):
        plot_training_curves([])
    with pytest.raises(ValueError, match="under 'epochs'"):
        plot_training_curves({"config": {}})
    with pytest.raises(TypeError, match=r"history\[1\] must be a dict, got int"):
        plot_training_curves([{"epoch": 0}, 3])
    with pytest.raises(TypeError, match="history must be a list of per-epoch dicts"):
        plot_training_curves("metrics.json")


def test_training_curves_without_matplotlib(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r'pip install "torch-detkit\[plot\]"'):
        plot_training_curves(history_of(), tmp_path / "curves.png")
    assert list(tmp_path.iterdir()) == []


def test_a_label_names_list_without_background_is_warned():
    """A list of names is indexed by label, item 0 the background: without it, label 1
    would be captioned with the second class's name. The labels past the list's end show
    it, and a warning names them; a list with the background item draws silently."""
    boxes = torch.tensor([[1.0, 1.0, 20.0, 20.0], [5.0, 5.0, 30.0, 30.0]])
    labels = torch.tensor([1, 2])
    with pytest.warns(UserWarning, match=r"2 names, none for labels \[2\]"):
        draw_instances(blank(40, 50), boxes, labels, label_names=["cat", "dog"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        draw_instances(blank(40, 50), boxes, labels, label_names=["background", "cat", "dog"])
        draw_instances(blank(40, 50), boxes, labels, label_names={1: "cat"})
