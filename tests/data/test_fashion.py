"""Tests for the Fashion-MNIST scenes (noisyseg.data.fashion) and ``noisyseg data fashion``.

The tests write their own small IDX files in the real format (so torchvision's readers read them) and
never need /usr/share/datasets or the network: training-split items are solid rectangles, test-split
items are crosses, so a scene's masks show which split its items came from.
"""

from __future__ import annotations

import gzip
import json
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from noisyseg.data import fashion as F
from noisyseg.errors import NoisysegError

SMALL = dict(n_train=10, n_val=6, size=64, seed=0, items=(2, 4), scale=(0.35, 0.6))


def _rectangle(rng) -> np.ndarray:
    img = np.zeros((28, 28), np.uint8)
    h, w = rng.integers(14, 27, 2)
    y, x = (28 - h) // 2, (28 - w) // 2
    img[y:y + h, x:x + w] = rng.integers(120, 256, (h, w))
    return img


def _cross(rng) -> np.ndarray:
    img = np.zeros((28, 28), np.uint8)
    arm = int(rng.integers(7, 10))
    lo, hi = 14 - arm // 2, 14 - arm // 2 + arm
    img[1:27, lo:hi] = rng.integers(120, 256)
    img[lo:hi, 1:27] = rng.integers(120, 256)
    return img


def _make_items(per_class: dict[str, int], seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    images, labels = {}, {}
    for split, n in per_class.items():
        lab = np.tile(np.arange(10, dtype=np.uint8), n)
        draw = _rectangle if split == "train" else _cross
        images[split] = np.stack([draw(rng) for _ in lab])
        labels[split] = lab
    return images, labels


def _write_source(folder: Path, images: dict, labels: dict, gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, (image_name, label_name) in F.IDX_FILES.items():
        for name, arr in ((image_name, images[split]), (label_name, labels[split])):
            path = F.write_idx_gz(folder / f"{name}.gz", arr)
            if not gz:
                (folder / name).write_bytes(gzip.decompress(path.read_bytes()))
                path.unlink()
    return folder


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return _write_source(tmp_path_factory.mktemp("fmnist"), *_make_items({"train": 4, "test": 3}))


@pytest.fixture(scope="module")
def pool(source) -> F.FashionItems:
    return F.load_fashion_mnist(source)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, source):
    return F.make_fashion_scenes(tmp_path_factory.mktemp("scenes") / "set", source=source, progress=False, **SMALL)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _n_parts(mask: np.ndarray) -> int:
    """Number of 8-connected parts of a bool mask (breadth-first search, independent of the package)."""
    seen = np.zeros_like(mask)
    parts = 0
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        parts += 1
        seen[start] = True
        queue = deque([start])
        while queue:
            y, x = queue.popleft()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    q = (y + dy, x + dx)
                    if 0 <= q[0] < mask.shape[0] and 0 <= q[1] < mask.shape[1] and mask[q] and not seen[q]:
                        seen[q] = True
                        queue.append(q)
    return parts


# --------------------------------------------------------------------------------------------------
# reading the photos


def test_idx_files_are_written_in_the_real_format_and_torchvision_reads_them(tmp_path):
    from torchvision.datasets.mnist import read_image_file, read_label_file

    images = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28).astype(np.uint8)
    labels = np.array([3, 9], np.uint8)
    raw_images = gzip.decompress(F.write_idx_gz(tmp_path / "i.gz", images).read_bytes())
    raw_labels = gzip.decompress(F.write_idx_gz(tmp_path / "l.gz", labels).read_bytes())
    # magic 0x00000803 / 0x00000801 (unsigned bytes, 3 / 1 dimensions), big-endian int32 sizes, values
    assert raw_images[:16] == bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28])
    assert raw_images[16:] == images.tobytes() and raw_labels == bytes([0, 0, 8, 1, 0, 0, 0, 2, 3, 9])
    (tmp_path / "i").write_bytes(raw_images)
    (tmp_path / "l").write_bytes(raw_labels)
    assert np.array_equal(read_image_file(str(tmp_path / "i")).numpy(), images)
    assert read_label_file(str(tmp_path / "l")).tolist() == [3, 9]
    # reproducible bytes: no time stamp in the gzip header
    assert F.write_idx_gz(tmp_path / "again.gz", images).read_bytes() == (tmp_path / "i.gz").read_bytes()


