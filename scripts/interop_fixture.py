"""Writes the PyTorch side of striate's interoperability test (tests/interop_pytorch.rs):

- tests/fixtures/interop/tiny_resnet.safetensors: the `state_dict()` of a narrow ResNet with
  torchvision's names (`conv1`, `bn1`, `layer1.0.conv1`, `layer2.0.downsample.0`, `fc`, ...),
  random weights and non-trivial batch-norm running statistics (three training-mode batches
  were run first), exactly as `safetensors.torch.save_file` writes a converted torchvision
  checkpoint (`num_batches_tracked` as I64);
- tests/fixtures/interop/tiny_resnet_io.safetensors: an input batch, the eval-mode logits, and
  the output of `layer3` (for feature extraction).

The network is torchvision's ResNet with BasicBlock, layers [1, 1, 1, 1] and the ImageNet stem
(7x7 stride-2 conv, 3x3 stride-2 max pool), at width 4 instead of 64 so the fixture stays
small. striate builds it as `ResNetConfig::new(BlockKind::Basic, [1, 1, 1, 1], 5).width(4)`.

Run: python3 scripts/interop_fixture.py   (torch 2.x, torchvision, safetensors)
"""

import torch
import torch.nn as nn
from safetensors.torch import save_file
from torchvision.models.resnet import BasicBlock, conv1x1

torch.manual_seed(0)


class TinyResNet(nn.Module):
    """torchvision's ResNet.__init__ and _make_layer with the width as a parameter."""

    def __init__(self, width=4, num_classes=5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.inplanes = width
        self.layer1 = self._make_layer(width, 1)
        self.layer2 = self._make_layer(width * 2, 2)
        self.layer3 = self._make_layer(width * 4, 2)
        self.layer4 = self._make_layer(width * 8, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8, num_classes)

    def _make_layer(self, planes, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes, stride), nn.BatchNorm2d(planes))
        block = BasicBlock(self.inplanes, planes, stride, downsample)
        self.inplanes = planes
        return nn.Sequential(block)

    def forward(self, x, until=None):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        if until == "layer3":
            return x
        x = torch.flatten(self.avgpool(self.layer4(x)), 1)
        return self.fc(x)


model = TinyResNet()
# random affine batch-norm parameters, so that γ and β matter
for module in model.modules():
    if isinstance(module, nn.BatchNorm2d):
        nn.init.uniform_(module.weight, 0.5, 1.5)
        nn.init.uniform_(module.bias, -0.5, 0.5)
model.train()
with torch.no_grad():
    for _ in range(3):
        model(torch.randn(8, 3, 40, 40) * 2 + 0.5)
model.eval()
x = torch.randn(2, 3, 40, 40)
with torch.no_grad():
    logits = model(x)
    layer3 = model(x, until="layer3")

save_file({k: v.contiguous() for k, v in model.state_dict().items()},
          "tests/fixtures/interop/tiny_resnet.safetensors")
save_file({"input": x, "logits": logits, "layer3": layer3.contiguous()},
          "tests/fixtures/interop/tiny_resnet_io.safetensors")
print("parameters:", sum(p.numel() for p in model.parameters()))
print("logits:", logits)
