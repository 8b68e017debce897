"""Bad input through the command line: exit 2, one line naming the file and the field, no output, inputs
untouched (bytes and modification times compared). Issue 12 items 8, 10, 12 and the one-line-error list,
for train, eval, noise, predict and convert; runs ``noisyseg.cli.main`` in-process."""

import json
import math

import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import assert_one_line, cli, snapshot, tiny_config, unwritable_dir, write_tiny_coco


@pytest.fixture
def data(tmp_path):
    return write_tiny_coco(tmp_path / "tiny", n_images=4)


def write_config(path, data):
    """A one-epoch CE run on ``data`` (the validation must stop it before its first step)."""
    cfg = tiny_config(data, epochs=1, threads=1)
    cfg["loss"] = {"name": "ce"}
    path.write_text(yaml.safe_dump(cfg))
    return path


# ------------------------------------------------------------------------------------ malformed COCO fields
# (edit, message): the edit is applied to a parsed train.json; the message follows "FILE: ".

FIELD_CASES = {
    "bbox_3_numbers": (lambda c: c["annotations"][0].update(bbox=[1, 2, 3]),
                       "annotations[0] (id 1) has bbox [1, 2, 3], expected a list of 4 numbers [x, y, width, height]"),
    "bbox_nan": (lambda c: c["annotations"][0].update(bbox=[1, 2, math.nan, 3]),
                 "annotations[0] (id 1) has bbox [1, 2, nan, 3]: holds a NaN or infinite number"),
    "bbox_inf": (lambda c: c["annotations"][1].update(bbox=[1, 2, 3, math.inf]),
                 "annotations[1] (id 2) has bbox [1, 2, 3, inf]: holds a NaN or infinite number"),
    "bbox_1e9_wide": (lambda c: c["annotations"][0].update(bbox=[1, 2, 1e9, 3]),
                      "annotations[0] (id 1) has bbox [1, 2, 1000000000.0, 3]: reaches far outside its 64x64 image"),
    "duplicate_annotation_id": (lambda c: c["annotations"][3].update(id=1),
                                "annotations[3] repeats annotation id 1 (already used by annotations[0])"),
    "duplicate_image_id": (lambda c: c["images"][2].update(id=1),
                           "images[2] repeats image id 1 (already used by images[0])"),
    "duplicate_category_id": (lambda c: c["categories"][1].update(id=2),
                              "categories[1] repeats category id 2 (already used by categories[0])"),
    "category_id_bool": (lambda c: c["annotations"][0].update(category_id=True),
                         "annotations[0] (id 1) has category_id True, not a listed category (category ids are "
                         "integers, not bool)"),
    "category_id_string": (lambda c: c["annotations"][0].update(category_id="2"),
                           "annotations[0] (id 1) has category_id '2', not a listed category (category ids are "
                           "integers, not str)"),
    "width_not_integer": (lambda c: c["images"][0].update(width=64.5),
                          "images[0] (id 1) has width 64.5, expected a positive integer"),
}


def _broken_copy(src, dst, edit):
    coco = json.loads(src.read_text())
    edit(coco)
    dst.write_text(json.dumps(coco))  # json.dumps writes NaN / Infinity as bare tokens, as the issue saw
    return dst


@pytest.mark.parametrize("case", list(FIELD_CASES))
def test_noise_refuses_malformed_fields(capsys, tmp_path, data, case):
    edit, message = FIELD_CASES[case]
    bad = _broken_copy(data["train_json"], tmp_path / "bad.json", edit)
    out = tmp_path / "noisy.json"
    before = snapshot(tmp_path)
    rc, _, err = cli(capsys, "noise", bad, "-o", out, "--rate", "0.5", "--report", tmp_path / "report.json")
    assert rc == 2
    assert_one_line(err, "noise", f"{bad}: {message}")
    assert snapshot(tmp_path) == before  # no output, no report, input untouched


@pytest.mark.parametrize("case", ["bbox_3_numbers", "bbox_nan", "bbox_1e9_wide", "duplicate_annotation_id",
                                  "duplicate_image_id", "category_id_bool", "category_id_string", "width_not_integer"])
def test_train_refuses_malformed_fields_before_training(capsys, tmp_path, data, case):
    edit, message = FIELD_CASES[case]
    bad = _broken_copy(data["train_json"], tmp_path / "bad_train.json", edit)
    config = write_config(tmp_path / "c.yaml", {**data, "train_json": bad})
    run = tmp_path / "run"
    before = snapshot(tmp_path)
    rc, _, err = cli(capsys, "train", config, "-o", run, "--no-progress")
    assert rc == 2
    assert_one_line(err, "train", f"{bad}: {message}")
    assert snapshot(tmp_path) == before  # no run folder, inputs untouched