@pytest.mark.parametrize("layout", ["gz", "plain", "torchvision"])
def test_the_source_folder_is_read_in_each_layout(tmp_path, layout):
    images, labels = _make_items({"train": 2, "test": 1}, seed=4)
    folder = tmp_path / "src"
    _write_source(folder / "FashionMNIST" / "raw" if layout == "torchvision" else folder, images, labels,
                  gz=layout == "gz")
    items = F.load_fashion_mnist(folder)
    for split in ("train", "test"):
        assert np.array_equal(items.images[split], images[split])
        assert items.labels[split].tolist() == labels[split].tolist()
        assert [idx.tolist() for idx in items.by_class[split]] == [
            np.flatnonzero(labels[split] == k).tolist() for k in range(10)]
    assert items.origin == str(folder) and len(items.sha256) == 64


def test_missing_malformed_or_incomplete_sources_give_one_line(tmp_path, source):
    with pytest.raises(NoisysegError, match="Fashion-MNIST source folder not found"):
        F.load_fashion_mnist(tmp_path / "nowhere")
    partial = tmp_path / "partial"
    partial.mkdir()
    for p in source.iterdir():
        if not p.name.startswith("t10k-labels"):
            (partial / p.name).write_bytes(p.read_bytes())
    with pytest.raises(NoisysegError) as e:
        F.load_fashion_mnist(partial)
    assert str(e.value).startswith(f"{partial}: no Fashion-MNIST file t10k-labels-idx1-ubyte(.gz) (expected ")

    (partial / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(NoisysegError) as e:
        F.load_fashion_mnist(partial)
    assert str(e.value).startswith(f"{partial / 't10k-labels-idx1-ubyte.gz'}: not a readable Fashion-MNIST IDX file")
    assert "\n" not in str(e.value)

    # a test split without Bag items
    images, labels = _make_items({"train": 1, "test": 1})
    keep = labels["test"] != 8
    _write_source(tmp_path / "nobag", images | {"test": images["test"][keep]}, labels | {"test": labels["test"][keep]})
    with pytest.raises(NoisysegError, match=r"test split: no item of class 'Bag' \(every class needs at least one\)"):
        F.load_fashion_mnist(tmp_path / "nobag")


def test_default_search_uses_the_debian_folder_then_the_cache_then_a_download(tmp_path, monkeypatch, source):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(F, "DEBIAN_DIR", source)
    assert F.load_fashion_mnist().origin == str(source)

    monkeypatch.setattr(F, "DEBIAN_DIR", tmp_path / "no-debian")
    calls = []

    def offline(root, progress):
        calls.append(root)
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried http://..., got:\n<urlopen error "
                           "[Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(F, "_download", offline)
    with pytest.raises(NoisysegError) as e:
        F.load_fashion_mnist()
    msg = str(e.value)
    assert calls == [tmp_path / "cache" / "noisyseg"]
    assert "\n" not in msg and msg.startswith("Fashion-MNIST not found: pass --source DIR holding train-images-idx3-ubyte.gz")
    assert "dataset-fashion-mnist" in msg and "--source bundled" in msg
    assert msg.endswith("(download failed: <urlopen error [Errno -3] Temporary failure in name resolution>)")

    # what a download leaves (torchvision's layout in the cache folder) is found without downloading again
    _write_source(tmp_path / "cache" / "noisyseg" / "FashionMNIST" / "raw", *_make_items({"train": 1, "test": 1}),
                  gz=False)
    assert F.load_fashion_mnist().origin == str(tmp_path / "cache" / "noisyseg" / "FashionMNIST" / "raw")
    assert len(calls) == 1


def test_the_bundled_subset_has_its_licence_and_fifty_and_twenty_items_per_class():
    items = F.load_fashion_mnist("bundled")
    assert items.origin == "bundled subset"
    assert [len(i) for i in items.by_class["train"]] == [50] * 10
    assert [len(i) for i in items.by_class["test"]] == [20] * 10
    licence = (F.BUNDLED_DIR / "LICENSE").read_text()
    assert "MIT License" in licence and "Zalando SE" in licence
    # real photos: mostly background, grey levels over the whole range
    assert 0.3 < float((items.images["train"] == 0).mean()) < 0.7 and items.images["train"].max() == 255


def test_write_subset_keeps_the_first_items_of_each_class_in_file_order(tmp_path, pool):
    F.write_subset(pool, tmp_path, {"train": 2, "test": 1})
    sub = F.load_fashion_mnist(tmp_path)
    expected = np.sort(np.concatenate([idx[:2] for idx in pool.by_class["train"]]))
    assert np.array_equal(sub.images["train"], pool.images["train"][expected])
    assert sub.labels["test"].tolist() == list(range(10))


def test_class_names_are_torchvisions_and_supercategories_group_the_confusable_classes():
    from torchvision.datasets import FashionMNIST

    assert list(F.CLASS_NAMES) == FashionMNIST.classes
    assert [c["id"] for c in F.CATEGORIES] == list(range(1, 11))
    groups: dict[str, set] = {}
    for c in F.CATEGORIES:
        groups.setdefault(c["supercategory"], set()).add(c["name"])
    assert groups == {"tops": {"T-shirt/top", "Pullover", "Dress", "Coat", "Shirt"},
                      "shoes": {"Sandal", "Sneaker", "Ankle boot"}, "trousers": {"Trouser"}, "bags": {"Bag"}}


# --------------------------------------------------------------------------------------------------
# one item


def _strap(anti: bool) -> np.ndarray:
    """A sandal-like photo: a sole and a 1-px diagonal strap touching its pixels only at corners."""
    img = np.zeros((28, 28), np.uint8)
    img[22:25, 2:26] = 200
    for k in range(19):  # rows 3-21, the last one touching the sole's first row at a corner
        img[3 + k, (24 - k) if anti else (4 + k)] = 90
    return img


@pytest.mark.parametrize("anti", [False, True])
def test_a_thin_diagonal_strap_stays_one_piece_at_every_scale(anti):
    photo = _strap(anti)
    for side in range(30, 66, 3):
        sprite = F.item_sprite(photo, side, side)
        assert _n_parts(sprite.mask) == 1, side
        # the strap's top (row 3 of the photo) is in that piece: the mask spans rows 3-24 of the photo
        rows = np.flatnonzero(sprite.mask.any(axis=1))
        assert rows[-1] - rows[0] + 1 >= (25 - 3) * side / 28 - 2


def test_speckle_goes_and_small_holes_are_filled_in_image_and_mask():
    photo = np.zeros((28, 28), np.uint8)
    photo[4:24, 4:24] = 180
    photo[8:10, 8:10] = 0          # 4-px hole: filled
    photo[14:19, 14:19] = 0        # 25-px hole: stays
    photo[1, 26] = 150             # a lone speck far from the item: dropped
    photo[26, 1:3] = 3             # faint speckle below the coverage threshold
    sprite = F.item_sprite(photo, 56, 56)
    m = sprite.mask
    holes = _fill_from_border(m) & ~m  # pixels off the mask that the border cannot reach
    assert _n_parts(m) == 1 and _n_parts(holes) == 1  # the 2 x 2 hole is filled, the 5 x 5 one is not
    assert 49 <= int(holes.sum()) <= 100  # the 5 x 5 hole scaled 2x: about 81 pixels
    # the speck is neither painted nor annotated: the sprite is the square (40 px) and its soft edge
    assert max(sprite.alpha.shape) <= 42


def _fill_from_border(mask: np.ndarray) -> np.ndarray:
    """``mask`` with every hole filled: the pixels not reachable from the border through ``~mask``."""
    reach = np.zeros_like(mask)
    queue = deque((y, x) for y in range(mask.shape[0]) for x in range(mask.shape[1])
                  if (y in (0, mask.shape[0] - 1) or x in (0, mask.shape[1] - 1)) and not mask[y, x])
    for q in queue:
        reach[q] = True
    while queue:
        y, x = queue.popleft()
        for q in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            if 0 <= q[0] < mask.shape[0] and 0 <= q[1] < mask.shape[1] and not mask[q] and not reach[q]:
                reach[q] = True
                queue.append(q)
    return ~reach


def test_the_soft_edge_keeps_the_items_brightness_so_no_dark_outline():
    yy, xx = np.mgrid[0:28, 0:28] + 0.5
    r = np.hypot(yy - 14, xx - 14)
    photo = np.clip((11.0 - r) * 200, 0, 200).astype(np.uint8)  # a disc of 200 with an antialiased edge
    sprite = F.item_sprite(photo, 50, 50)
    visible = sprite.alpha > 0.01
    assert np.abs(sprite.shade[visible] - 200 / 255).max() < 0.02  # not fading towards black at the edge

    background = np.array([40.0, 160.0, 90.0], np.float32)
    colour = np.array([230.0, 20.0, 120.0], np.float32)
    img = np.broadcast_to(background, (60, 60, 3)).astype(np.float32).copy()
    F.composite(img, sprite, 5, 5, np.broadcast_to(colour * sprite.shade[..., None], sprite.shade.shape + (3,)))
    lo, hi = np.minimum(background, colour * 200 / 255), np.maximum(background, colour * 200 / 255)
    assert (img >= lo - 0.5).all() and (img <= hi + 0.5).all()  # every pixel between background and item
    # and the coverage is the mask's: > 0.5 inside, < 0.5 outside
    assert (sprite.alpha[sprite.mask] >= 0.5).all() and (sprite.alpha[~sprite.mask] < 0.5).all()


def test_composite_drops_the_part_outside_the_frame():
    sprite = F.item_sprite(np.full((28, 28), 200, np.uint8), 20, 20)
    img = np.zeros((30, 30, 3), np.float32)
    F.composite(img, sprite, -10, 25, np.full(sprite.mask.shape + (3,), 100.0, np.float32))
    painted = img[..., 0] > 0
    assert painted[:10, 25:].all() and not painted[10:].any() and not painted[:, :25].any()


def test_label_components_agree_with_a_breadth_first_search():
    rng = np.random.default_rng(0)
    for _ in range(40):
        m = rng.random((int(rng.integers(1, 29)), int(rng.integers(1, 29)))) < rng.uniform(0.2, 0.7)
        labels = F.label_components(m, diagonal=True)
        assert labels.max() == _n_parts(m) and ((labels > 0) == m).all()
        for k in range(1, labels.max() + 1):  # each label is one part
            assert _n_parts(labels == k) == 1
    four = F.label_components(np.eye(3, dtype=bool), diagonal=False)
    assert four.tolist() == [[1, 0, 0], [0, 2, 0], [0, 0, 3]]


# --------------------------------------------------------------------------------------------------
# scenes


def test_same_arguments_give_identical_bytes_and_another_seed_other_images(scenes, source, tmp_path):
    again = F.make_fashion_scenes(tmp_path / "again", source=source, progress=False, **SMALL)
    assert _files(again.train_json.parent) == _files(scenes.train_json.parent)
    other = F.make_fashion_scenes(tmp_path / "other", source=source, progress=False, **{**SMALL, "seed": 1})
    assert (other.image_root / "train" / "000000.png").read_bytes() != \
        (scenes.image_root / "train" / "000000.png").read_bytes()


@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_files_are_valid_with_exact_visible_masks(scenes, pool, split):
    path = scenes.train_json if split == "train" else scenes.val_json
    raw = json.loads(path.read_text())
    coco = COCO(str(path))
    assert raw["categories"] == F.CATEGORIES
    assert [im["id"] for im in raw["images"]] == list(range(1, SMALL[f"n_{split}"] + 1))
    assert raw["info"]["params"] == {
        "generator": "noisyseg.data.fashion", "version": F.FASHION_VERSION, "seed": 0, "n_train": 10, "n_val": 6,
        "size": 64, "items": [2, 4], "scale": [0.35, 0.6], "source_sha256": pool.sha256,
        "source_items": {"train": 40, "test": 30}}
    n_occluded = 0
    for im in raw["images"]:
        index = int(Path(im["file_name"]).stem)
        img, instances = F.generate_fashion_image(pool, split, index, 64, 0, (2, 4), (0.35, 0.6))
        assert np.array_equal(np.asarray(Image.open(scenes.image_root / im["file_name"])), img)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=im["id"]))
        assert len(anns) == len(instances) >= 1
        total = np.zeros((64, 64), int)
        for a, inst in zip(anns, instances):
            m = coco.annToMask(a).astype(bool)
            assert np.array_equal(m, inst["mask"]) and a["category_id"] == inst["category_id"]
            assert a["area"] == int(m.sum()) >= F.MIN_VISIBLE_AREA and a["iscrowd"] == 0
            assert a["bbox"] == [int(v) for v in mask_utils.toBbox(a["segmentation"])]
            assert inst["area"] <= inst["full_area"]
            n_occluded += inst["area"] < inst["full_area"]
            total += m
        assert total.max() <= 1  # an occluded instance lost the occluder's pixels
    assert n_occluded >= 1


