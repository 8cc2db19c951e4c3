"""The benchmark's evaluation set is sound: masks fit their photos, the product is where the mask says, seeds repeat."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from bench.quality_set import Sample, SourceMissing, build

#: A few samples cover every code path (stamp cut-out, see-through glass, rendered object, strip, grey photo).
NAMES = ("glass-cork", "coin-wood", "strip-syringe", "grey-orange-brick", "photo-camera-grey")
#: Rebuilt with the same and another seed (two samples keep the test cheap).
REPEATED = ("coin-wood", "strip-syringe")


def _build(dest: Path, seed: int, names: tuple[str, ...] = NAMES, products: str = "known") -> list[Sample]:
    try:
        return build(dest, seed=seed, names=names, products=products)
    except SourceMissing as exc:  # a developer machine without apt access; CI installs the packages
        pytest.skip(f"needs the Debian package {exc.package}: {exc}")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    return _build(tmp_path_factory.mktemp("set"), 0)


def _grey(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), np.float32)


def test_it_builds_the_named_composites_and_photos(built: list[Sample]) -> None:
    assert [s.name for s in built] == list(NAMES)
    assert {s.kind for s in built} == {"composite", "photo"}
    for s in built:
        assert s.image.suffix in (".jpg", ".png") and s.image.stat().st_size > 0
        assert (s.mask is None) == (s.kind == "photo")


def test_it_gives_every_composite_a_mask_at_the_photos_resolution(built: list[Sample]) -> None:
    for s in built:
        if s.mask is None:
            continue
        with Image.open(s.image) as im, Image.open(s.mask) as mask:
            assert mask.mode == "L" and mask.size == im.size, s.name
        truth = np.asarray(Image.open(s.mask))
        assert 0.0005 < (truth > 127).mean() < 0.7, s.name


def test_it_keeps_odd_geometries_and_grey_photos_as_a_seller_uploads_them(built: list[Sample]) -> None:
    by_name = {s.name: s for s in built}
    with Image.open(by_name["strip-syringe"].image) as im:
        assert im.size == (4000, 120)
    for name in ("grey-orange-brick", "photo-camera-grey"):
        with Image.open(by_name[name].image) as im:
            assert im.mode == "L", name


def test_it_puts_the_product_where_the_mask_says(built: list[Sample]) -> None:
    for s in built:
        if s.mask is None:
            continue
        photo, clean = _grey(s.image), _grey(s.backdrop)
        truth = np.asarray(Image.open(s.mask)) > 127
        diff = np.abs(photo - clean)
        # Far from the product (beyond its shadow) the photo is the backdrop plus camera noise and JPEG.
        ys, xs = np.nonzero(truth)
        reach = 0.45 * max(np.ptp(ys), np.ptp(xs)) + 5
        near = cv2.distanceTransform((~truth).astype(np.uint8), cv2.DIST_L2, 3) < reach
        inside, far = diff[truth].mean(), diff[~near].mean()
        assert inside > 12 and inside > 3 * far, (s.name, inside, far)


def test_it_is_deterministic_for_a_seed_and_varies_with_it(built: list[Sample], tmp_path: Path) -> None:
    again = _build(tmp_path / "again", 0, REPEATED)
    other = _build(tmp_path / "other", 1, REPEATED)
    first = [s for s in built if s.name in REPEATED]
    assert [s.name for s in again] == [s.name for s in first] == list(REPEATED)
    for a, b, c in zip(first, again, other):
        assert a.image.read_bytes() == b.image.read_bytes(), a.name
        if a.kind == "composite":
            assert a.mask.read_bytes() == b.mask.read_bytes(), a.name
            assert a.image.read_bytes() != c.image.read_bytes(), a.name


def test_it_names_the_debian_package_to_install_when_a_source_is_missing(tmp_path: Path) -> None:
    from bench.quality_set import PACKAGES, Sources

    # An empty system tree and an empty cache: nothing is installed or fetched.
    sources = Sources(tmp_path / "empty-cache", fetch=False, system_root=tmp_path / "empty-root")
    for package in PACKAGES:
        with pytest.raises(SourceMissing) as caught:
            sources.root(package)
        assert caught.value.package == package
        assert f"apt-get install {package}" in str(caught.value)


def test_the_unseen_catalogue_builds_other_products_on_a_backdrop_drawn_per_seed(tmp_path: Path) -> None:
    from bench.quality_set import RECIPES, UNSEEN_RECIPES

    known = {r.product for r in RECIPES}
    assert not known & {r.product for r in UNSEEN_RECIPES}, "the unseen catalogue repeats a known product"
    names = ("spanner", "football")
    first = _build(tmp_path / "a", 0, names, "unseen")
    again = _build(tmp_path / "b", 0, names, "unseen")
    assert [s.name for s in first] == list(names)
    for a, b in zip(first, again):
        assert a.image.read_bytes() == b.image.read_bytes(), a.name
        truth = np.asarray(Image.open(a.mask)) > 127
        assert 0.0005 < truth.mean() < 0.7, a.name
        on = a.notes.split("; on ", 1)[1].split(";", 1)[0]
        recipe = next(r for r in UNSEEN_RECIPES if r.name == a.name)
        assert on in recipe.backdrop, (a.name, on)
        assert ("busy-backdrop" in a.tags) == (on in {"brick", "gravel", "grey-gravel", "grass", "bark", "machine"})
    # Over seeds the backdrop changes: the spanner is drawn from wood, marble and gravel.
    seen = set()
    for seed in range(8):
        sample = _build(tmp_path / f"s{seed}", seed, ("spanner",), "unseen")[0]
        seen.add(sample.notes.split("; on ", 1)[1].split(";", 1)[0])
    assert len(seen) >= 2, seen
