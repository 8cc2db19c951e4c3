"""The preset table: sound defaults, and the docs table that shows it to sellers."""
from __future__ import annotations

import re
from pathlib import Path
import pytest

from generation.engine.presets import PRESETS, fill_from_margin

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
