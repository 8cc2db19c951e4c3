"""Generated (input photo, model answer) pairs for calibrating the Gemini fidelity check.

Each pair holds a product photographed on a backdrop, with its true mask, and
what an image model might answer: the same product moved, scaled, slightly
rotated and relit on near-white, with its shadow kept or a soft one added
(*faithful*), or a redrawn product (*altered*: another colour, another
silhouette, a stretched one, a garbled or moved label, a mirror image, a
missing part, another texture). The output mask is what a segmenter would
return for the answer, which for a kept shadow often includes the shadow.

Products are silhouettes painted with real photographs that scikit-image
ships in its wheel (astronaut, coffee, chelsea, rocket, Hubble deep field,
immunohistochemistry, colour wheel), shaded, with a label cut from its
scanned text and page images; backdrops are its photographed textures
(brick, grass, gravel) or a plain grey. Deterministic for a seed; offline.
"""
from __future__ import annotations

from dataclasses import dataclass
import cv2
import numpy as np

FAITHFUL = ("moved", "kept_shadow", "soft_shadow", "relit", "warm_light", "rotated", "jpeg_soft",
            "relit_unevenly", "scaled_down")
ALTERED = ("recoloured", "reshaped", "stretched", "garbled_label", "label_moved", "mirrored",
           "part_missing", "retextured", "relabelled", "hue_step", "cropped")


@dataclass(frozen=True)
class Pair:
    name: str
    faithful: bool
    change: str
    in_rgb: np.ndarray
    in_mask: np.ndarray  # float32 0..1
    out_rgb: np.ndarray
    out_mask: np.ndarray  # float32 0..1, as a segmenter would see the answer


def _sources() -> dict[str, np.ndarray]:
    from skimage import data

    return {
        "astronaut": data.astronaut(), "coffee": data.coffee(), "chelsea": data.chelsea(),
        "rocket": data.rocket(), "hubble": data.hubble_deep_field(),
        "ihc": data.immunohistochemistry(), "colorwheel": data.colorwheel(),
    }


def _greys() -> dict[str, np.ndarray]:
    from skimage import data

    return {"brick": data.brick(), "grass": data.grass(), "gravel": data.gravel(),
            "text": data.text(), "page": data.page()}


