"""Times PyTorch's conv2d on the shapes of benches/conv.rs (S1-S6) on this machine, so striate's
figures can be compared in the same sitting: GFLOP/s for forward, backward-data and
backward-filter, NCHW (PyTorch's default) and channels-last. Also times the MNIST CNN's
training step (batch 64) and inference (batch 256).

Run: python3 scripts/bench_pytorch_conv.py   (torch 2.x; uses 2 threads)
"""

import time

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(2)
CASES = [
    ("S1_mnist_conv1", (64, 1, 28, 28), 32, 3, 1, 1, 1),
    ("S2_mnist_conv2", (64, 32, 14, 14), 64, 3, 1, 1, 1),
    ("S3_vgg_conv3", (4, 256, 56, 56), 256, 3, 1, 1, 1),
    ("S4_resnet_down", (8, 64, 56, 56), 128, 3, 1, 2, 1),
    ("S5_pointwise", (8, 256, 56, 56), 64, 1, 0, 1, 1),
    ("S6_depthwise", (8, 128, 56, 56), 128, 3, 1, 1, 128),
]


def median_seconds(fn, min_time=1.0):
    for _ in range(3):
        fn()
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_time or len(times) < 5:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


for layout in (torch.contiguous_format, torch.channels_last):
    print("layout", "NCHW" if layout == torch.contiguous_format else "channels-last")
    for name, shape, cout, k, pad, stride, groups in CASES:
        x = torch.randn(shape).to(memory_format=layout)
        w = torch.randn(cout, shape[1] // groups, k, k).to(memory_format=layout)
        b = torch.randn(cout)
        y = F.conv2d(x, w, b, stride, pad, 1, groups)
        gy = torch.randn_like(y)
        flops = 2 * y.numel() * (shape[1] // groups) * k * k
        args = lambda mask: torch.ops.aten.convolution_backward(
            gy, x, w, [cout], [stride] * 2, [pad] * 2, [1, 1], False, [0, 0], groups, mask
        )
        fwd = median_seconds(lambda: F.conv2d(x, w, b, stride, pad, 1, groups))
        data = median_seconds(lambda: args([True, False, False]))
        filt = median_seconds(lambda: args([False, True, True]))
        print(f"  {name:16s} {flops / fwd / 1e9:7.1f} {flops / data / 1e9:7.1f} {flops / filt / 1e9:7.1f}")

model = nn.Sequential(
    nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10),
)
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))


def step():
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()


big = torch.randn(256, 1, 28, 28)
for layout in (torch.contiguous_format, torch.channels_last):
    name = "NCHW" if layout == torch.contiguous_format else "channels-last"
    model = model.to(memory_format=layout)
    x, big = x.to(memory_format=layout), big.to(memory_format=layout)
    print(f"MNIST CNN train step (batch 64, {name}): {median_seconds(step) * 1e3:.2f} ms")
    with torch.no_grad():
        print(f"MNIST CNN inference (batch 256, {name}): {256 / median_seconds(lambda: model(big)):.0f} images/s")
