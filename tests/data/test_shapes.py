"""Tests for the synthetic shapes benchmark (noisyseg.data.shapes) and ``noisyseg data shapes``."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from noisyseg.data import shapes
from noisyseg.data.shapes import CLASSES, MIN_VISIBLE_AREA, SetPaths, generate_image, make_shapes
from noisyseg.errors import NoisysegError

TINY = dict(n_train=12, n_val=4, size=64, seed=0)


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _mask_bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> SetPaths:
    return make_shapes(tmp_path_factory.mktemp("shapes") / "set", progress=False, **TINY)


@pytest.fixture(scope="module")
def train(tiny) -> dict:
    return json.loads(tiny.train_json.read_text())


def test_layout_and_paths(tiny):
    root = tiny.train_json.parent
    assert tiny.train_json == root / "train.json" and tiny.val_json == root / "val.json"
    assert tiny.image_root == root / "images" and not tiny.reused
    assert sorted(p.name for p in root.iterdir()) == [shapes.MANIFEST, "images", "train.json", "val.json"]
    assert sorted(p.name for p in (root / "images" / "train").iterdir()) == [f"{i:06d}.png" for i in range(12)]
    assert sorted(p.name for p in (root / "images" / "val").iterdir()) == [f"{i:06d}.png" for i in range(4)]


def test_same_arguments_give_identical_bytes(tiny, tmp_path):
    again = make_shapes(tmp_path / "again", progress=False, **TINY)
    assert _all_files(again.train_json.parent) == _all_files(tiny.train_json.parent)


def _content_digest(root: Path) -> str:
    """sha256 over every file's relative path and content, PNGs by their decoded pixels (independent of
    the zlib build that encoded them), leaving out the list of written files (:data:`shapes.MANIFEST`)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != shapes.MANIFEST:  # the list of written files came later
            h.update(str(p.relative_to(root)).encode())
            h.update(np.asarray(Image.open(p)).tobytes() if p.suffix == ".png" else p.read_bytes())
    return h.hexdigest()


# Digests of sets written by the generator before it moved to the shared atomic writer and colorsys
# (commit 683a6a6): committed benchmark figures were made with those images, so they must not change.
RECORDED = [
    (TINY, "5b0d301a907946055e32a54f8f7e837d62bfe08fca756f107adf7d978e7e7398"),
    (dict(n_train=6, n_val=2, size=96, seed=2, class_colours=True),
     "ddbeae4b4071195e1cb18716f0e15f030d5d6680a812056cec71844326d28a2e"),
]


@pytest.mark.parametrize("kwargs, digest", RECORDED)
def test_output_is_identical_to_the_recorded_sets(tiny, tmp_path, kwargs, digest):
    root = tiny.train_json.parent if kwargs == TINY else make_shapes(tmp_path / "s", progress=False,
                                                                     **kwargs).train_json.parent
    assert _content_digest(root) == digest


def test_another_seed_gives_other_images(tiny, tmp_path):
    other = make_shapes(tmp_path / "other", progress=False, **{**TINY, "seed": 1, "n_val": 0})
    a = (tiny.image_root / "train" / "000000.png").read_bytes()
    assert (other.image_root / "train" / "000000.png").read_bytes() != a


def test_train_and_val_images_differ(tiny):
    train_imgs = {p.read_bytes() for p in (tiny.image_root / "train").iterdir()}
    val_imgs = {p.read_bytes() for p in (tiny.image_root / "val").iterdir()}
    assert not train_imgs & val_imgs


@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_file_is_valid_and_areas_and_boxes_match_the_masks(tiny, split):
    path = tiny.train_json if split == "train" else tiny.val_json
    coco = COCO(str(path))
    raw = json.loads(path.read_text())
    assert set(raw) == {"info", "images", "annotations", "categories"}
    assert [im["id"] for im in raw["images"]] == list(range(1, len(raw["images"]) + 1))
    for im in raw["images"]:
        assert im["file_name"].startswith(f"{split}/") and im["width"] == im["height"] == 64
    ann_ids = [a["id"] for a in raw["annotations"]]
    assert ann_ids == list(range(1, len(ann_ids) + 1))
    assert raw["annotations"], "no instances at all"
    for a in raw["annotations"]:
        assert set(a) == {"id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd"}
        assert a["iscrowd"] == 0 and 1 <= a["category_id"] <= 8
        m = coco.annToMask(a)
        assert m.shape == (64, 64)
        assert int(m.sum()) == a["area"] >= MIN_VISIBLE_AREA
        assert a["bbox"] == _mask_bbox(m)


