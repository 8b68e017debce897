"""How fast the audit's review page opens and how much disk it takes, at 10,000 suspects (and at 10).

No training: the audit's scores are made up. Fashion scenes are generated (``noisyseg data fashion
--source bundled``, enough scenes for ``--annotations`` annotations, default 2.5 x ``--suspects`` so that
about as many are flagged as are wrong), 40% of the labels flipped
(``noisyseg.noise.inject``), and each annotation gets class probabilities peaked on its clean class (on a
random class for one in five), as a model that mostly learned the classes would give. The ``--suspects``
lowest-quality annotations are flagged. The page is then written exactly as ``noisyseg audit`` writes it
(:func:`noisyseg.audit.review.review_files` + :func:`noisyseg.audit.outputs.write_folder`) and opened in
headless Chromium (Debian's /usr/bin/chromium through Playwright), a fresh profile each time.

Printed: the time to write the page, the load time (navigation start to the first screen's crops decoded,
the page's own ``reviewReadyMs``, median of ``--repeats``; and the wall time of ``goto`` until then), the
time a filter takes (given class chosen until the screen is drawn, in the page), the size of the page files and crops (bytes, and the disk blocks they take). Screenshots at 10 and at
``--suspects`` suspects go to ``--shots`` (PNG, 256 colours).

    .venv/bin/python benchmarks/review_page.py                  # 10,000 suspects
    .venv/bin/python benchmarks/review_page.py --suspects 2000 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def make_data(folder: Path, n_annotations: int) -> tuple[Path, Path, dict]:
    """Fashion scenes with at least ``n_annotations`` annotations, 40% of labels flipped; (data, images, coco)."""
    from noisyseg.noise.inject import inject

    scenes = int(n_annotations / 3.4) + 50  # 3-4 items a scene
    subprocess.run([sys.executable, "-m", "noisyseg", "data", "fashion", "-o", str(folder), "--train", str(scenes),
                    "--val", "1", "--items", "3,4", "--source", "bundled", "--no-progress"], check=True,
                   stdout=subprocess.DEVNULL)
    coco = json.loads((folder / "train.json").read_text())
    noisy, _ = inject(coco, kind="symmetric", rate=0.4, seed=0)
    path = folder / "train_sym40.json"
    path.write_text(json.dumps(noisy))
    return path, folder / "images", noisy


def synthetic_issues(coco: dict, image_root: Path, n_flagged: int, seed: int = 0):
    """A :class:`LabelIssues` for ``coco`` as an audit would return it, with made-up probabilities."""
    from noisyseg.audit.issues import LabelIssues
    from noisyseg.audit.score import AnnotationScores
    from noisyseg.data.coco import LabelMap

    rng = np.random.default_rng(seed)
    lm = LabelMap.from_categories(coco["categories"])
    index = {c: i for i, c in enumerate(lm.category_ids)}
    anns = [a for a in coco["annotations"] if not a.get("iscrowd", 0)]
    n, k = len(anns), lm.num_classes
    given = np.array([index[a["category_id"]] for a in anns])
    clean = np.array([index[a.get("clean_category_id", a["category_id"])] for a in anns])
    peak = np.where(rng.random(n) < 0.8, clean, rng.integers(0, k, n))
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), peak] += rng.uniform(1.5, 5, n)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    scores = AnnotationScores(np.array([a["id"] for a in anns]), np.array([a["image_id"] for a in anns]), given,
                              clean, probs, rng.uniform(0, 0.3, n), lm, [Path("run/checkpoints/last.pt")],
                              image_root, 1.0)
    quality = probs[np.arange(n), given]
    order = np.argsort(quality, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(1, n + 1)
    flagged = rank <= n_flagged
    return LabelIssues(scores, quality, probs.argmax(1), flagged, rank, "low_self_confidence")


def write_page(issues, coco: dict, data: Path, out: Path) -> float:
    """Write review.html and its crops into ``out`` as the audit does; returns the seconds it took."""
    from noisyseg.audit.api import file_sha256
    from noisyseg.audit.issues import summary_data
    from noisyseg.audit.outputs import check_folder_outputs, write_folder
    from noisyseg.audit.review import REVIEW_FILES, review_files

    t0 = time.perf_counter()
    sha = file_sha256(data)
    summary = summary_data(issues, {"data": str(data), "data_sha256": sha})
    before = check_folder_outputs(out, ["review.html"], [REVIEW_FILES], [("data", data)])
    files = review_files(issues, coco, data, out, summary, {"id": f"bench{len(issues.rank)}", "folder": str(out),
                                                           "checkpoints": summary["checkpoints"]}, sha)
    write_folder(out, files, before)
    return time.perf_counter() - t0


def page_size(out: Path) -> tuple[int, int, int]:
    """(files, bytes, bytes of disk blocks) of review.html and review_files/."""
    paths = [out / "review.html", *sorted((out / "review_files").iterdir())]
    stats = [p.stat() for p in paths]
    return len(paths), sum(s.st_size for s in stats), sum(s.st_blocks * 512 for s in stats)


def open_page(page_path: Path, repeats: int, shot: Path | None = None, keys: str = "") -> list[tuple[float, float, float]]:
    """Open the page ``repeats`` times in a fresh headless Chromium profile; (ready ms, wall ms, filter ms)
    each."""
    from playwright.sync_api import sync_playwright

    times = []
    with sync_playwright() as pw:
        for r in range(repeats):
            with tempfile.TemporaryDirectory() as profile:
                ctx = pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                            args=FLAGS, viewport={"width": 1280, "height": 800})
                page = ctx.new_page()
                t0 = time.perf_counter()
                page.goto(page_path.resolve().as_uri())
                page.wait_for_function("document.documentElement.dataset.ready === '1'", timeout=30000)
                wall = (time.perf_counter() - t0) * 1000
                filtering = page.evaluate("""() => { const s = document.getElementById('fgiven'), t = performance.now();
                    s.value = '3'; s.dispatchEvent(new Event('change')); const ms = performance.now() - t;
                    document.getElementById('fclear').click(); return ms; }""")
                times.append((page.evaluate("window.reviewReadyMs"), wall, filtering))
                if shot is not None and r == repeats - 1:
                    page.keyboard.press("Home")  # the filter above left the selection on its first match
                    for key in keys:
                        page.keyboard.press(key)
                    page.wait_for_timeout(300)
                    page.screenshot(path=str(shot))
                ctx.close()
    return times


def small_png(path: Path) -> int:
    """Re-save the screenshot ``path`` with 256 colours (a third of the size, same look); returns bytes."""
    from PIL import Image

    Image.open(path).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path.stat().st_size


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suspects", type=int, default=10_000)
    p.add_argument("--annotations", type=int, help="annotations in the data (default 2.5 x --suspects)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--shots", type=Path, default=ROOT / "benchmarks" / "results" / "review_page")
    p.add_argument("--keep", type=Path, help="write the data and pages here (default: a temporary folder)")
    a = p.parse_args()
    if not os.path.exists(CHROMIUM):
        sys.exit(f"{CHROMIUM} not found: apt-get install chromium")
    a.shots.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = a.keep or Path(tmp)
        t0 = time.perf_counter()
        n_ann = a.annotations or int(2.5 * a.suspects)
        data, images, coco = make_data(work / f"fashion_{n_ann}", n_ann)  # one folder per size: data refuses another set
        n_ann = len(coco["annotations"])
        print(f"data: {n_ann} annotations in {len(coco['images'])} scenes ({time.perf_counter() - t0:.0f} s)")
        for n, keys in ((10, "kr"), (a.suspects, "kr1id")):
            issues = synthetic_issues(coco, images, n)
            out = work / f"audit_{n}"
            seconds = write_page(issues, coco, data, out)
            files, size, disk = page_size(out)
            shot = a.shots / f"review_{n}.png"
            times = open_page(out / "review.html", a.repeats if n == a.suspects else 1, shot, keys)
            ready = statistics.median(t[0] for t in times)
            wall = statistics.median(t[1] for t in times)
            filtering = statistics.median(t[2] for t in times)
            print(f"{n} suspects: page written in {seconds:.1f} s; {files} files, {size / 1e6:.1f} MB "
                  f"({disk / 1e6:.1f} MB of disk blocks); opened in {ready:.0f} ms (navigation to first "
                  f"screen's crops decoded; goto wall {wall:.0f} ms; median of {len(times)}: "
                  + ", ".join(f"{t[0]:.0f}" for t in times) + f" ms); a filter {filtering:.0f} ms; screenshot {_shown(shot)} "
                  f"({small_png(shot) / 1e3:.0f} KB)")


if __name__ == "__main__":
    main()
