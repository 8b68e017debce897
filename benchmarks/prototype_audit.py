"""Would a prototype (feature-distance) audit find the rare classes' wrong labels where the model's
probabilities cannot? Issue 22, item 5: the RoLT direction (Wei et al. 2021, arXiv 2108.11569), measured
on the long-tailed bench's CE models before anything is built on it.

RoLT's argument: the small-loss rule (a label is suspect when the model gives it a low probability) fails on
tail classes, because a model under class imbalance puts the tail's own images in the head classes, so a
tail class's right labels score as low as its wrong ones. It detects noise instead by each example's
distance, in the model's feature space, to its label's class prototype, split per class by a two-component
Gaussian mixture (a per-class threshold, so a rare class is not judged by the frequent classes' scale).

For each model of ``--models RUN:CHECKPOINT,...`` (default ``ce:last``, the CE run's final model;
``lncis:ce_stage_end`` is the same training stopped at the switch, epoch 12) and each seed (``runs/<RUN>/<setting>/
seed<S>/checkpoints/<CHECKPOINT>.pt``, trained on ``noisy/<setting>_seed<S>.json``), every training annotation is scored with its true box as the proposal, as ``audit`` does, and the RoI box head's
feature (the input of the class predictor) is kept. Scores of "this label is right", per annotation i with
given label y:

- ``p[y]``: the model's probability of its label (cleanlab's self-confidence, the default audit);
- ``r[y]``: the posterior that the label is right, ``r[c] ~ p[c] T[c, y]`` with the file's known noise
  matrix T (the audit's ``noise_posterior``);
- ``proto``: the cosine similarity of the feature to the mean (L2-normalised) feature of the annotations
  labelled y (RoLT's prototype);
- ``wproto``: the same to a prototype weighted by the model's probabilities, ``sum_i p_i[y] f_i`` over every
  annotation (DaSC, 2407.16802: a centroid that a class's wrong labels pull less).

The tables give, per class (most frequent first, by the clean training counts), summed over the seeds: the
labels carrying the class and the share right, the AUROC of each score for right vs wrong among them (0.5 =
chance), and the share of right labels each rule keeps and of wrong ones it removes: ``r[y] >= 0.5`` (the
noise-aware audit's flag rule), RoLT's per-class mixture on ``1 - proto``, and a per-class flag budget (the
prior-aware audit's other form: each class flags as many of its labels, lowest r[y] first, as T and the class
prior say are wrong, ``1 - prior[k] T[k, k] / sum_c prior[c] T[c, k]``). Nothing is written except
``-o``.

    .venv/bin/python benchmarks/prototype_audit.py benchmarks/results/fashion_lt --setting sym0.4 \\
        --models ce:last,lncis:ce_stage_end -o benchmarks/results/fashion_lt/prototype_audit_sym0.4.md
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lt_classes import bench_parser, class_counts


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--models", default="ce:last", help="comma-separated RUN:CHECKPOINT (default ce:last)")
    parser.add_argument("-o", "--out", help="also write the tables to this markdown file (must not exist)")
    args = parser.parse_args()
    if args.out and Path(args.out).exists():
        raise SystemExit(f"{args.out}: exists; choose another -o")
    bench = Path(args.bench)
    texts = []
    for spec in args.models.split(","):
        run_name, checkpoint = spec.split(":")
        per_seed = []
        for seed in (int(s) for s in args.seeds.split(",")):
            noisy = bench / "noisy" / f"{args.setting}_seed{seed}.json"
            run = bench / "runs" / run_name / args.setting / f"seed{seed}"
            per_seed.append(seed_scores(run / "checkpoints" / f"{checkpoint}.pt", noisy))
            print(f"[prototype_audit] {spec}, seed {seed}: {len(per_seed[-1]['given'])} annotations scored",
                  flush=True)
        names = per_seed[0]["names"]
        texts.append(tables(per_seed, names, class_counts(args.train_json, names),
                            f"{spec} on {args.setting}, seeds {args.seeds}"))
        print(texts[-1])
    if args.out:
        Path(args.out).write_text(f"<!-- made by: python benchmarks/prototype_audit.py {args.bench} --setting "
                                  f"{args.setting} --seeds {args.seeds} --models {args.models} -o {args.out} -->\n\n"
                                  + "\n".join(texts))


def seed_scores(checkpoint: Path, noisy: Path) -> dict:
    """Given and clean labels, class probabilities, box-head features and the four scores of every
    annotation of ``noisy`` under ``checkpoint``."""
    import torch

    from noisyseg.audit.flat import as_audit_data
    from noisyseg.audit.score import score_annotations
    from noisyseg.engine import predict
    from noisyseg.losses.transition import transition_matrix, true_class_posterior, true_class_prior

    coco = json.loads(noisy.read_text())
    captured: list[torch.Tensor] = []
    loaded = predict.load_trained_model

    def load_with_hook(*a, **kw):  # keep the box head's output of every scoring batch, in batch order
        model, cfg, label_map = loaded(*a, **kw)
        model.roi_heads.box_head.register_forward_hook(lambda _m, _i, out: captured.append(out.detach().cpu()))
        return model, cfg, label_map

    predict.load_trained_model = load_with_hook
    try:
        scores = score_annotations([checkpoint], coco, noisy, progress=False)
    finally:
        predict.load_trained_model = loaded
    data = as_audit_data(coco, noisy)
    rows = np.argsort(data.ann_image, kind="stable")  # the order score_annotations feeds annotations in
    features = np.empty((len(rows), captured[0].shape[1]), dtype=np.float64)
    features[rows] = torch.cat(captured).numpy()
    features /= np.linalg.norm(features, axis=1, keepdims=True).clip(1e-12)

    given, clean, probs = scores.given_labels, scores.clean_labels, scores.pred_probs
    k = probs.shape[1]
    idx = np.arange(len(given))
    matrix = transition_matrix("data", noisy, scores.label_map.names, coco=coco)
    prior = true_class_prior("data", noisy, scores.label_map.names, matrix, coco)
    label_share = prior @ matrix  # P(label k), and P(label k is right) = prior[k] T[k, k] / label_share[k]
    wrong_share = 1.0 - np.divide(prior * np.diag(matrix), label_share, out=np.ones(k), where=label_share > 0)
    plain = np.stack([features[given == c].mean(axis=0) if (given == c).any() else np.zeros(features.shape[1])
                      for c in range(k)])
    weighted = probs.T @ features  # (K, D): every annotation, weighted by the model's p[k]
    return {"names": list(scores.label_map.names), "given": given, "clean": clean,
            "p": probs[idx, given], "r": true_class_posterior(probs, given, matrix)[idx, given],
            "proto": cosine(features, plain[given]), "wproto": cosine(features, weighted[given]),
            "wrong_share": wrong_share}


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)).clip(1e-12)


def mixture_keeps(distance: np.ndarray, seed: int = 0) -> np.ndarray:
    """RoLT's per-class split: a two-component 1-D Gaussian mixture on a class's distances; an annotation is
    kept (judged right) when the component of the smaller mean is the more probable. Fewer than 4 labels:
    all kept."""
    from sklearn.mixture import GaussianMixture

    if len(distance) < 4:
        return np.ones(len(distance), bool)
    gmm = GaussianMixture(2, random_state=seed, reg_covar=1e-6).fit(distance[:, None])
    near = int(np.argmin(gmm.means_.ravel()))
    return gmm.predict_proba(distance[:, None])[:, near] > 0.5


def tables(per_seed: list[dict], names: list[str], clean_counts: np.ndarray, title: str) -> str:
    from noisyseg.audit.issues import auroc

    for s in per_seed:  # the per-class mixture is fitted per seed (each seed is its own audit)
        s["rolt"] = np.zeros(len(s["given"]), bool)
        s["budget"] = np.ones(len(s["given"]), bool)
        for c in range(len(names)):
            mine = np.flatnonzero(s["given"] == c)
            s["rolt"][mine] = mixture_keeps(1.0 - s["proto"][mine])
            # the per-class budget: as many flags as the class's labels are expected to be wrong, lowest r first
            flagged = mine[np.argsort(s["r"][mine], kind="stable")[:int(round(s["wrong_share"][c] * len(mine)))]]
            s["budget"][flagged] = False
    cat = {key: np.concatenate([s[key] for s in per_seed]) for key in ("given", "clean", "p", "r", "proto",
                                                                        "wproto", "rolt", "budget")}
    right = cat["given"] == cat["clean"]
    kept = {"r >= 0.5": cat["r"] >= 0.5, "RoLT mixture": cat["rolt"], "budget": cat["budget"]}
    lines = [f"## Finding wrong labels per class: {title}", "",
             f"{len(right)} labels, {right.mean():.0%} right. AUROC: each score separating the class's right labels "
             "from its wrong ones (0.5 = chance). Kept: share of right labels a rule keeps / share of wrong labels "
             "it removes.", "",
             "| class (clean count) | labels | right | AUROC p[y] | AUROC r[y] | AUROC proto | AUROC wproto | "
             "r >= 0.5: right kept / wrong removed | RoLT mixture: right kept / wrong removed | "
             "per-class budget on r: right kept / wrong removed |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in np.argsort(-clean_counts, kind="stable"):
        mine = cat["given"] == c
        ok = right[mine]
        cells = [f"{names[c]} ({int(clean_counts[c])})", str(int(mine.sum())), f"{ok.mean():.0%}"]
        cells += [_number(auroc(cat[key][mine], ok)) for key in ("p", "r", "proto", "wproto")]
        cells += [f"{_share(keep[mine][ok])} / {_share(~keep[mine][~ok])}" for keep in kept.values()]
        lines.append("| " + " | ".join(cells) + " |")
    overall = [f"{auroc(cat[key], right):.3f}" for key in ("p", "r", "proto", "wproto")]
    overall += [f"{_share(keep[right])} / {_share(~keep[~right])}" for keep in kept.values()]
    lines.append(f"| all (pooled) | {len(right)} | {right.mean():.0%} | " + " | ".join(overall) + " |")
    per_class = {key: np.nanmean([auroc(cat[key][cat["given"] == c], right[cat["given"] == c])
                                  for c in range(len(names))]) for key in ("p", "r", "proto", "wproto")}
    lines.append("| mean over classes with both | | | " + " | ".join(_number(v) for v in per_class.values())
                 + " | | | |")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    """An AUROC, or "–" where the class has only right (or only wrong) labels."""
    return "–" if np.isnan(value) else f"{value:.3f}"


def _share(flags: np.ndarray) -> str:
    return f"{flags.mean():.0%}" if len(flags) else "–"


if __name__ == "__main__":
    main()