def test_visible_masks_of_one_image_do_not_overlap(tiny):
    coco = COCO(str(tiny.train_json))
    for image_id in coco.getImgIds():
        total = sum(coco.annToMask(a).astype(int) for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id)))
        assert np.max(total) <= 1


def test_polygons_and_rle_both_appear(tiny, train):
    val = json.loads(tiny.val_json.read_text())
    kinds = Counter("polygon" if isinstance(a["segmentation"], list) else "rle"
                    for a in train["annotations"] + val["annotations"])
    assert kinds["polygon"] > 0 and kinds["rle"] > 0
    for a in train["annotations"]:
        if not isinstance(a["segmentation"], list):
            assert isinstance(a["segmentation"]["counts"], str) and a["segmentation"]["size"] == [64, 64]


def test_stored_polygons_rasterise_to_the_painted_masks(train):
    """Every polygon decodes (pycocotools) to nearly the mask the generator painted: IoU > 0.9."""
    n_checked = 0
    for im in train["images"]:
        index = int(Path(im["file_name"]).stem)
        _, instances = generate_image("train", index, size=64, seed=0)
        anns = [a for a in train["annotations"] if a["image_id"] == im["id"]]
        assert len(anns) == len(instances)
        for a, inst in zip(anns, instances):
            assert a["segmentation"] == inst["segmentation"] and a["category_id"] == inst["category_id"]
            if not isinstance(a["segmentation"], list):
                continue
            decoded = mask_utils.decode(mask_utils.frPyObjects(a["segmentation"], 64, 64))[:, :, 0].astype(bool)
            iou = (decoded & inst["mask"]).sum() / (decoded | inst["mask"]).sum()
            assert iou > 0.9
            n_checked += 1
    assert n_checked > 0


def test_every_class_appears_in_train(train):
    assert {a["category_id"] for a in train["annotations"]} == set(range(1, 9))


def test_categories_form_four_supercategory_pairs(train):
    cats = train["categories"]
    assert [c["id"] for c in cats] == list(range(1, 9))
    assert len({c["name"] for c in cats}) == 8
    by_super: dict[str, list[str]] = {}
    for c in cats:
        by_super.setdefault(c["supercategory"], []).append(c["name"])
    assert len(by_super) == 4 and all(len(v) == 2 for v in by_super.values())
    # each pair: one plain class and one patterned class of the same outline family
    for cls in CLASSES:
        partner = next(o for o in CLASSES if o.supercategory == cls.supercategory and o.id != cls.id)
        assert {cls.pattern, partner.pattern} & {"solid"} and cls.pattern != partner.pattern
    assert by_super["round"] == ["disc", "striped_disc"]


def test_image_files_exist_with_the_right_size(tiny, train):
    for im in train["images"]:
        with Image.open(tiny.image_root / im["file_name"]) as img:
            assert img.size == (64, 64) and img.mode == "RGB"


def test_info_block_records_the_generator_parameters(train):
    info = train["info"]
    assert info["split"] == "train"
    assert info["params"] == {"generator": "noisyseg.data.shapes", "version": shapes.SHAPES_VERSION, "seed": 0,
                              "n_train": 12, "n_val": 4, "size": 64}


def test_matching_set_is_reused_and_force_regenerates(tmp_path, capsys):
    out = tmp_path / "reuse"
    args = dict(n_train=3, n_val=2, size=48, seed=5)
    first = make_shapes(out, progress=False, **args)
    stamp = first.train_json.stat().st_mtime_ns
    again = make_shapes(out, progress=True, **args)
    assert again.reused and again.train_json.stat().st_mtime_ns == stamp
    assert "reusing" in capsys.readouterr().err
    forced = make_shapes(out, force=True, progress=False, **args)
    assert not forced.reused and forced.train_json.stat().st_mtime_ns != stamp
    # a missing image of a set with the same parameters means the folder is completed again
    (out / "images" / "val" / "000001.png").unlink()
    assert not make_shapes(out, progress=False, **args).reused
    assert (out / "images" / "val" / "000001.png").is_file()


