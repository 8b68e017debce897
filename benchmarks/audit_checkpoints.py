"""Which trained model finds the wrong labels best: the audit's figures against the truth, per checkpoint.

Reads a bench folder (``noisyseg bench ... -o DIR``) whose noisy training files carry ``clean_category_id``
and whose runs kept their checkpoints (``DIR/runs/METHOD/NOISE/seedS/checkpoints/*.pt``). For every method,
seed and checkpoint choice it audits the cell's own training file in memory (nothing is written) and prints
AUROC, average precision, precision at recall 0.8, the flagged set's precision and recall and how often the
suggested class is the true one on the truly wrong annotations, then the mean and spread over seeds.

A checkpoint choice is one name (``last``, ``ce_stage_end``) or several joined by ``+`` (their class
probabilities are averaged, as ``noisyseg audit --checkpoint a --checkpoint b`` does).

    .venv/bin/python benchmarks/audit_checkpoints.py benchmarks/results/fashion --noise sym0.4 \\
        --methods lncis,ce --seeds 0,1,2 --checkpoints ce_stage_end,last,ce_stage_end+last
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

FIELDS = [("auroc", "AUROC"), ("average_precision", "AP"), ("precision_at_recall_0.8", "P@R0.8"),
          ("flagged_precision", "flag P"), ("flagged_recall", "flag R"),
          ("suggestion_accuracy_wrong", "sugg. acc")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bench_dir", type=Path)
    p.add_argument("--noise", default="sym0.4")
    p.add_argument("--methods", default="lncis,ce")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--checkpoints", default="ce_stage_end,last,ce_stage_end+last")
    p.add_argument("--filter-by", default="prune_by_noise_rate")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()

    import torch

    from noisyseg.audit import audit

    torch.set_num_threads(a.threads)
    seeds = [int(s) for s in a.seeds.split(",")]
    print(f"bench {a.bench_dir}, noise {a.noise}, seeds {seeds}, filter_by {a.filter_by}, "
          f"{a.threads} thread(s)")
    print("| method | checkpoint | " + " | ".join(h for _, h in FIELDS) + " |")
    print("|---|---|" + "---|" * len(FIELDS))
    for method in a.methods.split(","):
        for choice in a.checkpoints.split(","):
            per_seed: list[dict] = []
            for seed in seeds:
                run = a.bench_dir / "runs" / method / a.noise / f"seed{seed}"
                data = a.bench_dir / "noisy" / f"{a.noise}_seed{seed}.json"
                names = choice.split("+")
                missing = [n for n in names if not (run / "checkpoints" / f"{n}.pt").is_file()]
                if missing or not data.is_file():
                    print(f"  (skipped {method} seed {seed} {choice}: missing {missing or data})")
                    continue
                result = audit(run, data, checkpoints=names, out_dir=None, device="cpu",
                               filter_by=a.filter_by, progress=False)
                per_seed.append(result.summary["truth"])
            if not per_seed:
                continue
            cells = []
            for key, _ in FIELDS:
                values = [t[key] for t in per_seed]
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                cells.append(f"{statistics.mean(values):.3f} ± {spread:.3f} ("
                             + " / ".join(f"{v:.3f}" for v in values) + ")")
            print(f"| {method} | {choice} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
