"""Label precision (share of the annotations labelled k whose clean class is k): realised in the report and
``--stats``, predicted before injecting (``predict_precision`` / ``noisyseg noise --predict``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from noisyseg.errors import NoisysegError
from noisyseg.noise import inject, noise_stats, predict_precision

# Cityscapes gtFine train instance counts of the eight instance classes (benchmarks/label_precision.py)
CITYSCAPES = {"person": 17919, "rider": 1781, "car": 26963, "truck": 484, "bus": 380, "train": 168,
              "motorcycle": 737, "bicycle": 3675}


def _lean(counts: dict[str, int]) -> dict:
    """A COCO file with only the fields noise reads: ``counts[name]`` annotations of each class, ids 1.. in order."""
    labels = np.repeat(np.arange(1, len(counts) + 1), list(counts.values())).tolist()
    return {"images": [{"id": 1, "file_name": "1.png", "height": 8, "width": 8}],
            "annotations": [{"id": i + 1, "image_id": 1, "category_id": c} for i, c in enumerate(labels)],
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(counts)]}


def _closed_form_symmetric(counts: dict[str, int], rate: float) -> dict[str, float]:
    """Exact symmetric noise on a clean file: class k keeps n_k - m_k labels and receives m_c / (K - 1) of
    every other class's m_c = round(rate * n_c) changed ones, in expectation."""
    m = {c: math.floor(rate * n + 0.5) for c, n in counts.items()}
    k = len(counts)
    return {c: (n - m[c]) / (n - m[c] + sum(m[o] for o in counts if o != c) / (k - 1)) for c, n in counts.items()}


def _realised(noisy: dict) -> dict[str, float]:
    """Label precision counted directly from the annotations (independent of noise_stats)."""
    names = {c["id"]: c["name"] for c in noisy["categories"]}
    labelled, right = {}, {}
    for a in noisy["annotations"]:
        k = names[a["category_id"]]
        labelled[k] = labelled.get(k, 0) + 1
        right[k] = right.get(k, 0) + (a["category_id"] == a["clean_category_id"])
    return {k: right[k] / labelled[k] for k in labelled}


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.8])
def test_prediction_equals_the_closed_form_for_exact_symmetric_noise(make, rate):
    counts = {"a": 500, "b": 120, "c": 31, "d": 7}
    pred = predict_precision(make(counts), "symmetric", rate)["per_class"]
    want = _closed_form_symmetric(counts, rate)
    assert set(pred) == set(counts)
    for c in counts:
        assert pred[c]["precision"] == pytest.approx(want[c], rel=1e-12)
        assert pred[c]["n"] == counts[c]


def test_prediction_reproduces_the_cityscapes_figures_of_findings(make):
    # FINDINGS.md section 5 (computed outside the product): at 40% train 0.03 ... car 0.92; at 20% train 0.08
    coco = _lean(CITYSCAPES)
    at40 = {k: round(v["precision"], 2) for k, v in predict_precision(coco, "symmetric", 0.4)["per_class"].items()}
    assert at40 == {"train": 0.03, "bus": 0.07, "truck": 0.09, "motorcycle": 0.13, "rider": 0.27, "bicycle": 0.44,
                    "person": 0.85, "car": 0.92}
    at20 = predict_precision(coco, "symmetric", 0.2)["per_class"]
    assert [round(at20[k]["precision"], 2) for k in ("train", "bus", "truck")] == [0.08, 0.17, 0.21]


def test_realised_precision_on_a_large_file_is_close_to_the_prediction(make):
    counts = {"head": 6000, "mid": 1500, "low": 400, "tail": 150}
    coco = make(counts)
    for kind, rate, options in (("symmetric", 0.4, {}), ("pairs", 0.3, {"pairs": "head>tail,tail>head,mid>low"}),
                                ("symmetric", 0.4, {"sampling": "bernoulli"})):
        pred = predict_precision(coco, kind, rate, **options)["per_class"]
        realised = [_realised(inject(coco, kind, rate, seed, **options)[0]) for seed in range(4)]
        for c in counts:
            mean = np.mean([r[c] for r in realised])
            p, n = pred[c]["precision"], pred[c]["expected_n"]
            # four files' mean within 4 binomial standard deviations of the predicted share
            assert abs(mean - p) < 4 * math.sqrt(p * (1 - p) / (4 * n)) + 1e-9, (kind, c, mean, p)