def test_a_set_made_with_other_parameters_is_refused_without_force(tmp_path):
    out = tmp_path / "other"
    args = dict(n_train=3, n_val=2, size=48, seed=5)
    make_shapes(out, progress=False, **args)
    before = _all_files(out)
    with pytest.raises(NoisysegError) as e:
        make_shapes(out, progress=False, **{**args, "seed": 6})
    assert str(e.value) == (f"{out}: holds a shapes set made with other parameters (seed 5 (asked 6)); "
                            "refusing to replace it (pass --force to allow)")
    with pytest.raises(NoisysegError, match=r"class_colours None \(asked True\)"):
        make_shapes(out, progress=False, class_colours=True, **args)
    assert _all_files(out) == before  # nothing touched
    assert not make_shapes(out, progress=False, force=True, **{**args, "seed": 6}).reused
    assert json.loads((out / "train.json").read_text())["info"]["params"]["seed"] == 6


@pytest.mark.parametrize("content", ['{"images": [], "annotations": [], "categories": []}', "not json",
                                     '{"info": {"split": "train", "params": {"generator": "someone.else"}}}'])
def test_a_users_own_train_json_is_never_replaced_even_with_force(tmp_path, content):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "train.json").write_text(content)
    for force in (False, True):
        with pytest.raises(NoisysegError) as e:
            make_shapes(out, progress=False, force=force, **TINY)
        assert str(e.value) == (f"{out / 'train.json'}: not written by noisyseg data shapes; refusing to replace it, "
                                "even with --force (move it away or write the set to another folder)")
        assert (out / "train.json").read_text() == content and sorted(p.name for p in out.iterdir()) == ["train.json"]


