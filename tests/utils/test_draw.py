"""noisyseg.utils.draw: overlays blend masks in their class colour, draw boxes, and save as PNG."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from noisyseg.utils.draw import draw_overlay, encode_png, palette, write_png


def test_palette_is_fixed_and_has_one_colour_per_label():
    colours = palette(3)
    assert len(colours) == 4 and colours == palette(3)
    assert palette(5)[:4] == colours  # a class keeps its colour whatever K is
    assert all(40 <= c < 256 for rgb in colours for c in rgb)


def test_masks_are_blended_in_the_class_colour_and_boxes_drawn_on_top():
    image = torch.full((3, 40, 50), 100, dtype=torch.uint8)
    masks = torch.zeros((2, 40, 50), dtype=torch.bool)
    masks[0, 5:15, 5:15] = True
    masks[1, 20:35, 25:45] = True
    boxes = torch.tensor([[5.0, 5.0, 14.0, 14.0], [25.0, 20.0, 44.0, 34.0]])
    labels, scores = torch.tensor([1, 3]), torch.tensor([0.9, 0.25])
    out = draw_overlay(image, boxes, labels, scores, masks, ("a", "b", "c"))
    assert out.dtype == torch.uint8 and out.shape == image.shape
    colours = palette(3)
    for k, label in enumerate((1, 3)):
        expected = 0.55 * 100 + 0.45 * np.asarray(colours[label], dtype=np.float64)  # alpha 0.45 blend
        inside = out[:, 10 if k == 0 else 27, 10 if k == 0 else 35].numpy().astype(np.float64)
        np.testing.assert_allclose(inside, expected, atol=1.0)
        x1, y1 = int(boxes[k, 0]), int(boxes[k, 1]) + 5
        assert out[:, y1, x1].tolist() == list(colours[label])  # the box outline, in full colour
    assert out[:, 38, 2].tolist() == [100, 100, 100]  # untouched elsewhere
    assert torch.equal(draw_overlay(image, boxes[:0], labels[:0], scores[:0], masks[:0], ("a", "b", "c")), image)


def test_boxes_only_when_there_are_no_masks():
    image = torch.zeros((3, 30, 30), dtype=torch.uint8)
    out = draw_overlay(image, torch.tensor([[2.0, 2.0, 20.0, 20.0]]), torch.tensor([2]), torch.tensor([0.5]),
                       None, ("a", "b"))
    assert out[:, 10, 10].tolist() == [0, 0, 0] and out[:, 10, 2].tolist() == list(palette(2)[2])


@pytest.mark.parametrize("scale", [1, 3])
def test_png_round_trip(tmp_path, scale):
    image = torch.randint(0, 256, (3, 7, 5), dtype=torch.uint8)
    data = encode_png(image, scale)
    with Image.open(io.BytesIO(data)) as im:
        back = np.asarray(im.convert("RGB"))
    expected = image.permute(1, 2, 0).numpy().repeat(scale, axis=0).repeat(scale, axis=1)
    np.testing.assert_array_equal(back, expected)
    path = write_png(tmp_path / "o" / "x.png", image, scale)
    assert path.read_bytes() == data
