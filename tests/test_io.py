"""Tests for backfire.io: real files in tmp_path, real assertions."""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile, features

from backfire import io as bio
from backfire.io import (
    DEFAULT_MAX_PIXELS,
    InputError,
    LoadedImage,
    LoadedMask,
    find_pairs,
    read_image,
    read_mask,
    save_image,
    save_mask,
    write_bytes_atomic,
    write_text_atomic,
)
from backfire.pixels import quantize, to_uint8

RNG = np.random.default_rng(1234)


def noise(h: int, w: int, c: int = 3) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, c) if c > 1 else (h, w), dtype=np.uint8)


def save_pil(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    return msg


def manual_png(w: int, h: int, depth: int, colour_type: int, raw: bytes) -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def exif_with_orientation(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif


# ============================================================================ read_image: bad input


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as e:
        read_image(tmp_path / "nope.png")
    msg = one_line(e)
    assert "nope.png" in msg and "does not exist" in msg


def test_directory(tmp_path):
    d = tmp_path / "dir.png"
    d.mkdir()
    with pytest.raises(InputError) as e:
        read_image(d)
    assert "is a directory" in one_line(e) and "dir.png" in str(e.value)


def test_broken_symlink(tmp_path):
    link = tmp_path / "link.png"
    link.symlink_to(tmp_path / "gone.png")
    with pytest.raises(InputError) as e:
        read_image(link)
    assert "broken symbolic link" in one_line(e)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(InputError) as e:
        read_image(p)
    assert "empty (0 bytes)" in one_line(e) and "empty.png" in str(e.value)


def test_text_file_named_png(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("this is not an image\n" * 20)
    with pytest.raises(InputError) as e:
        read_image(p)
    msg = one_line(e)
    assert "notes.png" in msg and "not an image file" in msg


def test_unreadable_permission(tmp_path, monkeypatch):
    p = save_pil(Image.fromarray(noise(4, 4)), tmp_path / "secret.png")
    os.chmod(p, 0)
    try:
        if os.access(p, os.R_OK):  # running as root: simulate the OS refusing the open
            real_open = open

            def fake_open(file, *a, **kw):
                if Path(file) == p:
                    raise PermissionError(13, "Permission denied", str(file))
                return real_open(file, *a, **kw)

            monkeypatch.setattr(bio.read, "open", fake_open, raising=False)
        with pytest.raises(InputError) as e:
            read_image(p)
        assert "permission denied" in one_line(e) and "secret.png" in str(e.value)
    finally:
        os.chmod(p, 0o644)


def _truncated(tmp_path: Path, fmt: str, ext: str) -> Path:
    full = save_pil(Image.fromarray(noise(64, 64)), tmp_path / f"full{ext}", format=fmt)
    data = full.read_bytes()
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(data[: len(data) // 2])
    return cut


@pytest.mark.parametrize("fmt,ext", [("PNG", ".png"), ("JPEG", ".jpg")])
def test_truncated_image(tmp_path, fmt, ext):
    cut = _truncated(tmp_path, fmt, ext)
    with pytest.raises(InputError) as e:
        read_image(cut)
    msg = one_line(e)
    assert f"cut{ext}" in msg and "truncated or corrupt" in msg


def test_truncated_even_if_pillow_global_allows_it(tmp_path, monkeypatch):
    cut = _truncated(tmp_path, "JPEG", ".jpg")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_image(cut)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


@pytest.mark.parametrize("missing", [4, 8, 12])
def test_png_cut_in_its_last_bytes_is_rejected(tmp_path, missing):
    # Pillow decodes all pixels of such a file without complaint; the chunk walk must not.
    full = save_pil(Image.fromarray(noise(16, 16)), tmp_path / "full.png")
    data = full.read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) - missing - 8])
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_image(cut)


def test_png_with_corrupt_crc(tmp_path):
    full = save_pil(Image.fromarray(noise(16, 16)), tmp_path / "full.png")
    data = bytearray(full.read_bytes())
    data[-20] ^= 0xFF  # inside IDAT data near the end
    bad = tmp_path / "bad.png"
    bad.write_bytes(bytes(data))
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_image(bad)


def test_pixel_cap_checked_before_decoding(tmp_path, monkeypatch):
    p = save_pil(Image.fromarray(noise(20, 20)), tmp_path / "big.png")

    def no_decode(self, *a, **kw):
        raise AssertionError("pixels were decoded before the cap check")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    with pytest.raises(InputError) as e:
        read_image(p, max_pixels=100)
    msg = one_line(e)
    assert "big.png" in msg and "20x20" in msg and "400" in msg and "100" in msg
    assert "--max-pixels 400" in msg


def test_pixel_cap_exact_limit_is_allowed(tmp_path):
    p = save_pil(Image.fromarray(noise(10, 10)), tmp_path / "ok.png")
    assert read_image(p, max_pixels=100).size == (10, 10)
    with pytest.raises(InputError):
        read_image(p, max_pixels=99)
    assert read_image(p, max_pixels=None).size == (10, 10)


def test_pillow_bomb_limit_does_not_preempt_our_cap(tmp_path, monkeypatch):
    p = save_pil(Image.fromarray(noise(20, 30)), tmp_path / "img.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # 600 px > 2 * 50: Pillow would raise
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = read_image(p, max_pixels=1000)
    assert loaded.size == (30, 20)
    assert Image.MAX_IMAGE_PIXELS == 50  # restored
    assert not any("decompression" in n.lower() for n in loaded.notes)


def test_default_cap_value():
    assert DEFAULT_MAX_PIXELS == 40_000_000


# ============================================================================ read_image: conversions


def test_rgb_png_exact(tmp_path):
    arr = noise(5, 7)
    loaded = read_image(save_pil(Image.fromarray(arr), tmp_path / "rgb.png"))
    assert isinstance(loaded, LoadedImage)
    assert loaded.pixels.dtype == torch.float32 and loaded.pixels.shape == (3, 5, 7)
    assert loaded.size == (7, 5)
    assert loaded.path == tmp_path / "rgb.png"
    assert torch.equal(loaded.pixels, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)
    assert loaded.notes == []


def test_rgba_composited_on_white(tmp_path):
    arr = np.zeros((2, 2, 4), np.uint8)
    arr[0, 0] = (255, 0, 0, 255)  # opaque red
    arr[0, 1] = (0, 0, 0, 0)  # fully transparent black -> white
    arr[1, 0] = (0, 0, 0, 51)  # 20 % black over white -> 0.8
    arr[1, 1] = (0, 255, 0, 255)
    loaded = read_image(save_pil(Image.fromarray(arr, "RGBA"), tmp_path / "a.png"))
    px = loaded.pixels
    assert torch.allclose(px[:, 0, 0], torch.tensor([1.0, 0, 0]))
    assert torch.allclose(px[:, 0, 1], torch.ones(3))
    assert torch.allclose(px[:, 1, 0], torch.full((3,), 0.8), atol=1e-6)
    assert torch.allclose(px[:, 1, 1], torch.tensor([0.0, 1, 0]))
    assert any("composited on white" in n for n in loaded.notes)


def test_opaque_rgba_unchanged(tmp_path):
    arr = noise(3, 3, 4)
    arr[..., 3] = 255
    loaded = read_image(save_pil(Image.fromarray(arr, "RGBA"), tmp_path / "a.png"))
    assert torch.equal(loaded.pixels, torch.from_numpy(arr[..., :3]).permute(2, 0, 1).float() / 255)
    assert any("fully opaque" in n for n in loaded.notes)


def test_la(tmp_path):
    arr = np.array([[[100, 255], [0, 0]]], np.uint8)  # 1x2, (L, A)
    loaded = read_image(save_pil(Image.fromarray(arr, "LA"), tmp_path / "la.png"))
    px = loaded.pixels
    assert px.shape == (3, 1, 2)
    assert torch.allclose(px[:, 0, 0], torch.full((3,), 100 / 255))
    assert torch.allclose(px[:, 0, 1], torch.ones(3))
    assert "greyscale expanded to RGB" in loaded.notes
    assert any("composited on white" in n for n in loaded.notes)


def test_l(tmp_path):
    arr = noise(4, 6, 1)
    loaded = read_image(save_pil(Image.fromarray(arr, "L"), tmp_path / "l.png"))
    expect = torch.from_numpy(arr).float() / 255
    for c in range(3):
        assert torch.equal(loaded.pixels[c], expect)
    assert loaded.notes == ["greyscale expanded to RGB"]


def test_mode_1(tmp_path):
    arr = np.array([[True, False, True]])
    loaded = read_image(save_pil(Image.fromarray(arr), tmp_path / "bw.png"))
    assert torch.equal(loaded.pixels[:, 0, :], torch.tensor([[1.0, 0, 1]] * 3))
    assert any("1-bit" in n for n in loaded.notes)


def test_palette(tmp_path):
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    loaded = read_image(save_pil(img, tmp_path / "p.png"))
    assert torch.equal(loaded.pixels[:, 0, 0], torch.tensor([1.0, 0, 0]))
    assert torch.equal(loaded.pixels[:, 0, 1], torch.tensor([0.0, 0, 1]))
    assert "palette image converted to RGB" in loaded.notes
    assert not any("alpha" in n for n in loaded.notes)


@pytest.mark.parametrize("ext", [".png", ".gif"])
def test_palette_with_transparency(tmp_path, ext):
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 0, 0] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    loaded = read_image(save_pil(img, tmp_path / f"pt{ext}", transparency=1))
    assert torch.equal(loaded.pixels[:, 0, 0], torch.tensor([1.0, 0, 0]))
    assert torch.equal(loaded.pixels[:, 0, 1], torch.ones(3))  # transparent black -> white
    assert "palette image converted to RGB" in loaded.notes
    assert any("composited on white" in n for n in loaded.notes)


def test_i16_full_precision(tmp_path):
    arr = np.array([[0, 1, 257, 32768, 65534, 65535]], np.uint16)
    p = save_pil(Image.fromarray(arr), tmp_path / "g16.png")
    assert Image.open(p).mode.startswith("I")
    loaded = read_image(p)
    expect = torch.from_numpy(arr.astype(np.float32)) / 65535
    for c in range(3):
        assert torch.equal(loaded.pixels[c], expect)
    # 257/65535 == 1/255 and 1/65535 is not an 8-bit value: proves no 8-bit truncation
    assert loaded.pixels[0, 0, 1].item() == pytest.approx(1 / 65535, abs=1e-9)
    assert loaded.pixels[0, 0, 2].item() == pytest.approx(1 / 255, abs=1e-9)
    assert loaded.pixels[0, 0, 5].item() == 1.0
    assert "16-bit greyscale read at full precision" in loaded.notes


def test_48bit_png_noted(tmp_path):
    raw = b"\x00" + struct.pack(">6H", 0x1234, 0xFFFF, 0, 0x8080, 0, 0xFFFF)
    p = tmp_path / "rgb48.png"
    p.write_bytes(manual_png(2, 1, 16, 2, raw))
    loaded = read_image(p)
    assert loaded.size == (2, 1)
    assert "16-bit colour reduced to 8 bits by the decoder" in loaded.notes
    assert torch.allclose(loaded.pixels[:, 0, 1], torch.tensor([128 / 255, 0, 1.0]))


def test_float_tiff_clamped(tmp_path):
    arr = np.array([[-0.5, 0.25, 1.5]], np.float32)
    p = save_pil(Image.fromarray(arr, "F"), tmp_path / "f.tif")
    loaded = read_image(p)
    assert torch.equal(loaded.pixels[1, 0], torch.tensor([0.0, 0.25, 1.0]))
    assert any("clamped to [0, 1]" in n for n in loaded.notes)


def test_float_tiff_in_range_no_clamp_note(tmp_path):
    arr = np.array([[0.0, 0.125, 1.0]], np.float32)
    loaded = read_image(save_pil(Image.fromarray(arr, "F"), tmp_path / "f.tif"))
    assert torch.equal(loaded.pixels[2, 0], torch.from_numpy(arr[0]))
    assert not any("clamped" in n for n in loaded.notes)


def test_cmyk(tmp_path):
    img = Image.new("CMYK", (3, 1))
    img.putpixel((0, 0), (0, 0, 0, 0))  # white
    img.putpixel((1, 0), (255, 0, 0, 0))  # cyan
    img.putpixel((2, 0), (0, 0, 0, 255))  # black
    loaded = read_image(save_pil(img, tmp_path / "c.tif"))
    assert torch.equal(loaded.pixels[:, 0, 0], torch.ones(3))
    assert torch.equal(loaded.pixels[:, 0, 1], torch.tensor([0.0, 1, 1]))
    assert torch.equal(loaded.pixels[:, 0, 2], torch.zeros(3))
    assert "CMYK converted to RGB" in loaded.notes


def test_cmyk_jpeg(tmp_path):
    img = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red
    loaded = read_image(save_pil(img, tmp_path / "c.jpg", quality=95))
    assert torch.allclose(loaded.pixels.mean((1, 2)), torch.tensor([1.0, 0, 0]), atol=0.03)
    assert "CMYK converted to RGB" in loaded.notes


def _two_colour(w: int, h: int) -> np.ndarray:
    """Left half red, right half blue."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 2] = (255, 0, 0)
    arr[:, w // 2 :] = (0, 0, 255)
    return arr


def test_exif_orientation_6_jpeg(tmp_path):
    arr = _two_colour(32, 16)  # stored W=32, H=16
    p = save_pil(Image.fromarray(arr), tmp_path / "rot.jpg", quality=95, exif=exif_with_orientation(6))
    loaded = read_image(p)
    assert loaded.size == (16, 32)  # displayed upright: W and H swapped
    # orientation 6 = rotate 90 degrees clockwise: the stored left (red) becomes the top
    top = loaded.pixels[:, 2:14, 2:14].mean((1, 2))
    bottom = loaded.pixels[:, 18:30, 2:14].mean((1, 2))
    assert torch.allclose(top, torch.tensor([1.0, 0, 0]), atol=0.05)
    assert torch.allclose(bottom, torch.tensor([0.0, 0, 1]), atol=0.05)
    assert "rotated 90 degrees clockwise upright from EXIF orientation 6" in loaded.notes


def test_exif_orientation_8_png_exact(tmp_path):
    arr = noise(3, 5)  # H=3, W=5
    p = save_pil(Image.fromarray(arr), tmp_path / "rot.png", exif=exif_with_orientation(8))
    loaded = read_image(p)
    assert loaded.size == (3, 5)
    # orientation 8 = rotate 90 degrees counter-clockwise
    expect = torch.from_numpy(np.rot90(arr, k=1).copy()).permute(2, 0, 1).float() / 255
    assert torch.equal(loaded.pixels, expect)
    assert any("EXIF orientation 8" in n for n in loaded.notes)


def test_animated_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    p = tmp_path / "anim.png"
    frames[0].save(p, save_all=True, append_images=frames[1:])
    loaded = read_image(p)
    assert torch.equal(loaded.pixels[:, 0, 0], torch.tensor([1.0, 0, 0]))
    assert any("only the first frame" in n for n in loaded.notes)


def test_pixels_in_unit_range_and_contiguous(tmp_path):
    loaded = read_image(save_pil(Image.fromarray(noise(8, 8)), tmp_path / "x.png"))
    assert loaded.pixels.is_contiguous()
    assert float(loaded.pixels.min()) >= 0 and float(loaded.pixels.max()) <= 1


# ============================================================================ read_mask


def _mask_png(tmp_path: Path, arr: np.ndarray, name: str = "m.png", mode: str | None = None) -> Path:
    return save_pil(Image.fromarray(arr, mode) if mode else Image.fromarray(arr), tmp_path / name)


def test_mask_luminance(tmp_path):
    arr = np.zeros((4, 5), np.uint8)
    arr[1:3, 1:4] = 255
    m = read_mask(_mask_png(tmp_path, arr), (5, 4))
    assert isinstance(m, LoadedMask)
    assert m.mask.dtype == torch.float32 and m.mask.shape == (4, 5) and m.size == (5, 4)
    assert torch.equal(m.mask, torch.from_numpy(arr > 127).float())
    assert m.notes == []


def test_mask_grey_thresholded(tmp_path):
    arr = np.array([[0, 127, 128, 255]], np.uint8)
    m = read_mask(_mask_png(tmp_path, arr), (4, 1))
    assert torch.equal(m.mask, torch.tensor([[0.0, 0, 1, 1]]))
    assert any("thresholded at 0.5" in n for n in m.notes)


def test_mask_rgb_colour_luminance(tmp_path):
    arr = np.zeros((1, 3, 3), np.uint8)
    arr[0, 0] = (255, 0, 0)  # luminance 0.299 -> not protected
    arr[0, 1] = (255, 255, 255)
    arr[0, 2] = (0, 255, 0)  # luminance 0.587 -> protected
    m = read_mask(_mask_png(tmp_path, arr), (3, 1))
    assert torch.equal(m.mask, torch.tensor([[0.0, 1, 1]]))


def test_mask_alpha_rule(tmp_path):
    arr = np.zeros((2, 3, 4), np.uint8)
    arr[..., :3] = 0  # black paint everywhere: luminance would select nothing
    arr[0, 1, 3] = 255
    arr[1, 2, 3] = 200
    m = read_mask(_mask_png(tmp_path, arr, mode="RGBA"), (3, 2))
    assert torch.equal(m.mask, torch.tensor([[0.0, 1, 0], [0, 0, 1]]))
    assert any("alpha" in n for n in m.notes)


def test_mask_opaque_alpha_uses_luminance(tmp_path):
    arr = np.zeros((1, 2, 4), np.uint8)
    arr[..., 3] = 255
    arr[0, 1, :3] = 255
    m = read_mask(_mask_png(tmp_path, arr, mode="RGBA"), (2, 1))
    assert torch.equal(m.mask, torch.tensor([[0.0, 1]]))


def test_mask_mode_1(tmp_path):
    arr = np.array([[True, False], [False, False]])
    m = read_mask(_mask_png(tmp_path, arr), (2, 2))
    assert torch.equal(m.mask, torch.tensor([[1.0, 0], [0, 0]]))
    assert not any("thresholded" in n for n in m.notes)


def test_mask_size_mismatch(tmp_path):
    arr = np.zeros((4, 6), np.uint8)
    arr[0, 0] = 255
    p = _mask_png(tmp_path, arr)
    with pytest.raises(InputError) as e:
        read_mask(p, (5, 5))
    msg = one_line(e)
    assert "6x4" in msg and "5x5" in msg and "m.png" in msg and "swapped" not in msg


def test_mask_size_mismatch_swapped_hint(tmp_path):
    arr = np.zeros((4, 6), np.uint8)
    arr[0, 0] = 255
    with pytest.raises(InputError) as e:
        read_mask(_mask_png(tmp_path, arr), (4, 6))
    msg = one_line(e)
    assert "6x4" in msg and "4x6" in msg and "swapped" in msg and "EXIF" in msg


def test_mask_exif_transposed_before_size_check(tmp_path):
    arr = np.zeros((4, 6), np.uint8)  # stored W=6, H=4
    arr[0, 0] = 255
    p = save_pil(Image.fromarray(arr), tmp_path / "m.png", exif=exif_with_orientation(6))
    m = read_mask(p, (4, 6))
    assert m.size == (4, 6)
    assert m.mask[0, 3] == 1 and m.mask.sum() == 1  # stored top-left -> top-right


def test_mask_empty(tmp_path):
    with pytest.raises(InputError) as e:
        read_mask(_mask_png(tmp_path, np.zeros((3, 3), np.uint8)), (3, 3))
    msg = one_line(e)
    assert "selects no pixel" in msg and "white (or opaque) marks the region to protect" in msg


def test_mask_empty_transparent(tmp_path):
    arr = np.full((3, 3, 4), 255, np.uint8)
    arr[..., 3] = 0
    with pytest.raises(InputError, match="selects no pixel"):
        read_mask(_mask_png(tmp_path, arr, mode="RGBA"), (3, 3))


def test_mask_full(tmp_path):
    with pytest.raises(InputError) as e:
        read_mask(_mask_png(tmp_path, np.full((3, 3), 255, np.uint8)), (3, 3))
    assert "covers the whole image" in one_line(e)


def test_mask_bad_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_mask(tmp_path / "none.png", (3, 3))
    cut = _truncated(tmp_path, "PNG", ".png")
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_mask(cut, (64, 64))
    big = _mask_png(tmp_path, np.zeros((20, 20), np.uint8), "big.png")
    with pytest.raises(InputError, match="--max-pixels"):
        read_mask(big, (20, 20), max_pixels=100)


# ============================================================================ pixels and saving


def test_quantize_and_to_uint8_round():
    x = torch.tensor([0.0, 0.999 / 255, 0.5 / 255 + 1e-4, 0.49 / 255, 1.0, 254.6 / 255, 1.2, -0.3])
    q = quantize(x)
    assert torch.equal(q * 255, torch.tensor([0.0, 1, 1, 0, 255, 255, 255, 0]))
    px = x.view(1, 1, 8).expand(3, 1, 8)
    u = to_uint8(px)
    assert u.dtype == np.uint8 and u.shape == (1, 8, 3)
    assert u[0, :, 0].tolist() == [0, 1, 1, 0, 255, 255, 255, 0]
    assert to_uint8(px.unsqueeze(0)).shape == (1, 8, 3)


def test_round_trip_exact(tmp_path):
    x = quantize(torch.rand(3, 9, 11, generator=torch.Generator().manual_seed(0)))
    p = tmp_path / "out.png"
    save_image(x, p)
    assert torch.equal(read_image(p).pixels, x)
    save_image(x.unsqueeze(0), p)  # 1x3xHxW accepted, overwrite allowed
    assert torch.equal(read_image(p).pixels, x)


def test_save_rounds_not_truncates(tmp_path):
    x = torch.full((3, 2, 2), 0.999 / 255)
    x[0, 0, 0] = 100.6 / 255
    p = tmp_path / "r.png"
    save_image(x, p)
    arr = np.asarray(Image.open(p))
    assert arr[0, 0, 0] == 101 and arr[1, 1, 2] == 1


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")
def test_save_webp_lossless(tmp_path):
    x = quantize(torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1)))
    p = tmp_path / "out.webp"
    save_image(x, p)
    assert Image.open(p).format == "WEBP"
    assert torch.equal(read_image(p).pixels, x)


def test_save_jpeg_and_no_extension(tmp_path):
    x = torch.full((3, 16, 16), 0.5)
    save_image(x, tmp_path / "out.JPG")
    assert Image.open(tmp_path / "out.JPG").format == "JPEG"
    save_image(x, tmp_path / "out")
    assert Image.open(tmp_path / "out").format == "PNG"


def test_save_bad_extension(tmp_path):
    with pytest.raises(InputError) as e:
        save_image(torch.zeros(3, 2, 2), tmp_path / "out.pgn")
    assert ".pgn" in one_line(e)
    assert list(tmp_path.iterdir()) == []


def test_save_bad_tensor(tmp_path):
    with pytest.raises(ValueError):
        save_image(torch.zeros(4, 2, 2), tmp_path / "a.png")
    with pytest.raises(ValueError):
        save_image(torch.full((3, 2, 2), float("nan")), tmp_path / "a.png")
    assert list(tmp_path.iterdir()) == []


def test_save_parent_missing(tmp_path):
    with pytest.raises(InputError) as e:
        save_image(torch.zeros(3, 2, 2), tmp_path / "nodir" / "out.png")
    assert "does not exist" in one_line(e)


def test_save_onto_directory(tmp_path):
    (tmp_path / "d.png").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        save_image(torch.zeros(3, 2, 2), tmp_path / "d.png")


def test_atomic_write_leaves_only_target(tmp_path):
    save_image(torch.rand(3, 4, 4), tmp_path / "a.png")
    write_text_atomic(tmp_path / "r.json", '{"ok": true}\n')
    write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.bin", "r.json"]
    assert (tmp_path / "r.json").read_text() == '{"ok": true}\n'
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_atomic_write_gets_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_bytes_atomic(tmp_path / "f.bin", b"x")
    finally:
        os.umask(old)
    assert (os.stat(tmp_path / "f.bin").st_mode & 0o777) == 0o644


@pytest.mark.parametrize("where", ["write", "replace"])
def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch, where):
    target = tmp_path / "report.json"
    target.write_text("old")
    if where == "replace":

        def boom(*a, **kw):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(bio.write.os, "replace", boom)
    else:

        def boom_fsync(fd):
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(bio.write.os, "fsync", boom_fsync)
    with pytest.raises(InputError) as e:
        write_text_atomic(target, "new content")
    assert "report.json" in one_line(e) and "cannot write" in str(e.value)
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
    assert target.read_text() == "old"


def test_refuse_overwrite_input(tmp_path, monkeypatch):
    src = save_pil(Image.fromarray(noise(4, 4)), tmp_path / "photo.png")
    before = src.read_bytes()
    x = torch.zeros(3, 4, 4)
    with pytest.raises(InputError) as e:
        save_image(x, src, protect_inputs=[src])
    assert "refusing to overwrite the input" in one_line(e)
    # other spellings of the same file
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="refusing to overwrite"):
        save_image(x, "./photo.png", protect_inputs=[str(src)])
    (tmp_path / "sub").mkdir()
    with pytest.raises(InputError, match="refusing to overwrite"):
        save_image(x, tmp_path / "sub" / ".." / "photo.png", protect_inputs=["photo.png"])
    link = tmp_path / "link.png"
    link.symlink_to(src)
    with pytest.raises(InputError, match="refusing to overwrite"):
        save_image(x, link, protect_inputs=[src])
    with pytest.raises(InputError, match="refusing to overwrite"):
        save_image(x, src, protect_inputs=[link])
    hard = tmp_path / "hard.png"
    os.link(src, hard)
    with pytest.raises(InputError, match="refusing to overwrite"):
        write_bytes_atomic(hard, b"x", protect_inputs=[src])
    with pytest.raises(InputError, match="refusing to overwrite"):
        save_mask(torch.ones(4, 4), "photo.png", protect_inputs=[src])
    assert src.read_bytes() == before
    # a different file in the same folder is fine
    save_image(x, tmp_path / "out.png", protect_inputs=[src])
    assert (tmp_path / "out.png").exists()


def test_save_mask_round_trip(tmp_path):
    m = torch.zeros(5, 6)
    m[1:3, 2:5] = 1
    p = tmp_path / "m.png"
    save_mask(m, p)
    img = Image.open(p)
    assert img.mode == "L" and set(np.unique(np.asarray(img)).tolist()) == {0, 255}
    back = read_mask(p, (6, 5))
    assert torch.equal(back.mask, m) and back.notes == []
    save_mask(m[None, None], p)  # 1x1xHxW accepted
    assert torch.equal(read_mask(p, (6, 5)).mask, m)
    with pytest.raises(InputError, match=r"\.jpg"):
        save_mask(m, tmp_path / "m.jpg")


# ============================================================================ find_pairs


def _touch_img(path: Path) -> Path:
    Image.new("RGB", (2, 2)).save(path)
    return path


def test_find_pairs(tmp_path):
    for name in ["b.jpg", "b_mask.png", "a.png", "a_mask.webp", "c.JPEG", "c_mask.PNG", "notes.txt"]:
        if name.endswith(".txt"):
            (tmp_path / name).write_text("x")
        else:
            _touch_img(tmp_path / name)
    (tmp_path / "sub").mkdir()
    _touch_img(tmp_path / "sub" / "z.png")
    (tmp_path / "orphan_mask.png").write_bytes((tmp_path / "a.png").read_bytes())
    pairs = find_pairs(tmp_path)
    assert pairs == [
        (tmp_path / "a.png", tmp_path / "a_mask.webp"),
        (tmp_path / "b.jpg", tmp_path / "b_mask.png"),
        (tmp_path / "c.JPEG", tmp_path / "c_mask.PNG"),
    ]
    assert find_pairs(str(tmp_path)) == pairs  # deterministic, str accepted


def test_find_pairs_missing_masks(tmp_path):
    for i in range(8):
        _touch_img(tmp_path / f"img{i}.png")
    _touch_img(tmp_path / "img3_mask.png")
    with pytest.raises(InputError) as e:
        find_pairs(tmp_path)
    msg = one_line(e)
    assert "7 image(s) have no mask" in msg
    assert "img0.png, img1.png, img2.png, img4.png, img5.png and 2 more" in msg
    assert "_mask.png" in msg


def test_find_pairs_empty(tmp_path):
    with pytest.raises(InputError, match="no image"):
        find_pairs(tmp_path)
    _touch_img(tmp_path / "x_mask.png")
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(InputError, match="no image"):
        find_pairs(tmp_path)


def test_find_pairs_bad_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        find_pairs(tmp_path / "missing")
    f = _touch_img(tmp_path / "f.png")
    with pytest.raises(InputError, match="not a folder"):
        find_pairs(f)


def test_find_pairs_ambiguous(tmp_path):
    _touch_img(tmp_path / "a.png")
    _touch_img(tmp_path / "a_mask.png")
    _touch_img(tmp_path / "a_mask.jpg")
    with pytest.raises(InputError, match="several masks"):
        find_pairs(tmp_path)
    (tmp_path / "a_mask.jpg").unlink()
    _touch_img(tmp_path / "a.jpg")
    with pytest.raises(InputError, match="share the name"):
        find_pairs(tmp_path)


# ============================================================================ misc


def test_input_error_is_value_error_and_one_line():
    err = InputError("a\nb   c")
    assert isinstance(err, ValueError) and str(err) == "a b c"


def test_io_imports_only_pixels_from_backfire():
    import ast

    for path in Path(bio.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                assert node.level == 0, path
                assert module.startswith(("backfire.io.", "backfire.pixels")) or not module.startswith("backfire"), path
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("backfire") for a in node.names), path
