"""An evaluation set for the cut-out engine, built offline from packaged photographs, with a true mask per composite.

    .venv/bin/python bench/quality_set.py DEST [--seed 0] [--cache DIR]

Products are real photographic cut-outs with an alpha channel from Debian's
``tuxpaint-stamps-default`` (fruit, a gas bottle, a drinking glass, a light
bulb, a syringe, a spade, a guitar, a trumpet, a stethoscope, ...), plus two
objects rendered with physical shading (a white ball, a coin) because no
packaged cut-out is white or coin-sized. Backdrops are real photographs: the
``tuxpaint-data`` templates (mudstone, pebbles, burnt bark, a mill machine,
a cliff), GIMP's photographic patterns from ``gimp-data`` (wood, brick with
mortar, burlap, marble, cork, paper; small tiles, enlarged and tiled) and
scikit-image's brick, grass and gravel photographs. Each composite gets a
cast shadow (soft, attached at the contact, multiplying the backdrop so its
texture stays), sometimes extra directional shading on the product (its dark
half is still product), lens blur, sensor noise and JPEG compression, all
drawn from a generator seeded by ``seed`` and the sample's name. A few real
photos without a known mask, a 4000x120 strip and grey-scale photos are added.

The Debian packages are used from ``/usr/share`` when installed; otherwise they
are fetched once with ``apt-get download`` and unpacked with ``dpkg -x`` into
the cache directory (``--cache``, ``IMAGEGEN_BENCH_CACHE``, default
``~/.cache/imagegen-bench``). When neither works, :class:`SourceMissing` names
the package to install.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np
import skimage.data
from PIL import Image

logger = logging.getLogger("bench.quality_set")

CACHE_ENV = "IMAGEGEN_BENCH_CACHE"

#: Debian package -> a path that exists once it is unpacked (relative to the root it is unpacked into).
PACKAGES: dict[str, str] = {
    "tuxpaint-stamps-default": "usr/share/tuxpaint/stamps",
    "tuxpaint-data": "usr/share/tuxpaint/templates",
    "gimp-data": "usr/share/gimp/2.0/patterns",
}


class SourceMissing(RuntimeError):
    """A Debian package the set is built from is neither installed nor fetchable."""

    def __init__(self, package: str, detail: str) -> None:
        super().__init__(
            f"The quality set needs the Debian package {package!r}: install it "
            f"(apt-get install {package}) or let apt-get download reach the archive ({detail})."
        )
        self.package = package


@dataclass(frozen=True)
class Sample:
    name: str
    image: Path  # the photo as a seller would upload it (JPEG or PNG)
    mask: Path | None  # true 8-bit mask at the photo's resolution; None for real photos
    kind: str  # "composite" | "photo"
    tags: tuple[str, ...]
    notes: str
    backdrop: Path | None = None  # the clean backdrop (no product, no shadow), composites only


def default_cache() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "imagegen-bench"


class Sources:
    """Finds (and if needed unpacks) the packaged images, and loads them with caching in memory."""

    def __init__(self, cache: Path | None = None, *, fetch: bool = True, system_root: Path = Path("/")) -> None:
        self.cache = cache or default_cache()
        self.fetch = fetch
        #: Where installed packages are looked for (a test points it at an empty tree).
        self.system_root = system_root
        self._roots: dict[str, Path] = {}
        self._memo: dict[str, np.ndarray] = {}

    def root(self, package: str) -> Path:
        if package in self._roots:
            return self._roots[package]
        marker = PACKAGES[package]
        for root in (self.system_root, self.cache / "deb" / package):
            if (root / marker).is_dir():
                self._roots[package] = root
                return root
        if not self.fetch:
            raise SourceMissing(package, "fetching is switched off")
        self._roots[package] = self._unpack(package)
        return self._roots[package]

    def _unpack(self, package: str) -> Path:
        if not shutil.which("apt-get") or not shutil.which("dpkg"):
            raise SourceMissing(package, "apt-get/dpkg are not available")
        dest = self.cache / "deb" / package
        self.cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cache) as tmp:
            logger.info("fetching %s into %s", package, dest)
            got = subprocess.run(["apt-get", "download", package], cwd=tmp, capture_output=True, text=True)
            debs = list(Path(tmp).glob("*.deb"))
            if got.returncode != 0 or not debs:
                raise SourceMissing(package, (got.stderr.strip().splitlines() or ["apt-get download failed"])[-1])
            staging = Path(tmp) / "x"
            subprocess.run(["dpkg", "-x", str(debs[0]), str(staging)], check=True)
            if dest.exists():
                shutil.rmtree(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(dest)
        if not (dest / PACKAGES[package]).is_dir():
            raise SourceMissing(package, f"the unpacked package has no {PACKAGES[package]}")
        return dest

    def _load(self, key: str, loader: Callable[[], np.ndarray]) -> np.ndarray:
        if key not in self._memo:
            self._memo[key] = loader()
        return self._memo[key]

    def stamp(self, rel: str) -> np.ndarray:
        """A Tux Paint stamp as HxWx4 float32 0..1 (straight alpha)."""
        path = self.root("tuxpaint-stamps-default") / "usr/share/tuxpaint/stamps" / rel
        return self._load(f"stamp:{rel}", lambda: np.asarray(Image.open(path).convert("RGBA"), np.float32) / 255)

    def template(self, name: str) -> np.ndarray:
        path = self.root("tuxpaint-data") / "usr/share/tuxpaint/templates" / name
        return self._load(f"tpl:{name}", lambda: np.asarray(Image.open(path).convert("RGB"), np.float32) / 255)

    def pattern(self, rel: str) -> np.ndarray:
        path = self.root("gimp-data") / "usr/share/gimp/2.0/patterns" / rel
        return self._load(f"pat:{rel}", lambda: read_gimp_pattern(path))

    def skimage(self, name: str) -> np.ndarray:
        return self._load(f"ski:{name}", lambda: np.asarray(getattr(skimage.data, name)(), np.float32) / 255)


def read_gimp_pattern(path: Path) -> np.ndarray:
    """GIMP's .pat: a big-endian header (size, version, width, height, bytes per pixel, 'GPAT', name), raw pixels."""
    raw = path.read_bytes()
    header_size, _version, width, height, bpp = struct.unpack(">5I", raw[:20])
    pixels = np.frombuffer(raw, np.uint8, width * height * bpp, header_size).reshape(height, width, bpp)
    rgb = np.repeat(pixels[..., :1], 3, axis=2) if bpp in (1, 2) else pixels[..., :3]
    return rgb.astype(np.float32) / 255


