"""Marketplace presets.

A preset shapes one output of a task: the canvas (square, or a fixed
portrait ratio such as Zalando's 1801 x 2600), how much of it the product
fills, the file format and the byte limits. The
same table drives the compositor (``compose.finish``) and the compliance
checker (``compliance.check``), so what we render and what we verify cannot
drift apart. ``docs/presets.md`` shows this table to sellers; keep both in step
(``tests/generation/test_engine_presets.py`` compares them).

A task's options are parsed against this table once, at submit time, by
``spec.parse_job``.
"""
from __future__ import annotations

from dataclasses import dataclass
from .base import InvalidOptions

#: Largest canvas any preset renders. Marketplaces accept more (Amazon up to
#: 10,000 px) but nothing zooms further than this and the engine's time and
#: memory budgets are measured up to 4,000 px.
ENGINE_MAX_SIZE = 4000

#: ``margin`` option range, in percent of the canvas side left empty along the
#: product's long axis (split evenly between both sides): fill = 1 - margin/100.
MARGIN_RANGE = (0.0, 40.0)


@dataclass(frozen=True)
class Preset:
    name: str
    label: str
    default_size: int
    min_size: int  # the canvas's long side (a square's side), px
    max_size: int
    formats: tuple[str, ...]  # the first one is the default
    #: Target share of the canvas side taken by the product's long side. ``None``
    #: when the preset positions by pixels instead (see ``edge_gap_px``).
    fill: float | None
    #: Target gap (px) between the product's long side and the canvas edge, for
    #: presets that want the product nearly edge to edge (JD).
    edge_gap_px: int | None
    #: Accepted measured fill (long side / canvas side), inclusive.
    fill_band: tuple[float, float]
    #: Largest accepted gap (px) on the long axis (JD: "within 10 px of the edge").
    max_edge_gap_px: int | None = None
    #: Whether the product may touch the canvas edge (only JD wants it that close).
    may_touch_edge: bool = False
    jpeg_quality: int = 95  # first quality tried by the encoder
    min_jpeg_quality: int = 85  # the encoder never goes below; ``compliance`` checks it when set
    check_jpeg_quality: bool = False
    min_bytes: int | None = None
    max_bytes: int | None = None
    #: Whether a drawn shadow (``shadow=keep``/``soft``) is acceptable; ``compliance`` checks it when not.
    allows_shadow: bool = True
    #: The canvas's width:height. A portrait ratio (height > width) makes ``size`` the
    #: canvas height and derives the width from it (Zalando: 2600 -> 1801 x 2600).
    canvas_ratio: tuple[int, int] = (1, 1)
    notes: str = ""

    @property
    def exact_size(self) -> bool:
        return self.min_size == self.max_size

    @property
    def square(self) -> bool:
        return self.canvas_ratio[0] == self.canvas_ratio[1]

    def canvas(self, size: int) -> tuple[int, int]:
        """(width, height) of the canvas whose long side is ``size``."""
        rw, rh = self.canvas_ratio
        if rw >= rh:
            return size, max(1, round(size * rh / rw))
        return max(1, round(size * rw / rh)), size

    def accepts_canvas(self, width: int, height: int) -> bool:
        """Whether a ``width`` x ``height`` file has this preset's shape and size (1 px rounding allowed)."""
        long_side = max(width, height)
        if not self.min_size <= long_side <= self.max_size:
            return False
        if self.square:
            return self.min_size <= min(width, height) and width == height
        expected = self.canvas(long_side)
        return abs(expected[0] - width) <= 1 and abs(expected[1] - height) <= 1

    def default_margin(self, size: int) -> float:
        """The ``margin`` (percent) this preset uses at ``size`` when none is given."""
        if self.fill is not None:
            return round((1.0 - self.fill) * 100.0, 3)
        assert self.edge_gap_px is not None
        return round(200.0 * self.edge_gap_px / min(self.canvas(size)), 3)


