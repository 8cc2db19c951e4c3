"""A task's options, parsed once into typed, frozen objects.

The request (multipart form fields, or the JSON stored with a task) is parsed
at the boundary into a :class:`JobSpec` holding one :class:`RenderSpec` per
output; a bad value raises :class:`InvalidOptions` naming its field, which the
API turns into a 400. From then on every stage (the backend, the compositor,
the encoder, the compliance checker) reads fields of these objects and none
checks the options again.

Several outputs: ``outputs`` (a JSON list of at most :data:`MAX_OUTPUTS`
objects with any of the output fields and an optional ``name``) or
``presets=amazon,taobao`` (one output per preset). The top-level output
fields are the defaults of every output. ``hint_box`` belongs to the cut,
which is made once per task; everything else, ``shadow`` included, belongs to
an output: the cut-out is rendered once per output.

The stored form (``JobSpec.to_options``) is flat for a task of one unnamed
output, as before: ``{"preset", "size", "format", "margin", "background",
"fit", "shadow", "hint_box"}``; a task of several (or named) outputs stores
the first output's fields flat as well and adds ``"outputs": [{"name",
"preset", ...}, ...]``, every field given. Options stored before
``background``/``fit``/``shadow``/``hint_box`` existed load with their
defaults.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from .base import InvalidOptions
from .presets import DEFAULT_PRESET, MARGIN_RANGE, PRESETS, Preset

FORMATS = ("jpeg", "png", "webp")
_FORMAT_ALIASES = {"jpg": "jpeg", "jpe": "jpeg", "jpeg": "jpeg", "png": "png", "webp": "webp"}

BACKGROUNDS = ("white", "transparent")
FITS = ("preset", "original")
SHADOWS = ("remove", "keep", "soft")
_BACKGROUND_ALIASES = {"white": "white", "transparent": "transparent", "alpha": "transparent"}
_FIT_ALIASES = {"preset": "preset", "canvas": "preset", "original": "original"}
_SHADOW_ALIASES = {"remove": "remove", "none": "remove", "keep": "keep", "soft": "soft"}

#: Formats that can carry an alpha channel.
ALPHA_FORMATS = ("png", "webp")

OUTPUT_KEYS = ("preset", "size", "format", "margin", "background", "fit", "shadow")
OPTION_KEYS = (*OUTPUT_KEYS, "hint_box", "outputs", "presets")

#: Outputs one task may render.
MAX_OUTPUTS = 8
#: An output's name: URL- and file-name-safe, and not all digits (``?output=2`` is an index).
_NAME = re.compile(r"^(?!\d+$)[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")

#: A hint box narrower or shorter than this (px) cannot frame a product.
MIN_HINT_SIDE = 8


@dataclass(frozen=True)
class RenderSpec:
    """How one output is rendered."""

    name: str
    preset: str
    size: int  # the preset canvas's long side (see ``canvas``); fit="original" ignores it
    format: str  # "jpeg" | "png" | "webp"
    margin: float  # percent of the canvas side left empty along the product's long axis
    background: str = "white"  # "white" | "transparent"
    fit: str = "preset"  # "preset" | "original"
    shadow: str = "remove"  # "remove" | "keep" | "soft"

    @property
    def preset_def(self) -> Preset:
        return PRESETS[self.preset]

    @property
    def canvas(self) -> tuple[int, int]:
        """(width, height) of the preset canvas."""
        return self.preset_def.canvas(self.size)

    @property
    def fill(self) -> float:
        """Share of the canvas the product takes along its binding axis (the canvas side, when square)."""
        return 1.0 - self.margin / 100.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "preset": self.preset, "size": self.size, "format": self.format,
            "margin": self.margin, "background": self.background, "fit": self.fit, "shadow": self.shadow,
        }

    @property
    def transparent(self) -> bool:
        return self.background == "transparent"


@dataclass(frozen=True)
class JobSpec:
    outputs: tuple[RenderSpec, ...]  # 1 to MAX_OUTPUTS, names unique; the first is the task's result
    hint_box: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 in input px after EXIF orientation

    @property
    def first(self) -> RenderSpec:
        return self.outputs[0]

    def to_options(self) -> dict[str, Any]:
        """The plain JSON form stored with a task (and shown as its ``options``)."""
        out = self.outputs[0]
        options: dict[str, Any] = {
            "preset": out.preset, "size": out.size, "format": out.format, "margin": out.margin,
            "background": out.background, "fit": out.fit, "shadow": out.shadow,
            "hint_box": list(self.hint_box) if self.hint_box is not None else None,
        }
        if len(self.outputs) > 1 or out.name != out.preset:
            options["outputs"] = [o.to_dict() for o in self.outputs]
        return options

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> JobSpec:
        """The stored form back; ``{}`` (or an older, shorter form) fills the defaults."""
        return parse_job(options or {})


def _blank(value: Any) -> bool:
    # Multipart forms send empty fields for untouched inputs: treat as "not given".
    return value is None or (isinstance(value, str) and value.strip() == "")


def _choice(field: str, value: Any, aliases: Mapping[str, str], allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.strip().lower() not in aliases:
        raise InvalidOptions(field, f"{field} must be one of {', '.join(allowed)}, not {value!r}.")
    return aliases[value.strip().lower()]


def _parse_preset(value: Any) -> Preset:
    if _blank(value):
        return PRESETS[DEFAULT_PRESET]
    if not isinstance(value, str) or value.strip().lower() not in PRESETS:
        raise InvalidOptions("preset", f"preset must be one of {', '.join(PRESETS)}, not {value!r}.")
    return PRESETS[value.strip().lower()]


def _parse_size(value: Any, preset: Preset) -> int:
    if isinstance(value, bool):
        raise InvalidOptions("size", f"size must be a whole number of pixels, not {value!r}.")
    if isinstance(value, int):
        size = value
    elif isinstance(value, float) and value.is_integer():
        size = int(value)
    elif isinstance(value, str) and value.strip().removesuffix("px").strip().isdigit():
        size = int(value.strip().removesuffix("px").strip())
    else:
        raise InvalidOptions("size", f"size must be a whole number of pixels, not {value!r}.")
    if preset.exact_size and size != preset.min_size:
        raise InvalidOptions(
            "size", f"size must be exactly {preset.min_size} for the {preset.name} preset, not {size}."
        )
    if not preset.min_size <= size <= preset.max_size:
        raise InvalidOptions(
            "size",
            f"size must be between {preset.min_size} and {preset.max_size} px for the "
            f"{preset.name} preset, not {size}.",
        )
    return size


def _parse_format(value: Any, preset: Preset) -> str:
    fmt = _choice("format", value, _FORMAT_ALIASES, FORMATS)
    if fmt not in preset.formats:
        raise InvalidOptions(
            "format",
            f"format {fmt} is not accepted by the {preset.name} preset; use {' or '.join(preset.formats)}.",
        )
    return fmt


def _parse_margin(value: Any) -> float:
    low, high = MARGIN_RANGE
    message = f"margin must be a percentage between {low:g} and {high:g}, not {value!r}."
    if isinstance(value, bool):
        raise InvalidOptions("margin", message)
    try:
        margin = float(value.strip().removesuffix("%")) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise InvalidOptions("margin", message) from None
    if not math.isfinite(margin) or not low <= margin <= high:
        raise InvalidOptions("margin", message)
    return margin


_INT = re.compile(r"^\s*-?\d+\s*$")


def _parse_hint_box(value: Any, image_size: tuple[int, int] | None) -> tuple[int, int, int, int]:
    message = f"hint_box must be four whole numbers x0,y0,x1,y1 in the photo's pixels, not {value!r}."
    if isinstance(value, str):
        parts: list[Any] = value.split(",")
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise InvalidOptions("hint_box", message)
    if len(parts) != 4:
        raise InvalidOptions("hint_box", message)
    coords: list[int] = []
    for part in parts:
        if isinstance(part, bool):
            raise InvalidOptions("hint_box", message)
        if isinstance(part, int):
            coords.append(part)
        elif isinstance(part, float) and part.is_integer():
            coords.append(int(part))
        elif isinstance(part, str) and _INT.match(part):
            coords.append(int(part))
        else:
            raise InvalidOptions("hint_box", message)
    x0, y0, x1, y1 = coords
    if min(coords) < 0:
        raise InvalidOptions("hint_box", f"hint_box coordinates cannot be negative, not {value!r}.")
    if x1 - x0 < MIN_HINT_SIDE or y1 - y0 < MIN_HINT_SIDE:
        raise InvalidOptions(
            "hint_box",
            f"hint_box needs x0 < x1 and y0 < y1, at least {MIN_HINT_SIDE} px apart each way, not {value!r}.",
        )
    if image_size is not None:
        width, height = image_size
        if x1 > width or y1 > height:
            raise InvalidOptions(
                "hint_box", f"hint_box {x0},{y0},{x1},{y1} reaches outside the {width}x{height} photo."
            )
    return x0, y0, x1, y1


def parse_render(raw: Mapping[str, Any], name: str | None = None) -> RenderSpec:
    """One output's fields (no ``hint_box``) into a :class:`RenderSpec` called ``name``
    (default: its preset's name)."""
    preset = _parse_preset(raw.get("preset"))
    size = preset.default_size if _blank(raw.get("size")) else _parse_size(raw["size"], preset)
    fmt = preset.formats[0] if _blank(raw.get("format")) else _parse_format(raw["format"], preset)
    margin = preset.default_margin(size) if _blank(raw.get("margin")) else _parse_margin(raw["margin"])
    background = "white" if _blank(raw.get("background")) else _choice(
        "background", raw["background"], _BACKGROUND_ALIASES, BACKGROUNDS)
    fit = "preset" if _blank(raw.get("fit")) else _choice("fit", raw["fit"], _FIT_ALIASES, FITS)
    shadow = "remove" if _blank(raw.get("shadow")) else _choice("shadow", raw["shadow"], _SHADOW_ALIASES, SHADOWS)
    if background == "transparent" and fmt not in ALPHA_FORMATS:
        if _blank(raw.get("format")):
            # The preset's default format cannot carry alpha: take the first one that can.
            alpha_formats = [f for f in preset.formats if f in ALPHA_FORMATS]
            if not alpha_formats:
                raise InvalidOptions(
                    "background",
                    f"background transparent needs PNG or WebP, which the {preset.name} preset does not accept.",
                )
            fmt = alpha_formats[0]
        else:
            raise InvalidOptions(
                "format",
                f"format {fmt} cannot carry transparency; use png or webp with background transparent.",
            )
    return RenderSpec(
        name=name or preset.name, preset=preset.name, size=size, format=fmt, margin=margin,
        background=background, fit=fit, shadow=shadow,
    )


def parse_job(raw: Mapping[str, Any] | None, *, image_size: tuple[int, int] | None = None) -> JobSpec:
    """Parse task options, or raise :class:`InvalidOptions` naming the bad field
    (``outputs[1].format`` for a field of the second output).

    ``image_size`` (width, height after EXIF orientation), when known, bounds
    ``hint_box``. A margin outside what the marketplace accepts is allowed (the
    seller asked for it) and shows up as a failed ``fill`` compliance check.
    Parsing the stored form again gives the same spec.
    """
    raw = dict(raw or {})
    unknown = sorted(str(k) for k in raw if k not in OPTION_KEYS)
    if unknown:
        raise InvalidOptions(
            unknown[0], f"unknown option(s): {', '.join(unknown)}; allowed: {', '.join(OPTION_KEYS)}."
        )
    hint = None if _blank(raw.get("hint_box")) else _parse_hint_box(raw["hint_box"], image_size)
    shared = {key: raw[key] for key in OUTPUT_KEYS if not _blank(raw.get(key))}
    has_outputs, has_presets = not _blank(raw.get("outputs")), not _blank(raw.get("presets"))
    if has_outputs and has_presets:
        raise InvalidOptions("presets", "Give outputs or presets, not both: presets is a shorthand for outputs.")
    if has_presets:
        if "preset" in shared:
            raise InvalidOptions("preset", "Give preset (one output) or presets (one output per preset), not both.")
        items = [{"preset": name} for name in _parse_presets(raw["presets"])]
        return JobSpec(outputs=_parse_outputs(items, shared, "presets"), hint_box=hint)
    if has_outputs:
        return JobSpec(outputs=_parse_outputs(_output_items(raw["outputs"]), shared, "outputs"), hint_box=hint)
    return JobSpec(outputs=(parse_render(raw),), hint_box=hint)


def _parse_presets(value: Any) -> list[str]:
    parts = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else None
    if parts is None:
        raise InvalidOptions("presets", f"presets must be preset names separated by commas, not {value!r}.")
    names = [p.strip().lower() if isinstance(p, str) else p for p in parts]
    if not names or len(names) > MAX_OUTPUTS:
        raise InvalidOptions("presets", f"presets takes 1 to {MAX_OUTPUTS} preset names, not {len(names)}.")
    for i, name in enumerate(names):
        if not isinstance(name, str) or name not in PRESETS:
            raise InvalidOptions(
                f"presets[{i}]", f"presets[{i}] must be one of {', '.join(PRESETS)}, not {parts[i]!r}."
            )
        if name in names[:i]:
            raise InvalidOptions(f"presets[{i}]", f"presets[{i}]: {name} is listed twice.")
    return names


def _output_items(value: Any) -> list[Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise InvalidOptions("outputs", f"outputs must be a JSON list of objects; it does not parse: {exc}.") from None
        except RecursionError:  # [[[[... thousands deep: json gives up by recursion, not ValueError
            raise InvalidOptions("outputs", "outputs must be a JSON list of objects; it is nested too deeply.") from None
    if not isinstance(value, list):
        raise InvalidOptions("outputs", f"outputs must be a JSON list of objects, not {type(value).__name__}.")
    if not 1 <= len(value) <= MAX_OUTPUTS:
        raise InvalidOptions("outputs", f"outputs takes 1 to {MAX_OUTPUTS} objects, not {len(value)}.")
    return value


def _parse_outputs(items: list[Any], shared: Mapping[str, Any], field: str) -> tuple[RenderSpec, ...]:
    """Each item over the shared top-level fields; names unique (case-insensitively: they name files)."""
    parsed: list[tuple[dict[str, Any], str | None]] = []
    taken: set[str] = set()
    for i, item in enumerate(items):
        where = f"{field}[{i}]"
        if not isinstance(item, dict):
            raise InvalidOptions(where, f"{where} must be an object such as {{\"preset\": \"amazon\"}}.")
        for key in item:
            if key == "hint_box":
                raise InvalidOptions(f"{where}.hint_box",
                                     "hint_box belongs to the cut-out, made once per task: give it at the top level.")
            if key not in (*OUTPUT_KEYS, "name"):
                raise InvalidOptions(f"{where}.{key}",
                                     f"{where}.{key} is not an output field; allowed: {', '.join(OUTPUT_KEYS)}, name.")
        name = item.get("name")
        if name is not None:
            if not isinstance(name, str) or not _NAME.match(name):
                raise InvalidOptions(
                    f"{where}.name",
                    f"{where}.name must be 1-40 letters, digits, '-' or '_' (not all digits), not {name!r}.",
                )
            if name.lower() in taken:
                raise InvalidOptions(f"{where}.name", f"{where}.name {name!r} is used by an earlier output.")
            taken.add(name.lower())
        parsed.append(({**shared, **{k: v for k, v in item.items() if k != "name"}}, name))
    outputs: list[RenderSpec] = []
    for i, (fields, name) in enumerate(parsed):
        where = f"{field}[{i}]"
        try:
            spec = parse_render(fields)
        except InvalidOptions as exc:
            origin = "" if exc.field in items[i] else f" (from the top-level {exc.field})"
            raise InvalidOptions(f"{where}.{exc.field}", f"{where}: {exc}{origin}") from None
        if name is None:
            # The preset's name when the output chose one and it is free, else output-<i>.
            candidates = ([spec.preset] if "preset" in items[i] else []) + [f"output-{i}", f"output-{i}-{spec.preset}"]
            name = next((c for c in candidates if c.lower() not in taken), None)
            if name is None:
                raise InvalidOptions(f"{where}.name", f"{where} needs a name: its default names are taken.")
            taken.add(name.lower())
        outputs.append(RenderSpec(**{**spec.to_dict(), "name": name}))
    return tuple(outputs)
