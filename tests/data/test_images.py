"""noisyseg.data.images.load_rgb: every image mode becomes uint8 RGB (3, H, W); 16-bit is scaled, not clipped."""

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from noisyseg.data.images import load_rgb
from noisyseg.errors import NoisysegError


def write_png16(path, values: np.ndarray) -> None:
    """A real 16-bit PNG written byte by byte (Pillow cannot write 16-bit RGB): (H, W) greyscale or
    (H, W, 3) RGB uint16 ``values``."""
    colour_type = 0 if values.ndim == 2 else 2
    h, w = values.shape[:2]
    rows = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def test_8_bit_rgb_is_read_exactly(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "x.png")
    t = load_rgb(tmp_path / "x.png")
    assert t.dtype == torch.uint8 and t.shape == (3, 6, 9)
    np.testing.assert_array_equal(t.permute(1, 2, 0).numpy(), arr)


def test_16_bit_greyscale_png_is_scaled_not_white(tmp_path):
    values = np.array([[0, 255, 256, 1000], [32768, 40000, 65280, 65535]], dtype=np.uint16)
    write_png16(tmp_path / "grey16.png", values)
    with Image.open(tmp_path / "grey16.png") as im:
        assert im.mode.startswith("I")  # really a 16-bit file as Pillow sees it
        # Pillow's own conversion clips at 255: everything above the darkest 0.4% of the range turns white
        np.testing.assert_array_equal(np.asarray(im.convert("RGB"))[..., 0], np.minimum(values, 255))
    t = load_rgb(tmp_path / "grey16.png")
    expected = values // 256  # the high byte
    assert t.shape == (3, 2, 4)
    for c in range(3):
        np.testing.assert_array_equal(t[c].numpy(), expected)
    # the same file written by Pillow (mode I;16) reads the same
    Image.fromarray(values).save(tmp_path / "pil16.png")
    assert torch.equal(load_rgb(tmp_path / "pil16.png"), t)


def test_16_bit_rgb_png_scales_like_greyscale(tmp_path):
    values = np.zeros((3, 4, 3), np.uint16)
    values[..., 0] = np.arange(4) * 20000
    values[..., 1] = 65535
    values[..., 2] = 300
    write_png16(tmp_path / "rgb16.png", values)
    np.testing.assert_array_equal(load_rgb(tmp_path / "rgb16.png").permute(1, 2, 0).numpy(), values // 256)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "1", "CMYK"])
def test_other_modes_become_rgb(tmp_path, mode):
    rgb = np.random.default_rng(1).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    src = Image.fromarray(rgb).convert(mode)
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    src.save(path)
    t = load_rgb(path)
    assert t.shape == (3, 5, 4) and t.dtype == torch.uint8
    np.testing.assert_array_equal(t.permute(1, 2, 0).numpy(), np.asarray(src.convert("RGB")))


def test_float_images_are_refused(tmp_path):
    Image.fromarray(np.zeros((3, 3), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(NoisysegError, match=r"f\.tif: floating-point image \(mode F\)"):
        load_rgb(tmp_path / "f.tif")


def test_unreadable_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(NoisysegError) as e:
        load_rgb(tmp_path / "none.png")
    assert str(e.value) == f"{tmp_path / 'none.png'}: image not found"
    with pytest.raises(NoisysegError, match="expected an image file, found a folder"):
        load_rgb(tmp_path)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(NoisysegError, match=r"text\.png: cannot read image"):
        load_rgb(tmp_path / "text.png")
    arr = np.zeros((40, 40, 3), np.uint8)
    Image.fromarray(arr).save(tmp_path / "cut.png")
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(NoisysegError, match=r"cut\.png: cannot read image") as e:
        load_rgb(tmp_path / "cut.png")
    assert "\n" not in str(e.value)


def write_bomb_png(path, width: int = 20000, height: int = 20000) -> None:
    """A 100-byte PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb for Pillow,
    which refuses more than 2 x Image.MAX_IMAGE_PIXELS when it opens the file)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))


def test_image_size_reads_the_header_only(tmp_path):
    from noisyseg.data.images import image_size

    noise = np.random.default_rng(0).integers(0, 256, (30, 45, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "x.png")
    assert image_size(tmp_path / "x.png") == (45, 30)
    data = (tmp_path / "x.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])  # header intact, pixels gone: only decoding finds it
    assert image_size(tmp_path / "cut.png") == (45, 30)
    for name, message in [("none.png", "image not found"), ("text.png", "cannot read image")]:
        if name == "text.png":
            (tmp_path / name).write_text("not an image")
        with pytest.raises(NoisysegError) as e:
            image_size(tmp_path / name)
        assert str(e.value).startswith(f"{tmp_path / name}: {message}") and "\n" not in str(e.value)


def test_a_decompression_bomb_is_one_line_from_both_readers(tmp_path):
    from noisyseg.data.images import image_size

    write_bomb_png(tmp_path / "bomb.png")
    for read in (image_size, load_rgb):
        with pytest.raises(NoisysegError) as e:
            read(tmp_path / "bomb.png")
        assert str(e.value).startswith(f"{tmp_path / 'bomb.png'}: ") and "\n" not in str(e.value)
        assert "400000000 pixels" in str(e.value)
