"""Instance-segmentation scenes composed from real Fashion-MNIST product photos, in COCO format.

``make_fashion_scenes(out_dir)`` (CLI: ``noisyseg data fashion -o DIR``) pastes 2-5 Fashion-MNIST items
(Zalando product photos, 28 x 28 grey, MIT licence) into each image, scaled, tinted and partly
occluding one another on textured backgrounds, and writes the same layout as the shapes set::

    DIR/images/train/000000.png ...   DIR/images/val/000000.png ...
    DIR/train.json                    DIR/val.json        (COCO instances; file_name relative to DIR/images)

Train scenes use only items of the Fashion-MNIST training split, val scenes only items of its test
split, so no photo is seen in both.

Classes
-------
The ten Fashion-MNIST classes, named as torchvision's ``FashionMNIST.classes`` spells them, with ids
1-10 in the data set's label order (label + 1). Supercategories group the classes whose 28-px
silhouettes overlap, so ``--preset supercategory`` noise swaps only classes a person or a classifier
could mix up:

- ``tops``: T-shirt/top, Pullover, Dress, Coat, Shirt. Upper-body garments seen flat from the front
  (torso and sleeves or straps); Dress is here because, at 28 px, a dress is a long top (classifiers
  confuse it with T-shirt/top and Coat more than with anything else).
- ``shoes``: Sandal, Sneaker, Ankle boot.
- ``trousers``: Trouser; ``bags``: Bag. Each alone in its group: supercategory noise leaves them as
  they are, as it leaves a class nothing resembles.

The ``fashion`` noise preset (:data:`noisyseg.noise.presets.FASHION`) holds the published confusions.

Items and masks
---------------
Each item goes through :func:`item_sprite`, which works on the 28-px photo before scaling it:

- *Coverage* (``alpha``) comes from the item's intensity: 0 at or below :data:`ALPHA_LOW`, 1 from
  :data:`ALPHA_HIGH` up. The photos carry faint speckle (values 1-10) around many items, and the
  straps of sandals and the soles of sneakers are often dim (10-60), so a higher threshold cuts them.
- *Clean-up*, at 28 px: separate parts smaller than :data:`MIN_PART_PX` pixels or than
  :data:`MIN_PART_FRACTION` of the largest part (speckle, stray bits) are dropped from image and mask,
  enclosed holes of at most :data:`MAX_HOLE_PX` pixels (dark print inside a garment) are filled, and where
  two pixels of the item touch only at a corner (a thin diagonal strap) the two pixels beside the
  corner get coverage 0.5, so the strap stays one piece once scaled.
- *Scaling*: coverage and shading are scaled bilinearly; the annotated mask is ``alpha >= 0.5``.
  Bilinear interpolation between pixels of coverage >= 0.5 stays >= 0.5, so a strap connected in
  the 28-px item is connected in the scaled mask (when enlarging).
- *Compositing*: the image is ``alpha * colour + (1 - alpha) * background``, with the colour a random
  tint times the item's shading; shading is carried outward from the item into its soft edge, so the
  edge blends the tint into the background instead of fading to black (the uniform dark 1-px
  outline of pasting ``tint * intensity``).

Items are painted in order, later ones over earlier ones. An instance's annotation is its *visible*
mask: its own ``alpha >= 0.5`` pixels minus those of every later item. A new item may hide at most
half of any item already placed and must have at least :data:`MIN_INSIDE_FRACTION` of its pixels in
the frame; instances left with fewer than :data:`MIN_VISIBLE_AREA` visible pixels are dropped.
Segmentations are compressed RLE, ``area`` is the visible pixel count and ``bbox`` its box.

Where the photos come from
--------------------------
:func:`load_fashion_mnist` reads the four IDX files (``train-images-idx3-ubyte.gz``,
``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``, also
accepted uncompressed or in torchvision's ``FashionMNIST/raw`` layout) with torchvision's IDX readers:
from ``source``; else from :data:`DEBIAN_DIR` (Debian package ``dataset-fashion-mnist``); else from an
earlier download in the cache folder; else by torchvision's download into that folder. ``source=
"bundled"`` uses the subset shipped in this package (the first 50 items of each class of the training
files and the first 20 of each class of the test files, with Fashion-MNIST's licence): enough to try
the generator offline, not for benchmark figures.

Class frequencies (long-tailed training sets)
---------------------------------------------
By default every class is equally frequent: the first item of image ``i`` is of class ``i mod 10``
and every further item of a uniformly drawn class. ``train_ratio`` or ``train_weights`` give the
training split other class frequencies ``p`` (val stays balanced unless ``val_frequencies="train"``,
so each class's AP is measured on about the same number of objects):

- ``train_ratio=r`` (0 < r <= 1): ``p_k ~ r ** rank(k)`` over a class order, most frequent first,
  :data:`DEFAULT_CLASS_ORDER` unless ``class_order`` names another. The default order is that of the
  long-tail experiment of FINDINGS.md section 5 (T-shirt/top most frequent, Shirt least).
- ``train_weights``: one weight > 0 per class (``{name: weight}`` or ten numbers in label order),
  normalised to sum to 1.

The first item of image ``i`` then takes the class whose count lags most behind its share after
``i + 1`` images (largest ``p_k * (i + 1) - count_k``, lowest label on a tie: a deterministic
sequence whose class counts stay within one of ``p_k * n`` for every prefix of the set); every
further item draws its class from ``p``. For equal ``p`` this sequence is ``i mod 10``. Items that
find no place or are hidden are dropped whatever their class, so the realised instance counts follow
``p`` up to that loss and the draw. The frequencies asked for are recorded in ``info.params``
(``train_frequencies`` and how they were given; absent for balanced sets, so sets made before the
option existed still match) and, with the realised counts, in each index file's
``info.class_frequencies`` and ``info.instances_per_class``.

Determinism
-----------
Image ``i`` of a split is drawn from ``numpy.random.default_rng([seed, split_code, i])`` and the
items it uses, so the same arguments and the same source files give byte-identical output. The
sha256 of the source items is recorded in ``info.params``: a folder made from other files is not
taken for the requested set.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from noisyseg.data.shapes import (SPLIT_CODE, SetPaths, background, check_counts, clutter, distinct_colour,
                                  mask_bbox, write_scene_set)
from noisyseg.errors import NoisysegError
from noisyseg.utils.io import atomic_write_bytes

# Bump when a change to the generator alters its output, so old folders are not taken for new sets.
FASHION_VERSION = 1

DEFAULT_N_TRAIN = 400
DEFAULT_N_VAL = 150
DEFAULT_SIZE = 128
DEFAULT_SEED = 0
DEFAULT_ITEMS = (2, 5)
DEFAULT_SCALE = (0.28, 0.5)  # item side / image side: 36-64 px in a 128-px image
MAX_ITEMS = 10
MIN_ITEM_PX = 10

#: Class names in Fashion-MNIST label order (label k is category id k + 1), as torchvision spells them.
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")
SUPERCATEGORIES = {"T-shirt/top": "tops", "Trouser": "trousers", "Pullover": "tops", "Dress": "tops",
                   "Coat": "tops", "Sandal": "shoes", "Shirt": "tops", "Sneaker": "shoes", "Bag": "bags",
                   "Ankle boot": "shoes"}
CATEGORIES: list[dict] = [{"id": k + 1, "name": n, "supercategory": SUPERCATEGORIES[n]}
                          for k, n in enumerate(CLASS_NAMES)]

#: Default class order of ``train_ratio`` (most frequent first): the long-tail experiment's of FINDINGS.md
#: section 5, so ``train_ratio=0.7`` makes that experiment's training class frequencies.
DEFAULT_CLASS_ORDER = ("T-shirt/top", "Trouser", "Sneaker", "Bag", "Pullover", "Ankle boot", "Dress", "Sandal",
                       "Coat", "Shirt")
VAL_FREQUENCIES = ("balanced", "train")

#: Fashion-MNIST split -> (image file, label file), without the ``.gz``.
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
BUNDLED = "bundled"
BUNDLED_DIR = Path(__file__).with_name("fashion_mnist_subset")
ITEM_SIDE = 28

ALPHA_LOW = 4.0     # intensity at or below which a pixel is not the item (most of the photos' speckle)
ALPHA_HIGH = 20.0   # intensity from which a pixel is fully the item (mask: >= 12 before scaling)
MIN_PART_PX = 3     # 28-px item: smaller separate parts are speckle and dropped,
MIN_PART_FRACTION = 0.1  # and so are parts smaller than this fraction of the largest (from image and mask)
MAX_HOLE_PX = 5     # 28-px item: enclosed holes this small are filled (print on garments; gaps
                    # between sandal straps and bag handles are mostly larger)
MIN_VISIBLE_AREA = 30       # pixels; smaller visible remnants are not annotated
MIN_KEEP_FRACTION = 0.5     # a new item may hide at most half of any item already placed
MIN_INSIDE_FRACTION = 0.75  # share of an item's pixels that must lie inside the frame
PLACEMENT_TRIES = 12

_ITEM_SPLIT = {"train": "train", "val": "test"}  # scene split -> Fashion-MNIST split its items come from


# --------------------------------------------------------------------------------------------------
# the photos


@dataclass(frozen=True)
class FashionItems:
    """Fashion-MNIST photos by split, as read by :func:`load_fashion_mnist`.

    Attributes:
        images: split (``"train"`` | ``"test"``) -> (N, 28, 28) uint8 photos.
        labels: split -> (N,) int64 labels in 0..9 (index into :data:`CLASS_NAMES`).
        by_class: split -> 10 int64 arrays, the indices into ``images[split]`` of each class (file order).
        sha256: hex digest of all four arrays, recorded with every set made from them.
        origin: where they were read from (a folder, or "bundled subset").
    """

    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    by_class: dict[str, list[np.ndarray]]
    sha256: str
    origin: str


def fashion_items(images: dict[str, np.ndarray], labels: dict[str, np.ndarray], origin: str) -> FashionItems:
    """Check the arrays (shapes, labels 0..9, every class in both splits) and index them by class."""
    h = hashlib.sha256()
    by_class = {}
    for split in IDX_FILES:
        img, lab = images[split], labels[split]
        where = f"{origin}: Fashion-MNIST {split} split"
        if img.ndim != 3 or img.shape[1:] != (ITEM_SIDE, ITEM_SIDE) or img.dtype != np.uint8:
            raise NoisysegError(f"{where}: images have shape {tuple(img.shape)} ({img.dtype}), "
                                f"expected (N, {ITEM_SIDE}, {ITEM_SIDE}) uint8")
        if lab.shape != (len(img),):
            raise NoisysegError(f"{where}: {len(lab)} labels for {len(img)} images")
        if len(lab) and (lab.min() < 0 or lab.max() >= len(CLASS_NAMES)):
            raise NoisysegError(f"{where}: labels must be 0..{len(CLASS_NAMES) - 1}, found {int(lab.max())}")
        by_class[split] = [np.flatnonzero(lab == k) for k in range(len(CLASS_NAMES))]
        empty = [CLASS_NAMES[k] for k, idx in enumerate(by_class[split]) if not len(idx)]
        if empty:
            raise NoisysegError(f"{where}: no item of class {', '.join(map(repr, empty))} "
                                "(every class needs at least one)")
        h.update(img.tobytes())
        h.update(lab.astype(np.uint8).tobytes())
    return FashionItems(images, {s: labels[s].astype(np.int64) for s in IDX_FILES}, by_class, h.hexdigest(),
                        origin)


def load_fashion_mnist(source: str | os.PathLike | None = None, progress: bool = False) -> FashionItems:
    """Read the four Fashion-MNIST IDX files with torchvision's readers.

    Args:
        source: a folder holding the four files (``.gz`` or not, or torchvision's ``FashionMNIST/raw``
            below it), or ``"bundled"`` for the subset shipped with noisyseg. ``None``: the Debian
            package's folder, else an earlier download in the cache folder, else torchvision's download.
        progress: say on stderr where the files come from when downloading.

    Raises:
        NoisysegError: one line, when the files are missing (saying how to get them) or malformed.
    """
    if source is not None and str(source) == BUNDLED:
        return _read_folder(BUNDLED_DIR, "bundled subset")
    if source is not None:
        folder = Path(source)
        if not folder.is_dir():
            raise NoisysegError(f"{folder}: Fashion-MNIST source folder not found")
        missing = [n for n, p in _find_files(folder).items() if p is None]
        if missing:
            raise NoisysegError(f"{folder}: no Fashion-MNIST file {missing[0]}(.gz) (expected "
                                f"{', '.join(n + '.gz' for n in _all_names())})")
        return _read_folder(folder, str(folder))
    for folder in (DEBIAN_DIR, cache_dir() / "FashionMNIST" / "raw"):
        if all(_find_files(folder).values()):
            return _read_folder(folder, str(folder))
    try:
        folder = _download(cache_dir(), progress)
    except Exception as e:  # torchvision raises RuntimeError / URLError / OSError, with several lines
        reason = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        raise NoisysegError(
            f"Fashion-MNIST not found: pass --source DIR holding {', '.join(n + '.gz' for n in _all_names())}, "
            f"install the Debian package dataset-fashion-mnist ({DEBIAN_DIR}), go online for torchvision's "
            f"download into {cache_dir()}, or pass --source bundled for the small subset shipped with "
            f"noisyseg (download failed: {reason})") from None
    return _read_folder(folder, str(folder))


def cache_dir() -> Path:
    """Where torchvision's download of Fashion-MNIST goes: ``$XDG_CACHE_HOME/noisyseg`` (``~/.cache``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "noisyseg"