def _users_images(folder: Path, n: int) -> dict[str, bytes]:
    """n PNG-named files of a user's own (random bytes) in ``folder``; returns name -> content."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    files = {f"{i:06d}.png": rng.bytes(64) for i in range(n)}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


@pytest.mark.parametrize("force", [False, True])
def test_a_users_own_images_are_never_deleted_or_overwritten(tmp_path, force):
    # the issue-21 case: ten images of the user's in DIR/images/train, no train.json; the old code deleted the
    # eight numbered above --train 2 and wrote over the other two
    out = tmp_path / "d"
    mine = _users_images(out / "images" / "train", 10)
    with pytest.raises(NoisysegError) as e:
        make_shapes(out, n_train=2, n_val=1, size=32, progress=False, force=force)
    first = out / "images" / "train" / "000000.png"
    assert str(e.value) == (f"{first}: not written by noisyseg data shapes; refusing to replace it, even with --force "
                            "(move it away or write the set to another folder)")
    assert {p.name: p.read_bytes() for p in (out / "images" / "train").iterdir()} == mine
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == \
        ["images", "images/train"] + [f"images/train/{n}" for n in sorted(mine)]


def test_a_folder_holding_other_files_is_refused_and_force_writes_beside_them(tmp_path):
    out = tmp_path / "d"
    (out / "images" / "train").mkdir(parents=True)
    (out / "images" / "train" / "cat.jpg").write_bytes(b"my cat")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(NoisysegError) as e:
        make_shapes(out, n_train=2, n_val=1, size=32, progress=False)
    assert str(e.value) == (f"{out}: holds files noisyseg data shapes did not write (e.g. "
                            f"{out / 'notes.txt'}); refusing to write into it (pass --force to "
                            "write beside them: they are never replaced or deleted)")
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["cat.jpg", "notes.txt"]
    make_shapes(out, n_train=2, n_val=1, size=32, progress=False, force=True)
    assert (out / "images" / "train" / "cat.jpg").read_bytes() == b"my cat"
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (out / "images" / "train").iterdir()) == ["000000.png", "000001.png", "cat.jpg"]
    # regenerating a smaller set deletes only its own left-over image, never the user's
    make_shapes(out, n_train=1, n_val=1, size=32, progress=False, force=True)
    assert sorted(p.name for p in (out / "images" / "train").iterdir()) == ["000000.png", "cat.jpg"]


def test_the_list_of_written_files_holds_each_files_sha256(tiny):
    root = tiny.train_json.parent
    listed = json.loads((root / shapes.MANIFEST).read_text())["files"]
    on_disk = {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in root.rglob("*") if p.is_file() and p.name != shapes.MANIFEST}
    assert listed == on_disk


def test_an_image_the_user_changed_is_no_longer_ours(tmp_path):
    out = tmp_path / "d"
    make_shapes(out, n_train=3, n_val=1, size=32, progress=False)
    edited = out / "images" / "train" / "000002.png"
    edited.write_bytes(b"my edit")
    with pytest.raises(NoisysegError, match="000002.png: not written by noisyseg data shapes"):
        make_shapes(out, n_train=3, n_val=1, size=32, seed=1, progress=False, force=True)
    (out / "images" / "val" / "000000.png").unlink()  # an incomplete set of the same parameters is completed,
    with pytest.raises(NoisysegError, match="000002.png: not written"):  # but not over a file of the user's
        make_shapes(out, n_train=3, n_val=1, size=32, progress=False)
    assert edited.read_bytes() == b"my edit"
    # a smaller set with --force: the left-over image is the user's now, so it stays
    make_shapes(out, n_train=2, n_val=1, size=32, seed=1, progress=False, force=True)
    assert edited.read_bytes() == b"my edit"


def test_an_interrupted_run_is_finished_by_the_next(tmp_path, monkeypatch):
    out = tmp_path / "d"
    real = shapes._draw_scene
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(shapes, "_draw_scene", failing)
    with pytest.raises(KeyboardInterrupt):
        make_shapes(out, n_train=4, n_val=1, size=32, progress=False)
    assert not (out / "train.json").exists() and (out / "images" / "train" / "000001.png").is_file()
    monkeypatch.setattr(shapes, "_draw_scene", real)
    done = make_shapes(out, n_train=4, n_val=1, size=32, progress=False)  # its own files: no --force needed
    assert not done.reused and _all_files(out) == _all_files(make_shapes(tmp_path / "e", n_train=4, n_val=1, size=32,
                                                                          progress=False).train_json.parent)


def test_a_set_made_before_the_list_existed_is_still_ours(tmp_path):
    out = tmp_path / "d"
    make_shapes(out, n_train=3, n_val=1, size=32, progress=False)
    (out / shapes.MANIFEST).unlink()
    assert make_shapes(out, n_train=3, n_val=1, size=32, progress=False).reused
    make_shapes(out, n_train=2, n_val=1, size=32, seed=4, progress=False, force=True)
    assert sorted(p.name for p in (out / "images" / "train").iterdir()) == ["000000.png", "000001.png"]


def test_an_unwritable_output_folder_is_one_line_before_any_work(tmp_path, capsys):
    from helpers import assert_one_line, cli, unwritable_dir

    locked = unwritable_dir(tmp_path)
    with pytest.raises(NoisysegError, match="not writable") as e:
        make_shapes(locked / "set", n_train=2, n_val=1, size=32, progress=False)
    assert "\n" not in str(e.value)
    rc, out, err = cli(capsys, "data", "shapes", "-o", locked / "set", "--train", "2", "--val", "1", "--size", "32",
                       "--no-progress")
    assert rc == 2 and out == ""
    assert_one_line(err, "data", f"{locked / 'set'}: cannot write the output folder: {locked} is not writable")


def test_regenerating_a_smaller_set_removes_left_over_images(tmp_path):
    out = tmp_path / "shrink"
    make_shapes(out, n_train=4, n_val=1, size=32, progress=False)
    make_shapes(out, n_train=2, n_val=1, size=32, progress=False, force=True)
    assert sorted(p.name for p in (out / "images" / "train").iterdir()) == ["000000.png", "000001.png"]


@pytest.mark.parametrize("kwargs, text", [
    ({"size": 16}, "size"),
    ({"n_train": -1}, "counts"),
    ({"n_val": -3}, "counts"),
    ({"seed": -1}, "seed"),
])
def test_bad_arguments_raise_one_line(tmp_path, kwargs, text):
    with pytest.raises(NoisysegError, match=text) as e:
        make_shapes(tmp_path / "bad", progress=False, **{**TINY, **kwargs})
    assert "\n" not in str(e.value)
    assert not (tmp_path / "bad").exists()


def test_output_path_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(NoisysegError, match="not a folder"):
        make_shapes(f, progress=False, **TINY)


def test_cli_writes_the_set_and_bad_args_return_2(tmp_path, capsys):
    from noisyseg.cli import main

    out = tmp_path / "cli"
    rc = main(["data", "shapes", "-o", str(out), "--train", "3", "--val", "2", "--size", "48", "--seed", "1",
               "--no-progress"])
    assert rc == 0
    assert f"train_json: {out / 'train.json'}" in capsys.readouterr().out
    info = json.loads((out / "val.json").read_text())["info"]["params"]
    assert (info["n_train"], info["n_val"], info["size"], info["seed"]) == (3, 2, 48, 1)
    assert main(["data", "shapes", "-o", str(tmp_path / "cc"), "--train", "1", "--val", "1", "--size", "48",
                 "--class-colours", "--no-progress"]) == 0
    assert json.loads((tmp_path / "cc" / "train.json").read_text())["info"]["params"]["class_colours"] is True

    assert main(["data", "shapes", "-o", str(tmp_path / "x"), "--size", "16", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("noisyseg data: error:") and "size" in err and len(err.splitlines()) == 1
    assert main(["data", "shapes", "-o", str(tmp_path / "x"), "--train", "-2", "--no-progress"]) == 2
    capsys.readouterr()

    # another seed into the same folder: refused with one line, accepted with --force
    again = ["data", "shapes", "-o", str(out), "--train", "3", "--val", "2", "--size", "48", "--seed", "2",
             "--no-progress"]
    assert main(again) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"noisyseg data: error: {out}: holds a shapes set made with other parameters "
                   "(seed 1 (asked 2)); refusing to replace it (pass --force to allow)")
    assert main(again + ["--force"]) == 0
    assert json.loads((out / "train.json").read_text())["info"]["params"]["seed"] == 2


def _hue(rgb: np.ndarray) -> np.ndarray:
    """Hue in [0, 1) of (n, 3) RGB rows (the standard hexcone formula, written out independently)."""
    r, g, b = (rgb[:, k].astype(np.float64) for k in range(3))
    mx, mn = rgb.max(axis=1).astype(np.float64), rgb.min(axis=1).astype(np.float64)
    d = np.maximum(mx - mn, 1e-9)
    h = np.where(mx == r, ((g - b) / d) % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4))
    return h / 6.0


def test_class_colours_put_every_solid_object_in_its_class_hue_band():
    checked = 0
    for i in range(24):
        img, instances = generate_image("train", i, size=96, seed=3, class_colours=True)
        for inst in instances:
            cls = CLASSES[inst["category_id"] - 1]
            if cls.pattern != "solid" or inst["area"] < 150:
                continue
            hue = float(np.median(_hue(img[inst["mask"]])))
            centre = (inst["category_id"] - 1) / len(CLASSES)
            dist = min(abs(hue - centre), 1 - abs(hue - centre))
            # band half-width 0.03, plus slack for pixel noise on dark or pale pixels
            assert dist < 0.05, (i, cls.name, hue, centre)
            checked += 1
    assert checked >= 10


def test_class_colours_are_recorded_and_change_the_images(tmp_path):
    args = dict(n_train=2, n_val=1, size=48, seed=1, progress=False)
    plain = make_shapes(tmp_path / "plain", **args)
    coloured = make_shapes(tmp_path / "coloured", class_colours=True, **args)
    assert "class_colours" not in json.loads(plain.train_json.read_text())["info"]["params"]
    assert json.loads(coloured.train_json.read_text())["info"]["params"]["class_colours"] is True
    assert _all_files(tmp_path / "plain" / "images") != _all_files(tmp_path / "coloured" / "images")
    # a set made without the option does not pass for one with it; --force turns it into that set
    with pytest.raises(NoisysegError, match="made with other parameters"):
        make_shapes(tmp_path / "plain", class_colours=True, **args)
    assert not make_shapes(tmp_path / "plain", class_colours=True, force=True, **args).reused
    assert _all_files(tmp_path / "plain") == _all_files(tmp_path / "coloured")