@pytest.mark.parametrize("split, photos", [("train", "rectangles"), ("val", "crosses")])
def test_train_scenes_use_training_items_and_val_scenes_test_items(pool, split, photos):
    """Training items are rectangles (an unoccluded one fills its box), test items crosses (about 5/9)."""
    fills = []
    for index in range(12):
        _, instances = F.generate_fashion_image(pool, split, index, 64, 0, (1, 3), (0.35, 0.6))
        for inst in instances:
            x, y, w, h = inst["bbox"]
            if inst["area"] == inst["full_area"] and x > 0 and y > 0 and x + w < 64 and y + h < 64:
                fills.append(inst["area"] / (w * h))
            item_split = "train" if split == "train" else "test"
            assert pool.labels[item_split][inst["item"]] == inst["category_id"] - 1
    assert len(fills) >= 5
    if photos == "rectangles":
        assert min(fills) > 0.85
    else:
        assert max(fills) < 0.8


def test_every_class_appears_and_item_counts_and_sizes_follow_the_options(pool):
    seen, counts, sides = set(), [], []
    for index in range(30):
        _, instances = F.generate_fashion_image(pool, "train", index, 96, 3, (1, 2), (0.5, 0.7))
        counts.append(len(instances))
        for inst in instances:
            seen.add(inst["category_id"])
            if inst["area"] == inst["full_area"]:
                sides.append(max(inst["bbox"][2:]))
    assert seen == set(range(1, 11)) and set(counts) <= {1, 2} and 2 in counts
    # rectangles span 14-26 of the 28 px: longer side 0.5-0.93 of the scaled side (48-67 px), +-5% aspect
    assert min(sides) >= 0.5 * 0.5 * 96 * 0.94 and max(sides) <= 0.7 * 96 * 1.06 + 1


