"""review.html (the interactive review page) and contact_sheet.png (for reports).

Each suspect is shown as a crop around its box, upscaled, with the mask outlined (the box when the
annotation has no mask), next to its given class, the suggested class and the scores. The review page
(:func:`review_files`) covers every flagged annotation: its crops are JPEG sheets in ``review_files/``
beside review.html, its HTML, CSS and script are in :mod:`noisyseg.audit.review_page`; it opens offline
from the file system.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from noisyseg.audit.decisions import FORMAT as DECISIONS_FORMAT
from noisyseg.audit.flat import as_audit_data
from noisyseg.audit.issues import LabelIssues
from noisyseg.audit.score import read_image
from noisyseg.data.coco import decode_mask

TILE = 160  # px, the longer side of a suspect's picture
OUTLINE = (255, 230, 0)
BOX = (0, 200, 255)


@dataclass
class Suspect:
    """One annotation to show: its table row and its picture (TILE x TILE RGB uint8)."""

    row: dict[str, Any]
    picture: np.ndarray
    file_name: str


def _outline(mask: np.ndarray, width: int) -> np.ndarray:
    """(H, W) bool -> (H, W) bool of the pixels of ``mask`` within ``width`` px of its border."""
    inner = mask.copy()
    for _ in range(width):
        shrunk = inner.copy()
        shrunk[1:] &= inner[:-1]
        shrunk[:-1] &= inner[1:]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        shrunk[[0, -1], :] = False
        shrunk[:, [0, -1]] = False
        inner = shrunk
    return mask & ~inner


def crop_picture(image: np.ndarray, annotation: dict, tile: int = TILE, context: float = 0.35) -> np.ndarray:
    """A (tile, tile, 3) uint8 picture of one annotation: a crop around its box with the mask outlined.

    Args:
        image: (H, W, 3) uint8 RGB image the annotation belongs to.
        annotation: a COCO annotation (``bbox`` xywh pixels; ``segmentation`` optional).
        context: extra margin on each side, as a fraction of the box's longer side (at least 6 px).
    """
    h, w = image.shape[:2]
    x, y, bw, bh = (float(v) for v in annotation["bbox"])
    side = max(bw, bh, 1.0) * (1 + 2 * context) + 12
    cx, cy = x + bw / 2, y + bh / 2
    x0, y0 = int(np.floor(max(cx - side / 2, 0))), int(np.floor(max(cy - side / 2, 0)))
    x1, y1 = int(np.ceil(min(cx + side / 2, w))), int(np.ceil(min(cy + side / 2, h)))
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    crop = image[y0:y1, x0:x1]
    scale = tile / max(crop.shape[0], crop.shape[1])
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    big = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BICUBIC)).copy()
    mask = None
    seg = annotation.get("segmentation")
    if seg:
        try:
            mask = decode_mask(seg, h, w)[y0:y1, x0:x1].astype(bool)
        except Exception:  # a malformed mask still gets its box drawn
            mask = None
    if mask is not None and mask.any():
        big_mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)) > 0
        big[_outline(big_mask, 2)] = OUTLINE
    else:
        pil = Image.fromarray(big)
        ImageDraw.Draw(pil).rectangle([(x - x0) * scale, (y - y0) * scale, (x + bw - x0) * scale,
                                       (y + bh - y0) * scale], outline=BOX, width=2)
        big = np.asarray(pil).copy()
    out = np.full((tile, tile, 3), 24, dtype=np.uint8)
    oy, ox = (tile - big.shape[0]) // 2, (tile - big.shape[1]) // 2
    out[oy:oy + big.shape[0], ox:ox + big.shape[1]] = big
    return out


def collect_suspects(rows: Sequence[dict[str, Any]], coco: Any, image_root: str | Path,
                     data_path: str | Path, top: int) -> list[Suspect]:
    """Pictures of the ``top`` most suspicious annotations (``rows`` most suspicious first; ``coco`` the
    audited file's :class:`~noisyseg.audit.flat.AuditData` or its parsed json)."""
    data = as_audit_data(coco, data_path)
    first = rows[:top]
    row_of = {a: r for r, a in enumerate(data.ann_ids.tolist())} if first else {}
    cache: dict[Any, np.ndarray] = {}
    suspects = []
    for row in first:
        r = row_of[row["annotation_id"]]
        im = data.image(int(data.ann_image[r]))
        if im["id"] not in cache:
            cache = {im["id"]: read_image(Path(image_root) / im["file_name"], im["height"], im["width"],
                                          data_path).permute(1, 2, 0).numpy()}
        suspects.append(Suspect(row, crop_picture(cache[im["id"]], data.annotation(r)), str(im["file_name"])))
    return suspects


def png_bytes(picture: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG file bytes."""
    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, format="PNG")
    return buf.getvalue()


# The review page's crops: REVIEW_TILE px squares, SHEET_COLUMNS x SHEET_ROWS of them per JPEG sheet in
# REVIEW_FILES/. One sheet per screen of the unfiltered list (PAGE_SIZE suspects), so opening the page reads
# one sheet; sheets instead of one file per crop keep 10,000 suspects to 500 files (a file system rounds
# every file up to a block, 4 KB here, about a crop's size).
REVIEW_TILE = 128
SHEET_COLUMNS, SHEET_ROWS = 6, 4
PAGE_SIZE = SHEET_COLUMNS * SHEET_ROWS
REVIEW_FILES = "review_files"
JPEG_QUALITY = 85
SHEETS_AT_ONCE = 85  # sheets whose crops are held in memory at once (85 x 24 crops of 48 KB: 100 MB)


JS_SAFE = 2**53 - 1  # the largest integer a JavaScript number holds exactly


def js_id(value: Any) -> Any:
    """An id as the page holds it: a JSON number when JavaScript keeps it exact, else its decimal string
    (an id of 2**53 or more would be rounded to a neighbour, and the decisions would name the wrong one)."""
    value = int(value)
    return value if -JS_SAFE <= value <= JS_SAFE else str(value)


def page_indices(issues: LabelIssues, top: int | None) -> np.ndarray:
    """Row indices (into the arrays of ``issues``) of the annotations on the review page, most suspicious
    first: every flagged one when ``top`` is None, else the ``top`` most suspicious, flagged or not."""
    order = issues.order
    if top is None:
        return order[issues.is_issue[order]]
    return order[:top]


def page_data(issues: LabelIssues, indices: np.ndarray, coco: Any, page_dir: str | Path, summary: dict[str, Any],
              audit_info: dict[str, Any], data_sha256: str) -> dict[str, Any]:
    """What review.html needs, as plain JSON (arrays kept short: 10,000 suspects are about 1.5 MB).

    ``s``: one list per suspect in page order (ids beyond JavaScript's exact integers as decimal strings,
    :func:`js_id`), ``[annotation id, image index, rank, given class index,
    suggested class index, label quality, [class, p, class, p, class, p] (the 3 most probable),
    p(background), clean class index or -1, flagged 0/1, [x, y, w, h]]``; class indices point into
    ``classes`` (``{"id", "name"}``), image indices into ``images`` (``[path relative to the page, width,
    height, image id]``). ``tiles`` says where suspect i's crop is: sheet ``i // per_sheet``, cell ``i %
    per_sheet`` in row-major order of ``columns`` x ``rows`` cells of ``size`` px.
    """
    s = issues.scores
    lm = s.label_map
    data = as_audit_data(coco, summary.get("data", ""))
    row_of = _rows_of(data, s.annotation_ids, indices)
    root = Path(s.image_root).resolve()
    here = Path(page_dir).resolve()
    image_index: dict[Any, int] = {}
    images: list[list[Any]] = []
    rows = []
    k_top = min(3, lm.num_classes)
    for i, r in zip(indices.tolist(), row_of.tolist()):
        im = data.image(int(data.ann_image[r]))
        if im["id"] not in image_index:
            image_index[im["id"]] = len(images)
            target = root / im["file_name"]
            images.append([Path(os.path.relpath(target, here)).as_posix(), int(im["width"]), int(im["height"]),
                           js_id(im["id"]) if isinstance(im["id"], int) else str(im["id"])])
        probs = s.pred_probs[i]
        best = np.argsort(-probs, kind="stable")[:k_top]
        top3: list[Any] = []
        for c in best.tolist():
            top3 += [c, round(float(probs[c]), 4)]
        rows.append([js_id(s.annotation_ids[i]), image_index[im["id"]], int(issues.rank[i]), int(s.given_labels[i]),
                     int(issues.suggested_labels[i]), round(float(issues.label_quality[i]), 4), top3,
                     round(float(s.background_prob[i]), 4),
                     int(s.clean_labels[i]) if s.clean_labels is not None else -1, int(issues.is_issue[i]),
                     [round(v, 2) for v in data.bbox[r].tolist()]])
    return {
        "decisions_format": DECISIONS_FORMAT, "data": summary.get("data", ""), "data_sha256": data_sha256,
        "audit": {**audit_info, "n_scored": int(len(issues.rank)), "n_flagged": int(issues.is_issue.sum()),
                  "n_on_page": len(rows)},
        "classes": [{"id": js_id(cid), "name": name} for cid, name in zip(lm.category_ids, lm.names)],
        "images": images, "s": rows, "page_size": PAGE_SIZE,
        "per_class": summary["per_class"], "confusion": summary["flagged_confusion"],
        "tiles": {"prefix": f"{REVIEW_FILES}/sheet_", "size": REVIEW_TILE, "columns": SHEET_COLUMNS,
                  "rows": SHEET_ROWS, "per_sheet": PAGE_SIZE},
    }


def page_pictures(issues: LabelIssues, indices: np.ndarray, coco: Any, data_path: str | Path,
                  tile: int = REVIEW_TILE) -> list[np.ndarray]:
    """The crop of each annotation of ``indices`` (page order), (tile, tile, 3) uint8; each image is read once."""
    s = issues.scores
    data = as_audit_data(coco, data_path)
    positions: dict[int, list[tuple[int, int]]] = {}  # image index -> (page position, annotation row)
    for pos, r in enumerate(_rows_of(data, s.annotation_ids, indices).tolist()):
        positions.setdefault(int(data.ann_image[r]), []).append((pos, r))
    pictures: list[np.ndarray | None] = [None] * len(indices)
    for m, items in positions.items():
        im = data.image(m)
        pixels = read_image(Path(s.image_root) / im["file_name"], im["height"], im["width"],
                            data_path).permute(1, 2, 0).numpy()
        for pos, r in items:
            pictures[pos] = crop_picture(pixels, data.annotation(r), tile=tile)
    return pictures  # type: ignore[return-value]


def sheet_files(pictures: list[np.ndarray], tile: int = REVIEW_TILE, first: int = 0) -> dict[str, bytes]:
    """The crop sheets: relative path -> JPEG bytes, PAGE_SIZE pictures per sheet in page order, numbered
    from ``first``."""
    files = {}
    for n, start in enumerate(range(0, len(pictures), PAGE_SIZE), first):
        chunk = pictures[start:start + PAGE_SIZE]
        sheet = np.full((SHEET_ROWS * tile, SHEET_COLUMNS * tile, 3), 24, dtype=np.uint8)
        for k, picture in enumerate(chunk):
            r, c = divmod(k, SHEET_COLUMNS)
            sheet[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = picture
        buf = io.BytesIO()
        # a short last sheet keeps its full size (empty cells cost a few bytes): the page scales every
        # sheet to SHEET_COLUMNS x SHEET_ROWS cells
        Image.fromarray(sheet).save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
        files[f"{REVIEW_FILES}/sheet_{n:05d}.jpg"] = buf.getvalue()
    return files


def review_files(issues: LabelIssues, coco: Any, data_path: str | Path, page_dir: str | Path,
                 summary: dict[str, Any], audit_info: dict[str, Any], data_sha256: str,
                 top: int | None = None, spool: Any = None) -> dict[str, Any]:
    """Every file of the review page: ``review.html`` and its crop sheets, relative path -> bytes.

    ``coco``: the audited file's :class:`~noisyseg.audit.flat.AuditData` (or its parsed json). Nothing is
    written here; the caller writes them into ``page_dir`` (which the image paths in the page are made
    relative to). With ``spool`` (a :class:`noisyseg.audit.outputs.Spool`) each sheet goes there as it is
    made and its value is the spooled file, so memory does not grow with the number of suspects (every
    flagged one of a COCO-sized file is some 14,000 sheets, over 1 GB of JPEG).
    """
    from noisyseg.audit.review_page import render

    coco = as_audit_data(coco, data_path)
    indices = page_indices(issues, top)
    data = page_data(issues, indices, coco, page_dir, summary, audit_info, data_sha256)
    html = render(data).encode("utf-8")
    del data
    files: dict[str, Any] = {}
    # crops in chunks of sheets: memory stays near SHEETS_AT_ONCE sheets of raw pixels (100 MB), whatever
    # the number of suspects; an image with suspects in several chunks is read once per chunk
    step = SHEETS_AT_ONCE * PAGE_SIZE
    for start in range(0, len(indices), step):
        sheets = sheet_files(page_pictures(issues, indices[start:start + step], coco, data_path),
                             first=start // PAGE_SIZE)
        files.update({name: spool.add(data) for name, data in sheets.items()} if spool is not None else sheets)
    files["review.html"] = html
    return files


def _rows_of(data: Any, annotation_ids: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(len(indices),) rows of ``data`` holding the annotations ``annotation_ids[indices]``."""
    wanted = annotation_ids[indices]
    if len(data) == len(annotation_ids) and np.array_equal(data.ann_ids, annotation_ids):
        return np.asarray(indices, dtype=np.int64)  # the scores are in the file's order (as an audit makes them)
    by_id = np.argsort(data.ann_ids, kind="stable")
    pos = np.searchsorted(data.ann_ids, wanted, sorter=by_id).clip(0, max(len(data) - 1, 0))
    rows = by_id[pos] if len(data) else pos
    bad = np.flatnonzero(data.ann_ids[rows] != wanted) if len(data) else np.arange(len(wanted))
    if len(bad):
        raise KeyError(int(wanted[bad[0]]))
    return rows


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """``text`` cut (with "..") so that it is at most ``width`` px wide."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "..", font=font) > width:
        text = text[:-1]
    return text + ".."


def contact_sheet(suspects: list[Suspect], columns: int = 6) -> np.ndarray:
    """A grid of the suspects' pictures with a two-line caption each, as an (H, W, 3) uint8 image.

    Caption: rank, given -> suggested class; label quality, whether flagged, and the true class when
    known (red when the given label is truly wrong).
    """
    cap = 34
    n = max(len(suspects), 1)
    cols = min(columns, n)
    rows = (n + cols - 1) // cols
    pad = 6
    sheet = Image.new("RGB", (cols * (TILE + pad) + pad, rows * (TILE + cap + pad) + pad), (245, 245, 245))
    draw = ImageDraw.Draw(sheet)
    font = _font(12)
    for k, s in enumerate(suspects):
        x = pad + (k % cols) * (TILE + pad)
        y = pad + (k // cols) * (TILE + cap + pad)
        sheet.paste(Image.fromarray(s.picture), (x, y))
        r = s.row
        first = f"#{r['rank']} {r['given_name']} -> {r['suggested_name']}"
        second = f"q {r['label_quality']:.2f}" + (" flagged" if r["is_issue"] else "")
        if "clean_name" in r:
            second += f" | true {r['clean_name']}"
        draw.text((x + 2, y + TILE + 2), _fit(draw, first, font, TILE - 4), fill=(20, 20, 20), font=font)
        draw.text((x + 2, y + TILE + 17), _fit(draw, second, font, TILE - 4),
                  fill=(176, 0, 32) if r.get("is_wrong") else (60, 60, 60), font=font)
    return np.asarray(sheet)
