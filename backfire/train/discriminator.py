"""A PatchGAN discriminator with spectral normalisation, for adversarial inpainting training.

pix2pix's ``NLayerDiscriminator`` layout (4×4 convolutions, stride 2 then 1, LeakyReLU 0.2; LaMa uses
the same layout with BatchNorm and an R1 penalty). Here every convolution is spectrally normalised
and there is no normalisation layer (the SN-PatchGAN of DeepFill v2): SN bounds the discriminator's
Lipschitz constant without the second backward pass an R1 penalty costs, and without batch
statistics that would mix real and fake images. With ``n_layers=3`` the receptive field of one output
logit is 70×70 px and a 128² input gives a 15×15 logit map.

``forward`` returns the logits and the activations of every hidden layer (for feature matching).
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = ["PatchDiscriminator"]


class PatchDiscriminator(nn.Module):
    """(N, in_nc, H, W) → logits (N, 1, H', W') and a list of hidden activations."""

    def __init__(self, in_nc: int = 3, ndf: int = 64, n_layers: int = 3, max_features: int = 512,
                 spectral: bool = True):
        super().__init__()
        if n_layers < 1 or ndf < 1:
            raise ValueError(f"invalid discriminator size: ndf={ndf}, n_layers={n_layers}")

        def conv(cin: int, cout: int, stride: int) -> nn.Module:
            layer = nn.Conv2d(cin, cout, kernel_size=4, stride=stride, padding=1)
            return spectral_norm(layer) if spectral else layer

        widths = [min(max_features, ndf * 2 ** i) for i in range(n_layers + 1)]
        blocks = [nn.Sequential(conv(in_nc, widths[0], 2), nn.LeakyReLU(0.2, inplace=True))]
        for i in range(1, n_layers + 1):
            stride = 2 if i < n_layers else 1
            blocks.append(nn.Sequential(conv(widths[i - 1], widths[i], stride), nn.LeakyReLU(0.2, inplace=True)))
        self.blocks = nn.ModuleList(blocks)
        self.head = conv(widths[-1], 1, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return self.head(x), features
