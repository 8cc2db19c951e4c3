"""Task options: normalisation at submit time, one clear error per bad field, and the docs table."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from generation.engine.base import InvalidOptions
from generation.engine.presets import PRESETS, fill_from_margin, validate_options

DOCS = Path(__file__).resolve().parents[2] / "docs" / "presets.md"


def test_it_fills_every_default_from_an_empty_dict() -> None:
    assert validate_options({}) == {"preset": "amazon", "size": 2000, "format": "jpeg", "margin": 14.0}
    assert validate_options(None) == validate_options({})


def test_it_normalises_multipart_strings() -> None:
    raw = {"preset": " Walmart ", "size": "1600px", "format": "JPG", "margin": "12.5%"}
    assert validate_options(raw) == {"preset": "walmart", "size": 1600, "format": "jpeg", "margin": 12.5}


def test_it_treats_empty_form_fields_as_not_given() -> None:
    assert validate_options({"preset": "", "size": " ", "format": "", "margin": None}) == validate_options({})


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_it_is_idempotent_for_every_preset(name: str) -> None:
    once = validate_options({"preset": name})
    assert validate_options(once) == once
    assert once["size"] == PRESETS[name].default_size
    assert once["format"] == PRESETS[name].formats[0]


def test_it_derives_jds_default_margin_from_a_5_px_gap() -> None:
    for size in (800, 1600):
        opts = validate_options({"preset": "jd", "size": size})
        assert round(fill_from_margin(opts["margin"]) * size) == size - 10


def test_it_allows_webp_only_where_the_preset_does() -> None:
    assert validate_options({"preset": "shopify", "format": "webp"})["format"] == "webp"
    with pytest.raises(InvalidOptions, match="format webp is not accepted by the amazon preset"):
        validate_options({"format": "webp"})


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"preset": "etsyy"}, "preset"),
        ({"preset": 3}, "preset"),
        ({"size": "big"}, "size"),
        ({"size": 999}, "size"),
        ({"size": 4001}, "size"),
        ({"size": "1500.5"}, "size"),
        ({"size": True}, "size"),
        ({"preset": "taobao", "size": 801}, "size"),
        ({"format": "gif"}, "format"),
        ({"preset": "ebay", "format": "png"}, "format"),
        ({"margin": "-1"}, "margin"),
        ({"margin": 40.5}, "margin"),
        ({"margin": "nan"}, "margin"),
        ({"margin": "wide"}, "margin"),
        ({"margin": False}, "margin"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_it_rejects_a_bad_value_naming_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidOptions) as exc:
        validate_options(raw)
    assert field in str(exc.value)


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
