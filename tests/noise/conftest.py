import pytest


def make_coco(counts: dict[str, int], supercats: dict[str, str] | None = None, crowd_every: int = 0,
              extra_categories: list[dict] | None = None) -> dict:
    """A synthetic COCO file with ``counts[name]`` annotations per class (ids 1.. in the given order)."""
    cats = [{"id": i + 1, "name": n, "supercategory": (supercats or {}).get(n, "thing")} for i, n in enumerate(counts)]
    cats += extra_categories or []
    anns, k = [], 0
    for i, (name, n) in enumerate(counts.items()):
        for _ in range(n):
            k += 1
            a = {"id": k, "image_id": 1 + k % 7, "category_id": i + 1, "segmentation": [[0, 0, 4, 0, 4, 4]],
                 "area": 8.0, "bbox": [0, 0, 4, 4], "iscrowd": 1 if crowd_every and k % crowd_every == 0 else 0,
                 "extra_field": {"keep": k}}
            anns.append(a)
    return {"info": {"description": "synthetic"}, "images": [{"id": j, "file_name": f"{j}.png", "height": 8,
                                                               "width": 8} for j in range(1, 8)],
            "annotations": anns, "categories": cats, "licenses": []}


@pytest.fixture
def make():
    return make_coco
