"""Task options parsed once at the boundary: defaults, aliases, one clear error per bad field, the stored form."""
from __future__ import annotations

from typing import Any

import pytest

from generation.engine.base import InvalidOptions
from generation.engine.presets import PRESETS
from generation.engine.spec import JobSpec, RenderSpec, parse_job


def only(job: JobSpec) -> RenderSpec:
    assert len(job.outputs) == 1
    return job.outputs[0]


def test_it_fills_every_default_from_an_empty_dict() -> None:
    job = parse_job({})
    assert job.hint_box is None
    assert only(job) == RenderSpec(name="amazon", preset="amazon", size=2000, format="jpeg", margin=14.0,
                                   background="white", fit="preset", shadow="remove")
    assert parse_job(None) == job
    assert job.to_options() == {"preset": "amazon", "size": 2000, "format": "jpeg", "margin": 14.0,
                                "background": "white", "fit": "preset", "shadow": "remove", "hint_box": None}


def test_it_normalises_multipart_strings_and_aliases() -> None:
    raw = {"preset": " Walmart ", "size": "1600px", "format": "JPG", "margin": "12.5%",
           "background": " White", "fit": "CANVAS", "shadow": "none", "hint_box": " 10, 20 ,300,400 "}
    job = parse_job(raw)
    assert only(job) == RenderSpec(name="walmart", preset="walmart", size=1600, format="jpeg", margin=12.5,
                                   background="white", fit="preset", shadow="remove")
    assert job.hint_box == (10, 20, 300, 400)
    assert only(parse_job({"preset": "shopify", "format": "webp", "background": "alpha"})).background == "transparent"
    assert only(parse_job({"shadow": "Keep", "fit": "original"})).shadow == "keep"
    assert only(parse_job({"shadow": "soft"})).shadow == "soft"
    assert only(parse_job({"fit": "Original"})).fit == "original"


def test_it_treats_empty_form_fields_as_not_given() -> None:
    blank = {"preset": "", "size": " ", "format": "", "margin": None, "background": "", "fit": " ",
             "shadow": None, "hint_box": ""}
    assert parse_job(blank) == parse_job({})


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_it_round_trips_the_stored_form_for_every_preset(name: str) -> None:
    job = parse_job({"preset": name, "shadow": "soft", "hint_box": "0,0,64,64"})
    stored = job.to_options()
    assert JobSpec.from_options(stored) == job
    assert JobSpec.from_options(stored).to_options() == stored
    assert only(job).size == PRESETS[name].default_size
    assert only(job).format == PRESETS[name].formats[0]


def test_it_loads_options_stored_before_the_new_fields_existed() -> None:
    old = {"preset": "walmart", "size": 2200, "format": "png", "margin": 15.0}
    spec = only(JobSpec.from_options(old))
    assert (spec.preset, spec.size, spec.format, spec.margin) == ("walmart", 2200, "png", 15.0)
    assert (spec.background, spec.fit, spec.shadow) == ("white", "preset", "remove")
    assert JobSpec.from_options({}) == parse_job({})


def test_it_allows_webp_only_where_the_preset_does() -> None:
    assert only(parse_job({"preset": "shopify", "format": "webp"})).format == "webp"
    with pytest.raises(InvalidOptions, match="format webp is not accepted by the amazon preset") as exc:
        parse_job({"format": "webp"})
    assert exc.value.field == "format"


def test_it_refuses_jpeg_with_a_transparent_background_naming_format() -> None:
    with pytest.raises(InvalidOptions) as exc:
        parse_job({"format": "jpeg", "background": "transparent"})
    assert exc.value.field == "format"
    assert "transparen" in str(exc.value) and str(exc.value).endswith(".")


def test_it_picks_the_presets_alpha_format_when_transparent_comes_without_a_format() -> None:
    assert only(parse_job({"background": "transparent"})).format == "png"
    with pytest.raises(InvalidOptions) as exc:
        parse_job({"preset": "ebay", "background": "transparent"})
    assert exc.value.field == "background"


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
        ({"background": "black"}, "background"),
        ({"background": 1}, "background"),
        ({"fit": "stretch"}, "fit"),
        ({"shadow": "hard"}, "shadow"),
        ({"shadow": True}, "shadow"),
        ({"hint_box": "1,2,3"}, "hint_box"),
        ({"hint_box": "a,b,c,d"}, "hint_box"),
        ({"hint_box": "10,10,5,50"}, "hint_box"),
        ({"hint_box": "10,10,50,12"}, "hint_box"),
        ({"hint_box": "-1,0,50,50"}, "hint_box"),
        ({"hint_box": "1.5,0,50,50"}, "hint_box"),
        ({"hint_box": {"x0": 1}}, "hint_box"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_it_rejects_a_bad_value_naming_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidOptions) as exc:
        parse_job(raw)
    assert exc.value.field == field
    assert field in str(exc.value)
    assert str(exc.value)[0].isalpha() and str(exc.value).endswith(".")


def test_it_bounds_the_hint_box_by_the_photo_when_its_size_is_known() -> None:
    assert parse_job({"hint_box": "0,0,640,480"}, image_size=(640, 480)).hint_box == (0, 0, 640, 480)
    assert parse_job({"hint_box": [5, 5, 100, 90]}, image_size=(640, 480)).hint_box == (5, 5, 100, 90)
    for box in ("0,0,641,480", "0,0,640,481"):
        with pytest.raises(InvalidOptions, match="outside the 640x480 photo") as exc:
            parse_job({"hint_box": box}, image_size=(640, 480))
        assert exc.value.field == "hint_box"
    # Without the photo's size only the box's own shape is judged.
    assert parse_job({"hint_box": "0,0,5000,5000"}).hint_box == (0, 0, 5000, 5000)


def test_it_is_frozen() -> None:
    job = parse_job({})
    with pytest.raises(AttributeError):
        job.outputs[0].size = 10  # type: ignore[misc]


def test_several_outputs_round_trip_through_the_stored_form_with_their_default_names() -> None:
    from generation.engine.spec import parse_job

    job = parse_job({
        "outputs": '[{"preset": "amazon"}, {"preset": "amazon", "format": "png"}, {}, '
                   '{"preset": "zalando", "name": "portrait"}]',
        "shadow": "soft", "hint_box": "10,10,200,200",
    })
    assert [(o.name, o.preset, o.format, o.shadow) for o in job.outputs] == [
        ("amazon", "amazon", "jpeg", "soft"), ("output-1", "amazon", "png", "soft"),
        ("output-2", "amazon", "jpeg", "soft"), ("portrait", "zalando", "jpeg", "soft")]
    assert job.outputs[3].canvas == (1801, 2600) and job.hint_box == (10, 10, 200, 200)
    stored = job.to_options()
    assert stored["preset"] == "amazon" and len(stored["outputs"]) == 4
    assert parse_job(stored) == job
    # One output called after its preset keeps the flat form of before.
    assert "outputs" not in parse_job({"presets": "taobao"}).to_options()
    assert parse_job({"presets": "taobao"}) == parse_job({"preset": "taobao"})


def test_outputs_nested_too_deeply_for_the_json_decoder_are_refused_naming_the_field() -> None:
    # json.loads gives up on [[[[... by RecursionError, not ValueError: once a 500 on submit.
    with pytest.raises(InvalidOptions) as caught:
        parse_job({"outputs": "[" * 100_000})
    assert caught.value.field == "outputs" and "nested too deeply" in str(caught.value)
