"""The preset table: sound defaults, and the docs table that shows it to sellers."""
from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image

from generation.engine import compliance
from generation.engine.base import InvalidOptions
from generation.engine.presets import PRESETS, fill_from_margin
from generation.engine.spec import RenderSpec, parse_job

DOCS = Path(__file__).resolve().parents[2] / "docs" / "presets.md"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_it_gives_every_preset_a_default_margin_inside_its_fill_band(name: str) -> None:
    preset = PRESETS[name]
    fill = fill_from_margin(preset.default_margin(preset.default_size))
    if preset.fill is not None:
        assert preset.fill_band[0] <= fill <= preset.fill_band[1]
    else:
        assert round(fill * preset.default_size) == preset.default_size - 2 * preset.edge_gap_px


def test_it_derives_jds_default_margin_from_a_5_px_gap() -> None:
    for size in (800, 1600):
        assert round(fill_from_margin(PRESETS["jd"].default_margin(size)) * size) == size - 10


def _docs_rows() -> dict[str, list[str]]:
    rows = {}
    for line in DOCS.read_text().splitlines():
        match = re.match(r"\| `(\w+)` \|(.*)\|\s*$", line)
        if match and match.group(1) in PRESETS:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split("|")]
    return rows


def test_it_documents_every_preset_as_coded() -> None:
    rows = _docs_rows()
    assert set(rows) == set(PRESETS)
    for name, preset in PRESETS.items():
        canvas, fill, formats, limits = rows[name][:4]
        if not preset.square:
            width, height = preset.canvas(preset.default_size)
            assert canvas.startswith(f"{width} x {height} portrait: ")
            canvas = canvas.split(": ", 1)[1]
        assert canvas.startswith(f"{preset.default_size}, ")
        if preset.exact_size:
            assert canvas.endswith(f"exactly {preset.min_size}")
        else:
            assert canvas.endswith(f"{preset.min_size}-{preset.max_size}")
        assert formats == ", ".join(preset.formats)
        if preset.fill is not None:
            low, high = preset.fill_band
            assert fill == f"{preset.fill * 100:g} % target, {low * 100:g}-{high * 100:g} % accepted"
        else:
            assert f"{preset.edge_gap_px} px" in fill and f"{preset.max_edge_gap_px} px" in fill
        if preset.max_bytes is None:
            expected = "-"
        elif preset.min_bytes is None:
            expected = f"<= {preset.max_bytes:,}"
        else:
            expected = f"{preset.min_bytes:,}-{preset.max_bytes:,}"
        assert limits == expected


def test_it_cites_a_source_for_every_preset() -> None:
    sources = DOCS.read_text().split("## Sources", 1)[1].split("\n## ", 1)[0]
    for name in PRESETS:
        assert f"`{name}`" in sources, name


def test_zalandos_canvas_is_portrait_1801_by_2600() -> None:
    zalando = PRESETS["zalando"]
    assert zalando.canvas(zalando.default_size) == (1801, 2600)
    assert zalando.accepts_canvas(1801, 2600) and not zalando.accepts_canvas(2600, 2600)
    assert not zalando.accepts_canvas(2600, 1801)


def test_zalando_takes_the_partner_guides_minimum_of_762_by_1100_and_nothing_smaller() -> None:
    smallest = parse_job({"preset": "zalando", "size": "1100"}).outputs[0]
    assert smallest.canvas == (762, 1100)
    assert PRESETS["zalando"].accepts_canvas(762, 1100)
    assert not PRESETS["zalando"].accepts_canvas(761, 1099)
    with pytest.raises(InvalidOptions) as exc:
        parse_job({"preset": "zalando", "size": "1099"})
    assert exc.value.field == "size"


def test_mercado_libre_stops_at_the_1920_px_it_keeps() -> None:
    assert parse_job({"preset": "mercadolibre", "size": "1920"}).outputs[0].size == 1920
    with pytest.raises(InvalidOptions, match="between 500 and 1920") as exc:
        parse_job({"preset": "mercadolibre", "size": "2000"})
    assert exc.value.field == "size"


def test_tiktok_shop_refuses_webp_and_carries_transparency_in_png() -> None:
    with pytest.raises(InvalidOptions, match="format webp is not accepted by the tiktok preset") as exc:
        parse_job({"preset": "tiktok", "format": "webp"})
    assert exc.value.field == "format"
    assert parse_job({"preset": "tiktok", "background": "transparent"}).outputs[0].format == "png"


def _white_jpeg_of(spec: RenderSpec, length: int) -> bytes:
    """A white canvas for ``spec``, padded after its end marker (decoders ignore that) to ``length`` bytes."""
    buf = io.BytesIO()
    Image.new("RGB", spec.canvas, (255, 255, 255)).save(buf, "JPEG", quality=95)
    data = buf.getvalue()
    assert len(data) < length
    return data + b"\0" * (length - len(data))


@pytest.mark.parametrize(("name", "limit"), [("temu", 2_000_000), ("ebay", 12_000_000), ("zalando", 20_000_000)])
def test_the_bytes_check_holds_each_marketplaces_file_limit(name: str, limit: int) -> None:
    spec = parse_job({"preset": name}).outputs[0]
    at_limit = compliance.check(_white_jpeg_of(spec, limit), spec)["checks"]["bytes"]
    over = compliance.check(_white_jpeg_of(spec, limit + 1), spec)["checks"]["bytes"]
    assert (at_limit["status"], at_limit["value"]) == ("passed", limit)
    assert (over["status"], over["value"]) == ("failed", limit + 1)
