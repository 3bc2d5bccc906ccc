"""The clinical feature network of LLM-CXR's tokenizer loss: torchxrayvision's DenseNet-121.

LLM-CXR (Lee et al. 2024) adds to the VQ-GAN loss a feature-matching term on a CXR classifier, so
that reconstructions keep what a disease classifier looks at. Its classifier is torchxrayvision's
DenseNet-121 (Cohen et al. 2022; `densenet121-res224-all`, 18 pathologies, 1-channel 224 px input in
[-1024, 1024]). This module rebuilds that network with torchxrayvision's parameter names (those of
torchvision's DenseNet: `features.denseblock1.denselayer1.norm1.weight`, ...), so its weights load
without torchxrayvision or torchvision installed.

We never download: export the weights once where torchxrayvision is installed,

    import torchxrayvision as xrv; from safetensors.torch import save_file
    save_file(xrv.models.DenseNet(weights="densenet121-res224-all").state_dict(), "xrv-densenet121.safetensors")

and set `VQTrainConfig.xrv_densenet_weights: xrv-densenet121.safetensors`. (torchxrayvision's own
`.pt` files pickle a whole model, which `weights_only=True` rightly refuses.)
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from llmcxr.errors import BadInputError
from llmcxr.vq.losses import feature_distance

GROWTH, BN_SIZE, BLOCKS, STEM = 32, 4, (6, 12, 24, 16), 64  # DenseNet-121 (Huang et al. 2017)


def dense_layer(c_in: int) -> nn.Sequential:
    """BN-ReLU-1x1 conv (4k channels) then BN-ReLU-3x3 conv (k new channels), k = growth rate 32."""
    return nn.Sequential(
        OrderedDict(
            norm1=nn.BatchNorm2d(c_in),
            relu1=nn.ReLU(),
            conv1=nn.Conv2d(c_in, BN_SIZE * GROWTH, 1, bias=False),
            norm2=nn.BatchNorm2d(BN_SIZE * GROWTH),
            relu2=nn.ReLU(),
            conv2=nn.Conv2d(BN_SIZE * GROWTH, GROWTH, 3, padding=1, bias=False),
        )
    )


class DenseBlock(nn.ModuleDict):
    """(B, C, H, W) -> (B, C + n*32, H, W): each layer sees the concatenation of all before it."""

    def __init__(self, n_layers: int, c_in: int) -> None:
        super().__init__({f"denselayer{i + 1}": dense_layer(c_in + i * GROWTH) for i in range(n_layers)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


def transition(c_in: int) -> nn.Sequential:
    """BN-ReLU-1x1 conv halving the channels, then 2x2 average pooling."""
    return nn.Sequential(
        OrderedDict(
            norm=nn.BatchNorm2d(c_in),
            relu=nn.ReLU(),
            conv=nn.Conv2d(c_in, c_in // 2, 1, bias=False),
            pool=nn.AvgPool2d(2, 2),
        )
    )


class XRVDenseNet(nn.Module):
    """DenseNet-121, 1 channel in, 18 pathology logits out; `block_features` for feature matching."""

    def __init__(self, n_outputs: int = 18) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv0=nn.Conv2d(1, STEM, 7, stride=2, padding=3, bias=False),
            norm0=nn.BatchNorm2d(STEM),
            relu0=nn.ReLU(),
            pool0=nn.MaxPool2d(3, stride=2, padding=1),
        )
        channels = STEM
        for i, n_layers in enumerate(BLOCKS, start=1):
            layers[f"denseblock{i}"] = DenseBlock(n_layers, channels)
            channels += n_layers * GROWTH
            if i != len(BLOCKS):
                layers[f"transition{i}"] = transition(channels)
                channels //= 2
        layers["norm5"] = nn.BatchNorm2d(channels)
        self.features = nn.Sequential(layers)
        self.classifier = nn.Linear(channels, n_outputs)
        self.input_size = 224  # torchxrayvision's res224 models; tests lower it to stay fast

    @classmethod
    def from_file(cls, path: str | Path) -> XRVDenseNet:
        path = Path(path)
        if not path.is_file():
            raise BadInputError(
                path, "DenseNet weights not found", "export them as the module docstring shows"
            )
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # pickled whole models are refused on purpose
                raise BadInputError(
                    path, f"not a plain state dict ({type(err).__name__})", "export to safetensors"
                ) from None
        model = cls(n_outputs=state["classifier.weight"].shape[0] if "classifier.weight" in state else 18)
        missing = model.load_state_dict(state, strict=False).missing_keys
        if missing:
            raise BadInputError(path, f"not a torchxrayvision DenseNet-121: missing {missing[:5]}")
        return model.eval().requires_grad_(False)

    def block_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B, 1, R, R) in [-1, 1] -> activations after each dense block, at `input_size` px input
        scaled to torchxrayvision's [-1024, 1024]."""
        size = (self.input_size, self.input_size)
        x = F.interpolate(images, size=size, mode="bilinear", align_corners=False) * 1024.0
        feats = []
        for name, layer in self.features.named_children():
            x = layer(x)
            if name.startswith("denseblock"):
                feats.append(x)
        return feats

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, R, R) in [-1, 1] -> (B, 18) pathology logits."""
        x = self.block_features(images)[-1]
        pooled = F.adaptive_avg_pool2d(F.relu(self.features.norm5(x)), 1).flatten(1)
        return self.classifier(pooled)


class ClinicalFeatureLoss(nn.Module):
    """Feature matching on a frozen CXR classifier's block activations (eval-mode BatchNorm): the
    torchxrayvision DenseNet, or any network with `block_features` (the project's finding classifier)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> ClinicalFeatureLoss:  # the classifier stays in eval mode
        super().train(mode)
        self.network.eval()
        return self

    def forward(self, images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            real = self.network.block_features(images)
        return feature_distance(real, self.network.block_features(reconstructions))
