#!/usr/bin/env python3
"""The Python half of scripts/compare_image_folder.sh: makes a folder of real JPEGs and times
torchvision's ImageFolder + DataLoader on it.

Usage:
  python3 scripts/image_folder_bench.py make DIR [COUNT] [SIDE]
      Writes COUNT (default 3000) JPEGs of SIDE x SIDE pixels (default 256) into DIR/<class>/,
      made from Fashion-MNIST's test images (upscaled bicubically and tinted per class, so the
      chroma planes carry detail too; Pillow, quality 90, 4:2:0). Fashion-MNIST is read from
      $STRIATE_DATA/fashion-mnist, ~/.cache/striate/fashion-mnist or Debian's
      /usr/share/datasets/fashion-mnist. Does nothing if DIR already holds COUNT images.
  python3 scripts/image_folder_bench.py torchvision DIR [EPOCHS] [WORKERS]
      Times EPOCHS (default 2) epochs, after one to warm the page cache, of
      ImageFolder(DIR, RandomResizedCrop(224), RandomHorizontalFlip(), ToTensor(),
      Normalize(ImageNet)) through DataLoader(batch_size=64, shuffle=True,
      num_workers=WORKERS (default 2)), and prints `torchvision: <images/s> images/s`.
"""

import gzip
import os
import sys
import time
from pathlib import Path

import numpy as np

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
           "bag", "ankle-boot"]


def fashion_dir():
    candidates = []
    if os.environ.get("STRIATE_DATA"):
        candidates.append(Path(os.environ["STRIATE_DATA"]) / "fashion-mnist")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    candidates += [Path(cache) / "striate" / "fashion-mnist",
                   Path("/usr/share/datasets/fashion-mnist")]
    for c in candidates:
        if (c / "t10k-images-idx3-ubyte.gz").is_file():
            return c
    sys.exit(f"no Fashion-MNIST test files in any of {', '.join(map(str, candidates))}")


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    rank = data[3]
    dims = [int.from_bytes(data[4 + 4 * k:8 + 4 * k], "big") for k in range(rank)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank).reshape(dims)


def make(out, count, side):
    from PIL import Image

    out = Path(out)
    existing = sum(1 for _ in out.glob("*/*.jpg")) if out.is_dir() else 0
    if existing == count:
        print(f"{out}: {count} JPEGs already there")
        return
    if existing:
        sys.exit(f"{out} holds {existing} JPEGs, not {count}: remove it first")
    source = fashion_dir()
    images = read_idx(source / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(source / "t10k-labels-idx1-ubyte.gz")
    for i in range(count):
        grey = Image.fromarray(images[i % len(images)]).resize((side, side), Image.BICUBIC)
        g = np.asarray(grey, dtype=np.float32)
        label = int(labels[i % len(labels)])
        tint = np.array([0.4 + 0.06 * label, 0.9 - 0.05 * label, 0.6], dtype=np.float32)
        rgb = np.clip(g[..., None] * tint + 20.0 * np.sin(np.arange(side) / 7.0)[None, :, None],
                      0, 255).astype(np.uint8)
        folder = out / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(folder / f"{i:05d}.jpg", quality=90, subsampling="4:2:0")
    print(f"{out}: wrote {count} JPEGs of {side}x{side}")


def torchvision_rate(root, epochs, workers):
    import torch
    from torchvision import datasets, transforms as T

    torch.set_num_threads(1)
    transform = T.Compose([
        T.RandomResizedCrop(224),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    dataset = datasets.ImageFolder(root, transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, shuffle=True,
                                         num_workers=workers)
    for _ in loader:  # warm the page cache and the workers' imports
        pass
    started = time.perf_counter()
    seen = 0
    for _ in range(epochs):
        for images, _labels in loader:
            seen += images.shape[0]
    elapsed = time.perf_counter() - started
    print(f"torchvision: {seen / elapsed:.1f} images/s ({seen} images in {elapsed:.2f} s, "
          f"{workers} workers, torch {torch.__version__})")


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("make", "torchvision"):
        sys.exit(__doc__)
    if sys.argv[1] == "make":
        count = int(sys.argv[3]) if len(sys.argv) > 3 else 3000
        side = int(sys.argv[4]) if len(sys.argv) > 4 else 256
        make(sys.argv[2], count, side)
    else:
        epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 2
        workers = int(sys.argv[4]) if len(sys.argv) > 4 else 2
        torchvision_rate(sys.argv[2], epochs, workers)


if __name__ == "__main__":
    main()