_STANDARD_BAND = (0.80, 0.95)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "amazon", "Amazon", 2000, 1000, ENGINE_MAX_SIZE, ("jpeg", "png"),
            # 86 %: Amazon's floor is 85 % and the antialiased rim (1-2 px that
            # the checker counts as white) must not take us under it.
            fill=0.86, edge_gap_px=None, fill_band=(0.85, 0.95),
            notes="Pure white (255,255,255) background, product fills >= 85 % of the frame, "
            "no shadow at the edges; >= 1000 px enables zoom.",
        ),
        Preset(
            "walmart", "Walmart", 2200, 1500, ENGINE_MAX_SIZE, ("jpeg", "png"),
            fill=0.85, edge_gap_px=None, fill_band=_STANDARD_BAND, max_bytes=5_000_000,
            notes="RGB 8-bit, <= 5 MB; 2200 px recommended, 1500 px minimum for zoom.",
        ),
        Preset(
            "shopify", "Shopify", 2048, 800, ENGINE_MAX_SIZE, ("jpeg", "png", "webp"),
            fill=0.85, edge_gap_px=None, fill_band=_STANDARD_BAND,
            notes="Square 2048 px recommended; Shopify also serves WebP.",
        ),
        Preset(
            "etsy", "Etsy", 2000, 1000, ENGINE_MAX_SIZE, ("jpeg", "png"),
            fill=0.85, edge_gap_px=None, fill_band=_STANDARD_BAND,
            notes="2000 px on the shortest side recommended.",
        ),
        Preset(
            "ebay", "eBay", 1600, 500, ENGINE_MAX_SIZE, ("jpeg",),
            fill=0.85, edge_gap_px=None, fill_band=_STANDARD_BAND,
            # eBay's developer guides: JPEG quality 90 or more, at most 12 MB a picture.
            jpeg_quality=95, min_jpeg_quality=90, check_jpeg_quality=True, max_bytes=12_000_000,
            notes="JPEG quality >= 90, no borders, <= 12 MB; 500 px minimum, 800-1600 px for zoom.",
        ),
        Preset(
            "taobao", "Taobao", 800, 800, 800, ("jpeg",),
            fill=0.85, edge_gap_px=None, fill_band=_STANDARD_BAND,
            min_bytes=38_000, max_bytes=300_000, allows_shadow=False,
            notes="Exactly 800 x 800, whole product centred, JPEG between 38 and 300 KB, no shadow.",
        ),
        Preset(
            "jd", "JD.com", 800, 800, ENGINE_MAX_SIZE, ("jpeg", "png"),
            fill=None, edge_gap_px=5, fill_band=(0.0, 1.0), max_edge_gap_px=10,
            may_touch_edge=True,
            notes="At least 800 x 800; the product's long side within 10 px of the canvas edge.",
        ),
        Preset(
            "pinduoduo", "Pinduoduo", 800, 480, 2000, ("jpeg", "png"),
            fill=0.85, edge_gap_px=None, fill_band=_STANDARD_BAND, max_bytes=1_000_000,
            notes="Square, at least 480 px, product centred, <= 1 MB.",
        ),
        Preset(
            "zalando", "Zalando", 2600, 1100, ENGINE_MAX_SIZE, ("jpeg",),
            # Zalando's partner guide: 1:1.44 upright, 1801 x 2600 best practice,
            # 762 x 1100 minimum (no maximum given), JPEG, at most 20 MB.
            fill=0.85, edge_gap_px=None, fill_band=_STANDARD_BAND, canvas_ratio=(1801, 2600),
            max_bytes=20_000_000,
            notes="Portrait 1:1.44 JPEG: 1801 x 2600 recommended, 762 x 1100 minimum, <= 20 MB; "
            "whole product centred.",
        ),
        Preset(
            "mercadolibre", "Mercado Libre", 1200, 500, 1920, ("jpeg", "png"),
            # 1920: Mercado Libre keeps at most 1920 x 1920 and shrinks anything larger.
            # 95.5 %: the floor is 95 %, and a fill of 96 % would reach the checked 2 % frame.
            fill=0.955, edge_gap_px=None, fill_band=(0.95, 0.96), max_bytes=10_000_000,
            notes="Square, 500-1920 px (1200 px recommended; zoom from 800 px wide), the product "
            "fills 95 % of the image, <= 10 MB.",
        ),
        Preset(
            "google", "Google Merchant Center", 1500, 800, ENGINE_MAX_SIZE, ("jpeg", "png", "webp"),
            fill=0.85, edge_gap_px=None, fill_band=(0.75, 0.90), max_bytes=16_000_000,
            # The 800 px floor is ours: Google accepts 100 px (250 px for apparel), suggests 1500 px.
            notes="The product takes 75-90 % of the image; <= 16 MB and 64 megapixels; 1500 px "
            "suggested (Google accepts 100 px, 250 px for apparel).",
        ),
        Preset(
            "lazada", "Lazada", 1000, 500, 2000, ("jpeg", "png"),
            fill=0.85, edge_gap_px=None, fill_band=_STANDARD_BAND, max_bytes=3_000_000,
            notes="Square 500-2000 px, white background on the main image, <= 3 MB.",
        ),
        Preset(
            "tiktok", "TikTok Shop", 1200, 600, ENGINE_MAX_SIZE, ("jpeg", "png"),
            # No WebP: every seller guide we found says TikTok Shop takes JPG and PNG only.
            fill=0.85, edge_gap_px=None, fill_band=_STANDARD_BAND, max_bytes=5_000_000,
            notes="Square, at least 600 px (1200 px recommended), white background on the main image, <= 5 MB.",
        ),
        Preset(
            "temu", "Temu", 1600, 800, ENGINE_MAX_SIZE, ("jpeg", "png"),
            # 2 MB: the limit every seller guide we found gives (none gave 3 MB).
            fill=0.85, edge_gap_px=None, fill_band=_STANDARD_BAND, max_bytes=2_000_000,
            notes="Square, at least 800 px (1600 px suggested), <= 2 MB; Temu asks for a clean "
            "background and does not require white.",
        ),
    )
}

DEFAULT_PRESET = "amazon"


def fill_from_margin(margin: float) -> float:
    """Share of the canvas side the product's long side should take."""
    return 1.0 - margin / 100.0


def preset_for(name: str) -> Preset:
    """The preset called ``name`` (case-insensitive)."""
    try:
        return PRESETS[name.strip().lower()]
    except KeyError:
        raise InvalidOptions("preset", f"preset must be one of {', '.join(PRESETS)}, not {name!r}.") from None
