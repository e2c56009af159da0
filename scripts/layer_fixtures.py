"""Generates tests/fixtures/layers.safetensors: PyTorch's outputs and gradients for striate's
layers, so the Rust tests check them against an independent implementation without Python.

For each case `<case>`, the file holds `<case>.input`, the layer's parameters as
`<case>.param.<name>`, its output `<case>.output`, a projection `<case>.r`, and the gradients of
`sum(output * r)` as `<case>.grad.input` and `<case>.grad.param.<name>`. Batch-norm cases also hold
the running statistics after the step as `<case>.buffer.<name>`.

Run: python3 scripts/layer_fixtures.py   (torch 2.x, safetensors)
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(0)
tensors = {}


def record(case, module, x, train=True, extra=None):
    module.train(train)
    x = x.clone().requires_grad_(True)
    params = dict(module.named_parameters())
    y = module(x)
    r = torch.rand_like(y) * 2 - 1
    (y * r).sum().backward()
    tensors[f"{case}.input"] = x.detach()
    tensors[f"{case}.output"] = y.detach()
    tensors[f"{case}.r"] = r
    tensors[f"{case}.grad.input"] = x.grad
    for name, p in params.items():
        tensors[f"{case}.param.{name}"] = p.detach()
        tensors[f"{case}.grad.param.{name}"] = p.grad
    for name, b in module.named_buffers():
        if b.dtype.is_floating_point:
            tensors[f"{case}.buffer.{name}"] = b.detach().clone()
    if extra:
        tensors.update({f"{case}.{k}": v for k, v in extra.items()})


def randomize(module):
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-1, 1)
    return module


record("conv_basic", nn.Conv2d(3, 4, 3, padding=1), torch.randn(2, 3, 6, 5))
record(
    "conv_grouped",
    nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2),
    torch.randn(2, 4, 7, 6),
)
record("conv_depthwise", nn.Conv2d(3, 6, 3, padding="same", groups=3, bias=False), torch.randn(1, 3, 5, 5))
record("conv_same_even", nn.Conv2d(2, 2, 4, padding="same"), torch.randn(2, 2, 5, 6))
record("conv_pointwise", nn.Conv2d(5, 3, 1), torch.randn(2, 5, 4, 3))
record("dense", nn.Linear(5, 3), torch.randn(4, 5))

bn = randomize(nn.BatchNorm2d(3))
record("bn_train", bn, torch.randn(4, 3, 3, 3) * 2 + 1, train=True)
bn_eval = randomize(nn.BatchNorm2d(3))
with torch.no_grad():
    bn_eval.running_mean.uniform_(-1, 1)
    bn_eval.running_var.uniform_(0.5, 2)
record("bn_eval", bn_eval, torch.randn(2, 3, 4, 4), train=False)
bn1d = randomize(nn.BatchNorm1d(4))
record("bn1d_train", bn1d, torch.randn(6, 4), train=True)

record("maxpool", nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), torch.randn(2, 2, 8, 7))
record("avgpool_exclude", nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False), torch.randn(2, 2, 8, 7))
record("avgpool_include", nn.AvgPool2d((2, 3), stride=(1, 2), padding=(1, 1)), torch.randn(1, 3, 5, 6))
record("leaky_relu", nn.LeakyReLU(0.2), torch.randn(3, 4))
record("elu", nn.ELU(0.7), torch.randn(3, 4))
record("softmax", nn.Softmax(dim=1), torch.randn(3, 4, 2))
record("log_softmax", nn.LogSoftmax(dim=1), torch.randn(3, 4) * 3)

logits = (torch.randn(5, 4) * 2).requires_grad_(True)
targets = torch.tensor([0, 3, 1, 1, 2])
loss = F.cross_entropy(logits, targets, label_smoothing=0.15)
loss.backward()
tensors["cross_entropy.input"] = logits.detach()
tensors["cross_entropy.targets"] = targets.to(torch.float32)
tensors["cross_entropy.output"] = loss.detach().reshape(1)
tensors["cross_entropy.grad.input"] = logits.grad

save_file({k: v.contiguous() for k, v in tensors.items()}, "tests/fixtures/layers.safetensors")
print(f"wrote {len(tensors)} tensors")