def _download(root: Path, progress: bool) -> Path:
    """Download the four files with torchvision (md5-checked, unpacked) into ``root/FashionMNIST/raw``."""
    from torchvision.datasets import FashionMNIST

    if progress:
        print(f"[fashion] downloading Fashion-MNIST into {root} (torchvision)", file=sys.stderr, flush=True)
    FashionMNIST(str(root), train=True, download=True)
    return root / "FashionMNIST" / "raw"


def _all_names() -> list[str]:
    return [name for pair in IDX_FILES.values() for name in pair]


def _find_files(folder: Path) -> dict[str, Path | None]:
    """Each IDX file name -> its path in ``folder`` (plain or ``.gz``, also under ``FashionMNIST/raw``)."""
    found: dict[str, Path | None] = {}
    for name in _all_names():
        candidates = [d / n for d in (folder, folder / "FashionMNIST" / "raw") for n in (name, name + ".gz")]
        found[name] = next((p for p in candidates if p.is_file()), None)
    return found


def _read_folder(folder: Path, origin: str) -> FashionItems:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    paths = _find_files(folder)
    images, labels = {}, {}
    with tempfile.TemporaryDirectory(prefix="noisyseg-fashion-") as tmp:
        for split, (image_name, label_name) in IDX_FILES.items():
            for name, reader, out in ((image_name, read_image_file, images), (label_name, read_label_file, labels)):
                path = paths[name]
                if path is None:
                    raise NoisysegError(f"{folder}: no Fashion-MNIST file {name}(.gz)")
                try:
                    # torchvision's readers open the file as it is: unpack a .gz into the temporary folder
                    plain = path
                    if path.suffix == ".gz":
                        plain = Path(tmp) / name
                        with gzip.open(path, "rb") as f:
                            plain.write_bytes(f.read())
                    out[split] = reader(str(plain)).numpy()
                except (OSError, EOFError, AssertionError, TypeError, ValueError, RuntimeError) as e:
                    raise NoisysegError(f"{path}: not a readable Fashion-MNIST IDX file "
                                        f"({type(e).__name__}: {str(e).strip() or 'malformed header'})") from None
    return fashion_items(images, labels, origin)


