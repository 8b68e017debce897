"""How a training file's wrong labels are arranged, before and after an audit's repair.

For COCO files that record the truth (``clean_category_id``, as ``noisyseg noise`` writes it) this prints,
per file: label accuracy (over the annotations that keep a class label: ``class_ignored`` ones are
counted apart), the number of wrong labels, how many of them the largest three (true -> given)
confusions hold, and per class the share of its true instances that carry its own label next to the
largest share carried by another single class. A class whose own share falls below another's has lost
its majority: a model fitting that file learns the other name for it, which hurts far more than the same
number of errors spread over all classes (uniform noise keeps every class's majority up to rate 0.9 with
10 classes). With a repaired file (``--fixed``) it also counts the labels the repair made wrong.

    .venv/bin/python benchmarks/label_noise_structure.py benchmarks/results/fashion/noisy/sym0.4_seed0.json \\
        --fixed benchmarks/results/fashion/fixed/lncis+fix_action=relabel/sym0.4_seed0.json
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path


def describe(path: Path, reference: dict[int, int] | None = None) -> None:
    data = json.loads(path.read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    scored = [a for a in data["annotations"] if not a.get("iscrowd", 0)]
    anns = [a for a in scored if not a.get("class_ignored", False)]  # ignored: no class label to be wrong
    wrong = [a for a in anns if a["category_id"] != a["clean_category_id"]]
    pairs = collections.Counter((a["clean_category_id"], a["category_id"]) for a in wrong)
    top3 = sum(n for _, n in pairs.most_common(3))
    line = (f"{path}: label accuracy {1 - len(wrong) / len(anns):.3f}, {len(wrong)} of {len(anns)} wrong, "
            f"{len(scored) - len(anns)} class-ignored, {top3} ({top3 / max(len(wrong), 1):.0%}) in the largest three confusions: "
            + ", ".join(f"{names[t]} -> {names[g]} {n}" for (t, g), n in pairs.most_common(3)))
    if reference is not None:
        made_wrong = sum(1 for a in wrong if reference[a["id"]] == a["clean_category_id"])
        line += f"; {made_wrong} labels made wrong by the repair"
    print(line)
    by_truth: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    for a in anns:
        by_truth[a["clean_category_id"]][a["category_id"]] += 1
    lost = []
    for cid in sorted(by_truth):
        given = by_truth[cid]
        total = sum(given.values())
        own = given.get(cid, 0) / total
        other_id, other_n = max(((g, n) for g, n in given.items() if g != cid), key=lambda t: t[1], default=(None, 0))
        other = other_n / total
        mark = "  <- majority lost" if other >= own else ""
        if other >= own:
            lost.append(names[cid])
        other_name = names[other_id] if other_id is not None else "-"
        print(f"    {names[cid]:<12} own label {own:.2f}, largest other ({other_name}) {other:.2f}{mark}")
    print(f"    classes whose majority is lost: {len(lost)} ({', '.join(lost) or 'none'})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("noisy", type=Path, help="the noisy training file (with clean_category_id)")
    p.add_argument("--fixed", type=Path, nargs="*", default=[], help="repaired files made from it")
    a = p.parse_args()
    describe(a.noisy)
    given = {x["id"]: x["category_id"] for x in json.loads(a.noisy.read_text())["annotations"]}
    for fixed in a.fixed:
        describe(fixed, reference=given)


if __name__ == "__main__":
    main()
