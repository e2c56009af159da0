#!/usr/bin/env python3
"""Writes the torchvision reference outputs that tests/transforms_torchvision.rs compares with.

Usage: python3 scripts/transform_fixtures.py [output directory]
       (default: tests/fixtures/transforms, relative to the repository root)

Needs torch and torchvision (pip install torch torchvision). The Rust tests read only the files
written here, never Python.

Files:
  <name>.f32     one tensor: b"STF1", u32 rank, u32 dims[rank], then f32 values, all
                 little-endian, row-major.
  manifest.txt   one case per line: `case op input key=value ...`; the expected output of a
                 case is <case>.f32, its input <input>.f32. Parameters are given in striate's
                 conventions (see the comments by each op below).
"""

import math
import struct
import sys
from pathlib import Path

import numpy as np
import torch
import torchvision
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F


def write_tensor(path, array):
    array = np.ascontiguousarray(array, dtype="<f4")
    with open(path, "wb") as f:
        f.write(b"STF1")
        f.write(struct.pack("<I", array.ndim))
        f.write(struct.pack(f"<{array.ndim}I", *array.shape))
        f.write(array.tobytes())


def make_inputs():
    rng = np.random.RandomState(0)
    # A digit-like ring with a stroke, plus a little noise: smooth and sharp detail together.
    y, x = np.mgrid[0:28, 0:28].astype(np.float64)
    ring = np.exp(-((np.hypot(x - 13.0, y - 12.0) - 7.0) ** 2) / 4.0)
    stroke = np.exp(-((x - 0.4 * y - 12.0) ** 2) / 3.0) * (y > 14)
    gray28 = np.clip(ring + stroke + 0.1 * rng.rand(28, 28), 0.0, 1.0)[None]
    rgb12x16 = rng.rand(3, 12, 16)
    gray9x13 = rng.rand(1, 9, 13)
    rgb8 = rng.rand(3, 8, 8)
    # Greys, primaries, black, white and ties between channels: every branch of RGB -> HSV.
    special = [
        (0.5, 0.5, 0.5), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0),
        (0.7, 0.7, 0.2), (0.2, 0.7, 0.7), (0.7, 0.2, 0.7), (0.0, 0.0, 0.0),
        (1.0, 1.0, 1.0), (0.9, 0.1, 0.9), (0.3, 0.3, 0.8), (1.0, 0.5, 0.0),
    ]
    for k, rgb in enumerate(special):
        rgb8[:, k // 8, k % 8] = rgb
    return {
        "gray28": gray28.astype(np.float32),
        "rgb12x16": rgb12x16.astype(np.float32),
        "gray9x13": gray9x13.astype(np.float32),
        "rgb8": rgb8.astype(np.float32),
    }


MODES = {"nearest": InterpolationMode.NEAREST, "bilinear": InterpolationMode.BILINEAR}


def rotate(img, angle, interpolation):
    # striate: counter-clockwise degrees, fill 0  <->  F.rotate(angle), fill=None.
    return F.rotate(img, angle, interpolation=MODES[interpolation], expand=False, fill=None)


def affine(img, angle, tx, ty, scale, shear_x, shear_y, interpolation):
    # striate's Affine.angle is counter-clockwise; F.affine's is clockwise: pass -angle.
    return F.affine(
        img,
        angle=-angle,
        translate=[tx, ty],
        scale=scale,
        shear=[shear_x, shear_y],
        interpolation=MODES[interpolation],
        fill=None,
    )


def resize(img, height, width):
    # striate's resize is bilinear without antialiasing.
    return F.resize(img, [height, width], interpolation=InterpolationMode.BILINEAR, antialias=False)


CASES = [
    # (case, op, input, params)
    ("rotate_gray28_bilinear_15", "rotate", "gray28", dict(angle=15.0, interpolation="bilinear")),
    ("rotate_gray28_bilinear_m37", "rotate", "gray28", dict(angle=-37.5, interpolation="bilinear")),
    ("rotate_rgb12x16_bilinear_30", "rotate", "rgb12x16", dict(angle=30.0, interpolation="bilinear")),
    ("rotate_gray9x13_bilinear_m45", "rotate", "gray9x13", dict(angle=-45.0, interpolation="bilinear")),
    ("rotate_gray9x13_bilinear_90", "rotate", "gray9x13", dict(angle=90.0, interpolation="bilinear")),
    ("rotate_rgb8_bilinear_200", "rotate", "rgb8", dict(angle=200.0, interpolation="bilinear")),
    ("rotate_rgb12x16_nearest_30", "rotate", "rgb12x16", dict(angle=30.0, interpolation="nearest")),
    ("rotate_gray28_nearest_m10", "rotate", "gray28", dict(angle=-10.0, interpolation="nearest")),
    ("rotate_gray28_nearest_90", "rotate", "gray28", dict(angle=90.0, interpolation="nearest")),
    ("affine_gray28_all", "affine", "gray28",
     dict(angle=10.0, tx=2.0, ty=-3.0, scale=1.1, shear_x=5.0, shear_y=0.0, interpolation="bilinear")),
    ("affine_rgb12x16_all", "affine", "rgb12x16",
     dict(angle=-20.0, tx=1.0, ty=2.0, scale=0.8, shear_x=-10.0, shear_y=8.0, interpolation="bilinear")),
    ("affine_gray9x13_shear", "affine", "gray9x13",
     dict(angle=0.0, tx=0.0, ty=0.0, scale=1.0, shear_x=20.0, shear_y=-15.0, interpolation="bilinear")),
    ("affine_gray9x13_fractional", "affine", "gray9x13",
     dict(angle=33.0, tx=0.5, ty=-1.25, scale=1.3, shear_x=0.0, shear_y=0.0, interpolation="bilinear")),
    ("affine_rgb8_nearest", "affine", "rgb8",
     dict(angle=12.0, tx=1.0, ty=0.0, scale=0.9, shear_x=7.0, shear_y=3.0, interpolation="nearest")),
    ("resize_gray28_down_14", "resize", "gray28", dict(height=14, width=14)),
    ("resize_gray28_down_11x9", "resize", "gray28", dict(height=11, width=9)),
    ("resize_rgb12x16_mixed", "resize", "rgb12x16", dict(height=20, width=9)),
    ("resize_gray9x13_up", "resize", "gray9x13", dict(height=27, width=39)),
    ("resize_rgb8_up_13", "resize", "rgb8", dict(height=13, width=13)),
    ("center_crop_gray9x13_5x6", "center_crop", "gray9x13", dict(height=5, width=6)),
    ("center_crop_gray9x13_pad", "center_crop", "gray9x13", dict(height=12, width=16)),
    ("brightness_rgb8_1_5", "brightness", "rgb8", dict(factor=1.5)),
    ("brightness_gray28_0_3", "brightness", "gray28", dict(factor=0.3)),
    ("contrast_rgb8_0_5", "contrast", "rgb8", dict(factor=0.5)),
    ("contrast_rgb12x16_1_8", "contrast", "rgb12x16", dict(factor=1.8)),
    ("contrast_gray28_1_7", "contrast", "gray28", dict(factor=1.7)),
    ("saturation_rgb8_0", "saturation", "rgb8", dict(factor=0.0)),
    ("saturation_rgb12x16_2_5", "saturation", "rgb12x16", dict(factor=2.5)),
    ("saturation_rgb8_0_4", "saturation", "rgb8", dict(factor=0.4)),
    ("hue_rgb8_0_25", "hue", "rgb8", dict(shift=0.25)),
    ("hue_rgb8_0_5", "hue", "rgb8", dict(shift=0.5)),
    ("hue_rgb12x16_m0_4", "hue", "rgb12x16", dict(shift=-0.4)),
    ("hue_rgb12x16_0_1", "hue", "rgb12x16", dict(shift=0.1)),
]


def run(op, img, p):
    if op == "rotate":
        return rotate(img, p["angle"], p["interpolation"])
    if op == "affine":
        return affine(img, p["angle"], p["tx"], p["ty"], p["scale"], p["shear_x"], p["shear_y"],
                      p["interpolation"])
    if op == "resize":
        return resize(img, p["height"], p["width"])
    if op == "center_crop":
        return F.center_crop(img, [p["height"], p["width"]])
    if op == "brightness":
        return F.adjust_brightness(img, p["factor"])
    if op == "contrast":
        return F.adjust_contrast(img, p["factor"])
    if op == "saturation":
        return F.adjust_saturation(img, p["factor"])
    if op == "hue":
        return F.adjust_hue(img, p["shift"])
    raise ValueError(op)


def main():
    root = Path(__file__).resolve().parent.parent
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "tests" / "fixtures" / "transforms"
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)

    inputs = make_inputs()
    for name, array in inputs.items():
        write_tensor(out_dir / f"{name}.f32", array)

    lines = [
        f"# torchvision {torchvision.__version__}, torch {torch.__version__}; "
        "written by scripts/transform_fixtures.py",
        "# case op input key=value ...",
    ]
    for case, op, input_name, params in CASES:
        img = tv_tensors.Image(torch.from_numpy(inputs[input_name].copy()))
        out = run(op, img, params).as_subclass(torch.Tensor)
        assert out.dtype == torch.float32, (case, out.dtype)
        write_tensor(out_dir / f"{case}.f32", out.numpy())
        args = " ".join(f"{k}={v}" for k, v in params.items())
        lines.append(f"{case} {op} {input_name} {args}")
    (out_dir / "manifest.txt").write_text("\n".join(lines) + "\n")
    print(f"wrote {len(CASES)} cases and {len(inputs)} inputs to {out_dir}")


if __name__ == "__main__":
    main()
