"""Regenerate the golden masks of the released artifact on the committed samples.

Run only when the released artifact changes on purpose:
    .venv/bin/python -m tests.model.make_golden
"""

from __future__ import annotations

import json
from pathlib import Path

from model.png import encode_mask_png
from model.predictor import Predictor
from model.preprocessing import decode_image

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "imgs"
GOLDEN = Path(__file__).parent / "golden"
STUDIES = ("patient_000", "patient_001", "control_003")


def main() -> None:
    pred = Predictor.from_artifact(None, device="cpu", batch_size=1, precision="fp32")
    GOLDEN.mkdir(exist_ok=True)
    for name in STUDIES:
        mask = pred.masks([decode_image((SAMPLES / f"{name}.png").read_bytes())])[0]
        (GOLDEN / f"{name}_mask.png").write_bytes(encode_mask_png(mask))
        print(f"{name}: {int(mask.sum())} tumor px")
    (GOLDEN / "golden.json").write_text(
        json.dumps({"model_version": pred.version, "studies": list(STUDIES)}, indent=2)
    )


if __name__ == "__main__":
    main()