def _silhouette(kind: str, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    s = 4
    big = np.zeros((h * s, w * s), np.uint8)
    W, H = w * s, h * s
    if kind == "bottle":
        bw, bh = int(0.34 * W), int(0.56 * H)
        x0, y0 = (W - bw) // 2, int(0.3 * H)
        cv2.rectangle(big, (x0, y0), (x0 + bw, y0 + bh), 255, -1)
        nw = bw // 3
        cv2.rectangle(big, (W // 2 - nw // 2, int(0.12 * H)), (W // 2 + nw // 2, y0 + 2), 255, -1)
        cv2.circle(big, (x0 + bw, y0 + bh // 3), bh // 6, 255, -1)  # an asymmetric handle
    elif kind == "fruit":
        cv2.ellipse(big, (W // 2, int(0.55 * H)), (int(0.3 * W), int(0.3 * H)), 0, 0, 360, 255, -1)
        cv2.ellipse(big, (int(0.56 * W), int(0.22 * H)), (int(0.06 * W), int(0.03 * H)), 30, 0, 360, 255, -1)
    elif kind == "box":
        pts = (np.float32([[0.25, 0.25], [0.72, 0.2], [0.78, 0.8], [0.28, 0.86]]) * [W, H]).astype(np.int32)
        cv2.fillPoly(big, [pts], 255)
    else:  # "tool": a long handle with a head
        cv2.rectangle(big, (int(0.15 * W), int(0.46 * H)), (int(0.7 * W), int(0.56 * H)), 255, -1)
        cv2.rectangle(big, (int(0.68 * W), int(0.3 * H)), (int(0.85 * W), int(0.72 * H)), 255, -1)
    return cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _paint(src: np.ndarray, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    sh, sw = src.shape[:2]
    cw, ch = min(sw, int(sw * rng.uniform(0.5, 0.9))), min(sh, int(sh * rng.uniform(0.5, 0.9)))
    x, y = int(rng.integers(0, sw - cw + 1)), int(rng.integers(0, sh - ch + 1))
    paint = cv2.resize(src[y:y + ch, x:x + cw, :3], (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    # Shading: a light from one side, so the product has a darker half of its own.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * (xx / w - 0.5) + np.sin(angle) * (yy / h - 0.5))
    return np.clip(paint * (1.0 - 0.5 * ramp[..., None]), 0, 255)


def _label(paint: np.ndarray, mask: np.ndarray, grey: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    ys, xs = np.nonzero(mask > 0.99)
    cy, cx = int(np.median(ys)), int(np.median(xs))
    lh, lw = max(8, int(0.12 * paint.shape[0])), max(16, int(0.2 * paint.shape[1]))
    y0, x0 = cy - lh // 2, cx - lw // 2
    gy, gx = int(rng.integers(0, grey.shape[0] - 40)), int(rng.integers(0, grey.shape[1] - 80))
    patch = cv2.resize(grey[gy:gy + 40, gx:gx + 80], (lw, lh), interpolation=cv2.INTER_AREA).astype(np.float32)
    out = paint.copy()
    out[y0:y0 + lh, x0:x0 + lw] = patch[..., None]
    return out, (x0, y0, lw, lh)


def _on(backdrop: np.ndarray, paint: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None]
    return m * paint + (1 - m) * backdrop


def _shadow(mask: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """A soft contact shadow: the mask's footprint squashed to the floor under its base."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask > 0.5)
    base, cx = int(ys.max()), int(xs.mean())
    half = int(0.55 * (xs.max() - xs.min()) * rng.uniform(0.8, 1.2))
    sh = np.zeros((h, w), np.float32)
    cv2.ellipse(sh, (cx + int(rng.integers(-5, 6)), base), (max(2, half), max(2, h // 30)), 0, 0, 360, 1.0, -1)
    sh = cv2.GaussianBlur(sh, (0, 0), max(1.0, h / 60))
    return strength * sh * (1 - mask)


def _similar(img: np.ndarray, scale: float, angle: float, shift: tuple[float, float], size: tuple[int, int],
             border: float) -> np.ndarray:
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    m[:, 2] += [(size[0] - w) / 2 + shift[0], (size[1] - h) / 2 + shift[1]]
    return cv2.warpAffine(img, m, size, flags=cv2.INTER_LINEAR, borderValue=border)


def make_pairs(seed: int = 0, per_change: int = 4, side: int = 320) -> list[Pair]:
    rng = np.random.default_rng(seed)
    sources, greys = _sources(), _greys()
    names = sorted(sources)
    pairs: list[Pair] = []
    for change in FAITHFUL + ALTERED:
        for i in range(per_change):
            kind = ("bottle", "fruit", "box", "tool")[(i + len(change)) % 4]
            src = sources[names[int(rng.integers(0, len(names)))]]
            mask = _silhouette(kind, side, side, rng)
            paint, label_box = _label(_paint(src, side, side, rng), mask, greys[("text", "page")[i % 2]], rng)
            bd_name = ("brick", "grass", "gravel", "plain")[int(rng.integers(0, 4))]
            backdrop = (np.full((side, side, 3), rng.uniform(150, 215), np.float32) if bd_name == "plain" else
                        np.repeat(cv2.resize(greys[bd_name], (side, side)).astype(np.float32)[..., None], 3, 2)
                        * 0.5 + 90)
            photo_shadow = _shadow(mask, rng.uniform(0.3, 0.6), rng)
            in_rgb = _on(backdrop * (1 - photo_shadow[..., None]), paint, mask)

            out_paint, out_mask_src = paint.copy(), mask.copy()
            white = float(rng.uniform(246, 254))
            scale, angle = rng.uniform(0.8, 2.2), 0.0
            shift = (rng.uniform(-60, 60), rng.uniform(-60, 60))
            shadow_out = np.zeros_like(mask)
            light = (1.0, 0.0, (1.0, 1.0, 1.0))
            if change == "kept_shadow":
                shadow_out = photo_shadow
            elif change == "soft_shadow":
                shadow_out = _shadow(mask, rng.uniform(0.2, 0.45), rng)
            elif change == "relit":
                light = (rng.uniform(0.85, 1.15), rng.uniform(-12, 12), (1.0, 1.0, 1.0))
            elif change == "warm_light":
                t = rng.uniform(0.03, 0.06) * rng.choice([-1, 1])
                light = (1.0, 0.0, (1 + t, 1.0, 1 - t))
            elif change == "rotated":
                angle = rng.uniform(-4, 4)
            elif change == "relit_unevenly":
                # Light from one side: up to +-12 % across the product, not one gain for all of it.
                yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side - 0.5
                a = rng.uniform(0, 2 * np.pi)
                ramp = 1.0 + rng.uniform(0.15, 0.25) * (np.cos(a) * xx + np.sin(a) * yy)
                out_paint = out_paint * ramp[..., None]
            elif change == "scaled_down":
                # The answer shows the product at half the photo's resolution or less.
                scale = rng.uniform(0.35, 0.6)
                shift = (shift[0] * scale, shift[1] * scale)
            elif change == "recoloured":
                hsv = cv2.cvtColor(np.clip(out_paint, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV)
                hsv[..., 0] = (hsv[..., 0].astype(int) + int(rng.integers(25, 155))) % 180
                hsv[..., 1] = np.maximum(hsv[..., 1], 90)  # a grey product recoloured still shows it
                out_paint = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32)
            elif change == "reshaped":
                other = ("fruit", "box", "tool", "bottle")[("bottle", "fruit", "box", "tool").index(kind)]
                out_mask_src = _silhouette(other, side, side, rng)
            elif change == "stretched":
                f = rng.uniform(1.15, 1.35)
                out_paint = cv2.resize(out_paint, (int(side * f), side))[:, (int(side * f) - side) // 2:][:, :side]
                out_mask_src = cv2.resize(out_mask_src, (int(side * f), side))[:, (int(side * f) - side) // 2:][:, :side]
            elif change == "garbled_label":
                x0, y0, lw, lh = label_box
                region = out_paint[y0:y0 + lh, x0:x0 + lw]
                tiles = [region[:, k * lw // 4:(k + 1) * lw // 4] for k in range(4)]
                order = rng.permutation(4)
                if (order == np.arange(4)).all():
                    order = order[::-1]
                out_paint[y0:y0 + lh, x0:x0 + lw] = cv2.resize(
                    np.concatenate([tiles[k] for k in order], axis=1)[::-1], (lw, lh))
            elif change == "label_moved":
                x0, y0, lw, lh = label_box
                dy = int(0.18 * side) * rng.choice([-1, 1])
                label = paint[y0:y0 + lh, x0:x0 + lw].copy()
                out_paint[y0:y0 + lh, x0:x0 + lw] = _paint(src, lw, lh, rng)
                out_paint[y0 + dy:y0 + dy + lh, x0:x0 + lw] = label
            elif change == "mirrored":
                out_paint, out_mask_src = out_paint[:, ::-1].copy(), out_mask_src[:, ::-1].copy()
            elif change == "part_missing":
                ys, xs = np.nonzero(out_mask_src > 0.5)
                cut = ys.min() + int(rng.uniform(0.2, 0.3) * (ys.max() - ys.min()))
                out_mask_src[:cut] = 0
            elif change == "relabelled":
                # Other words of the same print, at the same place: the same text density.
                x0, y0, lw, lh = label_box
                other, _ = _label(paint, mask, greys[("text", "page")[i % 2]], rng)
                out_paint[y0:y0 + lh, x0:x0 + lw] = other[y0:y0 + lh, x0:x0 + lw]
            elif change == "hue_step":
                # A small hue step, saturation as it was: a shade the seller does not sell.
                hsv = cv2.cvtColor(np.clip(out_paint, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV)
                step = int(rng.integers(12, 25)) * int(rng.choice([-1, 1]))
                hsv[..., 0] = (hsv[..., 0].astype(int) + step) % 180
                out_paint = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32)
            elif change == "cropped":
                # The model's camera cut a side of the product off at the frame.
                ys, xs = np.nonzero(out_mask_src > 0.5)
                cut = xs.min() + int(rng.uniform(0.15, 0.3) * (xs.max() - xs.min()))
                out_mask_src[:, :cut] = 0
            elif change == "retextured":
                other = sources[names[(names.index(next(n for n in names if sources[n] is src)) + 3) % len(names)]]
                out_paint = _paint(other, side, side, rng)

            # The answer's canvas holds the whole product, as a model's answer does.
            edge = int(side * scale + 2 * max(abs(shift[0]), abs(shift[1])) + 0.1 * side)
            size = (edge, edge)
            o_paint = _similar(out_paint, scale, angle, shift, size, 0.0)
            o_mask = _similar(out_mask_src, scale, angle, shift, size, 0.0)
            o_shadow = _similar(shadow_out, scale, angle, shift, size, 0.0)
            gain, offset, tint = light
            o_paint = o_paint * gain + offset
            o_paint = o_paint * np.float32(tint)
            canvas = np.full(size[::-1] + (3,), white, np.float32) * (1 - o_shadow[..., None])
            out = _on(canvas, o_paint, o_mask) + rng.normal(0, 1.5, canvas.shape)
            out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
            if change == "jpeg_soft":
                out = cv2.GaussianBlur(out, (0, 0), 0.8)
                ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])
                out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
            # A segmenter on the answer: the product, plus a kept shadow where it is dark enough.
            seen = np.maximum(o_mask, (o_shadow > 0.25).astype(np.float32))
            pairs.append(Pair(
                name=f"{change}-{i}-{kind}", faithful=change in FAITHFUL, change=change,
                in_rgb=np.clip(in_rgb + 0.5, 0, 255).astype(np.uint8), in_mask=mask,
                out_rgb=np.ascontiguousarray(out), out_mask=seen,
            ))
    return pairs