def write_idx_gz(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a uint8 array (1-D labels or (N, H, W) images) as a gzipped IDX file, reproducibly.

    IDX: two zero bytes, the type code 0x08 (unsigned byte), the number of dimensions, each dimension
    as a big-endian int32, then the values in C order. The gzip header carries no name or time.
    """
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8 or array.ndim not in (1, 3):
        raise NoisysegError(f"{path}: IDX files hold uint8 labels (N,) or images (N, H, W), got "
                            f"{array.dtype} {tuple(array.shape)}")
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    return atomic_write_bytes(path, gzip.compress(header + array.tobytes(), compresslevel=9, mtime=0))


def write_subset(items: FashionItems, out_dir: str | os.PathLike, per_class: dict[str, int]) -> None:
    """Write the first ``per_class[split]`` items of each class of each split (file order kept) as the
    four IDX ``.gz`` files in ``out_dir``. The bundled subset was made with ``{"train": 50, "test": 20}``."""
    for split, (image_name, label_name) in IDX_FILES.items():
        keep = np.sort(np.concatenate([idx[:per_class[split]] for idx in items.by_class[split]]))
        write_idx_gz(Path(out_dir) / f"{image_name}.gz", items.images[split][keep])
        write_idx_gz(Path(out_dir) / f"{label_name}.gz", items.labels[split][keep].astype(np.uint8))


# --------------------------------------------------------------------------------------------------
# one item


@dataclass(frozen=True)
class Sprite:
    """One scaled item, cropped to its coverage.

    Attributes:
        alpha: (h, w) float32 in [0, 1], how much of each pixel the item covers.
        shade: (h, w) float32 in [0, 1], the item's brightness, carried into its soft edge.
        mask: (h, w) bool, ``alpha >= 0.5``: the pixels annotated as the item.
    """

    alpha: np.ndarray
    shade: np.ndarray
    mask: np.ndarray


def item_sprite(item: np.ndarray, height: int, width: int, flip: bool = False) -> Sprite:
    """Scale one (28, 28) uint8 photo to ``height`` x ``width`` pixels (see the module docstring).

    Raises ValueError for a photo with no pixel above :data:`ALPHA_LOW` (nothing to paste).
    """
    photo = item[:, ::-1] if flip else item
    alpha28, kept = _item_coverage(photo)
    # Shading: the photo's brightness, except where the photo is dim because the item covers only part of
    # the pixel (within 2 px of its outline) or shows no item (filled holes): there the brightest item
    # pixel within 2 px; then spread two pixels outward (soft edge, bridges), so outline and edge keep the
    # item's own brightness instead of fading to black.
    values = np.where(kept, photo, 0).astype(np.float32)
    near_edge = kept & (_max3x3(_max3x3((~kept).astype(np.float32))) > 0)  # within 2 px of the outside
    shade28 = np.where(near_edge | (values < ALPHA_HIGH), _max3x3(_max3x3(values)), values)
    for _ in range(2):
        shade28 = np.where(kept | (shade28 > 0), shade28, _max3x3(shade28))
    alpha = np.clip(_resize(alpha28, height, width), 0.0, 1.0)
    shade = np.clip(_resize(shade28 / 255.0, height, width), 0.0, 1.0)
    mask = alpha >= 0.5
    if not mask.any():
        raise ValueError("the photo has no pixel above the coverage threshold")
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return Sprite(alpha[box], shade[box], mask[box])


def _item_coverage(photo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(28, 28) float32 coverage of a photo after the clean-up, and the (28, 28) bool pixels kept as item."""
    x = photo.astype(np.float32)
    alpha = np.clip((x - ALPHA_LOW) / (ALPHA_HIGH - ALPHA_LOW), 0.0, 1.0)
    core = alpha >= 0.5
    parts = label_components(core, diagonal=True)
    sizes = np.bincount(parts.ravel())
    sizes[0] = 0
    big = sizes >= max(MIN_PART_PX, MIN_PART_FRACTION * sizes.max())
    big[int(np.argmax(sizes))] = len(sizes) > 1  # the largest part always stays (when there is one)
    big[0] = False
    kept = big[parts]

    gaps = label_components(~kept, diagonal=False)
    gap_sizes = np.bincount(gaps.ravel())
    open_gaps = np.unique(np.concatenate([gaps[0], gaps[-1], gaps[:, 0], gaps[:, -1]]))
    small = gap_sizes <= MAX_HOLE_PX
    small[0] = False
    small[open_gaps] = False
    holes = small[gaps]
    kept = kept | holes

    # fringe: faint pixels next to the item keep their partial coverage, speckle elsewhere goes
    out = np.where(kept, np.maximum(alpha, holes.astype(np.float32)),
                   np.where(_max3x3(kept.astype(np.float32)) > 0, alpha, 0.0))
    # a thin diagonal strap: item pixels touching only at a corner get the two pixels beside the
    # corner raised to 0.5, so bilinear scaling keeps the strap in one piece
    a, b, c, d = kept[:-1, :-1], kept[:-1, 1:], kept[1:, :-1], kept[1:, 1:]
    main = a & d & ~b & ~c      # (y, x) and (y+1, x+1)
    anti = b & c & ~a & ~d      # (y, x+1) and (y+1, x)
    bridge = np.zeros_like(kept)
    bridge[:-1, 1:] |= main
    bridge[1:, :-1] |= main
    bridge[:-1, :-1] |= anti
    bridge[1:, 1:] |= anti
    out = np.where(bridge, np.maximum(out, 0.5), out).astype(np.float32)
    return out, kept


def label_components(mask: np.ndarray, diagonal: bool) -> np.ndarray:
    """Connected parts of a 2-D bool mask: (H, W) int64, 0 off the mask, parts numbered 1, 2, ...

    ``diagonal``: pixels touching at a corner are connected (8-connectivity) or not (4-connectivity).
    Each part's number is the rank of its first pixel in row-major order. Meant for small masks.
    """
    h, w = mask.shape
    off = h * w
    labels = np.where(mask, np.arange(h * w).reshape(h, w), off)  # a pixel index of the same part, or off
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1)] + ([(-1, -1), (-1, 1), (1, -1), (1, 1)] if diagonal else [])
    padded = np.full((h + 2, w + 2), off, dtype=labels.dtype)
    while True:
        # every pixel takes the smallest label around it, then the label of the pixel that label points
        # at (the labels only ever point into the same part, so this converges to the part's first pixel)
        padded[1:-1, 1:-1] = labels
        smallest = labels.copy()
        for dy, dx in steps:
            np.minimum(smallest, padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w], out=smallest)
        smallest = np.where(mask, smallest, off)
        pointers = np.append(smallest.ravel(), off)
        smallest = pointers[pointers[smallest]]
        if np.array_equal(smallest, labels):
            break
        labels = smallest
    _, ranks = np.unique(labels, return_inverse=True)
    return np.where(mask, ranks.reshape(h, w) + 1, 0)


