"""Rebuild src/deeprepair/corruptions/assets/frost.npz from the imagecorruptions wheel.

The CIFAR-10-C recipe reads one of the frost photographs with OpenCV, downscales it x0.2
(cv2.resize, bilinear) and crops 32x32. We ship the downscaled photographs (RGB uint8), taken
from the `imagecorruptions` 1.1.2 wheel (Apache-2.0), so that no download happens at run time.

    pip download --no-deps imagecorruptions==1.1.2 -d /tmp/wheels
    python scripts/make_frost_textures.py /tmp/wheels/imagecorruptions-1.1.2-py3-none-any.whl
"""

import io
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np

NAMES = ["frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg"]
OUT = Path(__file__).resolve().parents[1] / "src/deeprepair/corruptions/assets/frost.npz"


def main(wheel: str) -> None:
    arrays = {}
    with zipfile.ZipFile(wheel) as zf:
        for name in NAMES:
            raw = np.frombuffer(zf.read(f"imagecorruptions/frost/{name}"), np.uint8)
            bgr = cv2.imdecode(raw, cv2.IMREAD_COLOR)
            small = cv2.resize(bgr, (0, 0), fx=0.2, fy=0.2)
            arrays[Path(name).stem] = np.ascontiguousarray(small[..., ::-1])  # BGR -> RGB
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    OUT.write_bytes(buf.getvalue())
    print(OUT, {k: v.shape for k, v in arrays.items()})


if __name__ == "__main__":
    main(sys.argv[1])
