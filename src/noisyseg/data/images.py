"""Reading image files as the uint8 RGB tensors the models take (the one image loader of the package)."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from noisyseg.errors import NoisysegError

# Pillow opens 16-bit greyscale PNGs (and TIFFs) in these integer modes. Their convert("RGB") clips every
# value above 255 to 255, which turns a normal 16-bit image into an almost white one.
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _to_rgb_array(im: Image.Image, path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) uint8 array of an opened image.

    16-bit greyscale keeps the high byte of each value (``v >> 8``: 0 -> 0, 65535 -> 255), which is what
    Pillow itself does when it opens a 16-bit RGB PNG, so both kinds of 16-bit file scale alike.
    """
    if im.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(im)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise NoisysegError(f"{path}: {im.mode} image with values outside 0..65535; expected 8- or 16-bit")
        grey = (values.astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if im.mode == "F":
        raise NoisysegError(f"{path}: floating-point image (mode F); expected an 8- or 16-bit image")
    return np.asarray(im.convert("RGB"))


def load_rgb(path: str | os.PathLike) -> torch.Tensor:
    """The image at ``path`` as a uint8 tensor of shape (3, H, W), channels R, G, B.

    Greyscale, palette and alpha images become RGB (alpha is dropped); 16-bit greyscale images are scaled
    to 8 bit. Raises :class:`NoisysegError` (one line naming ``path``) for a missing or unreadable file.
    """
    try:
        with Image.open(path) as im:
            arr = _to_rgb_array(im, path)
    except FileNotFoundError:
        raise NoisysegError(f"{path}: image not found") from None
    except IsADirectoryError:
        raise NoisysegError(f"{path}: expected an image file, found a folder") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:  # UnidentifiedImageError is an OSError
        raise NoisysegError(f"{path}: cannot read image ({e})") from None
    return torch.from_numpy(np.array(arr)).permute(2, 0, 1)  # a writable copy: Pillow's array is read-only


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of the image at ``path`` from its header alone (Pillow decodes no pixels here).

    For checks before any work: a missing file, a folder, a file that is not an image, or one so large
    that Pillow refuses it as a decompression bomb (more than twice ``Image.MAX_IMAGE_PIXELS`` pixels)
    raises :class:`NoisysegError`, one line naming ``path``. A file cut short after its header passes
    here; :func:`load_rgb` finds it.
    """
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise NoisysegError(f"{path}: image not found") from None
    except IsADirectoryError:
        raise NoisysegError(f"{path}: expected an image file, found a folder") from None
    except Image.DecompressionBombError as e:
        raise NoisysegError(f"{path}: image too large ({e})") from None
    except (OSError, ValueError) as e:  # UnidentifiedImageError is an OSError
        raise NoisysegError(f"{path}: cannot read image ({e})") from None
