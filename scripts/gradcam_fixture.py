"""Generates tests/fixtures/explain/gradcam.safetensors: Grad-CAM and saliency maps of the MNIST
CNN computed with PyTorch, for tests/explain_pytorch.rs.

The CNN's weights are not stored: both sides make them with the same integer generator
(`fixed_weights` below, `fixed_weights` in the Rust test), so the fixture stays small. The
inputs are the first four MNIST test digits, normalised with mean 0.1307 and std 0.3081.

Grad-CAM follows pytorch-grad-cam's `GradCAM` with `ClassifierOutputTarget(class)`: the target
layer's output A (a forward hook) and the gradient G of the class logit with respect to it;
weights = mean of G over each map; cam = ReLU(sum_k w_k A_k); `scale_cam_image`: subtract the
minimum, divide by (1e-7 + maximum), resize to the input with bilinear interpolation (cv2's
INTER_LINEAR, which for upsampling equals torch's `interpolate(mode="bilinear",
align_corners=False)`, used here so that OpenCV is not needed). Saliency is
|d logit / d input|, the maximum over channels.

Run: python3 scripts/gradcam_fixture.py [mnist dir]   (torch 2.x, safetensors, numpy)
"""

import gzip
import pathlib
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

MASK = (1 << 64) - 1


def fixed_weights(shapes_and_fans, seed=2024):
    """A 64-bit LCG (Knuth's MMIX constants): each value is the top 24 bits of the state as a
    fraction in [0, 1), mapped to [-1, 1) and scaled by 1/sqrt(fan_in), computed in float64
    and rounded to float32."""
    state = seed
    tensors = []
    for shape, fan_in in shapes_and_fans:
        n = int(np.prod(shape))
        values = np.empty(n, dtype=np.float64)
        bound = 1.0 / np.sqrt(fan_in)
        for i in range(n):
            state = (state * 6364136223846793005 + 1442695040888963407) & MASK
            values[i] = ((state >> 40) / float(1 << 24) * 2.0 - 1.0) * bound
        tensors.append(torch.from_numpy(values.astype(np.float32).reshape(shape)))
    return tensors


def mnist_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def load_digits(directory, count):
    with gzip.open(directory / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(directory / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
    x = (images[:count].astype(np.float32) / 255.0 - 0.1307) / 0.3081
    return torch.from_numpy(x), torch.from_numpy(labels[:count].astype(np.float32))


def grad_cam(model, layer, x, classes):
    captured = {}
    handle = model[layer].register_forward_hook(lambda m, i, o: captured.update(a=o))
    logits = model(x)
    handle.remove()
    a = captured["a"]
    score = logits.gather(1, classes.long()[:, None]).sum()
    (g,) = torch.autograd.grad(score, a)
    weights = g.mean(dim=(2, 3), keepdim=True)
    cam = (weights * a).sum(dim=1).clamp(min=0).detach()
    cam = cam - cam.amin(dim=(1, 2), keepdim=True)
    cam = cam / (1e-7 + cam.amax(dim=(1, 2), keepdim=True))
    return F.interpolate(cam[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]


def main():
    default = pathlib.Path(__file__).resolve().parent.parent.parent / "shared/data/mnist"
    mnist = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else default
    model = mnist_cnn()
    params = [p for _, p in model.named_parameters()]
    fans = {0: 9, 1: 9, 2: 32 * 9, 3: 32 * 9, 4: 3136, 5: 3136, 6: 128, 7: 128}
    values = fixed_weights([(tuple(p.shape), fans[i]) for i, p in enumerate(params)])
    with torch.no_grad():
        for p, v in zip(params, values):
            p.copy_(v)
    model.eval()

    x, labels = load_digits(mnist, 4)
    logits = model(x).detach()
    predicted = logits.argmax(dim=1).float()
    tensors = {"input": x, "label": labels, "logits": logits, "class": predicted}
    for layer in (0, 3):
        tensors[f"gradcam.{layer}"] = grad_cam(model, layer, x, predicted)
    xg = x.clone().requires_grad_(True)
    score = model(xg).gather(1, predicted.long()[:, None]).sum()
    (g,) = torch.autograd.grad(score, xg)
    tensors["saliency"] = g.abs().amax(dim=1)

    out = pathlib.Path("tests/fixtures/explain/gradcam.safetensors")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out))
    print(f"wrote {out}: predicted {predicted.tolist()}, labels {labels.tolist()}")


if __name__ == "__main__":
    main()
