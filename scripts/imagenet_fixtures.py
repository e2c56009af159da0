#!/usr/bin/env python3
"""Writes the torchvision references that tests/imagenet_torchvision.rs compares with: real
photographs, decoded by Pillow (torchvision's ImageFolder loader), through the ImageNet-style
pipeline.

Usage: python3 scripts/imagenet_fixtures.py [output directory]
       (default: tests/fixtures/imagenet, relative to the repository root)

Needs torch, torchvision, Pillow and scikit-learn (for its two sample photographs, china.jpg
and flower.jpg, Creative Commons; see sklearn/datasets/images/README.txt). Small crops of them
are written as the test's image files, so the fixtures stay a few tens of kilobytes:

  china.jpg    96x72 crop of china.jpg, re-encoded by Pillow as JPEG (quality 90, 4:2:0)
  flower.png   64x80 crop of flower.jpg (portrait), as PNG

For each image <img>, tensors as in scripts/transform_fixtures.py (b"STF1", u32 rank, u32 dims,
f32 values, little-endian):

  <img>_decoded.f32  Pillow's decoding, Image.open(f).convert("RGB"), as ToTensor gives it
  <img>_eval.f32     from <img>_decoded on tensors (transforms.v2.functional, float32):
                     resize(shorter side 48, bilinear, antialias=True), center_crop(40),
                     normalize(ImageNet mean, std)
  <img>_crop.f32     from <img>_decoded: resized_crop(top, left, height, width -> 32x32,
                     bilinear, antialias=True), horizontal_flip, normalize(ImageNet)
  <img>_pil_eval.f32 the classic PIL pipeline on the file (torchvision.transforms v1):
                     Resize(48), CenterCrop(40), ToTensor(), Normalize(ImageNet) -- Pillow
                     resizes in 8 bits, so it differs from the float pipeline by rounding

manifest.txt: one line per image: `<img> <file> crop_top crop_left crop_height crop_width`,
then `decoder <Pillow version> libjpeg-turbo <version>`.
"""

import struct
import sys
from pathlib import Path

import numpy as np
import PIL
import sklearn.datasets
import torch
import torchvision
from PIL import Image, features
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def write_tensor(path, array):
    array = np.ascontiguousarray(array, dtype="<f4")
    with open(path, "wb") as f:
        f.write(b"STF1")
        f.write(struct.pack("<I", array.ndim))
        f.write(struct.pack(f"<{array.ndim}I", *array.shape))
        f.write(array.tobytes())


def sample_photo(name):
    folder = Path(sklearn.datasets.__file__).parent / "images"
    return Image.open(folder / name).convert("RGB")


def make_images(out):
    china = sample_photo("china.jpg").crop((150, 120, 246, 192))
    china.save(out / "china.jpg", format="JPEG", quality=90, subsampling="4:2:0")
    flower = sample_photo("flower.jpg").crop((250, 120, 314, 200))
    flower.save(out / "flower.png", format="PNG")
    # (name, file, crop window top, left, height, width for the training-style crop)
    return [("china", "china.jpg", 5, 11, 60, 70), ("flower", "flower.png", 9, 3, 50, 44)]


def main():
    root = Path(__file__).resolve().parent.parent
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "tests" / "fixtures" / "imagenet"
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    lines = []
    for name, file, top, left, height, width in make_images(out):
        with open(out / file, "rb") as f:
            pil = Image.open(f).convert("RGB")
        decoded = F.to_dtype(F.pil_to_tensor(pil), torch.float32, scale=True)
        write_tensor(out / f"{name}_decoded.f32", decoded.numpy())

        evaluated = F.resize(decoded, [48], interpolation=InterpolationMode.BILINEAR,
                             antialias=True)
        evaluated = F.center_crop(evaluated, [40, 40])
        evaluated = F.normalize(evaluated, MEAN, STD)
        write_tensor(out / f"{name}_eval.f32", evaluated.numpy())

        cropped = F.resized_crop(decoded, top, left, height, width, [32, 32],
                                 interpolation=InterpolationMode.BILINEAR, antialias=True)
        cropped = F.normalize(F.horizontal_flip(cropped), MEAN, STD)
        write_tensor(out / f"{name}_crop.f32", cropped.numpy())

        classic = T.Compose([T.Resize(48), T.CenterCrop(40), T.ToTensor(),
                             T.Normalize(MEAN, STD)])
        write_tensor(out / f"{name}_pil_eval.f32", classic(pil).numpy())
        lines.append(f"{name} {file} {top} {left} {height} {width}")
    lines.append(f"decoder Pillow-{PIL.__version__} libjpeg-turbo-{features.version('libjpeg_turbo')} "
                 f"torch-{torch.__version__} torchvision-{torchvision.__version__}")
    (out / "manifest.txt").write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines) - 1} images and their references to {out}")


if __name__ == "__main__":
    main()