def test_train_refuses_a_malformed_val_file_before_training(capsys, tmp_path, data):
    edit, message = FIELD_CASES["duplicate_category_id"]
    bad = _broken_copy(data["val_json"], tmp_path / "bad_val.json", edit)
    config = write_config(tmp_path / "c.yaml", {**data, "val_json": bad})
    before = snapshot(tmp_path)
    rc, _, err = cli(capsys, "train", config, "-o", tmp_path / "run", "--no-progress")
    assert rc == 2
    assert_one_line(err, "train", f"{bad}: {message}")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("case", ["bbox_nan", "duplicate_image_id", "category_id_string", "width_not_integer"])
def test_eval_refuses_malformed_val_fields(capsys, tmp_path, trained_run, case):
    edit, message = FIELD_CASES[case]
    bad = _broken_copy(trained_run.data["val_json"], tmp_path / "bad_val.json", edit)
    out = tmp_path / "eval_out"
    before = snapshot(tmp_path, trained_run.folder)
    rc, _, err = cli(capsys, "eval", trained_run.folder, "--set", f"data.val_json={bad}", "--out", out,
                     "--no-progress", "--device", "cpu")
    assert rc == 2
    assert_one_line(err, "eval", f"{bad}: {message}")
    assert snapshot(tmp_path, trained_run.folder) == before


# ------------------------------------------------------------------------------------------- output paths


def _output_cases(tmp_path, kind: str):
    """(path to give as the output, expected message fragment) for a folder given as a file, a path under
    a file and an unwritable folder. ``kind`` is "file" (the command writes a file) or "dir"."""
    blocker = tmp_path / "plain.txt"
    blocker.write_text("not a folder")
    locked = unwritable_dir(tmp_path)
    folder = tmp_path / "a_folder"
    folder.mkdir()
    cases = [(blocker / "sub" / ("out.json" if kind == "file" else "out"), f"{blocker} is a file, not a folder"),
             (locked / ("out.json" if kind == "file" else "out"), "is not writable")]
    if kind == "file":
        cases.append((folder, f"{folder}: the output file is a folder, expected a file path"))
    else:
        cases.append((blocker, f"{blocker}: the output folder is a file, expected a folder"))
    return cases


def test_noise_output_paths(capsys, tmp_path, data):
    for out, message in _output_cases(tmp_path, "file"):
        before = snapshot(tmp_path)
        rc, _, err = cli(capsys, "noise", data["train_json"], "-o", out, "--rate", "0.5")
        assert rc == 2
        assert_one_line(err, "noise", message)
        assert snapshot(tmp_path) == before


def test_noise_with_a_bad_report_path_writes_no_main_output(capsys, tmp_path, data):
    blocker = tmp_path / "plain.txt"
    blocker.write_text("x")
    out = tmp_path / "noisy.json"
    for report, message in [(blocker / "r.json", "cannot write the report file"),
                            (tmp_path / "tiny", "the report file is a folder")]:
        before = snapshot(tmp_path)
        rc, _, err = cli(capsys, "noise", data["train_json"], "-o", out, "--rate", "0.5", "--report", report)
        assert rc == 2
        assert_one_line(err, "noise", message)
        assert not out.exists() and snapshot(tmp_path) == before


def test_noise_succeeds_and_leaves_valid_json(capsys, tmp_path, data):
    out = tmp_path / "noisy.json"
    rc, stdout, err = cli(capsys, "noise", data["train_json"], "-o", out, "--rate", "0.5")
    assert rc == 0 and err == "" and "eligible annotations changed class" in stdout
    json.loads(out.read_text(), parse_constant=lambda s: pytest.fail(f"{s} in the output"))


