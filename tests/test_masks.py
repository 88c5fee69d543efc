"""Properties of the mask morphology and of the edit-mask families of docs/evaluation.md."""

from __future__ import annotations

import math

import pytest
import torch

from backfire.masks import (
    ATTACKER_FAMILIES,
    BENIGN_FAMILIES,
    FAMILY_EDITS,
    FAMILIES,
    Edit,
    bbox,
    dilate,
    edits,
    erode,
    family_kind,
    family_masks,
    ring,
    within_distance,
)

RANDOM_FAMILIES = ("strokes", "away-0", "away-16", "away-64", "object")


# --------------------------------------------------------------------------------------------------
# helpers


def rect(h, w, top, left, bottom, right):
    m = torch.zeros(h, w)
    m[top:bottom, left:right] = 1
    return m


def disk_mask(h, w, cy, cx, r):
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return (((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r).float()


def offsets(r, shape):
    return [
        (dy, dx)
        for dy in range(-r, r + 1)
        for dx in range(-r, r + 1)
        if shape == "square" or dy * dy + dx * dx <= r * r
    ]


def shifted(m, dy, dx, fill):
    """m moved by (dy, dx); pixels coming from outside the image take ``fill``."""
    h, w = m.shape
    p = torch.nn.functional.pad(m, (abs(dx), abs(dx), abs(dy), abs(dy)), value=fill)
    return p[abs(dy) - dy : abs(dy) - dy + h, abs(dx) - dx : abs(dx) - dx + w]


def brute_dilate(m, r, shape):
    out = torch.zeros_like(m)
    for dy, dx in offsets(r, shape):
        out = torch.maximum(out, shifted(m, dy, dx, 0.0))
    return out


def brute_erode(m, r, shape):
    out = torch.ones_like(m)
    for dy, dx in offsets(r, shape):
        out = torch.minimum(out, shifted(m, dy, dx, 1.0))
    return out


def min_distance(a, b):
    """Smallest Euclidean distance between a pixel of ``a`` and a pixel of ``b`` (brute force)."""
    pa = torch.nonzero(a > 0.5).double()
    pb = torch.nonzero(b > 0.5).double()
    return float(torch.cdist(pa, pb).min())


def subset(a, b):
    return bool(((a > 0.5) & (b < 0.5)).sum() == 0)


def disjoint(a, b):
    return bool(((a > 0.5) & (b > 0.5)).sum() == 0)


def area(m):
    return int((m > 0.5).sum())


# Masks that exercise the edge cases: non-square frames, the border, 1-px lines, several components.
def _masks():
    ms = {}
    ms["blob"] = disk_mask(120, 180, 60, 70, 18)
    ms["tall-rect"] = rect(200, 90, 40, 20, 120, 60)
    ms["corner"] = rect(100, 140, 0, 0, 30, 45)  # touches two frame edges
    ms["border-strip"] = rect(90, 150, 30, 0, 60, 150)  # touches left and right edges
    ms["hline"] = rect(80, 160, 40, 30, 41, 130)  # 1-px horizontal line
    ms["vline"] = rect(160, 80, 20, 40, 120, 41)  # 1-px vertical line
    diag = torch.zeros(100, 100)
    idx = torch.arange(20, 80)
    diag[idx, idx] = 1  # 1-px diagonal line
    ms["diag"] = diag
    ms["pixel"] = rect(50, 70, 25, 33, 26, 34)
    comps = disk_mask(140, 220, 30, 40, 12) + rect(140, 220, 90, 150, 120, 200)
    comps[10, 200] = 1
    ms["components"] = comps.clamp(max=1)
    return ms


MASKS = _masks()


# --------------------------------------------------------------------------------------------------
# morphology


@pytest.mark.parametrize("shape", ["disk", "square"])
def test_radius_zero_is_a_copy(shape):
    m = MASKS["components"]
    for op in (dilate, erode):
        out = op(m, 0, shape)
        assert torch.equal(out, m)
        assert out.dtype == torch.float32
        out[0, 0] = 1 - out[0, 0]
        assert not torch.equal(out, m), "radius 0 must return a copy, not the input"


@pytest.mark.parametrize("seed", range(6))
def test_dilate_erode_match_brute_force_and_are_monotone(seed):
    g = torch.Generator().manual_seed(seed)
    h, w = (int(v) for v in torch.randint(1, 30, (2,), generator=g))
    m = (torch.rand(h, w, generator=g) < 0.15 + 0.7 * torch.rand(1, generator=g)).float()
    for r in (1, 2, 3, 5):
        for shape in ("disk", "square"):
            d, e = dilate(m, r, shape), erode(m, r, shape)
            assert torch.equal(d, brute_dilate(m, r, shape)), (r, shape)
            assert torch.equal(e, brute_erode(m, r, shape)), (r, shape)
            assert subset(m, d) and subset(e, m)
            assert set(d.unique().tolist()) <= {0.0, 1.0} and d.dtype == torch.float32


@pytest.mark.parametrize("r", [1, 2, 3, 4, 7, 8, 16, 32])
def test_single_pixel_dilates_to_the_discrete_disk(r):
    m = torch.zeros(81, 83)
    m[40, 41] = 1
    d = dilate(m, r, "disk")
    expected = sum(1 for dy in range(-r, r + 1) for dx in range(-r, r + 1) if dy * dy + dx * dx <= r * r)
    assert area(d) == expected
    ys, xs = torch.nonzero(d, as_tuple=True)
    assert int(((ys - 40) ** 2 + (xs - 41) ** 2).max()) <= r * r


def test_square_radius_8_is_a_17x17_block():
    m = torch.zeros(50, 60)
    m[25, 30] = 1
    d = dilate(m, 8, "square")
    assert area(d) == 17 * 17
    assert torch.equal(d, rect(50, 60, 17, 22, 34, 39))


@pytest.mark.parametrize("shape", ["disk", "square"])
@pytest.mark.parametrize("r", [3, 8, 16])
def test_closing_of_a_square_is_the_square(shape, r):
    m = rect(150, 170, 50, 60, 100, 110)
    assert torch.equal(erode(dilate(m, r, shape), r, shape), m)


def test_erode_of_big_dilated_square_on_large_frame_is_exact():
    m = rect(700, 1000, 200, 300, 500, 700)
    assert torch.equal(erode(dilate(m, 32), 32), m)


def test_border_conventions():
    m = MASKS["corner"]  # rows 0:30, cols 0:45
    # dilation does not wrap around the frame
    d = dilate(m, 4)
    assert d[-1].sum() == 0 and d[:, -1].sum() == 0
    # erosion does not shrink from the frame, only from the inner edges
    e = erode(m, 4)
    assert torch.equal(e, rect(100, 140, 0, 0, 26, 41))
    e = erode(MASKS["border-strip"], 5, "square")
    assert torch.equal(e, rect(90, 150, 35, 0, 55, 150))
    full = torch.ones(20, 30)
    assert torch.equal(erode(full, 6), full)
    assert area(erode(MASKS["hline"], 1)) == 0


def test_empty_masks_stay_empty():
    z = torch.zeros(20, 25)
    assert area(dilate(z, 5)) == 0 and area(erode(z, 5)) == 0 and area(ring(z)) == 0


def test_accepts_bool_and_integer_masks():
    m = MASKS["blob"]
    for other in (m.bool(), m.to(torch.uint8), m.double()):
        assert torch.equal(dilate(other, 3), dilate(m, 3))
        assert dilate(other, 3).dtype == torch.float32


def test_bad_arguments_raise():
    m = MASKS["blob"]
    with pytest.raises(ValueError):
        dilate(m, -1)
    with pytest.raises(ValueError):
        dilate(m, 2, "diamond")
    with pytest.raises(ValueError):
        erode(m[None], 2)


def test_ring_is_disjoint_and_within_8px():
    for name, m in MASKS.items():
        r = ring(m)
        assert disjoint(r, m), name
        assert torch.equal(r, dilate(m, 8, "square") - m), name
        # every ring pixel is within 8 px (Chebyshev) of M: an independent max-pool reference
        near = torch.nn.functional.max_pool2d(m[None, None], 17, stride=1, padding=8)[0, 0]
        assert torch.equal(r, near - m), name
    m = rect(100, 120, 30, 40, 50, 70)
    assert area(ring(m)) == (20 + 16) * (30 + 16) - 20 * 30


def test_every_family_has_its_entry_in_the_table():
    assert {family.split("-")[0] for family in FAMILIES} == set(FAMILY_EDITS)


def test_bbox():
    assert bbox(rect(50, 60, 3, 7, 20, 31)) == (7, 3, 31, 20)  # rect takes top, left, bottom, right
    assert bbox(MASKS["pixel"]) == (33, 25, 34, 26)
    assert bbox(MASKS["components"]) == (28, 10, 201, 120)
    with pytest.raises(ValueError):
        bbox(torch.zeros(5, 5))


@pytest.mark.parametrize("k", [0, 1, 2, 5, 16])
def test_within_distance_matches_brute_force(k):
    m = MASKS["components"][:60, :80]
    near = within_distance(m, k)
    pix = torch.nonzero(torch.ones_like(m)).double()
    pts = torch.nonzero(m).double()
    dist = torch.cdist(pix, pts).min(dim=1).values.reshape(m.shape)
    assert torch.equal(near, (dist < k).float())


# --------------------------------------------------------------------------------------------------
# families


def test_family_names():
    assert ATTACKER_FAMILIES == (
        "exact", "dilate-4", "dilate-8", "dilate-16", "dilate-32", "box",
        "strokes", "partial-50", "shift-10", "erode-2", "erode-4",
    )  # fmt: skip
    assert BENIGN_FAMILIES == ("ring", "away-0", "away-16", "away-64", "object")
    assert FAMILIES == ATTACKER_FAMILIES + BENIGN_FAMILIES
    assert all(family_kind(f) == "attacker" for f in ATTACKER_FAMILIES)
    assert all(family_kind(f) == "benign" for f in BENIGN_FAMILIES)


@pytest.mark.parametrize("name", list(MASKS))
def test_every_family_keeps_its_promises(name):
    m = MASKS[name]
    n = area(m)
    for family in FAMILIES:
        got = family_masks(m, family, seed=5)
        for e in got:
            assert isinstance(e, Edit)
            assert e.family == family and e.name.split("/")[0] == family
            assert e.kind == family_kind(family)
            assert e.mask.shape == m.shape and e.mask.dtype == torch.float32
            assert set(e.mask.unique().tolist()) <= {0.0, 1.0}
            assert area(e.mask) > 0, "no empty edits"
            if e.kind == "attacker":
                assert not disjoint(e.mask, m), (name, e.name)
            else:
                assert disjoint(e.mask, m), (name, e.name)

        if family == "exact":
            assert len(got) == 1 and torch.equal(got[0].mask, m)
        elif family.startswith("dilate-"):
            k = int(family.split("-")[1])
            assert len(got) == 1 and subset(m, got[0].mask)
            assert torch.equal(got[0].mask, dilate(m, k, "disk"))
        elif family == "box":
            l, t, r, b = bbox(m)
            h, w = m.shape
            expected = rect(h, w, max(0, t - 4), max(0, l - 4), min(h, b + 4), min(w, r + 4))
            assert len(got) == 1 and torch.equal(got[0].mask, expected)
        elif family == "strokes":
            assert len(got) == 1
            assert area(got[0].mask * m) >= math.ceil(0.95 * n), name
        elif family == "partial-50":
            assert [e.name for e in got] == ["partial-50/h", "partial-50/v", "partial-50/d"]
            for e in got:
                assert subset(e.mask, m)
                assert 0.4 * n <= area(e.mask) <= 0.6 * n or n == 1
        elif family == "shift-10":
            assert [e.name for e in got] == [f"shift-10/{d}" for d in ("up", "down", "left", "right")]
            for e in got:
                assert subset(m, e.mask)
        elif family.startswith("erode-"):
            k = int(family.split("-")[1])
            eroded = erode(m, k)
            if area(eroded) == 0:
                assert got == []
            else:
                assert len(got) == 1 and torch.equal(got[0].mask, eroded) and subset(eroded, m)
        elif family == "ring":
            assert len(got) == 1 and torch.equal(got[0].mask, ring(m, 8, "square"))
        elif family.startswith("away-"):
            k = int(family.split("-")[1])
            assert len(got) <= 1
            if got:
                assert 0.75 * n <= area(got[0].mask) <= 1.25 * n, (name, family, area(got[0].mask), n)
                if k > 0:
                    assert min_distance(got[0].mask, m) >= k, (name, family)
            else:  # "no room": fewer than 0.75·area(M) pixels at distance >= k
                assert area(1 - within_distance(m, k) - (m if k == 0 else 0)) < 0.75 * n
        elif family == "object":
            assert len(got) <= 1
            if got:
                o = got[0].mask
                l, t, r, b = bbox(m)
                ol, ot, orr, ob = bbox(o)
                assert (ob - ot, orr - ol) == (b - t, r - l)
                assert area(o) == (b - t) * (r - l), "a solid box"
                assert disjoint(dilate(o, 1, "square"), m), "does not touch M"


def test_partial_50_splits_are_halves_on_the_right_side():
    m = disk_mask(90, 130, 45, 60, 30)
    n = area(m)
    got = {e.name: e.mask for e in family_masks(m, "partial-50")}
    for e in got.values():
        assert area(e) == (n + 1) // 2
    ys, xs = torch.nonzero(m, as_tuple=True)
    for name, key in (("partial-50/h", ys), ("partial-50/v", xs), ("partial-50/d", ys + xs)):
        kept = got[name][ys, xs] > 0.5
        assert key[kept].max() <= key[~kept].min(), name
    # horizontal line: the horizontal split still halves it (ties broken by column)
    line = MASKS["hline"]
    for e in family_masks(line, "partial-50"):
        assert area(e.mask) == 50


def test_shift_10_moves_by_ten_percent_of_the_bbox():
    m = rect(200, 300, 50, 100, 130, 160)  # bbox 80 x 60 -> shifts of 8 rows and 6 columns
    got = {e.name: e.mask for e in family_masks(m, "shift-10")}
    assert torch.equal(got["shift-10/up"], rect(200, 300, 42, 100, 130, 160))
    assert torch.equal(got["shift-10/down"], rect(200, 300, 50, 100, 138, 160))
    assert torch.equal(got["shift-10/left"], rect(200, 300, 50, 94, 130, 160))
    assert torch.equal(got["shift-10/right"], rect(200, 300, 50, 100, 130, 166))
    # clipped at the frame
    corner = MASKS["corner"]
    got = {e.name: e.mask for e in family_masks(corner, "shift-10")}
    assert torch.equal(got["shift-10/up"], corner)
    assert torch.equal(got["shift-10/left"], corner)
    assert area(got["shift-10/down"]) == 33 * 45


def test_away_distance_brute_force_small_image():
    m = rect(110, 150, 5, 8, 25, 30)
    for k in (0, 16, 64):
        for seed in range(3):
            (e,) = family_masks(m, f"away-{k}", seed=seed)
            assert 0.75 * area(m) <= area(e.mask) <= 1.25 * area(m)
            assert min_distance(e.mask, m) >= max(k, 1)


def test_no_room_yields_nothing():
    big = rect(100, 100, 5, 5, 95, 95)
    assert family_masks(big, "away-16") == []
    assert family_masks(big, "away-64") == []
    assert family_masks(big, "object") == []
    full = torch.ones(30, 40)
    assert family_masks(full, "ring") == []
    assert family_masks(full, "away-0") == []
    assert len(family_masks(full, "strokes")) == 1


def test_random_families_are_seeded():
    m = MASKS["blob"]
    for family in RANDOM_FAMILIES:
        a = family_masks(m, family, seed=11)
        b = family_masks(m, family, seed=11)
        c = family_masks(m, family, seed=12)
        assert len(a) == len(b) == len(c) == 1
        assert torch.equal(a[0].mask, b[0].mask), family
        assert not torch.equal(a[0].mask, c[0].mask), family
    # and global random state is neither used nor touched
    torch.manual_seed(0)
    state = torch.get_rng_state()
    x = family_masks(m, "strokes", seed=3)[0].mask
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(123)
    assert torch.equal(family_masks(m, "strokes", seed=3)[0].mask, x)


def test_edits_concatenates_families_in_order():
    m = MASKS["tall-rect"]
    fams = ("exact", "partial-50", "strokes", "ring", "away-16", "object")
    got = edits(m, fams, seed=4)
    expected = [e for f in fams for e in family_masks(m, f, seed=4)]
    assert [e.name for e in got] == [e.name for e in expected]
    assert all(torch.equal(a.mask, b.mask) for a, b in zip(got, expected))
    assert [e.kind for e in got[:5]] == ["attacker"] * 5 and got[-1].kind == "benign"
    all_edits = edits(MASKS["blob"], FAMILIES)
    assert {e.family for e in all_edits} == set(FAMILIES)


def test_unknown_family_and_empty_mask_raise():
    m = MASKS["blob"]
    with pytest.raises(ValueError, match="dilate-8"):
        family_masks(m, "dilate-7")
    with pytest.raises(ValueError, match="valid"):
        edits(m, ["exact", "blur"])
    with pytest.raises(ValueError):
        family_masks(torch.zeros(10, 10), "exact")


def test_strokes_terminate_on_hard_masks():
    # a long 1-px diagonal across a wide frame and a mask filling most of a large frame
    h, w = 400, 900
    diag = torch.zeros(h, w)
    t = torch.arange(0, 400)
    diag[t, (t * 2.2).long()] = 1
    big = rect(900, 1400, 10, 10, 890, 1390)
    for m in (diag, big):
        (e,) = family_masks(m, "strokes", seed=1)
        assert area(e.mask * m) >= math.ceil(0.95 * area(m))


def test_fallbacks_keep_the_guarantees(monkeypatch):
    import backfire.masks as masks

    m = MASKS["components"]
    # no strokes at all: the remaining pixels are covered by width-8 dots (spill <= 4 px)
    monkeypatch.setattr(masks, "_STROKES_MAX", 0)
    (e,) = family_masks(m, "strokes", seed=2)
    assert subset(m, e.mask) and subset(e.mask, dilate(m, 4))
    # no shapes at all: the away area is a blob of allowed pixels
    monkeypatch.setattr(masks, "_AWAY_SHAPES", 0)
    for k in (0, 16):
        (e,) = family_masks(m, f"away-{k}", seed=2)
        assert area(e.mask) == area(m)
        assert disjoint(e.mask, m) and (k == 0 or min_distance(e.mask, m) >= k)
