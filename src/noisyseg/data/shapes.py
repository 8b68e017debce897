"""The built-in benchmark: a seeded synthetic instance-segmentation data set in COCO format.

``make_shapes(out_dir)`` (CLI: ``noisyseg data shapes -o DIR``) draws small RGB images holding 1-5
overlapping coloured shapes on cluttered backgrounds and writes::

    DIR/images/train/000000.png ...   DIR/images/val/000000.png ...
    DIR/train.json                    DIR/val.json        (COCO instances; file_name relative to DIR/images)

Classes
-------
Eight classes in four confusable pairs. The two classes of a pair come from the *same* outline
generator (so their masks follow the same distribution) and share a ``supercategory``; only the surface
pattern tells them apart, the way rider/person or truck/bus differ by details rather than silhouette.
This makes supercategory (asymmetric) label noise meaningful.

==  =================  =============  ==============================================================
id  name               supercategory  look
==  =================  =============  ==============================================================
1   disc               round          ellipse (aspect 0.7-1), plain colour with soft shading
2   striped_disc       round          same outline, parallel stripes of a second colour
3   square             box            rectangle (aspect 0.6-1), plain colour with soft shading
4   dotted_square      box            same outline, a rotated grid of dots of a second colour
5   triangle           triangle       jittered triangle, plain colour with soft shading
6   striped_triangle   triangle       same outline, parallel stripes of a second colour
7   star               star           five-pointed star (random inner radius), plain colour
8   dotted_star        star           same outline, a rotated grid of dots of a second colour
==  =================  =============  ==============================================================

With ``class_colours=True`` (CLI ``--class-colours``) each class also gets its own hue band (base
colour hue within +-0.03 of (id - 1) / 8, saturated): colour then tells the classes apart as well,
so a small model trained from scratch for a few minutes learns *which* class an object is, not only
*where* it is. The CPU noise x method benchmark uses it: without it, such a model finds the objects
(class-agnostic mask AP ~31) but names them at near chance (~20% of found objects), and then label
noise has nothing to spoil.

Stripes and dots have a random orientation, period, phase and a random second colour that is
contrasting but not always strongly so. Every object is randomly coloured, scaled and rotated. The
background is a random colour gradient plus low-frequency colour noise, soft blobs and distractor
lines/arcs/hatching (never annotated); pixel noise is added on top.

Masks
-----
Objects are painted in order, later ones occluding earlier ones; the annotation of an instance is its
*visible* mask, and instances with fewer than :data:`MIN_VISIBLE_AREA` visible pixels are dropped.
Each shape is rasterised from its polygon with pycocotools, so an instance that is neither occluded
nor cut by the image border stores that exact polygon (it decodes to exactly the mask that was
painted); every other instance stores its visible mask as compressed RLE. ``area`` is the visible
pixel count and ``bbox`` ([x, y, w, h]) the box of the visible mask.

Determinism
-----------
Image ``i`` of a split is drawn from ``numpy.random.default_rng([seed, split_code, i])``, so the same
arguments give byte-identical files, train and val never share an image, and a set with more images
starts with the same images as a smaller one. A folder that already holds a complete set made with the
same parameters is reused as it is (``force=True`` regenerates). A folder holding a set made with other
parameters is refused unless ``force=True``: noisy label files made from the old set would otherwise
point at replaced images.

The user's files
----------------
The command never replaces or deletes a file it did not write. It lists what it wrote, with each file's
sha256, in ``DIR/.noisyseg-data.json`` (see :func:`write_scene_set`); a file counts as its own only
when listed there with the same content (or, in a folder made before that list existed, when it is a
``train.json`` / ``val.json`` of this generator or an image one of those lists). Every output path is
checked before any work: a folder holding any other file is refused unless ``force=True``, and even
then such a file is left alone, and one standing where the set would write is refused outright.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import json
import math
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from noisyseg.errors import NoisysegError
from noisyseg.utils.io import atomic_write_bytes, atomic_write_text

# Bump when a change to the generator alters its output, so old folders are not silently reused.
SHAPES_VERSION = 1

DEFAULT_N_TRAIN = 600
DEFAULT_N_VAL = 150
DEFAULT_SIZE = 128
DEFAULT_SEED = 0

MIN_SIZE = 32
MAX_OBJECTS = 5
# With class_colours, an object's base hue is within this distance (in [0, 1) hue units) of its class's
# band centre; the bands are 1/8 apart, so neighbouring bands never overlap.
CLASS_HUE_JITTER = 0.03
MIN_VISIBLE_AREA = 30       # pixels; smaller visible remnants are not annotated
MIN_KEEP_FRACTION = 0.35    # a new shape may hide at most 65% of any shape already placed
PLACEMENT_TRIES = 12

SPLITS = ("train", "val")
SPLIT_CODE = {"train": 0, "val": 1}
#: The list of files a data command wrote in its output folder, with their sha256 (see write_scene_set).
MANIFEST = ".noisyseg-data.json"
_MANIFEST_KIND = "noisyseg data: files written"


@dataclass(frozen=True)
class ShapeClass:
    """One category: its COCO id and name, the outline family (= supercategory) and surface pattern."""

    id: int
    name: str
    supercategory: str
    pattern: str  # "solid" | "stripes" | "dots"


CLASSES: tuple[ShapeClass, ...] = (
    ShapeClass(1, "disc", "round", "solid"),
    ShapeClass(2, "striped_disc", "round", "stripes"),
    ShapeClass(3, "square", "box", "solid"),
    ShapeClass(4, "dotted_square", "box", "dots"),
    ShapeClass(5, "triangle", "triangle", "solid"),
    ShapeClass(6, "striped_triangle", "triangle", "stripes"),
    ShapeClass(7, "star", "star", "solid"),
    ShapeClass(8, "dotted_star", "star", "dots"),
)

CATEGORIES: list[dict] = [{"id": c.id, "name": c.name, "supercategory": c.supercategory} for c in CLASSES]

# Outline radius multiplier per family, so the four families cover similar areas at the same scale.
_FAMILY_SCALE = {"round": 0.85, "box": 0.9, "triangle": 1.2, "star": 1.15}


@dataclass(frozen=True)
class SetPaths:
    """Where a generated set lives. ``reused`` is True when an existing matching set was kept."""

    train_json: Path
    val_json: Path
    image_root: Path
    reused: bool = False


# Draws image ``index`` of ``split``: returns the (size, size, 3) uint8 RGB image and its instances, each a
# dict with at least ``category_id``, ``segmentation``, ``area`` and ``bbox`` (the COCO fields).
DrawImage = Callable[[str, int], "tuple[np.ndarray, list[dict]]"]


# --------------------------------------------------------------------------------------------------
# public API


def make_shapes(
    out_dir: str | os.PathLike,
    n_train: int = DEFAULT_N_TRAIN,
    n_val: int = DEFAULT_N_VAL,
    size: int = DEFAULT_SIZE,
    seed: int = DEFAULT_SEED,
    force: bool = False,
    progress: bool = True,
    class_colours: bool = False,
) -> SetPaths:
    """Write (or reuse) the synthetic shapes data set in ``out_dir`` and return its paths.

    Args:
        out_dir: output folder; gets ``images/{train,val}/NNNNNN.png``, ``train.json`` and ``val.json``.
        n_train, n_val: number of images per split (>= 0).
        size: width and height of every image in pixels (>= 32).
        seed: non-negative base seed; identical arguments give byte-identical files.
        force: regenerate even if ``out_dir`` already holds a complete set with these parameters, and
            replace a set made with other parameters or index files not written by this generator
            (refused without it).
        progress: show a progress bar and one status line on stderr.
        class_colours: give each class its own hue band (see :data:`CLASS_HUE_JITTER`), so colour is a
            cue to the class as well as outline and pattern (the CPU benchmark uses this; see the
            module docstring).

    Raises:
        NoisysegError: bad arguments, ``out_dir`` is not usable as a folder, or it holds a set made with
            other parameters or a ``train.json`` / ``val.json`` of someone else's (without ``force``).
    """
    params = _check_params(n_train, n_val, size, seed, class_colours)

    def draw(split: str, index: int) -> tuple[np.ndarray, list[dict]]:
        return generate_image(split, index, size, seed, class_colours)

    return write_scene_set(out_dir, params, CATEGORIES, draw, "noisyseg synthetic shapes", "shapes",
                           force=force, progress=progress)


def generate_image(split: str, index: int, size: int = DEFAULT_SIZE, seed: int = DEFAULT_SEED,
                   class_colours: bool = False) -> tuple[np.ndarray, list[dict]]:
    """Draw image ``index`` of ``split`` in memory, exactly as :func:`make_shapes` writes it.

    Returns:
        image: (size, size, 3) uint8 RGB array.
        instances: one dict per annotated instance, in painting order, with ``category_id``,
            ``segmentation`` (polygon list or compressed RLE with a str ``counts``), ``area`` (int visible
            pixel count), ``bbox`` ([x, y, w, h] ints) and ``mask`` ((size, size) bool visible mask).
    """
    if split not in SPLIT_CODE:
        raise NoisysegError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    rng = np.random.default_rng([seed, SPLIT_CODE[split], index])
    return _draw_scene(rng, size, first_class=index % len(CLASSES), class_colours=class_colours)


# --------------------------------------------------------------------------------------------------
# writing a generated set (shared with noisyseg.data.fashion)


def write_scene_set(out_dir: str | os.PathLike, params: dict, categories: list[dict], draw: DrawImage,
                    description: str, command: str, force: bool = False, progress: bool = True,
                    describe: Callable[[str, dict], dict] | None = None) -> SetPaths:
    """Write ``params["n_train"]`` + ``params["n_val"]`` images drawn by ``draw`` as a COCO set in ``out_dir``.

    ``params`` (JSON values, with ``generator``, ``n_train``, ``n_val`` and ``size``) is recorded in each
    index file's ``info.params``: a folder whose two index files carry the same ``params`` and whose
    images all exist is reused as it is. A folder holding a set made with other ``params`` is refused
    unless ``force``. ``command`` names the generator in messages (``noisyseg data COMMAND``).
    ``describe(split, coco)`` may add keys to a split's ``info`` (computed from its finished COCO dict).

    The user's files are never replaced or deleted. Before any work every output path is checked
    (:func:`_plan`): folders writable, no file this command did not write at a path it writes, and,
    without ``force``, no such file anywhere in ``out_dir``. The files written are listed in
    ``out_dir/.noisyseg-data.json`` (:data:`MANIFEST`): ``{"kind": ..., "files": {relative path: sha256 or
    null}}``; before any write it lists every path about to be written or deleted (null: in progress,
    so an interrupted run's files are still known as its own), and at the end the set's files with
    their sha256. Images are written as ``images/{split}/NNNNNN.png`` with fixed PNG settings; the index
    files last, each atomically, after their old versions were removed, so an interrupted run never
    looks complete; images of an earlier, larger set of ours are deleted.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NoisysegError(f"{out}: output path exists and is not a folder")
    paths = SetPaths(out / "train.json", out / "val.json", out / "images")
    if not force:
        if _check_replaceable(paths, params, command):
            _say(progress, f"[{command}] reusing the existing data set in {out} (same parameters; "
                           "--force regenerates)")
            return SetPaths(paths.train_json, paths.val_json, paths.image_root, reused=True)

    counts = {"train": params["n_train"], "val": params["n_val"]}
    writes, deletes = _plan(out, counts, command, force)
    t0 = time.perf_counter()
    _write_manifest(out, {**{r: None for r in deletes}, **{r: None for r in writes}})
    for rel in ["train.json", "val.json"] + deletes:
        if (out / rel).exists():
            _unlink(out / rel)
    written: dict[str, str] = {}
    bar = _progress_bar(counts["train"] + counts["val"], progress, command)
    n_instances = {}
    try:
        for split in SPLITS:
            folder = paths.image_root / split
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise NoisysegError(f"{folder}: cannot create the folder ({e.strerror or e})") from None
            coco = _write_split(split, counts[split], params, categories, draw, description, folder, bar, written)
            if describe is not None:
                coco["info"].update(describe(split, coco))
            n_instances[split] = len(coco["annotations"])
            data = json.dumps(coco, separators=(",", ":")).encode("utf-8")
            atomic_write_bytes(out / f"{split}.json", data)
            written[f"{split}.json"] = hashlib.sha256(data).hexdigest()
    finally:
        bar.close()
    _write_manifest(out, written)
    _say(progress, f"[{command}] wrote {counts['train']} train + {counts['val']} val images "
                   f"({n_instances['train']} + {n_instances['val']} instances) to {out} in "
                   f"{time.perf_counter() - t0:.1f} s")
    return paths


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError as e:
        raise NoisysegError(f"{path}: cannot delete ({e.strerror or e})") from None


def _plan(out: Path, counts: dict[str, int], command: str, force: bool) -> tuple[list[str], list[str]]:
    """Check every output path before work; return (paths to write, paths to delete), relative posix paths.

    Raises a one-line :class:`NoisysegError` when a folder to write in is not writable (or is a file),
    when a file this command did not write stands where the set writes (always, ``force`` or not), or,
    without ``force``, when ``out`` holds any file this command did not write. Deleted are only files
    of ours that the new set does not rewrite (images of a larger earlier set).
    """
    for folder in (out, out / "images", *(out / "images" / s for s in SPLITS)):
        _check_writable(folder)
    owned = _owned_files(out)
    writes = [f"images/{split}/{i:06d}.png" for split in SPLITS for i in range(counts[split])]
    writes += ["train.json", "val.json"]
    targets = set(writes) | {MANIFEST}
    for rel in sorted(targets):
        p = out / rel
        if (p.exists() or p.is_symlink()) and (rel not in owned or p.is_dir()) and rel != MANIFEST:
            raise NoisysegError(f"{p}: not written by noisyseg data {command}; refusing to replace it, even with "
                                "--force (move it away or write the set to another folder)")
    if (out / MANIFEST).exists() and not _read_manifest(out)[1]:
        raise NoisysegError(f"{out / MANIFEST}: not a list of files written by noisyseg data; refusing to replace "
                            "it, even with --force (move it away or write the set to another folder)")
    if not force:
        first = _first_foreign(out, owned)
        if first is not None:
            raise NoisysegError(f"{out}: holds files noisyseg data {command} did not write (e.g. {first}); refusing "
                                "to write into it (pass --force to write beside them: they are never replaced "
                                "or deleted)")
    deletes = sorted(r for r in owned if r not in targets and (out / r).is_file())
    return writes, deletes


def _check_writable(folder: Path) -> None:
    """One-line error unless ``folder`` is a folder we can create files in, or can be created (its nearest
    existing ancestor is a folder we can create files in). Probes by creating a file: permission bits say
    nothing to root on a read-only file system."""
    base = folder
    while not base.exists() and not base.is_symlink() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        where = "is a file" if base == folder else f"cannot be created: {base} is a file"
        raise NoisysegError(f"{folder}: the output folder {where}, expected a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".noisyseg-write-test.", dir=base)
    except OSError as e:
        raise NoisysegError(f"{folder}: cannot write the output folder: {base} is not writable "
                            f"({e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe)


def _first_foreign(out: Path, owned: dict[str, str | None]) -> Path | None:
    """The first file (sorted walk) under ``out`` that is neither ours nor the manifest, or None."""
    if not out.is_dir():
        return None
    for root, dirs, files in os.walk(out):
        dirs.sort()
        rel_root = Path(root).relative_to(out)
        for name in sorted(files):
            rel = (rel_root / name).as_posix()
            if rel not in owned and rel != MANIFEST:
                return Path(root) / name
    return None


def _read_manifest(out: Path) -> tuple[dict[str, str | None], bool]:
    """(files listed in ``out``'s manifest, whether a valid manifest is there); ({}, False) when absent."""
    try:
        with open(out / MANIFEST, "rb") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}, False
    files = data.get("files") if isinstance(data, dict) and data.get("kind") == _MANIFEST_KIND else None
    if not isinstance(files, dict) or not all(isinstance(k, str) and (v is None or isinstance(v, str))
                                              for k, v in files.items()):
        return {}, False
    return files, True


def _owned_files(out: Path) -> dict[str, str | None]:
    """The files in ``out`` that a data command wrote: relative posix path -> sha256 (None: not known).

    A file listed in the manifest is ours when its content still has the listed sha256 (or the
    listing is null: a run that stopped before finishing). Without a manifest (a set made before it
    existed) the ``train.json`` / ``val.json`` of a noisyseg generator and the images they list are.
    """
    listed, valid = _read_manifest(out)
    owned: dict[str, str | None] = {}
    if valid:
        for rel, digest in listed.items():
            p = out / rel
            if not p.is_file() or p.is_symlink() or ".." in Path(rel).parts or Path(rel).is_absolute():
                continue
            if digest is None or _sha256(p) == digest:
                owned[rel] = digest
        return owned
    if (out / MANIFEST).exists():
        return owned
    for split in SPLITS:
        index = out / f"{split}.json"
        try:
            with open(index, "rb") as f:
                coco = json.load(f)
        except (OSError, ValueError):
            continue
        info = coco.get("info") if isinstance(coco, dict) else None
        params = info.get("params") if isinstance(info, dict) else None
        if not (isinstance(params, dict) and str(params.get("generator", "")).startswith("noisyseg.data.")
                and info.get("split") == split):
            continue
        owned[f"{split}.json"] = None
        for im in coco.get("images") or []:
            name = im.get("file_name") if isinstance(im, dict) else None
            if isinstance(name, str) and re.fullmatch(rf"{split}/\d{{6}}\.png", name):
                owned[f"images/{name}"] = None
    return owned


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _write_manifest(out: Path, files: dict[str, str | None]) -> None:
    text = json.dumps({"kind": _MANIFEST_KIND, "files": dict(sorted(files.items()))}, indent=0)
    atomic_write_text(out / MANIFEST, text + "\n")


def encode_png(img: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 RGB image with fixed encoder settings and no metadata."""
    buf = io.BytesIO()
    Image.fromarray(img, "RGB").save(buf, format="PNG", compress_level=6, optimize=False)
    return buf.getvalue()


def mask_bbox(mask: np.ndarray) -> list[int]:
    """[x, y, w, h] of the True pixels of a 2-D mask (pixel-edge convention, as pycocotools toBbox)."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)]


# --------------------------------------------------------------------------------------------------
# set-level helpers


def _check_params(n_train: int, n_val: int, size: int, seed: int, class_colours: bool = False) -> dict:
    check_counts("shapes", n_train, n_val, size, seed)
    params = {"generator": "noisyseg.data.shapes", "version": SHAPES_VERSION, "seed": int(seed),
              "n_train": int(n_train), "n_val": int(n_val), "size": int(size)}
    if class_colours:  # only recorded when on, so sets made before the option existed still match
        params["class_colours"] = True
    return params


def check_counts(command: str, n_train: int, n_val: int, size: int, seed: int) -> None:
    """Raise a one-line :class:`NoisysegError` unless the counts, size (>= MIN_SIZE) and seed are valid."""
    for name, value in (("n_train", n_train), ("n_val", n_val), ("size", size), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise NoisysegError(f"{command}: {name} must be an integer, got {value!r}")
    if n_train < 0 or n_val < 0:
        raise NoisysegError(f"{command}: image counts must be >= 0, got train={n_train}, val={n_val}")
    if size < MIN_SIZE:
        raise NoisysegError(f"{command}: size must be at least {MIN_SIZE} pixels, got {size}")
    if seed < 0:
        raise NoisysegError(f"{command}: seed must be >= 0, got {seed}")


def _check_replaceable(paths: SetPaths, params: dict, command: str) -> bool:
    """True if the folder holds a complete set made with ``params`` (reuse it); False if it may be
    (re)written: no index file yet, or an incomplete set made with the same ``params``.

    Raises :class:`NoisysegError` for an index file that is not this generator's or a set made with
    other parameters.
    """
    complete = True
    for split, path in (("train", paths.train_json), ("val", paths.val_json)):
        if not path.exists():
            complete = False
            continue
        try:
            with open(path, "rb") as f:
                coco = json.load(f)
        except (OSError, ValueError):
            coco = None
        info = coco.get("info") if isinstance(coco, dict) else None
        old = info.get("params") if isinstance(info, dict) else None
        if not isinstance(old, dict) or old.get("generator") != params["generator"] or info.get("split") != split:
            raise NoisysegError(f"{path}: not written by noisyseg data {command}; refusing to replace it, even with "
                                "--force (move it away or write the set to another folder)")
        if old != params:
            changed = ", ".join(f"{k} {old.get(k)!r} (asked {params.get(k)!r})"
                                for k in sorted(set(old) | set(params)) if old.get(k) != params.get(k))
            raise NoisysegError(f"{paths.train_json.parent}: holds a {command} set made with other parameters "
                                f"({changed}); refusing to replace it (pass --force to allow)")
        images = coco.get("images", [])
        if len(images) != params[f"n_{split}"] or not all(
                (paths.image_root / str(im.get("file_name", ""))).is_file() for im in images):
            complete = False
    return complete


def _write_split(split: str, n: int, params: dict, categories: list[dict], draw: DrawImage, description: str,
                 folder: Path, bar, written: dict[str, str]) -> dict:
    """Draw, write and index the ``n`` images of ``split``; returns the split's COCO dict. Each image's
    relative path and sha256 go into ``written``."""
    size = params["size"]
    images, annotations = [], []
    for i in range(n):
        img, instances = draw(split, i)
        name = f"{i:06d}.png"
        data = encode_png(img)
        atomic_write_bytes(folder / name, data)
        written[f"images/{split}/{name}"] = hashlib.sha256(data).hexdigest()
        image_id = i + 1
        images.append({"id": image_id, "file_name": f"{split}/{name}", "width": size, "height": size})
        for inst in instances:
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": inst["category_id"],
                "segmentation": inst["segmentation"],
                "area": inst["area"],
                "bbox": inst["bbox"],
                "iscrowd": 0,
            })
        bar.update(1)
    info = {
        "description": f"{description}, {split} split",
        "version": str(params["version"]),
        "contributor": "noisyseg",
        "split": split,
        "params": params,
    }
    return {"info": info, "images": images, "annotations": annotations, "categories": categories}


def _progress_bar(total: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=not enabled, leave=False)


def _say(enabled: bool, line: str) -> None:
    if enabled:
        print(line, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# drawing one image


def _draw_scene(rng: np.random.Generator, size: int, first_class: int, class_colours: bool = False
                ) -> tuple[np.ndarray, list[dict]]:
    """Paint background, clutter and objects; return the uint8 image and the visible instances."""
    img = background(rng, size)
    img = clutter(rng, img)
    label = np.full((size, size), -1, dtype=np.int16)   # index of the object owning each pixel
    placed: list[tuple[ShapeClass, list[float], int]] = []  # (class, polygon, drawn pixel count)

    n_objects = int(rng.integers(1, MAX_OBJECTS + 1))
    for j in range(n_objects):
        cls = CLASSES[first_class] if j == 0 else CLASSES[int(rng.integers(len(CLASSES)))]
        drawn_areas = np.array([a for _, _, a in placed], dtype=np.int64)
        for _ in range(PLACEMENT_TRIES):
            poly = _outline(rng, cls.supercategory, size)
            mask = _rasterise(poly, size)
            area = int(mask.sum())
            if area < 2 * MIN_VISIBLE_AREA:
                continue
            if placed:
                visible_now = np.bincount(label[label >= 0], minlength=len(placed))
                covered = np.bincount(label[mask & (label >= 0)], minlength=len(placed))
                remaining = visible_now - covered
                if np.any(remaining < np.maximum(MIN_VISIBLE_AREA, MIN_KEEP_FRACTION * drawn_areas)):
                    continue
            break
        else:
            continue  # no acceptable placement for this object: leave it out
        _paint(rng, img, mask, cls, class_colours)
        label[mask] = len(placed)
        placed.append((cls, poly, area))

    instances = []
    for k, (cls, poly, area) in enumerate(placed):
        visible = label == k
        n_visible = int(visible.sum())
        if n_visible < MIN_VISIBLE_AREA:
            continue
        inside = all(0.0 <= v <= size for v in poly)
        rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
        if n_visible == area and inside:
            segmentation = [poly]
        else:
            segmentation = {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
        instances.append({
            "category_id": cls.id,
            "segmentation": segmentation,
            "area": n_visible,
            "bbox": mask_bbox(visible),
            "mask": visible,
        })

    sigma = rng.uniform(2.0, 8.0)
    img += rng.normal(0.0, sigma, img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), instances


def _rasterise(poly: list[float], size: int) -> np.ndarray:
    """The (size, size) bool mask pycocotools makes of one flat polygon [x0, y0, x1, y1, ...]."""
    rles = mask_utils.frPyObjects([poly], size, size)
    return mask_utils.decode(rles)[:, :, 0].astype(bool)


def _outline(rng: np.random.Generator, family: str, size: int) -> list[float]:
    """A random polygon of ``family`` as a flat [x0, y0, ...] list rounded to 0.01 px."""
    r = rng.uniform(max(5.0, 0.085 * size), 0.2 * size) * _FAMILY_SCALE[family]
    theta = rng.uniform(0.0, 2.0 * math.pi)
    if family == "round":
        n = 28
        t = np.arange(n) * (2.0 * math.pi / n)
        local = np.stack([r * np.cos(t), r * rng.uniform(0.7, 1.0) * np.sin(t)], axis=1)
    elif family == "box":
        hw, hh = 0.85 * r, 0.85 * r * rng.uniform(0.6, 1.0)
        local = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]])
    elif family == "triangle":
        ang = np.radians([90.0, 210.0, 330.0] + rng.uniform(-12.0, 12.0, 3))
        rad = r * rng.uniform(0.88, 1.1, 3)
        local = np.stack([rad * np.cos(ang), rad * np.sin(ang)], axis=1)
    elif family == "star":
        points = 5
        inner = rng.uniform(0.42, 0.56)
        ang = np.arange(2 * points) * (math.pi / points)
        rad = np.where(np.arange(2 * points) % 2 == 0, r * rng.uniform(0.92, 1.08, 2 * points), r * inner)
        local = np.stack([rad * np.cos(ang), rad * np.sin(ang)], axis=1)
    else:  # pragma: no cover - CLASSES only uses the families above
        raise ValueError(family)
    c, s = math.cos(theta), math.sin(theta)
    rot = local @ np.array([[c, s], [-s, c]])
    # Centres may sit near the border so some shapes are cut by the image edge (stored as RLE then).
    margin = 0.5 * r
    centre = rng.uniform(margin, size - margin, 2)
    pts = rot + centre
    return [round(float(v), 2) for v in pts.reshape(-1)]


def random_colour(rng: np.random.Generator) -> np.ndarray:
    """A random RGB colour (float32, 0-255) with moderate to full saturation and brightness."""
    h = rng.uniform(0.0, 1.0)
    s = rng.uniform(0.25, 1.0)
    v = rng.uniform(0.3, 1.0)
    return _hsv_to_rgb(h, s, v)


def class_hue(cls: ShapeClass) -> float:
    """Centre of the hue band (in [0, 1)) of ``cls`` when ``class_colours`` is on: evenly spaced by id."""
    return (cls.id - 1) / len(CLASSES)


def _class_colour(rng: np.random.Generator, cls: ShapeClass) -> np.ndarray:
    """A saturated colour whose hue is within :data:`CLASS_HUE_JITTER` of the class's band centre."""
    h = (class_hue(cls) + rng.uniform(-CLASS_HUE_JITTER, CLASS_HUE_JITTER)) % 1.0
    return _hsv_to_rgb(h, rng.uniform(0.6, 1.0), rng.uniform(0.55, 1.0))


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """(3,) float32 RGB in 0-255 of an HSV colour with components in [0, 1]."""
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32) * 255.0