def _max3x3(x: np.ndarray) -> np.ndarray:
    """Maximum over each pixel's 3 x 3 neighbourhood of a 2-D float array (0 outside)."""
    h, w = x.shape
    p = np.pad(x, 1)
    return np.max([p[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], axis=0)


def _resize(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a 2-D float32 array with Pillow (mode "F")."""
    return np.asarray(Image.fromarray(x.astype(np.float32), "F").resize((width, height), Image.BILINEAR))


# --------------------------------------------------------------------------------------------------
# class frequencies


def class_frequencies(train_ratio: float | None = None, class_order: list[str] | tuple[str, ...] | None = None,
                      train_weights: dict[str, float] | list[float] | tuple[float, ...] | None = None
                      ) -> np.ndarray | None:
    """The training class frequencies asked for: (10,) float64 in label order summing to 1, or None (balanced).

    Args:
        train_ratio: 0 < r <= 1; class k gets weight ``r ** rank(k)``, rank 0 first in ``class_order``.
        class_order: the ten class names, each once, most frequent first (default
            :data:`DEFAULT_CLASS_ORDER`); only with ``train_ratio``.
        train_weights: ``{name: weight}`` naming every class, or ten weights in label order; finite, > 0.

    Raises:
        NoisysegError: one line, for a bad ratio, order or weight, or both ratio and weights given.
    """
    if class_order is not None and train_ratio is None:
        raise NoisysegError("fashion: class_order only applies with train_ratio")
    if train_ratio is not None and train_weights is not None:
        raise NoisysegError("fashion: give train_ratio or train_weights, not both")
    if train_ratio is not None:
        if isinstance(train_ratio, bool) or not isinstance(train_ratio, (int, float, np.floating)) \
                or not math.isfinite(train_ratio) or not 0 < train_ratio <= 1:
            raise NoisysegError(f"fashion: train_ratio must be a number in (0, 1], got {train_ratio!r}")
        order = _check_order(DEFAULT_CLASS_ORDER if class_order is None else class_order)
        weights = np.empty(len(CLASS_NAMES))
        for rank, name in enumerate(order):
            weights[CLASS_NAMES.index(name)] = float(train_ratio) ** rank
    elif train_weights is not None:
        weights = _check_weights(train_weights)
    else:
        return None
    return weights / weights.sum()


def _check_order(order) -> tuple[str, ...]:
    names = tuple(str(n) for n in order)
    unknown = [n for n in names if n not in CLASS_NAMES]
    if unknown:
        raise NoisysegError(f"fashion: class_order: {unknown[0]!r} is not a class (classes: {', '.join(CLASS_NAMES)})")
    if len(set(names)) != len(names) or len(names) != len(CLASS_NAMES):
        missing = [n for n in CLASS_NAMES if n not in names]
        twice = sorted({n for n in names if names.count(n) > 1})
        raise NoisysegError("fashion: class_order must name each of the 10 classes once ("
                            + (f"missing {', '.join(missing)}" if missing else f"{twice[0]!r} given twice") + ")")
    return names


def _check_weights(weights) -> np.ndarray:
    if isinstance(weights, dict):
        unknown = [n for n in weights if n not in CLASS_NAMES]
        if unknown:
            raise NoisysegError(f"fashion: train_weights: {unknown[0]!r} is not a class "
                                f"(classes: {', '.join(CLASS_NAMES)})")
        missing = [n for n in CLASS_NAMES if n not in weights]
        if missing:
            raise NoisysegError(f"fashion: train_weights must give every class a weight (missing {', '.join(missing)})")
        values = [weights[n] for n in CLASS_NAMES]
    else:
        values = list(weights)
        if len(values) != len(CLASS_NAMES):
            raise NoisysegError(f"fashion: train_weights must be {len(CLASS_NAMES)} numbers in label order "
                                f"({', '.join(CLASS_NAMES)}), got {len(values)}")
    for name, v in zip(CLASS_NAMES, values):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not math.isfinite(v) or v <= 0:
            raise NoisysegError(f"fashion: train_weights: {name} has weight {v!r}, expected a finite number > 0")
    return np.asarray(values, dtype=np.float64)


def first_item_labels(freqs: np.ndarray | None, n: int) -> np.ndarray:
    """(n,) int64 label (0..9) of the first item of images 0..n-1 of a split with class frequencies ``freqs``.

    ``freqs`` None (balanced): ``i mod 10``. Else image i takes the label whose count lags most behind
    ``freqs * (i + 1)`` (lowest label on a tie), so every prefix's counts are within one of their share.
    """
    if freqs is None:
        return np.arange(n, dtype=np.int64) % len(CLASS_NAMES)
    out = np.empty(n, dtype=np.int64)
    counts = np.zeros(len(freqs))
    for i in range(n):
        k = int(np.argmax(freqs * (i + 1) - counts))
        counts[k] += 1
        out[i] = k
    return out


def _draw_label(rng: np.random.Generator, freqs: np.ndarray | None) -> int:
    """The label (0..9) of an item after the first: uniform (one ``integers`` call, as balanced sets always
    drew it) or by inverse CDF of ``freqs`` (one ``random`` call)."""
    if freqs is None:
        return int(rng.integers(len(CLASS_NAMES)))
    return min(int(np.searchsorted(np.cumsum(freqs), rng.random(), side="right")), len(CLASS_NAMES) - 1)


# --------------------------------------------------------------------------------------------------
# scenes


def make_fashion_scenes(
    out_dir: str | os.PathLike,
    n_train: int = DEFAULT_N_TRAIN,
    n_val: int = DEFAULT_N_VAL,
    size: int = DEFAULT_SIZE,
    seed: int = DEFAULT_SEED,
    items: tuple[int, int] = DEFAULT_ITEMS,
    scale: tuple[float, float] = DEFAULT_SCALE,
    source: str | os.PathLike | FashionItems | None = None,
    force: bool = False,
    progress: bool = True,
    train_ratio: float | None = None,
    class_order: list[str] | tuple[str, ...] | None = None,
    train_weights: dict[str, float] | list[float] | None = None,
    val_frequencies: str = "balanced",
) -> SetPaths:
    """Write (or reuse) a Fashion-MNIST scene set in ``out_dir`` and return its paths.

    Args:
        out_dir: output folder; gets ``images/{train,val}/NNNNNN.png``, ``train.json`` and ``val.json``.
        n_train, n_val: number of images per split (>= 0).
        size: width and height of every image in pixels (>= 32).
        seed: non-negative base seed; the same arguments and source files give byte-identical files.
        items: (min, max) number of items drawn per image, 1 <= min <= max <= 10 (fewer may be
            annotated: an item that finds no place is left out).
        scale: (min, max) side of an item relative to ``size``, 0 < min <= max <= 1; the longer side
            of the 28-px photo is scaled to ``uniform(min, max) * size`` (aspect jittered +-10%).
        source: where the photos come from (see :func:`load_fashion_mnist`), or photos already read.
        force: regenerate even if ``out_dir`` holds a complete set with these parameters, replace a set
            made with other parameters, and write into a folder holding other files (which are never
            replaced or deleted; see :func:`noisyseg.data.shapes.write_scene_set`).
        progress: show a progress bar and one status line on stderr.
        train_ratio, class_order, train_weights: the training split's class frequencies (see
            :func:`class_frequencies` and the module docstring); default balanced.
        val_frequencies: ``"balanced"`` (default) or ``"train"`` (val follows the training frequencies).

    Raises:
        NoisysegError: bad arguments, missing or malformed source files, or an output folder that
            may not be written (see ``force``).
    """
    items, scale = _check_scene_params(n_train, n_val, size, seed, items, scale)
    freqs = class_frequencies(train_ratio, class_order, train_weights)
    if val_frequencies not in VAL_FREQUENCIES:
        raise NoisysegError(f"fashion: val_frequencies must be one of {', '.join(VAL_FREQUENCIES)}, "
                            f"got {val_frequencies!r}")
    split_freqs = {"train": freqs, "val": freqs if val_frequencies == "train" else None}
    pool = source if isinstance(source, FashionItems) else load_fashion_mnist(source, progress)
    params = {"generator": "noisyseg.data.fashion", "version": FASHION_VERSION, "seed": int(seed),
              "n_train": int(n_train), "n_val": int(n_val), "size": int(size), "items": list(items),
              "scale": list(scale), "source_sha256": pool.sha256,
              "source_items": {split: int(len(pool.labels[split])) for split in IDX_FILES}}
    if freqs is not None:  # recorded only when asked, so balanced sets made before the option still match
        params["train_frequencies"] = {n: float(p) for n, p in zip(CLASS_NAMES, freqs)}
        if train_ratio is not None:
            params["train_ratio"] = float(train_ratio)
            params["class_order"] = list(_check_order(class_order or DEFAULT_CLASS_ORDER))
        else:
            params["train_weights"] = {n: float(w) for n, w in zip(CLASS_NAMES, _check_weights(train_weights))}
        params["val_frequencies"] = val_frequencies
    firsts = {split: first_item_labels(split_freqs[split], params[f"n_{split}"]) for split in SPLIT_CODE}

    def draw(split: str, index: int) -> tuple[np.ndarray, list[dict]]:
        return generate_fashion_image(pool, split, index, size, seed, items, scale, freqs=split_freqs[split],
                                      first_label=int(firsts[split][index]))

    def describe(split: str, coco: dict) -> dict:
        f = split_freqs[split]
        shares = np.full(len(CLASS_NAMES), 1.0 / len(CLASS_NAMES)) if f is None else f
        counts = np.bincount([a["category_id"] - 1 for a in coco["annotations"]], minlength=len(CLASS_NAMES))
        return {"class_frequencies": {n: float(p) for n, p in zip(CLASS_NAMES, shares)},
                "instances_per_class": {n: int(c) for n, c in zip(CLASS_NAMES, counts)}}

    return write_scene_set(out_dir, params, CATEGORIES, draw, "noisyseg Fashion-MNIST scenes", "fashion",
                           force=force, progress=progress, describe=describe)


def generate_fashion_image(pool: FashionItems, split: str, index: int, size: int = DEFAULT_SIZE,
                           seed: int = DEFAULT_SEED, items: tuple[int, int] = DEFAULT_ITEMS,
                           scale: tuple[float, float] = DEFAULT_SCALE, freqs: np.ndarray | None = None,
                           first_label: int | None = None) -> tuple[np.ndarray, list[dict]]:
    """Draw scene ``index`` of ``split`` ("train" | "val") in memory, exactly as :func:`make_fashion_scenes`
    writes it (arguments as there, unchecked).

    ``freqs``: (10,) class frequencies in label order (None: balanced) of this split; ``first_label``:
    the first item's label, ``first_item_labels(freqs, index + 1)[index]`` when None (pass it when
    drawing many images: that sequence is computed from image 0 each time).

    Returns:
        image: (size, size, 3) uint8 RGB array.
        instances: one dict per annotated instance, in painting order, with ``category_id``,
            ``segmentation`` (compressed RLE, str ``counts``), ``area`` (visible pixel count), ``bbox``
            ([x, y, w, h] ints), ``mask`` ((size, size) bool visible mask), ``full_area`` (pixels of the
            item inside the frame before later items covered some) and ``item`` (index of the photo in
            its Fashion-MNIST split: the training split for "train" scenes, the test split for "val").
    """
    if split not in SPLIT_CODE:
        raise NoisysegError(f"split must be one of {', '.join(SPLIT_CODE)}, got {split!r}")
    item_split = _ITEM_SPLIT[split]
    rng = np.random.default_rng([seed, SPLIT_CODE[split], index])
    img = _backdrop(rng, size)
    owner = np.full((size, size), -1, dtype=np.int16)  # index into ``placed`` of the item on top
    placed: list[tuple[int, int, int]] = []  # (category id, photo index, in-frame pixel count)

    if first_label is None:
        first_label = int(first_item_labels(freqs, index + 1)[index])
    for j in range(int(rng.integers(items[0], items[1] + 1))):
        label = first_label if j == 0 else _draw_label(rng, freqs)
        candidates = pool.by_class[item_split][label]
        photo = int(candidates[rng.integers(len(candidates))])
        side = rng.uniform(scale[0], scale[1]) * size
        stretch = math.exp(rng.uniform(-0.1, 0.1) / 2)
        height, width = max(2, round(side / stretch)), max(2, round(side * stretch))
        try:
            sprite = item_sprite(pool.images[item_split][photo], height, width, flip=bool(rng.random() < 0.5))
        except ValueError:  # a blank photo: nothing to paste
            continue
        placement = _place(rng, sprite, owner, placed, size)
        if placement is None:
            continue  # no acceptable place for this item: leave it out
        top, left, full = placement
        _paint(rng, img, sprite, top, left)
        owner[full] = len(placed)
        placed.append((label + 1, photo, int(full.sum())))

    instances = []
    for k, (category_id, photo, full_area) in enumerate(placed):
        visible = owner == k
        area = int(visible.sum())
        if area < MIN_VISIBLE_AREA:
            continue
        rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
        instances.append({
            "category_id": category_id,
            "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
            "area": area,
            "bbox": mask_bbox(visible),
            "mask": visible,
            "full_area": full_area,
            "item": photo,
        })

    img += rng.normal(0.0, rng.uniform(2.0, 6.0), img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), instances


def composite(img: np.ndarray, sprite: Sprite, top: int, left: int, colour: np.ndarray) -> None:
    """Paint ``sprite`` into ``img`` ((S, S, 3) float32, in place) with its top-left at (top, left).

    ``colour``: (h, w, 3) float32 item colour per sprite pixel. Each pixel becomes
    ``alpha * colour + (1 - alpha) * img``; the parts of the sprite outside the frame are dropped.
    """
    view, box = _overlap(img.shape[0], sprite.mask.shape, top, left)
    alpha = sprite.alpha[box][..., None]
    img[view] = alpha * colour[box] + (1.0 - alpha) * img[view]


def _overlap(size: int, shape: tuple[int, int], top: int, left: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """(image slices, sprite slices) of the part of an (h, w) sprite at (top, left) inside the frame."""
    h, w = shape
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + h, size), min(left + w, size)
    return (slice(y0, y1), slice(x0, x1)), (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))


def _place(rng: np.random.Generator, sprite: Sprite, owner: np.ndarray, placed: list, size: int
           ) -> tuple[int, int, np.ndarray] | None:
    """A random (top, left, (size, size) bool in-frame mask) for ``sprite`` that keeps enough of it inside
    the frame and hides at most :data:`MIN_KEEP_FRACTION` of any placed item, or None after the tries."""
    h, w = sprite.mask.shape
    total = int(sprite.mask.sum())
    drawn = np.array([a for _, _, a in placed], dtype=np.int64)
    visible_now = np.bincount(owner[owner >= 0], minlength=len(placed))
    for _ in range(PLACEMENT_TRIES):
        top = int(rng.integers(-(h // 4), size - h + h // 4 + 1))
        left = int(rng.integers(-(w // 4), size - w + w // 4 + 1))
        view, box = _overlap(size, (h, w), top, left)
        full = np.zeros((size, size), dtype=bool)
        full[view] = sprite.mask[box]
        if full.sum() < MIN_INSIDE_FRACTION * total:
            continue
        if placed:
            covered = np.bincount(owner[full & (owner >= 0)], minlength=len(placed))
            if np.any(visible_now - covered < np.maximum(MIN_VISIBLE_AREA, MIN_KEEP_FRACTION * drawn)):
                continue
        return top, left, full
    return None


def _paint(rng: np.random.Generator, img: np.ndarray, sprite: Sprite, top: int, left: int) -> None:
    """Composite ``sprite`` in a random tint that stands out from the background under it."""
    view, box = _overlap(img.shape[0], sprite.mask.shape, top, left)
    under = img[view][sprite.mask[box]]
    tint = distinct_colour(rng, under.mean(axis=0) if len(under) else img.mean(axis=(0, 1)), 70.0)
    floor = rng.uniform(0.35, 0.6)  # brightness of the darkest part of the item, relative to the tint
    colour = tint * (floor + (1.0 - floor) * sprite.shade)[..., None]
    composite(img, sprite, top, left, colour.astype(np.float32))


def _backdrop(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32 background: the shapes set's gradient, colour noise and blobs, 0-2 fabric-like
    gratings, and distractor lines."""
    img = background(rng, size)
    coords = np.arange(size, dtype=np.float32) + 0.5
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    for _ in range(int(rng.integers(0, 3))):
        period = rng.uniform(3.0, 12.0) * max(size / 128.0, 0.5)
        angle = rng.uniform(0.0, math.pi)
        wave = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * (2.0 * math.pi / period)
                      + rng.uniform(0.0, 2.0 * math.pi))
        img += (rng.uniform(3.0, 15.0) * wave)[..., None] * rng.uniform(0.5, 1.0, 3).astype(np.float32)
    return clutter(rng, img)