def _tiny_voc(root):
    """A one-image PASCAL VOC 2012 tree with a train list (and no val list)."""
    for d in ("JPEGImages", "SegmentationObject", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(root / "JPEGImages" / "a.jpg")
    index = np.zeros((8, 10), np.uint8)
    index[2:5, 3:7] = 1
    for folder, values in (("SegmentationObject", index), ("SegmentationClass", index * 8)):  # class 8 = cat
        im = Image.fromarray(values, mode="P")
        im.putpalette([v for k in range(256) for v in (k, k, k)])  # without a palette Pillow renumbers
        im.save(root / folder / "a.png")
    (root / "ImageSets/Segmentation/train.txt").write_text("a\n")
    return root


def test_convert_output_paths(capsys, tmp_path):
    voc = _tiny_voc(tmp_path / "VOC2012")
    for out, message in _output_cases(tmp_path, "dir"):
        before = snapshot(tmp_path)
        rc, _, err = cli(capsys, "convert", "voc", voc, "-o", out, "--splits", "train", "--no-progress")
        assert rc == 2
        assert_one_line(err, "convert", message)
        assert snapshot(tmp_path) == before
    out = tmp_path / "coco"
    (out / "train.json").mkdir(parents=True)  # a folder where a split's json goes
    before = snapshot(tmp_path)
    rc, _, err = cli(capsys, "convert", "voc", voc, "-o", out, "--splits", "train", "--no-progress")
    assert rc == 2
    assert_one_line(err, "convert", f"{out / 'train.json'}: the train json is a folder, expected a file path")
    assert snapshot(tmp_path) == before


def test_convert_writes_no_split_when_a_later_split_fails(capsys, tmp_path):
    voc = _tiny_voc(tmp_path / "VOC2012")
    out = tmp_path / "coco"
    before = snapshot(tmp_path)
    rc, _, err = cli(capsys, "convert", "voc", voc, "-o", out, "--splits", "train,val", "--no-progress")
    assert rc == 2
    assert_one_line(err, "convert", "val.txt: split list not found")
    assert snapshot(tmp_path) == before  # train converted fine, but nothing is written
    rc, stdout, _ = cli(capsys, "convert", "voc", voc, "-o", out, "--splits", "train", "--no-progress")
    assert rc == 0 and json.loads((out / "train.json").read_text())["annotations"][0]["category_id"] == 8


# ---------------------------------------------------------------------------------------------- predict


def _images(folder, names, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / name)
    return [folder / n for n in names]


def test_predict_output_paths(capsys, tmp_path, trained_run):
    ckpt = trained_run.folder / "checkpoints" / "last.pt"
    images = _images(tmp_path / "pics", ["a.png"])
    for out, message in _output_cases(tmp_path, "dir"):
        before = snapshot(tmp_path)
        rc, _, err = cli(capsys, "predict", ckpt, *images, "-o", out)
        assert rc == 2
        assert_one_line(err, "predict", message)
        assert snapshot(tmp_path) == before


def test_predict_into_the_images_own_folder_keeps_every_input(capsys, tmp_path, trained_run):
    ckpt = trained_run.folder / "checkpoints" / "last.pt"
    folder = tmp_path / "pics"
    images = _images(folder, ["a.png", "b.jpg", "a_2.png"])
    before = snapshot(folder)
    rc, stdout, err = cli(capsys, "predict", ckpt, *images, "-o", folder, "--score-threshold", "0")
    assert rc == 0, err
    after = snapshot(folder)
    assert all(after[p] == v for p, v in before.items())  # every input: same bytes, same mtime
    overlays = sorted(p.name for p in set(after) - set(before) if p.suffix == ".png")
    assert overlays == ["a_2_2.png", "a_3.png", "b.png"]
    assert "wrote 3 overlays" in stdout


def test_predict_two_inputs_of_the_same_name_get_two_overlays(capsys, tmp_path, trained_run):
    ckpt = trained_run.folder / "checkpoints" / "last.pt"
    a = _images(tmp_path / "x", ["frame.png"], seed=1)[0]
    b = _images(tmp_path / "y", ["frame.png"], seed=2)[0]
    out = tmp_path / "out"
    rc, stdout, err = cli(capsys, "predict", ckpt, a, b, "-o", out, "--score-threshold", "0")
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["frame.png", "frame_2.png", "results.json"]
    assert (out / "frame.png").read_bytes() != (out / "frame_2.png").read_bytes()
    assert "wrote 2 overlays" in stdout
    results = json.loads((out / "results.json").read_text())
    assert {r["overlay"] for r in results} == {"frame.png", "frame_2.png"}
    assert {r["file_name"] for r in results} == {str(a), str(b)}


def test_predict_reads_16_bit_images_scaled(capsys, tmp_path, trained_run):
    ckpt = trained_run.folder / "checkpoints" / "last.pt"
    values = (np.arange(40 * 48).reshape(40, 48) * 30).astype(np.uint16)  # up to 57570
    Image.fromarray(values).save(tmp_path / "deep.png")
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "predict", ckpt, tmp_path / "deep.png", "-o", out, "--score-threshold", "1")
    assert rc == 0, err
    with Image.open(out / "deep.png") as im:  # no detection at threshold 1: the overlay is the image itself
        np.testing.assert_array_equal(np.asarray(im.convert("RGB"))[..., 0], values >> 8)


def test_predict_missing_image_is_one_line_and_writes_nothing(capsys, tmp_path, trained_run):
    ckpt = trained_run.folder / "checkpoints" / "last.pt"
    images = _images(tmp_path / "pics", ["a.png"])
    before = snapshot(tmp_path)
    rc, _, err = cli(capsys, "predict", ckpt, *images, tmp_path / "pics" / "gone.png", "-o", tmp_path / "out")
    assert rc == 2
    assert_one_line(err, "predict", f"{tmp_path / 'pics' / 'gone.png'}: image not found")
    assert snapshot(tmp_path) == before
