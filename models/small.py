"""Compact CNNs for small images, demos and tests (registered next to torchvision's networks)."""

from __future__ import annotations

from torch import nn

from vislab.models.registry import register_model


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """conv-bn-relu x2, max-pool, x2, global average pool, linear. ~0.1-0.4 M parameters."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 32, dropout: float = 0.1):
        super().__init__()
        self.features = nn.Sequential(
            _block(in_channels, width), _block(width, width), nn.MaxPool2d(2),
            _block(width, 2 * width), _block(2 * width, 2 * width),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * width, num_classes))

    def forward(self, x):  # (B, C, H, W) -> (B, num_classes)
        return self.classifier(self.avgpool(self.features(x)))


@register_model("small_cnn")
def small_cnn(num_classes: int, in_channels: int = 3, **kw) -> SmallCNN:
    return SmallCNN(num_classes, in_channels, width=kw.pop("width", 32), **kw)


@register_model("tiny_cnn")
def tiny_cnn(num_classes: int, in_channels: int = 3, **kw) -> SmallCNN:
    return SmallCNN(num_classes, in_channels, width=kw.pop("width", 8), **kw)