# --- backdrops ---------------------------------------------------------------------------------


def _cover(photo: np.ndarray, w: int, h: int, rng: np.random.Generator, zoom: float = 1.0) -> np.ndarray:
    """Scale a photo to cover w x h (times zoom), then take a random crop."""
    ph, pw = photo.shape[:2]
    s = max(w / pw, h / ph) * zoom
    big = cv2.resize(photo, (max(w, round(pw * s)), max(h, round(ph * s))), interpolation=cv2.INTER_CUBIC)
    y = int(rng.integers(0, big.shape[0] - h + 1))
    x = int(rng.integers(0, big.shape[1] - w + 1))
    return big[y:y + h, x:x + w]


def _tiled(tile: np.ndarray, w: int, h: int, rng: np.random.Generator, scale: float) -> np.ndarray:
    t = cv2.resize(tile, (round(tile.shape[1] * scale), round(tile.shape[0] * scale)), interpolation=cv2.INTER_CUBIC)
    reps = (h // t.shape[0] + 2, w // t.shape[1] + 2, 1)
    big = np.tile(t, reps)
    y = int(rng.integers(0, t.shape[0]))
    x = int(rng.integers(0, t.shape[1]))
    return big[y:y + h, x:x + w]


def _tint(grey: np.ndarray, colour: tuple[float, float, float]) -> np.ndarray:
    g = grey if grey.ndim == 2 else grey.mean(axis=2)
    return np.clip(g[..., None] * np.asarray(colour, np.float32) * 1.6, 0, 1)


def _lighting(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uneven light across the backdrop: a gentle ramp and a vignette, as a phone photo has."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    ramp = ((xx / w - 0.5) * np.cos(ang) + (yy / h - 0.5) * np.sin(ang)) * rng.uniform(0.05, 0.25)
    vign = ((xx / w - 0.5) ** 2 + (yy / h - 0.5) ** 2) * rng.uniform(0.1, 0.5)
    return np.clip(img * (1 + ramp - vign)[..., None], 0, 1)


BACKDROPS: dict[str, Callable[[Sources, int, int, np.random.Generator], np.ndarray]] = {
    "wood": lambda s, w, h, r: _tiled(s.pattern(str(r.choice(["Wood/walnut.pat", "Wood/wood1.pat", "Wood/wood2.pat",
                                                               "Wood/wood5.pat"]))), w, h, r, r.uniform(3, 5)),
    "parquet": lambda s, w, h, r: _tiled(s.pattern("Wood/parque1.pat"), w, h, r, r.uniform(4, 6)),
    "brick": lambda s, w, h, r: (_tiled(s.pattern("Stone/brick.pat"), w, h, r, r.uniform(2.5, 4)) if r.random() < 0.5
                                 else _cover(_tint(s.skimage("brick"), (0.75, 0.42, 0.32)), w, h, r, r.uniform(1, 1.3))),
    "gravel": lambda s, w, h, r: _cover(s.template("rocks.jpg"), w, h, r, r.uniform(1, 1.4)),
    "stone": lambda s, w, h, r: _cover(s.template("mudstone.jpg"), w, h, r, r.uniform(1, 1.4)),
    "grey-gravel": lambda s, w, h, r: _cover(_tint(s.skimage("gravel"), (0.62, 0.6, 0.56)), w, h, r, 1.0),
    "grass": lambda s, w, h, r: _cover(_tint(s.skimage("grass"), (0.35, 0.55, 0.25)), w, h, r, 1.0),
    "fabric": lambda s, w, h, r: _tiled(s.pattern("Fabric/burlap.pat"), w, h, r, r.uniform(2, 3.5)),
    "marble": lambda s, w, h, r: _tiled(s.pattern(str(r.choice(["Stone/pink_marble.pat", "Stone/marble1.pat"]))),
                                        w, h, r, r.uniform(3, 5)),
    "cork": lambda s, w, h, r: _tiled(s.pattern("Wood/corkboard.pat"), w, h, r, r.uniform(3, 4)),
    "paper": lambda s, w, h, r: np.clip(_tiled(s.pattern("Paper/crinklepaper.pat"), w, h, r, r.uniform(3, 5)) * 0.25
                                        + 0.68, 0, 1),
    "bark": lambda s, w, h, r: _cover(s.template("burnt_bark.jpg"), w, h, r, r.uniform(1, 1.3)),
    "machine": lambda s, w, h, r: _cover(s.template("wool_mill_machine.jpg"), w, h, r, r.uniform(1, 1.3)),
    "cliff": lambda s, w, h, r: _cover(s.template("cliff.jpg"), w, h, r, r.uniform(1, 1.5)),
    "shelf": lambda s, w, h, r: _shelf(s, w, h, r),
}


def _shelf(src: Sources, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """A shelf scene: a papered wall, a wooden shelf board seen from above and its darker front edge."""
    wall = np.clip(_tiled(src.pattern("Paper/crinklepaper.pat"), w, h, rng, 3) * 0.35 + 0.5, 0, 1)
    wall *= np.asarray([1.0, 0.97, 0.9], np.float32)
    board = _tiled(src.pattern("Wood/wood2.pat"), w, h, rng, rng.uniform(3, 4))
    out = wall.copy()
    top, edge = int(h * rng.uniform(0.35, 0.5)), int(h * rng.uniform(0.86, 0.93))
    out[top:edge] = board[top:edge]
    out[edge:] = board[edge:] * 0.55
    # The wall darkens towards the board (the shelf above shades it).
    out[:top] *= np.linspace(1.0, 0.8, top, dtype=np.float32)[:, None, None]
    return out


# --- products ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Product:
    """A cut-out: premultiplied RGB and coverage, plus the true mask (equal to the coverage except for glass)."""
    rgb: np.ndarray  # premultiplied, HxWx3 float32
    alpha: np.ndarray  # HxW float32, how much of the backdrop it hides
    truth: np.ndarray  # HxW float32, what counts as product


def _from_stamp(rgba: np.ndarray, solid: bool = True) -> Product:
    a = rgba[..., 3]
    truth = a if solid else _glass_truth(a)
    return Product(rgba[..., :3] * a[..., None], a, truth)


def _glass_truth(alpha: np.ndarray) -> np.ndarray:
    """The glass's silhouette: its faint outline filled, without the pale glow drawn around its foot.

    Down to the row where the visible extent grows wider than the body, the closed outline; below it (the
    foot, inside the glow) the rows' span of clearly opaque pixels.
    """
    h = alpha.shape[0]
    outline = _filled(alpha > 0)
    width = outline.sum(axis=1)
    body = float(np.median(width[int(0.2 * h):int(0.6 * h)]))
    wide = np.nonzero((width > 1.05 * body) & (np.arange(h) > h // 2))[0]
    if wide.size:
        y0 = int(wide[0])
        outline[y0:] = 0
        for y in range(y0, h):
            xs = np.nonzero(alpha[y] > 0.2)[0]
            if xs.size:
                outline[y, xs[0]:xs[-1] + 1] = 1
    return outline


def _filled(binary: np.ndarray) -> np.ndarray:
    """The silhouette with holes filled (a glass counts as product even where it is see-through)."""
    # A glass's rim is faint and a pixel or two wide: close its gaps before taking the outline.
    m = cv2.morphologyEx(binary.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = np.zeros_like(m)
    cv2.drawContours(out, contours, -1, 1, -1)
    return out.astype(np.float32)


def _sphere(d: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coverage (analytic antialiasing), unit normals and the light direction for a ball of diameter d."""
    r = d / 2
    yy, xx = np.mgrid[0:d, 0:d].astype(np.float32) + 0.5
    dx, dy = (xx - r) / r, (yy - r) / r
    dist = np.sqrt(dx ** 2 + dy ** 2)
    alpha = np.clip((1 - dist) * r + 0.5, 0, 1)
    nz = np.sqrt(np.clip(1 - dist ** 2, 0, 1))
    ang = rng.uniform(-2.6, -0.5)  # light from above, left or right
    light = np.asarray([np.cos(ang) * 0.7, np.sin(ang) * 0.7, 0.7], np.float32)
    light /= np.linalg.norm(light)
    return alpha, np.dstack([dx, dy, nz]), light


def white_ball(src: Sources, size: int, rng: np.random.Generator) -> Product:
    alpha, n, light = _sphere(size, rng)
    lambert = np.clip((n * light).sum(axis=2), 0, 1)
    half = (n + light) / np.linalg.norm(n + light, axis=2, keepdims=True)
    spec = np.clip(half[..., 2], 0, 1) ** 40 * 0.15
    grain = _cover(src.pattern("Paper/paper.pat"), size, size, rng)[..., 0]
    albedo = 0.93 + 0.05 * (grain - grain.mean())
    shade = (0.42 + 0.58 * lambert) * albedo + spec
    rgb = np.clip(shade[..., None] * np.asarray([1.0, 0.99, 0.97], np.float32), 0, 1)
    return Product(rgb * alpha[..., None], alpha, alpha)


def coin(src: Sources, size: int, rng: np.random.Generator) -> Product:
    alpha, n, light = _sphere(size, rng)
    flat = np.dstack([n[..., 0] * 0.15, n[..., 1] * 0.15, np.ones_like(n[..., 2])])  # a disc: nearly flat face
    lambert = np.clip((flat * light).sum(axis=2) / np.linalg.norm(flat, axis=2), 0, 1)
    relief = _cover(src.skimage("coins"), size, size, rng, 2.0)
    rim = np.clip((np.hypot(n[..., 0], n[..., 1]) - 0.85) * 6, 0, 1)
    metal = np.asarray([0.85, 0.68, 0.36] if rng.random() < 0.5 else [0.75, 0.75, 0.77], np.float32)
    shade = (0.45 + 0.55 * lambert) * (0.75 + 0.35 * relief) * (1 - 0.3 * rim)
    rgb = np.clip(shade[..., None] * metal, 0, 1)
    return Product(rgb * alpha[..., None], alpha, alpha)


def _resize_product(p: Product, scale: float, angle: float) -> Product:
    h, w = p.alpha.shape
    nw, nh = max(2, round(w * scale)), max(2, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    # OpenCV resizes and warps at most 4 channels at a time: colour, then the two coverages.
    layers = [p.rgb, np.dstack([p.alpha, p.truth])]
    layers = [cv2.resize(x, (nw, nh), interpolation=interp) for x in layers]
    if angle:
        m = cv2.getRotationMatrix2D((nw / 2, nh / 2), angle, 1.0)
        cos, sin = abs(m[0, 0]), abs(m[0, 1])
        bw, bh = int(nh * sin + nw * cos) + 2, int(nh * cos + nw * sin) + 2
        m[0, 2] += bw / 2 - nw / 2
        m[1, 2] += bh / 2 - nh / 2
        layers = [cv2.warpAffine(x, m, (bw, bh), flags=cv2.INTER_LINEAR, borderValue=0) for x in layers]
    stack = np.dstack(layers)
    stack = np.clip(stack, 0, 1)
    a = stack[..., 3]
    return Product(np.minimum(stack[..., :3], a[..., None]), a, stack[..., 4])


def _directional_shading(p: Product, rng: np.random.Generator) -> Product:
    """Light from one side: the far half of the product goes dark (it is still product)."""
    h, w = p.alpha.shape
    ys, xs = np.nonzero(p.truth > 0.5)
    cy, cx, ry, rx = ys.mean(), xs.mean(), max(1.0, ys.std() * 2), max(1.0, xs.std() * 2)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    u = ((xx - cx) / rx * np.cos(ang) + (yy - cy) / ry * np.sin(ang))
    t = np.clip((u + 0.7) / 1.4, 0, 1)
    dark = rng.uniform(0.18, 0.35)
    shade = 1 - (1 - dark) * t * t * (3 - 2 * t)
    return Product(p.rgb * shade[..., None], p.alpha, p.truth)


# --- composing ---------------------------------------------------------------------------------


def _shadow(truth: np.ndarray, bottom: int, size: float, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Opacity of a soft cast shadow plus a dark contact band where the product meets the surface."""
    h, w = truth.shape
    if rng.random() < 0.5:
        # Table shot: the shadow lies on the floor behind the product, squashed and sheared from the contact line.
        k, shear = rng.uniform(0.15, 0.45), rng.uniform(-0.8, 0.8)
        m = np.float32([[1, -shear, shear * bottom], [0, k, (1 - k) * bottom]])
        cast = cv2.warpAffine(truth, m, (w, h), flags=cv2.INTER_LINEAR)
        style = "floor"
    else:
        # Flat lay from above: an offset copy of the silhouette.
        dx, dy = rng.uniform(-0.12, 0.12) * size, rng.uniform(0.02, 0.12) * size
        cast = cv2.warpAffine(truth, np.float32([[1, 0, dx], [0, 1, dy]]), (w, h), flags=cv2.INTER_LINEAR)
        style = "offset"
    near = cv2.GaussianBlur(cast, (0, 0), max(1.0, size * 0.01))
    far = cv2.GaussianBlur(cast, (0, 0), max(1.5, size * rng.uniform(0.03, 0.06)))
    yy = np.arange(h, dtype=np.float32)[:, None]
    wfar = np.clip(np.abs(yy - bottom) / (0.25 * size), 0, 1)
    soft = near * (1 - wfar) + far * wfar
    contact = cv2.GaussianBlur(np.roll(truth, max(1, int(size * 0.01)), axis=0), (0, 0), max(1.0, size * 0.012))
    contact *= np.clip(1 - (bottom - yy) / (0.08 * size), 0, 1) * (yy <= bottom + size * 0.05)
    opacity = np.maximum(soft * rng.uniform(0.3, 0.6), contact * rng.uniform(0.5, 0.75))
    return np.clip(opacity, 0, 0.85), style


def _camera(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 0.9))
    sigma = rng.uniform(0.006, 0.016)
    lum = rng.normal(0, sigma, img.shape[:2]).astype(np.float32)[..., None]
    chroma = rng.normal(0, sigma * 0.4, img.shape).astype(np.float32)
    return np.clip(img + lum + chroma, 0, 1)


def _to8(img: np.ndarray) -> np.ndarray:
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Recipe:
    name: str
    product: str  # a stamp path, or "render:white_ball" / "render:coin"
    backdrop: str | tuple[str, ...]  # several: one is drawn per seed
    tags: tuple[str, ...] = ()
    size: tuple[int, int] | None = None  # (w, h); None draws one
    small: bool = False
    shade: bool = False  # add directional shading to the product
    glass: bool = False
    grey: bool = False
    shadow: bool | None = None  # None draws it (80 % with a shadow)


RECIPES: tuple[Recipe, ...] = (
    Recipe("apricot-wood", "food/fruit/Apricot_whole.png", "wood", ("fruit",), shade=True),
    Recipe("orange-brick", "food/fruit/orange_seville.png", "brick", ("fruit", "busy-backdrop"), shade=True),
    Recipe("avocado-parquet", "food/fruit/avocado.png", "parquet", ("fruit",), shade=True),
    Recipe("kiwi-wood", "food/fruit/kiwi.png", "wood", ("fruit",)),
    Recipe("cherimoya-stone", "food/fruit/cherimoya.png", "stone", ("fruit",), shade=True),
    Recipe("strawberry-fabric", "food/fruit/Strawberry2.png", "fabric", ("fruit",)),
    Recipe("cherry-marble", "food/fruit/Cherry_Stella.png", "marble", ("fruit",)),
    Recipe("ginger-shelf", "food/spices/ginger.png", "shelf", ("shelf",)),
    Recipe("bulb-brick", "household/Lightbulb.png", "brick", ("busy-backdrop",)),
    Recipe("gas-bottle-brick", "household/cylinder.png", "brick", ("busy-backdrop", "same-colour")),
    Recipe("glass-wood", "household/dishes/glass.png", "wood", ("glass",), glass=True),
    Recipe("glass-cork", "household/dishes/glass.png", "cork", ("glass",), glass=True),
    Recipe("syringe-machine", "medical/syringe.png", "machine", ("thin", "busy-backdrop")),
    Recipe("spade-gravel", "household/tools/spade.png", "gravel", ("thin", "tool", "busy-backdrop")),
    Recipe("thermometer-fabric", "medical/mercurythermometer.png", "fabric", ("thin",)),
    Recipe("guitar-bark", "hobbies/music/string/guitar2.png", "bark", ("thin", "busy-backdrop")),
    Recipe("trumpet-wood", "hobbies/music/brass/trumpet.png", "wood", ("metal",)),
    Recipe("stethoscope-paper", "medical/stethoscope.png", "paper", ("thin", "holes")),
    Recipe("toy-grass", "seasonal/christmas/German_Christmas_toy.png", "grass", ("busy-backdrop",)),
    Recipe("clock-cliff", "symbols/clockface.png", "cliff", ("white-product",)),
    Recipe("white-ball-paper", "render:white_ball", "paper", ("white-product",)),
    Recipe("white-ball-marble", "render:white_ball", "marble", ("white-product",)),
    Recipe("coin-wood", "render:coin", "wood", ("small",), small=True),
    Recipe("tennis-ball-gravel", "sports/tennis_ball.png", "grey-gravel", ("small",), small=True),
    Recipe("key-fabric", "household/key.png", "fabric", ("small",), small=True),
    Recipe("strip-syringe", "medical/syringe.png", "wood", ("strip", "thin"), size=(4000, 120), shadow=False),
    Recipe("grey-orange-brick", "food/fruit/orange_seville.png", "brick", ("grey", "fruit"), grey=True, shade=True),
)

#: Backdrops the known recipes tag ``busy-backdrop``: a drawn backdrop gets the tag the same way.
BUSY_BACKDROPS = frozenset({"brick", "gravel", "grey-gravel", "grass", "bark", "machine"})

#: Products the engine was never developed or checked on: other photographic Tux Paint
#: stamps, chosen for being things a seller lists (not cartoons, people or animals), each on
#: a backdrop drawn per seed from a few it could plausibly be photographed on. ``RECIPES``
#: is what every engine round was measured on; this catalogue tells whether what was learnt
#: there carries over to new products (``--products unseen``). Written on 2 December,
#: before any engine was run on it; one change since: a candle was replaced by the drum,
#: because half of its stamp's flame is a faint glow (alpha 0.2-0.5) that the "solid"
#: true mask counts as product though the photo shows the backdrop through it.
UNSEEN_RECIPES: tuple[Recipe, ...] = (
    Recipe("turkey", "seasonal/christmas/Roast_turkey.png", ("wood", "marble", "fabric"), ("food",)),
    Recipe("pudding", "seasonal/christmas/Christmas_pudding.png", ("parquet", "cork", "paper"), ("food",), shade=True),
    Recipe("mushroom", "plants/mushrooms/cep.png", ("grass", "stone", "bark"), ("food",)),
    Recipe("mince-pie", "seasonal/christmas/Mince_Pie.png", ("marble", "parquet", "fabric"), ("food",)),
    Recipe("corn", "food/vegetables/corn.png", ("wood", "grass", "cork"), ("food",)),
    Recipe("broccoli", "food/vegetables/broccoli.png", ("marble", "wood", "grass"), ("food",)),
    Recipe("onion", "food/vegetables/onion.png", ("wood", "fabric", "stone"), ("food", "small"), small=True),
    Recipe("bass-guitar", "hobbies/music/string/guitar_electric_bass.png", ("wood", "parquet", "brick"), ("thin",)),
    Recipe("cello", "hobbies/music/string/cello.png", ("parquet", "stone", "paper"), ("thin",)),
    Recipe("violin", "hobbies/music/string/violin.png", ("paper", "fabric", "bark"), ("thin",)),
    Recipe("drum", "hobbies/music/percussion/drum_tomtom_floor.png", ("parquet", "stone", "shelf"), ("thin",)),
    Recipe("toolbox", "household/tools/toolbox.png", ("wood", "gravel", "stone"), ()),
    Recipe("tape-measure", "household/tools/measuring_tape.png", ("wood", "fabric", "cork"), ("thin",)),
    Recipe("pipe-wrench", "household/tools/wrench_plumbers.png", ("gravel", "wood", "stone"), ("thin", "tool")),
    Recipe("spanner", "household/tools/wrench_adjustable.png", ("wood", "marble", "gravel"), ("thin", "tool", "metal")),
    Recipe("saw", "household/tools/saw.png", ("wood", "grass", "stone"), ("thin", "tool", "metal")),
    Recipe("binoculars", "hobbies/binoculars.png", ("marble", "wood", "fabric"), ("metal",)),
    Recipe("camera", "hobbies/camera_35mm.png", ("marble", "parquet", "shelf"), ("metal",)),
    Recipe("trophy", "sports/trophy_cup.png", ("fabric", "marble", "brick"), ("metal",)),
    Recipe("pitcher", "household/dishes/pitcher_small.png", ("paper", "marble", "cliff"), ("white-product",)),
    Recipe("football", "sports/soccer.png", ("grass", "grey-gravel", "paper"), ("white-product",)),
    Recipe("cricket-ball", "sports/cricketball.png", ("grass", "wood", "parquet"), ("small",), small=True),
    Recipe("compost-bin", "household/home_compost_bin.png", ("grass", "brick", "stone"), ()),
    Recipe("tricycle", "vehicles/cycle/pink_tricycle.png", ("parquet", "grass", "stone"), ("thin", "holes")),
    Recipe("grey-camera", "hobbies/camera_35mm.png", ("wood", "fabric"), ("grey", "metal"), grey=True),
)

#: ``--products``: which catalogue of composites a set is built from.
CATALOGUES: dict[str, tuple[Recipe, ...]] = {"known": RECIPES, "unseen": UNSEEN_RECIPES}

#: Real photos without a known mask, judged by eye on the contact sheet (scikit-image's bundled data).
PHOTOS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("photo-coffee", "coffee", (), "a cup of coffee on a saucer, on a wooden table"),
    ("photo-cat", "chelsea", ("busy-backdrop",), "a cat (not a product): what does the engine do with it?"),
    ("photo-rocket", "rocket", ("busy-backdrop",), "a rocket on its launch pad (a tall product on a busy scene)"),
    ("photo-astronaut", "astronaut", ("busy-backdrop",), "a portrait: people and a flag behind"),
    ("photo-camera-grey", "camera", ("grey",), "a grey-scale photo of a man with a camera on a tripod"),
)

SIZES = ((1200, 900), (1000, 1000), (900, 1200), (1280, 960), (1400, 1050))


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _product(src: Sources, recipe: Recipe, w: int, h: int, rng: np.random.Generator) -> tuple[Product, str]:
    if recipe.small:
        longest = rng.uniform(0.07, 0.12) * min(w, h)
    elif recipe.size is not None and recipe.size[1] < 400:
        longest = 0.0  # strip: fitted to the height below
    else:
        longest = rng.uniform(0.45, 0.78) * min(w, h)
    if recipe.product == "render:white_ball":
        return white_ball(src, max(8, round(longest)), rng), "a white ball rendered with Lambert shading and paper grain"
    if recipe.product == "render:coin":
        return coin(src, max(8, round(longest)), rng), "a coin rendered with relief from scikit-image's coins photo"
    p = _from_stamp(src.stamp(recipe.product), solid=not recipe.glass)
    ph, pw = p.alpha.shape
    if longest == 0.0:
        scale = h * rng.uniform(0.6, 0.8) / ph
    else:
        scale = min(longest / max(ph, pw), 0.85 * w / pw, 0.85 * h / ph)
    angle = 0.0 if recipe.glass or recipe.size else float(rng.uniform(-10, 10))
    p = _resize_product(p, scale, angle)
    if recipe.shade:
        p = _directional_shading(p, rng)
    return p, f"tuxpaint-stamps-default stamps/{recipe.product}, scaled x{scale:.2f}, turned {angle:.0f} deg"


def compose(src: Sources, recipe: Recipe, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str, tuple[str, ...]]:
    """The photo, its true mask (uint8) and the clean backdrop, with notes and tags."""
    rng = _rng(seed, recipe.name)
    w, h = recipe.size or SIZES[int(rng.integers(len(SIZES)))]
    kind = recipe.backdrop if isinstance(recipe.backdrop, str) else str(rng.choice(recipe.backdrop))
    backdrop = _lighting(BACKDROPS[kind](src, w, h, rng).astype(np.float32), rng)
    p, what = _product(src, recipe, w, h, rng)
    ph, pw = p.alpha.shape
    margin = max(2, int(0.04 * min(w, h)))
    x0 = int(rng.integers(margin, max(margin + 1, w - pw - margin)))
    lo, hi = int(0.15 * h), h - ph - margin
    y0 = int(rng.integers(min(lo, hi), max(lo, hi) + 1)) if hi > margin else (h - ph) // 2
    x0, y0 = min(max(0, x0), w - pw), min(max(0, y0), h - ph)
    full = {k: np.zeros((h, w) + ((3,) if k == "rgb" else ()), np.float32) for k in ("rgb", "alpha", "truth")}
    for k in full:
        full[k][y0:y0 + ph, x0:x0 + pw] = getattr(p, k)
    tags = list(recipe.tags)
    if not isinstance(recipe.backdrop, str) and kind in BUSY_BACKDROPS:
        tags.append("busy-backdrop")
    photo = backdrop.copy()
    shadow_on = recipe.shadow if recipe.shadow is not None else rng.random() < 0.8
    notes = [what, f"on {kind}"]
    if shadow_on:
        ys = np.nonzero(full["truth"].max(axis=1) > 0.5)[0]
        opacity, style = _shadow(full["truth"], int(ys.max()), float(max(ph, pw)), rng)
        opacity *= 1 - full["truth"]
        photo *= 1 - opacity[..., None] * np.asarray([1.0, 0.97, 0.92], np.float32)
        tags.append("shadow")
        notes.append(f"{style} shadow, peak opacity {opacity.max():.2f}")
    if recipe.shade:
        tags.append("shaded")
    photo = full["rgb"] + photo * (1 - full["alpha"][..., None])
    photo = _camera(photo, rng)
    if recipe.grey:
        photo = np.repeat(photo.mean(axis=2, keepdims=True), 3, axis=2)
        backdrop = np.repeat(backdrop.mean(axis=2, keepdims=True), 3, axis=2)
    return _to8(photo), _to8(full["truth"]), _to8(backdrop), "; ".join(notes), tuple(dict.fromkeys(tags))


def _save_photo(rgb: np.ndarray, path_stem: Path, rng: np.random.Generator, grey: bool) -> Path:
    im = Image.fromarray(rgb[..., 0] if grey else rgb, "L" if grey else "RGB")
    if rng.random() < 0.15:
        path = path_stem.with_suffix(".png")
        im.save(path, optimize=False, compress_level=1)
    else:
        path = path_stem.with_suffix(".jpg")
        im.save(path, "JPEG", quality=int(rng.integers(80, 95)))
    return path


def build(dest: Path, *, seed: int = 0, cache: Path | None = None, fetch: bool = True,
          names: Iterable[str] | None = None, products: str = "known") -> list[Sample]:
    """Write the set into ``dest`` and describe it: the composites of the ``products``
    catalogue (``CATALOGUES``), then the real photos. ``names`` limits it to some samples
    (each is the same either way)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    wanted = set(names) if names is not None else None
    src = Sources(cache, fetch=fetch)
    samples: list[Sample] = []
    for recipe in CATALOGUES[products]:
        if wanted is not None and recipe.name not in wanted:
            continue
        photo, truth, backdrop, notes, tags = compose(src, recipe, seed)
        rng = _rng(seed, recipe.name + ":file")
        image = _save_photo(photo, dest / recipe.name, rng, recipe.grey)
        mask = dest / f"{recipe.name}.mask.png"
        Image.fromarray(truth, "L").save(mask, compress_level=1)
        clean = dest / f"{recipe.name}.backdrop.png"
        Image.fromarray(backdrop).save(clean, compress_level=1)
        samples.append(Sample(recipe.name, image, mask, "composite", tags, f"{notes}; saved as {image.suffix[1:]}",
                              clean))
    for name, data, tags, notes in PHOTOS:
        if wanted is not None and name not in wanted:
            continue
        rgb = _to8(src.skimage(data))
        grey = rgb.ndim == 2
        path = dest / f"{name}.jpg"
        Image.fromarray(rgb, "L" if grey else "RGB").save(path, "JPEG", quality=90)
        samples.append(Sample(name, path, None, "photo", tags, f"scikit-image data.{data}(): {notes}"))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--products", choices=sorted(CATALOGUES), default="known",
                        help="the composites' catalogue: the products the engine was developed on, or unseen ones")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for s in build(args.dest, seed=args.seed, cache=args.cache, products=args.products):
        logger.info("%-22s %-9s %-40s %s", s.name, s.kind, ",".join(s.tags), s.notes)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