def test_prediction_of_a_matrix_with_a_diagonal_and_of_crowd_and_untargeted_labels(make):
    coco = make({"a": 100, "b": 50, "c": 10}, crowd_every=10)  # ids 10, 20, ... are crowd: never changed
    matrix = {"classes": ["a", "b"], "matrix": [[0.5, 0.5], [0.2, 0.8]]}
    pred = predict_precision(coco, "matrix", 1.0, matrix=matrix)["per_class"]
    anns = coco["annotations"]
    n = {k: sum(1 for a in anns if a["category_id"] == k and not a["iscrowd"]) for k in (1, 2, 3)}
    crowd = {k: sum(1 for a in anns if a["category_id"] == k and a["iscrowd"]) for k in (1, 2, 3)}
    m_a, m_b = math.floor(0.5 * n[1] + 0.5), math.floor(0.2 * n[2] + 0.5)  # exact: round(rate * (1 - T_cc) * n_c)
    assert pred["a"]["precision"] == pytest.approx((n[1] - m_a + crowd[1]) / (n[1] - m_a + crowd[1] + m_b))
    assert pred["b"]["precision"] == pytest.approx((n[2] - m_b + crowd[2]) / (n[2] - m_b + crowd[2] + m_a))
    assert pred["c"]["precision"] == 1.0 and pred["c"]["expected_n"] == 10


def test_prediction_on_a_noisy_file_counts_right_against_the_clean_class(make):
    coco = make({"a": 300, "b": 300})
    noisy, _ = inject(coco, "pairs", 0.5, 0, pairs="a>b")  # b now holds 150 a's: precision 300 / 450
    pred = predict_precision(noisy, "symmetric", 0.0)["per_class"]
    assert pred["b"]["precision"] == pytest.approx(300 / 450) and pred["a"]["precision"] == 1.0
    # then everything labelled b moves to a: a holds its 150 a's and b's 300 b's and 150 a's, 300 of 600 right
    layered = predict_precision(noisy, "pairs", 1.0, pairs="b>a")["per_class"]
    assert layered["a"]["precision"] == pytest.approx(300 / 600) and layered["a"]["expected_n"] == pytest.approx(600)


def test_the_report_and_stats_give_the_realised_precision(make):
    coco = make({"a": 400, "b": 100, "c": 20})
    noisy, report = inject(coco, "symmetric", 0.4, 3)
    direct = _realised(noisy)
    assert {k: v["precision"] for k, v in report["label_precision"].items()} == pytest.approx(direct)
    assert noisy["info"]["noise"]["label_precision"] == report["label_precision"]
    stats = noise_stats(noisy)["precision"]
    assert {k: v["precision"] for k, v in stats.items()} == pytest.approx(direct)
    labelled_c = sum(a["category_id"] == 3 for a in noisy["annotations"])
    assert stats["c"]["n"] == report["label_precision"]["c"]["n"] == labelled_c


def test_bad_options_are_one_line(make):
    coco = make({"a": 10, "b": 10})
    with pytest.raises(NoisysegError, match="rate must be a number in"):
        predict_precision(coco, "symmetric", 1.5)
    with pytest.raises(NoisysegError, match="unknown noise kind"):
        predict_precision(coco, "bogus", 0.4)


def test_cli_predict_and_stats_print_each_class_lowest_first(make, tmp_path, capsys):
    from noisyseg.cli import main

    src = tmp_path / "cs.json"
    src.write_text(json.dumps(_lean(CITYSCAPES)))
    assert main(["noise", "--predict", str(src), "--kind", "symmetric", "--rate", "0.4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{src}: expected label precision after symmetric noise at rate 0.4, exact")
    assert lines[1].split() == ["train:", "3.3%", "of", "its", "3,069", "labels", "right"]  # 101 + 20776 / 7
    assert [ln.split(":")[0].strip() for ln in lines[1:]] == ["train", "bus", "truck", "motorcycle", "rider",
                                                             "bicycle", "person", "car"]
    assert not list(tmp_path.glob("*.json"))[1:]  # --predict writes nothing

    out = tmp_path / "n.json"
    assert main(["noise", str(src), "-o", str(out), "--rate", "0.4", "--seed", "1"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[1].startswith("lowest label precision: train ")
    assert main(["noise", "--stats", str(out)]) == 0
    text = capsys.readouterr().out
    realised = json.loads(out.read_text())["info"]["noise"]["label_precision"]["train"]
    assert f"  train:{' ' * 6}{realised['precision']:6.1%} of its {realised['n']:,} labels right" in text

    for args, message in ((["--predict", str(src)], "needs --rate R"),
                          (["--predict", str(src), "--rate", "0.4", "-o", str(tmp_path / "x.json")],
                           "--predict FILE takes no other input or output"),
                          (["--predict", str(tmp_path / "none.json"), "--rate", "0.4"],
                           "none.json: COCO annotation file not found")):
        assert main(["noise"] + args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err