def test_a_users_train_json_or_another_set_is_refused_without_force(tmp_path, source, pool):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "train.json").write_text('{"images": []}')
    with pytest.raises(NoisysegError) as e:
        F.make_fashion_scenes(out, source=pool, progress=False, **SMALL)
    assert str(e.value) == (f"{out / 'train.json'}: not written by noisyseg data fashion; refusing to replace it, "
                            "even with --force (move it away or write the set to another folder)")
    assert sorted(p.name for p in out.iterdir()) == ["train.json"]
    with pytest.raises(NoisysegError, match="refusing to replace it, even with --force"):
        F.make_fashion_scenes(out, source=pool, progress=False, force=True, **SMALL)
    assert (out / "train.json").read_text() == '{"images": []}'

    made = F.make_fashion_scenes(tmp_path / "set", source=pool, progress=False, **SMALL)
    assert F.make_fashion_scenes(tmp_path / "set", source=pool, progress=False, **SMALL).reused
    with pytest.raises(NoisysegError, match=r"holds a fashion set made with other parameters \(items \[2, 4\] "
                                            r"\(asked \[1, 3\]\)\)"):
        F.make_fashion_scenes(tmp_path / "set", source=pool, progress=False, **{**SMALL, "items": (1, 3)})
    other = F.load_fashion_mnist(_write_source(tmp_path / "other", *_make_items({"train": 4, "test": 3}, seed=9)))
    with pytest.raises(NoisysegError, match="source_sha256"):  # same arguments, other photos
        F.make_fashion_scenes(tmp_path / "set", source=other, progress=False, **SMALL)
    forced = F.make_fashion_scenes(tmp_path / "set", source=other, progress=False, force=True, **SMALL)
    assert not forced.reused
    assert json.loads(made.train_json.read_text())["info"]["params"]["source_sha256"] == other.sha256