def _check_scene_params(n_train: int, n_val: int, size: int, seed: int, items, scale
                        ) -> tuple[tuple[int, int], tuple[float, float]]:
    check_counts("fashion", n_train, n_val, size, seed)
    try:
        lo, hi = (int(v) for v in items)
        ok = all(float(v) == int(v) for v in items)
    except (TypeError, ValueError):
        ok = False
    if not ok or not 1 <= lo <= hi <= MAX_ITEMS:
        raise NoisysegError(f"fashion: items must be two integers MIN,MAX with 1 <= MIN <= MAX <= {MAX_ITEMS}, "
                            f"got {items!r}")
    try:
        s_lo, s_hi = (float(v) for v in scale)
        ok = all(math.isfinite(v) for v in (s_lo, s_hi))
    except (TypeError, ValueError):
        ok = False
    if not ok or not 0 < s_lo <= s_hi <= 1:
        raise NoisysegError(f"fashion: scale must be two numbers MIN,MAX with 0 < MIN <= MAX <= 1 (item side / "
                            f"image side), got {scale!r}")
    if s_lo * size < MIN_ITEM_PX:
        raise NoisysegError(f"fashion: scale {s_lo:g} x size {size} gives items of {s_lo * size:.1f} px; "
                            f"the smallest must be at least {MIN_ITEM_PX} px")
    return (lo, hi), (s_lo, s_hi)
