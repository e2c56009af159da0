"""Writes tests/fixtures/torchvision/<model>.txt: the `state_dict()` of each torchvision model that
striate's zoo reproduces, one `name shape` line per entry (parameters and buffers), in
torchvision's order; and `inception3a.txt` for GoogLeNet's first Inception module. `tests/zoo_torchvision.rs` checks striate's names and shapes against them.

No weights are downloaded (`weights=None`); only names and shapes are written.

Run: python3 scripts/torchvision_keys.py   (torch 2.x, torchvision 0.2x)
"""

import torchvision.models as tvm
from torchvision.models.googlenet import Inception

MODELS = [
    "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
    "resnet18", "resnet34", "resnet50",
]

for name in MODELS:
    model = getattr(tvm, name)(weights=None)
    params = sum(p.numel() for p in model.parameters())
    with open(f"tests/fixtures/torchvision/{name}.txt", "w") as out:
        out.write(f"# torchvision {name}(weights=None): {params} parameters\n")
        for key, tensor in model.state_dict().items():
            out.write(f"{key} {list(tensor.shape)}\n")

block = Inception(192, 64, 96, 128, 16, 32, 32)
with open("tests/fixtures/torchvision/inception3a.txt", "w") as out:
    params = sum(p.numel() for p in block.parameters())
    out.write(f"# torchvision googlenet Inception(192, 64, 96, 128, 16, 32, 32): {params} parameters\n")
    for key, tensor in block.state_dict().items():
        out.write(f"{key} {list(tensor.shape)}\n")
