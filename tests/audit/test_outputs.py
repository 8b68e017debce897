"""Where ``noisyseg audit`` writes: checked against its inputs and the files it did not make before it
scores, one audit at a time per folder, and its device and worker options refused in one line."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from noisyseg.cli import main


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def no_scoring(monkeypatch):
    """Scoring fails the test: every refusal below must come before the model is run."""
    import noisyseg.audit.score as score

    def fail(*args, **kwargs):
        raise AssertionError("the audit scored before refusing")

    monkeypatch.setattr(score, "score_annotations", fail)


def _base(tiny_data, run):
    return ["audit", run, "--data", tiny_data["noisy_json"], "--image-root", tiny_data["image_root"], "--no-progress"]


def test_fix_onto_an_input_is_refused_before_scoring(tiny_data, untrained_run, tmp_path, capsys, no_scoring):
    last = untrained_run / "checkpoints" / "last.pt"
    config = untrained_run / "config.yaml"
    config.write_text("# the run's config\n")
    before = {p: p.read_bytes() for p in (last, config, Path(tiny_data["noisy_json"]))}
    out = tmp_path / "o"
    for target, what in ((last, "checkpoint"), (config, "run's config")):
        code, _, err = _run(_base(tiny_data, untrained_run) + ["-o", out, "--fix", target, "--action", "relabel"],
                            capsys)
        assert code == 2
        assert err == f"noisyseg audit: error: {target}: --fix would write over the {what} ({target}); choose another path\n"
    # a hard link to the data file is the data file
    link = tmp_path / "link.json"
    os.link(tiny_data["noisy_json"], link)
    code, _, err = _run(_base(tiny_data, untrained_run) + ["--fix", link, "--action", "drop"], capsys)
    assert code == 2 and "--fix would write over the audited data file" in err
    # an output folder whose files would be the inputs
    code, _, err = _run(["audit", last, "--data", tmp_path / "o2" / "summary.json", "-o", tmp_path / "o2",
                         "--no-progress"], capsys)
    assert code == 2 and "-o would write over the audited data file" in err
    assert {p: p.read_bytes() for p in before} == before
    assert not out.exists() and not (tmp_path / "o2").exists()


def test_files_an_audit_did_not_write_are_never_replaced(tiny_data, untrained_run, tmp_path, capsys, no_scoring):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "summary.md").write_text("my notes")
    code, _, err = _run(_base(tiny_data, untrained_run) + ["-o", out], capsys)
    assert code == 2
    assert err == (f"noisyseg audit: error: {out / 'summary.md'}: exists and was not written by noisyseg audit; "
                   "remove it or choose another -o folder\n")
    (out / "summary.md").unlink()
    (out / "review_files").mkdir()
    (out / "review_files" / "holiday.jpg").write_bytes(b"jpeg")
    code, _, err = _run(_base(tiny_data, untrained_run) + ["-o", out], capsys)
    assert code == 2 and err.startswith(f"noisyseg audit: error: {out / 'review_files' / 'holiday.jpg'}: a file "
                                        "noisyseg audit did not write is in its page folder")
    theirs = tmp_path / "theirs.json"
    theirs.write_text('{"info": {}}')
    code, _, err = _run(_base(tiny_data, untrained_run) + ["--fix", theirs, "--action", "drop"], capsys)
    assert code == 2 and err == (f"noisyseg audit: error: {theirs}: --fix would replace an existing file that no "
                                 "audit wrote; remove it or choose another path\n")
    assert theirs.read_text() == '{"info": {}}' and (out / "review_files" / "holiday.jpg").read_bytes() == b"jpeg"
    assert sorted(p.name for p in out.iterdir()) == ["review_files"]


def test_a_second_audit_replaces_only_the_first_ones_files(tiny_data, untrained_run, tmp_path, capsys):
    out = tmp_path / "a"
    fixed = tmp_path / "fixed.json"
    args = _base(tiny_data, untrained_run) + ["-o", out, "--top", 30, "--fix", fixed, "--action", "ignore"]
    assert _run(args + ["--sheet", 4], capsys)[0] == 0
    (out / "notes.txt").write_text("mine")
    assert (out / "contact_sheet.png").is_file() and (out / "review_files" / "sheet_00000.jpg").is_file()
    code, _, err = _run(_base(tiny_data, untrained_run) + ["-o", out, "--top", 3, "--sheet", 0, "--fix", fixed,
                                                           "--action", "drop"], capsys)
    assert code == 0, err
    # the first audit's contact sheet is gone, the user's file stays
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "audit_manifest.json", "label_issues.csv", "label_issues.json", "noise_matrix.json", "notes.txt", "review.html",
        "review_files",
        "review_files/sheet_00000.jpg", "summary.json", "summary.md"]
    assert json.loads(fixed.read_text())["info"]["audit"]["action"] == "drop"


def test_an_audit_folder_from_before_manifests_is_recognised(tiny_data, untrained_run, tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    (out / "summary.json").write_text(json.dumps({"n_annotations": 3, "n_flagged": 1, "rule": "cleanlab"}))
    (out / "review.html").write_text("<html>old</html>")
    code, _, err = _run(_base(tiny_data, untrained_run) + ["-o", out, "--sheet", 0], capsys)
    assert code == 0, err
    assert (out / "review.html").read_text().startswith("<!DOCTYPE html>")


def test_one_audit_at_a_time_writes_a_folder(tiny_data, untrained_run, tmp_path, capsys, no_scoring):
    out = tmp_path / "busy"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)  # another audit holds the folder
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, _, err = _run(_base(tiny_data, untrained_run) + ["-o", out], capsys)
    finally:
        os.close(fd)
    assert code == 2
    assert err == (f"noisyseg audit: error: {out}: another noisyseg audit is writing this folder now; wait for it "
                   "to end or choose another output folder\n")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("option, line", [
    (["--device", "tpu"], "--device=tpu: unknown device; expected auto, cpu, cuda or cuda:N"),
    (["--device", "gpu0"], "--device=gpu0: unknown device; expected auto, cpu, cuda or cuda:N"),
    (["--workers", "-1"], "--workers -1: expected a whole number >= 0"),
    (["--batch-size", "0"], "--batch-size 0: expected a whole number >= 1"),
    (["--top", "-2"], "--top -2: expected a whole number >= 0"),
])
def test_bad_options_are_one_line_before_anything(tiny_data, untrained_run, tmp_path, capsys, no_scoring, option,
                                                  line):
    code, out, err = _run(_base(tiny_data, untrained_run) + ["-o", tmp_path / "o"] + option, capsys)
    assert (code, out, err) == (2, "", f"noisyseg audit: error: {line}\n")
    assert not (tmp_path / "o").exists()


def test_a_gpu_the_machine_lacks_is_one_line(tiny_data, untrained_run, tmp_path, capsys, no_scoring):
    code, _, err = _run(_base(tiny_data, untrained_run) + ["-o", tmp_path / "o", "--device", "cuda:99"], capsys)
    assert code == 2
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        assert err == (f"noisyseg audit: error: --device=cuda:99: GPU 99 asked for, this machine has {n} "
                       f"(cuda:0..cuda:{n - 1})\n")
    else:
        assert err == ("noisyseg audit: error: --device=cuda:99: CUDA is not available on this machine; "
                       "use cpu or auto\n")


def test_a_checkpoint_given_as_a_file_protects_its_runs_config(tiny_data, untrained_run, tmp_path, capsys,
                                                                no_scoring):
    config = untrained_run / "config.yaml"
    config.write_text("# the run's config\n")
    last = untrained_run / "checkpoints" / "last.pt"
    code, _, err = _run(["audit", last, "--data", tiny_data["noisy_json"], "--no-progress", "-o", tmp_path / "o",
                         "--fix", config, "--action", "relabel"], capsys)
    assert (code, err) == (2, f"noisyseg audit: error: {config}: --fix would write over the run's config "
                              f"({config}); choose another path\n")
    assert config.read_text() == "# the run's config\n"


def test_fix_onto_the_audits_own_outputs_is_refused(tiny_data, untrained_run, tmp_path, capsys, no_scoring):
    out = tmp_path / "o"
    for target, line in (
            (out / "summary.json", f"{out / 'summary.json'}: --fix would write over the audit's summary.json "
                                   f"({out / 'summary.json'}); choose another path"),
            (out / "review_files" / "f.json", f"{out / 'review_files' / 'f.json'}: --fix inside the audit's own "
                                              f"page folder {out / 'review_files'}; choose another path")):
        code, _, err = _run(_base(tiny_data, untrained_run) + ["-o", out, "--fix", target, "--action", "drop"], capsys)
        assert (code, err) == (2, f"noisyseg audit: error: {line}\n")
    assert not out.exists()


def test_noise_posterior_through_the_cli_uses_the_file_s_matrix_and_checks_it_before_scoring(
        tiny_data, untrained_run, tmp_path, capsys):
    from noisyseg.audit.issues import find_issues
    from noisyseg.audit.score import score_annotations
    from noisyseg.losses.transition import transition_matrix

    out = tmp_path / "a"
    code, _, err = _run(_base(tiny_data, untrained_run) + ["-o", out, "--sheet", 0, "--filter-by", "noise_posterior"],
                        capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rule"].startswith("noise_posterior")
    coco = json.loads(Path(tiny_data["noisy_json"]).read_text())
    scores = score_annotations([untrained_run / "checkpoints" / "last.pt"], coco, tiny_data["noisy_json"],
                               image_root=tiny_data["image_root"], progress=False)
    want = find_issues(scores, "noise_posterior",
                       transition_matrix("data", tiny_data["noisy_json"], scores.label_map.names))
    assert summary["n_flagged"] == int(want.is_issue.sum())
    rows = json.loads((out / "label_issues.json").read_text())["annotations"]
    by_id = {int(r["annotation_id"]): r for r in rows}
    for i, ann_id in enumerate(scores.annotation_ids.tolist()):
        assert float(by_id[ann_id]["label_quality"]) == pytest.approx(want.label_quality[i], abs=1e-6)


@pytest.mark.parametrize("rule, how", [("noise_budget_learned", "flagged by r[given] < 0.5"),
                                       ("noise_budget_trusted", "not flagged")])
def test_the_sparing_budget_rules_through_the_cli_name_the_classes_they_spare(
        tiny_data, untrained_run, tmp_path, capsys, rule, how):
    from noisyseg.audit.score import score_annotations

    out = tmp_path / "a"
    code, printed, err = _run(_base(tiny_data, untrained_run) + ["-o", out, "--sheet", 0, "--filter-by", rule],
                              capsys)
    assert code == 0, err
    coco = json.loads(Path(tiny_data["noisy_json"]).read_text())
    scores = score_annotations([untrained_run / "checkpoints" / "last.pt"], coco, tiny_data["noisy_json"],
                               image_root=tiny_data["image_root"], progress=False)
    given, clean, k = scores.given_labels, scores.clean_labels, scores.label_map.num_classes
    # spared: not learned (its labels' mean p[label] below 1/K); with trusted also a class whose labels come
    # more from another class's objects than from its own (the file's own matrix: the realised pairs)
    pairs = np.zeros((k, k), dtype=int)
    np.add.at(pairs, (clean, given), 1)
    want = [name for c, name in enumerate(scores.label_map.names)
            if ((given == c).any() and scores.pred_probs[given == c, c].mean() < 1 / k)
            or (rule == "noise_budget_trusted" and pairs[c, c] < pairs[:, c].max())]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rule"].startswith(rule + ":") and summary["spared_classes"] == want
    line = f"spared from the count, {how}: {', '.join(want)}"
    assert (line in printed.splitlines()) == bool(want)
    assert f"- classes spared from the count, {how}: {', '.join(want) or 'none'}" in (out / "summary.md").read_text()


def test_transition_estimate_flags_with_the_audit_s_own_confident_joint_on_a_file_without_clean_labels(
        tiny_data, untrained_run, tmp_path, capsys):
    """Real noise: no clean_category_id, so no known matrix; --transition estimate takes T from cleanlab's
    confident joint of the same scores (the matrix written to noise_matrix.json) and flags with it."""
    from cleanlab.count import compute_confident_joint

    from noisyseg.audit.issues import find_issues
    from noisyseg.audit.score import score_annotations

    data = Path(tiny_data["train_json"])
    coco = json.loads(data.read_text())
    assert not any("clean_category_id" in a for a in coco["annotations"])
    out = tmp_path / "a"
    base = _base(tiny_data, untrained_run)
    code, printed, err = _run(base[:3] + [data] + base[4:] + ["-o", out, "--sheet", 0, "--filter-by",
                                                              "noise_budget_learned", "--transition", "estimate"],
                              capsys)
    assert code == 0, err
    assert ("noise matrix T: estimate: cleanlab's calibrated confident joint of this audit's scores "
            "(noise_matrix.json)") in printed.splitlines()
    scores = score_annotations([untrained_run / "checkpoints" / "last.pt"], coco, data,
                               image_root=tiny_data["image_root"], progress=False)
    # T[c, j] = P(given j | true c): the calibrated confident joint (row given, column true) transposed,
    # each row normalised; a class no annotation is estimated to be keeps an identity row
    joint = np.asarray(compute_confident_joint(scores.given_labels, scores.pred_probs, calibrate=True)).T
    k = scores.label_map.num_classes
    totals = joint.sum(axis=1, keepdims=True)
    matrix = np.where(totals > 0, joint / np.where(totals > 0, totals, 1), np.eye(k))
    written = json.loads((out / "noise_matrix.json").read_text())
    assert np.allclose(written["matrix"], matrix)
    want = find_issues(scores, "noise_budget_learned", matrix)
    rows = json.loads((out / "label_issues.json").read_text())["annotations"]
    flagged = {int(r["annotation_id"]) for r in rows if r["is_issue"]}
    assert flagged == set(scores.annotation_ids[want.is_issue].tolist())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["transition"].startswith("estimate: cleanlab's calibrated confident joint")
    assert f"- noise matrix T: {summary['transition']}" in (out / "summary.md").read_text()


def test_transition_uniform_flags_with_one_rate_from_the_confident_joint_and_says_so(
        tiny_data, untrained_run, tmp_path, capsys):
    """--transition uniform on a file without clean labels: T = 1 - eps on the diagonal, eps / (K - 1) off
    it, eps the confident joint's off-diagonal share; the flags are the noise posterior's under that matrix,
    and the printed line and summary.json name the rate."""
    from cleanlab.count import compute_confident_joint

    from noisyseg.audit.issues import find_issues
    from noisyseg.audit.score import score_annotations

    data = Path(tiny_data["train_json"])
    out = tmp_path / "a"
    base = _base(tiny_data, untrained_run)
    code, printed, err = _run(base[:3] + [data] + base[4:] + ["-o", out, "--sheet", 0, "--filter-by",
                                                              "noise_posterior", "--transition", "uniform"], capsys)
    assert code == 0, err
    scores = score_annotations([untrained_run / "checkpoints" / "last.pt"], json.loads(data.read_text()), data,
                               image_root=tiny_data["image_root"], progress=False)
    joint = np.asarray(compute_confident_joint(scores.given_labels, scores.pred_probs, calibrate=True))
    eps = 1.0 - np.trace(joint) / joint.sum()
    k = scores.label_map.num_classes
    matrix = np.full((k, k), eps / (k - 1)) + np.eye(k) * (1.0 - eps - eps / (k - 1))
    line = (f"noise matrix T: uniform: one noise rate, {eps:.3f}, the confident joint's off-diagonal share, "
            "spread evenly over the other classes")
    assert line in printed.splitlines()
    want = find_issues(scores, "noise_posterior", matrix)
    rows = json.loads((out / "label_issues.json").read_text())["annotations"]
    assert {int(r["annotation_id"]) for r in rows if r["is_issue"]} == set(
        scores.annotation_ids[want.is_issue].tolist())
    assert json.loads((out / "summary.json").read_text())["transition"] == line.removeprefix("noise matrix T: ")


def test_noise_posterior_reads_the_audited_file_once(tiny_data, untrained_run, tmp_path, capsys, monkeypatch):
    """The noise matrix comes from the json the audit parsed anyway (a COCO-sized file is 2.7 GB of it):
    the reader the matrix would use on its own is never called, and the flags are those of the matrix
    read on its own."""
    import noisyseg.losses.transition as transition

    from noisyseg.data.coco import LabelMap

    names = LabelMap.from_categories(json.loads(Path(tiny_data["noisy_json"]).read_text())["categories"]).names
    want = transition.transition_matrix("data", tiny_data["noisy_json"], names)

    def no_second_read(*args, **kwargs):
        raise AssertionError("the audited file was read a second time")

    monkeypatch.setattr(transition, "read_json", no_second_read)
    got = {}
    real = transition.transition_matrix
    monkeypatch.setattr(transition, "transition_matrix", lambda *a, **k: got.setdefault("m", real(*a, **k)))
    code, _, err = _run(_base(tiny_data, untrained_run) + ["-o", tmp_path / "a", "--sheet", 0, "--filter-by",
                                                           "noise_posterior"], capsys)
    assert code == 0, err
    assert got["m"].tolist() == want.tolist() and got["m"].shape == (len(names), len(names))


def test_noise_posterior_refusals_come_before_scoring(tiny_data, untrained_run, tmp_path, capsys, no_scoring):
    base = _base(tiny_data, untrained_run) + ["-o", tmp_path / "a", "--sheet", 0]
    code, _, err = _run(base + ["--transition", "data"], capsys)
    assert code == 2 and err == ("noisyseg audit: error: --transition is used only with --filter-by noise_posterior, "
                                 "noise_budget, noise_budget_learned, noise_budget_trusted\n")
    code, _, err = _run(_base(tiny_data, untrained_run)[:3] + [tiny_data["train_json"]]
                        + _base(tiny_data, untrained_run)[4:] + ["-o", tmp_path / "b", "--sheet", 0,
                                                                 "--filter-by", "noise_posterior"], capsys)
    assert code == 2 and "transition=data needs the file's clean_category_id" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "a").exists() and not (tmp_path / "b" / "summary.json").exists()