def distinct_colour(rng: np.random.Generator, other: np.ndarray, min_dist: float, tries: int = 16) -> np.ndarray:
    """A random colour at least ``min_dist`` (RGB Euclidean) away from ``other``, if one turns up."""
    best, best_d = None, -1.0
    for _ in range(tries):
        col = random_colour(rng)
        d = float(np.linalg.norm(col - other))
        if d >= min_dist:
            return col
        if d > best_d:
            best, best_d = col, d
    return best


def _paint(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, cls: ShapeClass,
           class_colours: bool = False) -> None:
    """Paint object pixels of ``mask`` into ``img`` (float32, in place) with the class's pattern."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
    m = mask[y0:y1, x0:x1]
    region = img[y0:y1, x0:x1]
    bg_mean = region[m].mean(axis=0)
    base = _class_colour(rng, cls) if class_colours else distinct_colour(rng, bg_mean, 70.0)

    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
    # Soft directional shading so a "solid" object is not one flat colour.
    phi = rng.uniform(0.0, 2.0 * math.pi)
    proj = xx * math.cos(phi) + yy * math.sin(phi)
    span = max(float(proj.max() - proj.min()), 1.0)
    shade = 1.0 + rng.uniform(0.0, 0.25) * ((proj - proj.min()) / span * 2.0 - 1.0)

    colour = np.broadcast_to(base, region.shape).copy()
    if cls.pattern != "solid":
        second = distinct_colour(rng, base, rng.uniform(45.0, 150.0))
        unit = max(img.shape[0] / 128.0, 0.6)
        angle = rng.uniform(0.0, math.pi)
        u = xx * math.cos(angle) + yy * math.sin(angle)
        if cls.pattern == "stripes":
            period = rng.uniform(4.0, 7.0) * unit
            duty = rng.uniform(0.35, 0.6)
            on = np.mod(u / period + rng.uniform(0.0, 1.0), 1.0) < duty
        else:  # dots on a rotated square grid
            period = rng.uniform(4.5, 7.0) * unit
            v = -xx * math.sin(angle) + yy * math.cos(angle)
            du = np.mod(u / period + rng.uniform(0.0, 1.0), 1.0) - 0.5
            dv = np.mod(v / period + rng.uniform(0.0, 1.0), 1.0) - 0.5
            on = du * du + dv * dv < rng.uniform(0.24, 0.34) ** 2
        colour[on] = second
    colour *= shade[..., None]
    region[m] = np.clip(colour[m], 0.0, 255.0)


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32: a random two-colour gradient, low-frequency colour noise and soft blobs."""
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    phi = rng.uniform(0.0, 2.0 * math.pi)
    t = xx * math.cos(phi) + yy * math.sin(phi)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    c0, c1 = rng.uniform(0.0, 255.0, 3), rng.uniform(0.0, 255.0, 3)
    img = (c0 + (c1 - c0) * t[..., None]).astype(np.float32)

    # Low-frequency noise: a coarse random grid, bilinearly upsampled.
    k = int(rng.integers(3, 8))
    coarse = rng.normal(0.0, rng.uniform(8.0, 30.0), (k, k, 3)).astype(np.float32)
    w = _interp_matrix(k, size)
    for c in range(3):
        img[..., c] += w @ coarse[:, :, c] @ w.T

    for _ in range(int(rng.integers(0, 5))):
        cy, cx = rng.uniform(0.0, size, 2)
        sig = rng.uniform(0.04, 0.15) * size
        alpha = rng.uniform(0.2, 0.7) * np.exp(-((yy * size - cy) ** 2 + (xx * size - cx) ** 2) / (2.0 * sig * sig))
        img += alpha[..., None] * (rng.uniform(0.0, 255.0, 3).astype(np.float32) - img)
    return img