@pytest.mark.parametrize("kwargs, text", [
    ({"items": (0, 2)}, r"items must be two integers MIN,MAX with 1 <= MIN <= MAX <= 10, got \(0, 2\)"),
    ({"items": (3, 2)}, "items must be two integers"),
    ({"items": (1.5, 2)}, "items must be two integers"),
    ({"scale": (0.5, 0.4)}, r"scale must be two numbers MIN,MAX with 0 < MIN <= MAX <= 1"),
    ({"scale": (0.1, 1.2)}, "scale must be two numbers"),
    ({"scale": (0.1, 0.5)}, "gives items of 6.4 px; the smallest must be at least 10 px"),
    ({"size": 16}, "size must be at least 32"),
    ({"n_val": -1}, "image counts must be >= 0"),
])
def test_bad_arguments_raise_one_line_before_anything_is_read_or_written(tmp_path, kwargs, text):
    with pytest.raises(NoisysegError, match=text) as e:
        F.make_fashion_scenes(tmp_path / "bad", source=tmp_path / "no-source", progress=False, **{**SMALL, **kwargs})
    assert "\n" not in str(e.value) and not (tmp_path / "bad").exists()


def test_cli_writes_the_set_and_reports_errors_in_one_line(tmp_path, source, capsys):
    from noisyseg.cli import main

    out = tmp_path / "cli"
    args = ["data", "fashion", "-o", str(out), "--source", str(source), "--train", "3", "--val", "2", "--size", "48",
            "--items", "1,2", "--scale", "0.4,0.7", "--seed", "5", "--no-progress"]
    assert main(args) == 0
    assert f"train_json: {out / 'train.json'}" in capsys.readouterr().out
    params = json.loads((out / "val.json").read_text())["info"]["params"]
    assert (params["n_train"], params["n_val"], params["size"], params["seed"]) == (3, 2, 48, 5)
    assert params["items"] == [1, 2] and params["scale"] == [0.4, 0.7]
    assert sorted(p.name for p in (out / "images" / "val").iterdir()) == ["000000.png", "000001.png"]

    assert main(args[:-1] + ["--seed", "6", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"noisyseg data: error: {out}: holds a fashion set made with other parameters (seed 5 (asked 6)); "
                   "refusing to replace it (pass --force to allow)")
    assert main(args[:-1] + ["--seed", "6", "--force", "--no-progress"]) == 0

    assert main(["data", "fashion", "-o", str(tmp_path / "x"), "--source", str(tmp_path / "none"), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == (f"noisyseg data: error: {tmp_path / 'none'}: Fashion-MNIST source "
                                               "folder not found")
    with pytest.raises(SystemExit):
        main(["data", "fashion", "-o", str(tmp_path / "x"), "--items", "3"])
    assert "--items: expected MIN,MAX (ints), got '3'" in capsys.readouterr().err


def test_cli_bundled_source(tmp_path, capsys):
    from noisyseg.cli import main

    assert main(["data", "fashion", "-o", str(tmp_path / "b"), "--source", "bundled", "--train", "2", "--val", "1",
                 "--size", "64", "--no-progress"]) == 0
    train = json.loads((tmp_path / "b" / "train.json").read_text())
    assert train["info"]["params"]["source_items"] == {"train": 500, "test": 200} and train["annotations"]


# --------------------------------------------------------------------------------------------------
# long-tailed training splits


def test_class_frequencies_follow_the_ratio_over_the_class_order_or_the_weights():
    p = F.class_frequencies(train_ratio=0.5)
    by_rank = np.array([p[F.CLASS_NAMES.index(n)] for n in F.DEFAULT_CLASS_ORDER])
    np.testing.assert_allclose(by_rank, 0.5 ** np.arange(10) / (2 - 0.5 ** 9), rtol=1e-12)
    order = list(reversed(F.CLASS_NAMES))
    p = F.class_frequencies(train_ratio=0.8, class_order=order)
    np.testing.assert_allclose(p, 0.8 ** np.arange(9, -1, -1) / sum(0.8 ** np.arange(10)), rtol=1e-12)
    w = {n: float(k + 1) for k, n in enumerate(F.CLASS_NAMES)}
    np.testing.assert_allclose(F.class_frequencies(train_weights=w), np.arange(1, 11) / 55, rtol=1e-12)
    np.testing.assert_array_equal(F.class_frequencies(train_weights=list(range(1, 11))),
                                  F.class_frequencies(train_weights=w))
    assert F.class_frequencies() is None and F.class_frequencies(train_ratio=1.0).tolist() == [0.1] * 10


@pytest.mark.parametrize("kwargs, text", [
    ({"train_ratio": 0}, r"train_ratio must be a number in \(0, 1\], got 0"),
    ({"train_ratio": 1.5}, "train_ratio must be"),
    ({"train_ratio": float("nan")}, "train_ratio must be"),
    ({"train_ratio": 0.7, "class_order": ["Shirt"] * 10}, "must name each of the 10 classes once"),
    ({"train_ratio": 0.7, "class_order": ["Hat"] + list(F.CLASS_NAMES[1:])}, "'Hat' is not a class"),
    ({"class_order": list(F.CLASS_NAMES)}, "class_order only applies with train_ratio"),
    ({"train_weights": [1] * 9}, "must be 10 numbers in label order"),
    ({"train_weights": [1] * 9 + [0]}, "Ankle boot has weight 0, expected a finite number > 0"),
    ({"train_weights": {"Shirt": 1}}, "must give every class a weight"),
    ({"train_ratio": 0.7, "train_weights": [1] * 10}, "not both"),
])
def test_bad_class_frequencies_are_one_line_before_any_work(tmp_path, kwargs, text):
    with pytest.raises(NoisysegError, match=text) as e:
        F.make_fashion_scenes(tmp_path / "bad", source=tmp_path / "no-source", progress=False, **SMALL, **kwargs)
    assert "\n" not in str(e.value) and not (tmp_path / "bad").exists()


def test_first_items_keep_every_prefix_within_one_of_its_share_and_balanced_is_index_mod_10():
    p = F.class_frequencies(train_ratio=0.7)
    labels = F.first_item_labels(p, 500)
    counts = np.cumsum(np.eye(10, dtype=np.int64)[labels], axis=0)  # (500, 10) counts after each image
    assert np.abs(counts - np.outer(np.arange(1, 501), p)).max() < 1.0
    assert F.first_item_labels(None, 25).tolist() == [i % 10 for i in range(25)]
    assert F.first_item_labels(np.full(10, 0.1), 25).tolist() == [i % 10 for i in range(25)]


def test_further_items_draw_their_class_from_the_frequencies():
    p = F.class_frequencies(train_weights=[8, 4, 2, 1, 1, 1, 1, 1, 1, 0.5])
    rng = np.random.default_rng(0)
    n = 40000
    counts = np.bincount([F._draw_label(rng, p) for _ in range(n)], minlength=10)
    assert np.all(np.abs(counts - n * p) < 5 * np.sqrt(n * p * (1 - p)))  # within 5 standard deviations


def test_realised_instance_counts_follow_the_requested_frequencies(tmp_path, pool):
    # one item per image: every image's only instance is its first item, so the counts are the apportioned
    # sequence's (within one of n * p_k); val stays balanced
    args = dict(n_train=60, n_val=20, size=48, seed=1, items=(1, 1), scale=(0.5, 0.7), source=pool, progress=False)
    made = F.make_fashion_scenes(tmp_path / "lt", train_ratio=0.6, **args)
    p = F.class_frequencies(train_ratio=0.6)
    for split, shares, n in (("train", p, 60), ("val", np.full(10, 0.1), 20)):
        coco = json.loads((tmp_path / "lt" / f"{split}.json").read_text())
        counts = np.bincount([a["category_id"] - 1 for a in coco["annotations"]], minlength=10)
        assert counts.sum() == n and np.abs(counts - n * shares).max() < 1.0
        info = coco["info"]
        assert info["instances_per_class"] == {name: int(c) for name, c in zip(F.CLASS_NAMES, counts)}
        assert info["class_frequencies"] == {name: float(q) for name, q in zip(F.CLASS_NAMES, shares)}
    params = json.loads(made.train_json.read_text())["info"]["params"]
    assert params["train_frequencies"] == {name: float(q) for name, q in zip(F.CLASS_NAMES, p)}
    assert params["train_ratio"] == 0.6 and params["class_order"] == list(F.DEFAULT_CLASS_ORDER)
    assert params["val_frequencies"] == "balanced"
    # with several items per image the counts still follow the frequencies, up to the draw
    many = F.make_fashion_scenes(tmp_path / "many", train_ratio=0.6, **{**args, "n_train": 60, "items": (3, 3)})
    coco = json.loads(many.train_json.read_text())
    counts = np.bincount([a["category_id"] - 1 for a in coco["annotations"]], minlength=10)
    n = counts.sum()
    assert n > 120 and np.all(np.abs(counts - n * p) < 4 * np.sqrt(n * p * (1 - p)) + 1)


def test_a_long_tailed_set_is_deterministic_and_its_balanced_val_is_the_balanced_sets(tmp_path, pool):
    args = dict(n_train=8, n_val=4, size=48, seed=2, items=(2, 3), scale=(0.4, 0.6), source=pool, progress=False)
    order = list(reversed(F.DEFAULT_CLASS_ORDER))
    a = F.make_fashion_scenes(tmp_path / "a", train_ratio=0.5, class_order=order, **args).train_json.parent
    b = F.make_fashion_scenes(tmp_path / "b", train_ratio=0.5, class_order=order, **args).train_json.parent
    flat = F.make_fashion_scenes(tmp_path / "flat", **args).train_json.parent

    def files(root, sub):
        return {p.name: p.read_bytes() for p in (root / "images" / sub).iterdir()}

    assert files(a, "train") == files(b, "train") and (a / "train.json").read_bytes() == (b / "train.json").read_bytes()
    assert files(a, "train") != files(flat, "train")
    assert files(a, "val") == files(flat, "val")  # val balanced by default: the same scenes as a balanced set
    va, vf = (json.loads((r / "val.json").read_text()) for r in (a, flat))
    assert va["annotations"] == vf["annotations"] and va["images"] == vf["images"]
    # a set made before the option existed (no frequencies in params) is still the balanced set of today
    assert "train_frequencies" not in json.loads((flat / "train.json").read_text())["info"]["params"]
    val_train = F.make_fashion_scenes(tmp_path / "v", train_ratio=0.5, class_order=order, val_frequencies="train",
                                      **args).train_json.parent
    assert files(val_train, "val") != files(flat, "val") and files(val_train, "train") == files(a, "train")


def test_cli_long_tailed_options(tmp_path, source, capsys):
    from noisyseg.cli import main

    base = ["data", "fashion", "--source", str(source), "--train", "20", "--val", "2", "--size", "48", "--items", "1,1",
            "--scale", "0.5,0.7", "--no-progress"]
    order = "Shirt,Coat,Sandal,Dress,Ankle boot,Pullover,Bag,Sneaker,Trouser,T-shirt/top"
    assert main(base + ["-o", str(tmp_path / "r"), "--train-ratio", "0.5", "--class-order", order]) == 0
    params = json.loads((tmp_path / "r" / "train.json").read_text())["info"]["params"]
    assert params["class_order"] == order.split(",") and params["train_ratio"] == 0.5
    assert max(params["train_frequencies"], key=params["train_frequencies"].get) == "Shirt"
    weights = ",".join(f"{n}={k + 1}" for k, n in enumerate(F.CLASS_NAMES))
    assert main(base + ["-o", str(tmp_path / "w"), "--train-weights", weights]) == 0
    params = json.loads((tmp_path / "w" / "train.json").read_text())["info"]["params"]
    assert params["train_weights"] == {n: float(k + 1) for k, n in enumerate(F.CLASS_NAMES)}
    capsys.readouterr()
    assert main(base + ["-o", str(tmp_path / "x"), "--train-weights", "1,2"]) == 2
    assert capsys.readouterr().err.strip() == ("noisyseg data: error: fashion: train_weights must be 10 numbers in "
                                               "label order (" + ", ".join(F.CLASS_NAMES) + "), got 2")
    with pytest.raises(SystemExit):
        main(base + ["-o", str(tmp_path / "x"), "--train-ratio", "0.5", "--train-weights", weights])
    assert "not allowed with argument" in capsys.readouterr().err


def test_cli_on_an_unwritable_folder_is_one_line(tmp_path, source, capsys):
    from helpers import assert_one_line, cli, unwritable_dir

    locked = unwritable_dir(tmp_path)
    rc, out, err = cli(capsys, "data", "fashion", "-o", locked / "set", "--source", source, "--train", "2", "--val",
                       "1", "--size", "48", "--no-progress")
    assert rc == 2 and out == ""
    assert_one_line(err, "data", f"{locked / 'set'}: cannot write the output folder: {locked} is not writable")


def _scene_digest(root: Path) -> str:
    """sha256 over both splits' images, annotations and categories and every image's decoded pixels."""
    import hashlib

    h = hashlib.sha256()
    for split in ("train", "val"):
        coco = json.loads((root / f"{split}.json").read_text())
        h.update(json.dumps([coco["images"], coco["annotations"], coco["categories"]]).encode())
        for p in sorted((root / "images" / split).iterdir()):
            h.update(p.name.encode())
            h.update(np.asarray(Image.open(p)).tobytes())
    return h.hexdigest()


def test_a_balanced_set_is_the_one_made_before_class_frequencies_existed(scenes):
    # recorded with the generator of commit 4e6d6f9 (before --train-ratio / --train-weights) on the test source
    assert _scene_digest(scenes.train_json.parent) == "3fd57e2b8501a4655429527a08f2c36e15e23670ae4443aed57d766c8440831d"
