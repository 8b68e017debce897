"""review.html (a self-contained page of the top suspects) and contact_sheet.png (for reports).

Each suspect is shown as a crop around its box, upscaled, with the mask outlined (the box when the
annotation has no mask), next to its given class, the suggested class and the scores. The page inlines
every image as a base64 PNG, so it opens offline from the file system.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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


def collect_suspects(rows: list[dict[str, Any]], coco: dict, image_root: str | Path,
                     data_path: str | Path, top: int) -> list[Suspect]:
    """Pictures of the ``top`` most suspicious annotations (``rows`` most suspicious first)."""
    by_id = {a["id"]: a for a in coco["annotations"]}
    images = {im["id"]: im for im in coco["images"]}
    cache: dict[Any, np.ndarray] = {}
    suspects = []
    for row in rows[:top]:
        ann = by_id[row["annotation_id"]]
        im = images[ann["image_id"]]
        if im["id"] not in cache:
            cache = {im["id"]: read_image(Path(image_root) / im["file_name"], int(im["height"]), int(im["width"]),
                                          data_path).permute(1, 2, 0).numpy()}
        suspects.append(Suspect(row, crop_picture(cache[im["id"]], ann), str(im["file_name"])))
    return suspects


def png_bytes(picture: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG file bytes."""
    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, format="PNG")
    return buf.getvalue()


def _png_base64(picture: np.ndarray) -> str:
    return base64.b64encode(png_bytes(picture)).decode("ascii")


_CSS = """
body{font-family:system-ui,sans-serif;margin:16px;background:#f4f4f4;color:#222}
h1{font-size:20px;margin:0 0 4px} p.meta{margin:2px 0;color:#555;font-size:13px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:10px;margin-top:12px}
.card{background:#fff;border-radius:6px;padding:8px;box-shadow:0 1px 2px #0002;font-size:13px}
.card img{width:100%;image-rendering:auto;border-radius:4px;display:block}
.card .head{display:flex;justify-content:space-between;color:#666;font-size:12px;margin-bottom:4px}
.given{color:#b00020;font-weight:600}.sugg{color:#006400;font-weight:600}
.flag{background:#b00020;color:#fff;border-radius:3px;padding:0 4px;font-size:11px}
.truth{font-size:12px;margin-top:3px}.ok{color:#006400}.bad{color:#b00020}
table{border-collapse:collapse;font-size:13px;margin-top:8px}td,th{border:1px solid #ccc;padding:2px 8px}
"""


def review_html(suspects: list[Suspect], summary: dict[str, Any]) -> str:
    """The review page: a header with the audit's figures and one card per suspect."""
    esc = html.escape
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             "<title>noisyseg label audit</title><style>", _CSS, "</style></head><body>",
             "<h1>Label audit: the most suspicious annotations</h1>",
             f"<p class='meta'>{summary['n_flagged']} of {summary['n_annotations']} annotations flagged; "
             f"showing the {len(suspects)} with the lowest label quality, most suspicious first.</p>",
             f"<p class='meta'>data: {esc(str(summary.get('data', '')))} &middot; checkpoints: "
             f"{esc(', '.join(summary['checkpoints']))}</p>",
             f"<p class='meta'>yellow outline: the annotation's mask (blue box: no mask). label quality = "
             f"probability of the given class (low = likely wrong).</p>"]
    truth = summary.get("truth")
    if truth:
        parts.append("<table><tr><th>against the clean labels</th><th></th></tr>")
        for key, text in (("n_wrong", "wrong labels in the file"), ("auroc", "AUROC"),
                          ("average_precision", "average precision"),
                          ("flagged_precision", "precision of the flagged set"),
                          ("flagged_recall", "recall of the flagged set"),
                          ("suggestion_accuracy_flagged_wrong", "suggestion right on flagged wrong ones")):
            v = truth[key]
            parts.append(f"<tr><td>{text}</td><td>{v if isinstance(v, int) else f'{v:.3f}'}</td></tr>")
        parts.append("</table>")
    parts.append("<div class='grid'>")
    for s in suspects:
        r = s.row
        flag = "<span class='flag'>flagged</span>" if r["is_issue"] else ""
        parts.append(
            "<div class='card'>"
            f"<div class='head'><span>#{r['rank']} &middot; ann {esc(str(r['annotation_id']))}</span>{flag}</div>"
            f"<img alt='annotation {esc(str(r['annotation_id']))}' src='data:image/png;base64,{_png_base64(s.picture)}'>"
            + (f"<div>given <span class='given'>{esc(r['given_name'])}</span> &rarr; suggested "
               f"<span class='sugg'>{esc(r['suggested_name'])}</span></div>"
               if r["suggested_category_id"] != r["given_category_id"] else
               f"<div>given <b>{esc(r['given_name'])}</b> (the model agrees)</div>") +
            f"<div>quality {r['label_quality']:.3f} &middot; p(suggested) {r['suggested_prob']:.2f}</div>"
            f"<div class='head'><span>{esc(s.file_name)}</span></div>")
        if "clean_name" in r:
            cls = "bad" if r["is_wrong"] else "ok"
            verdict = "label is wrong" if r["is_wrong"] else "label is right"
            parts.append(f"<div class='truth {cls}'>truth: {esc(r['clean_name'])} ({verdict})</div>")
        parts.append("</div>")
    parts.append("</div></body></html>")
    return "".join(parts)


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
