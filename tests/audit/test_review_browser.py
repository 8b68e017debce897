"""review.html in a real browser: decide with keys and clicks, reload, filter, export, then apply-decisions.

Drives Debian's headless Chromium (/usr/bin/chromium) through Playwright for Python, with a fresh profile;
nothing is downloaded. Skipped, with the reason, where either is missing (``.ci/run`` installs both).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

if not os.path.exists(CHROMIUM):
    pytest.skip(f"no headless Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium with a fresh profile, one for this module (each audit keeps its own storage key)."""
    with sync_api.sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("profile")), executable_path=CHROMIUM, headless=True, args=FLAGS,
            accept_downloads=True, viewport={"width": 1280, "height": 800})
        try:
            yield ctx
        finally:
            ctx.close()


@pytest.fixture
def browser_page(browser):
    """A new tab; downloads allowed."""
    page = browser.new_page()
    try:
        yield page
    finally:
        page.close()


def _open(page, path: Path) -> None:
    page.goto(path.resolve().as_uri())
    page.wait_for_function("document.documentElement.dataset.ready === '1'", timeout=20000)


def _cards(page) -> list[int]:
    return page.eval_on_selector_all(".card", "cs => cs.map(c => +c.dataset.id)")


def test_review_decide_reload_filter_export_apply(tiny_data, untrained_run, tmp_path, browser_page, page_json):
    from noisyseg.audit import audit
    from noisyseg.cli import main

    out = tmp_path / "audit"
    audit(untrained_run, tiny_data["noisy_json"], image_root=tiny_data["image_root"], out_dir=out, device="cpu",
          top=8, sheet=0, progress=False)
    data = page_json(out / "review.html")
    rows = data["s"]
    assert len(rows) == 8
    ids = [r[0] for r in rows]
    cat = [c["id"] for c in data["classes"]]
    names = [c["name"] for c in data["classes"]]
    page = browser_page
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    _open(page, out / "review.html")
    assert _cards(page) == ids  # most suspicious first
    assert page.get_attribute(".card.cur", "data-id") == str(ids[0])

    # keys: keep #1, relabel #2 to its suggestion, skip #3
    page.keyboard.press("k")
    page.keyboard.press("r")
    page.keyboard.press("ArrowRight")
    # clicks: select #4 and press its "ignore class" button
    page.click(f".card[data-id='{ids[3]}']")
    page.click("#detail .actions button:has-text('ignore class')")
    page.keyboard.press("d")  # drop #5 (a decision moves on by one)
    # relabel #6 to a class typed into the picker
    target = next(c for c in range(len(cat)) if c not in (rows[5][3], rows[5][4]))
    page.keyboard.press("c")
    page.keyboard.type(names[target])
    page.keyboard.press("Enter")
    # back to #1, clear it, decide again
    page.keyboard.press("Home")
    page.keyboard.press("u")
    assert page.get_attribute(f".card[data-id='{ids[0]}']", "class") == "card cur"
    page.keyboard.press("k")

    # what the page should hold: relabel to the class the label already has is a keep
    want = {ids[0]: ("keep", None), ids[3]: ("ignore", None), ids[4]: ("drop", None), ids[5]: ("relabel", target)}
    want[ids[1]] = ("keep", None) if rows[1][4] == rows[1][3] else ("relabel", rows[1][4])
    counts = {a: sum(v[0] == a for v in want.values()) for a in ("keep", "relabel", "ignore", "drop")}
    line = (f"decided 5 of 8 \u00b7 keep {counts['keep']} \u00b7 relabel {counts['relabel']} \u00b7 ignore "
            f"{counts['ignore']} \u00b7 drop {counts['drop']} \u00b7 3 undecided")
    assert page.inner_text("#counts") == line

    # a reload keeps every decision (local storage)
    page.reload()
    page.wait_for_function("document.documentElement.dataset.ready === '1'")
    assert page.inner_text("#counts") == line
    for i, (action, _) in want.items():
        assert action in page.get_attribute(f".card[data-id='{i}']", "class").split()
    assert page.query_selector(f".card[data-id='{ids[2]}'] .dec") is None  # #3 stays undecided

    # filters: a given class, then undecided only, then a quality range, then cleared
    given = rows[0][3]
    page.select_option("#fgiven", str(given))
    assert _cards(page) == [r[0] for r in rows if r[3] == given]
    page.select_option("#fstatus", "undecided")
    assert _cards(page) == [r[0] for r in rows if r[3] == given and r[0] not in want]
    page.click("#fclear")
    assert _cards(page) == ids
    cut = sorted(r[5] for r in rows)[3]
    page.fill("#fqmax", str(cut))
    assert _cards(page) == [r[0] for r in rows if r[5] <= cut]
    page.click("#fclear")
    page.select_option("#fsugg", str(rows[0][4]))
    assert _cards(page) == [r[0] for r in rows if r[4] == rows[0][4]]
    page.click("#fclear")
    # a cell of the confusion picture filters to its given -> suggested pair (3 classes: numbered axes 16 px)
    box = page.query_selector("#confusion").bounding_box()
    size = (box["width"] - 16) / len(cat)
    given, sugg = rows[1][3], rows[1][4]
    page.mouse.click(box["x"] + 16 + (sugg + 0.5) * size, box["y"] + 16 + (given + 0.5) * size)
    assert _cards(page) == [r[0] for r in rows if r[3] == given and r[4] == sugg]
    page.click("#fclear")

    # export, then apply
    with page.expect_download() as download:
        page.click("#export")
    decisions = tmp_path / "decisions.json"
    download.value.save_as(decisions)
    exported = json.loads(decisions.read_text())
    assert exported["data_sha256"] == data["data_sha256"] and exported["audit"]["id"] == data["audit"]["id"]
    assert [u["annotation_id"] for u in exported["undecided"]] == [i for i in ids if i not in want]
    fixed = tmp_path / "fixed.json"
    assert main(["apply-decisions", str(decisions), "--data", str(tiny_data["noisy_json"]), "-o", str(fixed)]) == 0

    original = json.loads(Path(tiny_data["noisy_json"]).read_text())
    expected = copy.deepcopy(original)
    kept = []
    for a in expected["annotations"]:
        action, cls = want.get(a["id"], ("keep", None))
        if action == "drop":
            continue
        if action == "relabel":
            a["category_id"] = cat[cls]
        if action == "ignore":
            a["class_ignored"] = True
        kept.append(a)
    expected["annotations"] = kept
    result = json.loads(fixed.read_text())
    assert result["info"].pop("audit")["audit_id"] == data["audit"]["id"]
    assert result == expected
    assert errors == []