def _interp_matrix(k: int, size: int) -> np.ndarray:
    """(size, k) linear-interpolation weights mapping k evenly spaced knots onto size pixels."""
    pos = np.linspace(0.0, k - 1.0, size)
    lo = np.minimum(np.floor(pos).astype(int), k - 2)
    frac = (pos - lo).astype(np.float32)
    w = np.zeros((size, k), dtype=np.float32)
    w[np.arange(size), lo] = 1.0 - frac
    w[np.arange(size), lo + 1] = frac
    return w


def clutter(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Draw distractor lines, arcs and hatching (never annotated) onto a float image; returns float32."""
    size = img.shape[0]
    pil = Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(pil)
    width_max = max(1, round(size / 64))

    def colour() -> tuple[int, int, int]:
        return tuple(int(v) for v in random_colour(rng))

    for _ in range(int(rng.integers(1, 7))):  # long straight lines
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(-0.1 * size, 1.1 * size, 4))
        draw.line([(x0, y0), (x1, y1)], fill=colour(), width=int(rng.integers(1, width_max + 1)))
    for _ in range(int(rng.integers(0, 3))):  # open arcs
        cx, cy = rng.uniform(0.0, size, 2)
        r = rng.uniform(0.05, 0.25) * size
        start = float(rng.uniform(0.0, 360.0))
        draw.arc([float(cx - r), float(cy - r), float(cx + r), float(cy + r)], start,
                 start + float(rng.uniform(40.0, 200.0)), fill=colour(), width=int(rng.integers(1, width_max + 1)))
    if rng.random() < 0.4:  # a patch of parallel hatching with no outline
        cx, cy = rng.uniform(0.1 * size, 0.9 * size, 2)
        ang = rng.uniform(0.0, math.pi)
        d = np.array([math.cos(ang), math.sin(ang)])
        n = np.array([-d[1], d[0]])
        gap = rng.uniform(3.0, 7.0) * max(size / 128.0, 0.6)
        half = rng.uniform(0.05, 0.15) * size
        fill = colour()
        for j in range(int(rng.integers(3, 7))):
            c = np.array([cx, cy]) + n * gap * j
            a, b = c - d * half, c + d * half
            draw.line([(float(a[0]), float(a[1])), (float(b[0]), float(b[1]))], fill=fill, width=1)
    return np.asarray(pil, dtype=np.float32).copy()
