"""What a hostile config costs to refuse: time and peak Python memory of ``load_config`` on small files
that would expand without bound.

- a "billion laughs" file: 9 levels of YAML aliases, each a list of nine of the level above (9**9 strings
  from under 1 KB), used as a config value;
- a recursive alias (a list that holds itself);
- a 10 MB file (refused after reading 1 MiB + 1 byte).

Each case prints the file size, the wall-clock seconds and the peak memory traced by ``tracemalloc``,
and the one line it is refused with (the peak includes the read buffer of up to 1 MiB + 1 byte).

    .venv/bin/python benchmarks/config_bounds.py
"""

from __future__ import annotations

import tempfile
import time
import tracemalloc
from pathlib import Path

from noisyseg.config import load_config
from noisyseg.errors import NoisysegError


def laughs(levels: int) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    lines.append(f"data: {{train_json: t.json, val_json: v.json, image_root: img, val_image_root: *l{levels - 1}}}")
    return "\n".join(lines) + "\n"


def main() -> None:
    cases = {
        "billion laughs (9 levels)": laughs(9),
        "recursive alias": "data: &d {train_json: t.json, val_json: v.json, image_root: img, x: [*d]}\n",
        "10 MB file": "data: {train_json: t.json, val_json: v.json, image_root: img}\n" + "#" * 10_000_000,
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in cases.items():
            path = Path(tmp) / "c.yaml"
            path.write_text(text)
            tracemalloc.start()
            start = time.perf_counter()
            try:
                load_config(path)
                line = "(accepted)"
            except NoisysegError as e:
                line = str(e).replace(str(path), "c.yaml")
            seconds = time.perf_counter() - start
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            print(f"{name}: {len(text.encode())} bytes, {seconds * 1000:.1f} ms, peak {peak / 2**20:.2f} MiB: {line}")


if __name__ == "__main__":
    main()
