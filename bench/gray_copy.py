"""Write an 8-bit gray copy of a DM i AI folder, checked pixel-exact through the decoder.

The development PNGs are RGBA with R = G = B and a constant alpha; as mode L they are a
third the size, which lets the whole development set travel to a GPU machine within a
64 MiB transfer limit (bench/gpu_run.sh). Every image and mask of the copy is decoded
again and compared with the original; any difference aborts.

Usage: .venv/bin/python -m bench.gray_copy [SRC] [DST]
"""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from model.preprocessing import decode_image, decode_mask


def gray_png(data: bytes) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("L").save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def main(src: Path, dst: Path) -> int:
    n = 0
    for path in sorted(src.rglob("*.png")):
        rel = path.relative_to(src)
        data = path.read_bytes()
        gray = gray_png(data)
        decode = decode_mask if "labels" in rel.parts else decode_image
        if not np.array_equal(decode(data), decode(gray)):
            print(f"{rel}: the gray copy decodes differently; nothing more written")
            return 1
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        (dst / rel).write_bytes(gray)
        n += 1
    for path in src.glob("*.md"):
        shutil.copy(path, dst / path.name)
    print(f"{n} PNGs copied to {dst}, each pixel-exact through the decoder")
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    src = Path(args[0]) if args else Path("../shared/data/dmiai2023")
    dst = Path(args[1]) if len(args) > 1 else Path(".devdata/dmiai2023")
    sys.exit(main(src, dst))