def test_whole_image_opens_from_a_file_name_with_url_characters(tiny_data, untrained_run, tmp_path, browser_page):
    """The whole image is linked relative to the page; a '#' or '%' in its file name is still a file name."""
    import shutil

    from noisyseg.audit import audit

    coco = json.loads(Path(tiny_data["noisy_json"]).read_text())
    root = tmp_path / "odd images"
    root.mkdir()
    for im in coco["images"]:
        new = f"scene #{im['id']} 100%.png"
        shutil.copy(Path(tiny_data["image_root"]) / im["file_name"], root / new)
        im["file_name"] = new
    data = tmp_path / "odd.json"
    data.write_text(json.dumps(coco))
    out = tmp_path / "audit"
    audit(untrained_run, data, image_root=root, out_dir=out, device="cpu", top=2, sheet=0, progress=False)
    page = browser_page
    _open(page, out / "review.html")
    page.keyboard.press("f")
    page.wait_for_selector("#whole .whole .box")  # drawn once the image has loaded
    size = page.eval_on_selector("#whole img", "i => [i.naturalWidth, i.naturalHeight]")
    first = page.get_attribute(".card.cur", "data-id")
    ann = next(a for a in coco["annotations"] if a["id"] == int(first))
    im = next(i for i in coco["images"] if i["id"] == ann["image_id"])
    assert size == [im["width"], im["height"]]
    page.keyboard.press("Escape")
    assert not page.is_visible("#whole")


def test_an_audit_with_nothing_flagged_opens_to_an_empty_page(tiny_data, untrained_run, tmp_path, browser_page):
    from noisyseg.audit import audit

    out = tmp_path / "audit"
    audit(untrained_run, tiny_data["noisy_json"], image_root=tiny_data["image_root"], out_dir=out, device="cpu",
          top=0, sheet=0, progress=False)
    assert not (out / "review_files").exists()
    page = browser_page
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    _open(page, out / "review.html")
    for key in ("k", "r", "1", "ArrowRight", "PageDown", "c", "Escape", "f", "u"):
        page.keyboard.press(key)
    assert page.inner_text("#pageinfo") == "no suspect matches the filters"
    assert page.inner_text("#counts").startswith("decided 0 of 0")
    assert _cards(page) == [] and errors == []
