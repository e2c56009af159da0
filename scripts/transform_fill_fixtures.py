#!/usr/bin/env python3
"""Writes torchvision's rotate / affine with an explicit `fill` (the mask blend that striate's
`FillMode::TorchvisionMask` reproduces) into tests/fixtures/transforms/, beside the cases of
scripts/transform_fixtures.py, with their own manifest `fill_manifest.txt` (same format; the
extra key `fill=<value>` asks for `Fill::torchvision(value)`). Inputs are the ones that script
writes (run it first when regenerating everything).

Usage: python3 scripts/transform_fill_fixtures.py [output directory]

Needs torch and torchvision.
"""

import sys
from pathlib import Path

import torch
import torchvision
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from transform_fixtures import MODES, make_inputs, write_tensor  # noqa: E402

CASES = [
    ("fill_rotate_gray28_bilinear_15", "rotate", "gray28",
     dict(angle=15.0, interpolation="bilinear", fill=0.0)),
    ("fill_rotate_gray28_bilinear_m37", "rotate", "gray28",
     dict(angle=-37.5, interpolation="bilinear", fill=0.75)),
    ("fill_rotate_rgb12x16_bilinear_30", "rotate", "rgb12x16",
     dict(angle=30.0, interpolation="bilinear", fill=1.0)),
    ("fill_rotate_rgb12x16_nearest_30", "rotate", "rgb12x16",
     dict(angle=30.0, interpolation="nearest", fill=0.5)),
    ("fill_affine_gray9x13_bilinear", "affine", "gray9x13",
     dict(angle=12.0, tx=1.5, ty=-2.0, scale=0.8, shear_x=10.0, shear_y=-5.0,
          interpolation="bilinear", fill=0.25)),
    ("fill_affine_rgb8_nearest", "affine", "rgb8",
     dict(angle=-20.0, tx=1.0, ty=1.0, scale=1.2, shear_x=0.0, shear_y=0.0,
          interpolation="nearest", fill=0.9)),
]


def run(op, img, p):
    fill = [p["fill"]]
    if op == "rotate":
        return F.rotate(img, p["angle"], interpolation=MODES[p["interpolation"]], expand=False,
                        fill=fill)
    # striate's Affine.angle is counter-clockwise; F.affine's is clockwise: pass -angle.
    return F.affine(img, angle=-p["angle"], translate=[p["tx"], p["ty"]], scale=p["scale"],
                    shear=[p["shear_x"], p["shear_y"]],
                    interpolation=MODES[p["interpolation"]], fill=fill)


def main():
    root = Path(__file__).resolve().parent.parent
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "tests" / "fixtures" / "transforms"
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    inputs = make_inputs()
    lines = [
        f"# torchvision {torchvision.__version__}, torch {torch.__version__}; "
        "written by scripts/transform_fill_fixtures.py",
        "# case op input key=value ...",
    ]
    for case, op, input_name, params in CASES:
        img = tv_tensors.Image(torch.from_numpy(inputs[input_name].copy()))
        out = run(op, img, params).as_subclass(torch.Tensor)
        assert out.dtype == torch.float32, (case, out.dtype)
        write_tensor(out_dir / f"{case}.f32", out.numpy())
        args = " ".join(f"{k}={v}" for k, v in params.items())
        lines.append(f"{case} {op} {input_name} {args}")
    (out_dir / "fill_manifest.txt").write_text("\n".join(lines) + "\n")
    print(f"wrote {len(CASES)} cases to {out_dir}")


if __name__ == "__main__":
    main()
