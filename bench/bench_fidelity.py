"""Calibrate the Gemini fidelity check on generated faithful and altered pairs.

    .venv/bin/python bench/bench_fidelity.py [--seed 0] [--per-change 6] [--out docs/benchmarks/fidelity.md]

For every pair of ``bench/fidelity_pairs.py`` it runs ``compare_products``
and reports each measure's range over the faithful pairs and over the altered
ones, the margin between the thresholds and the nearest faithful value, and
every misjudged pair: a faithful answer that fails (a false alarm) or an
altered one that passes.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fidelity_pairs import ALTERED, FAITHFUL, make_pairs  # noqa: E402
from generation.engine.fidelity import FidelityThresholds, compare_products  # noqa: E402

MEASURES = (("iou", "min"), ("aspect_change", "max"), ("ssim", "min"), ("delta_e", "max"),
            ("altered_share", "max"), ("recoloured_share", "max"), ("local_redraw", "max"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-change", type=int, default=6)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    t = FidelityThresholds()
    pairs = make_pairs(seed=args.seed, per_change=args.per_change)
    rows, times = [], []
    for pair in pairs:
        started = time.perf_counter()
        r = compare_products(pair.in_rgb, pair.in_mask, pair.out_rgb, pair.out_mask)
        times.append(time.perf_counter() - started)
        rows.append((pair, r))

    lines = [f"Pairs: {len(pairs)} ({args.per_change} per change, seed {args.seed}); "
             f"median time per comparison {sorted(times)[len(times) // 2] * 1000:.0f} ms.", ""]
    lines += ["| change | kind | n | passed | iou | aspect | ssim | delta E | altered share | recoloured share "
              "| local redraw |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for change in FAITHFUL + ALTERED:
        sel = [r for p, r in rows if p.change == change]
        def rng(name: str) -> str:
            vals = [getattr(r, name) for r in sel]
            return f"{min(vals):.3f}-{max(vals):.3f}"
        kind = "faithful" if change in FAITHFUL else "altered"
        lines.append(f"| {change} | {kind} | {len(sel)} | {sum(r.passed for r in sel)} | {rng('iou')} | "
                     f"{rng('aspect_change')} | {rng('ssim')} | {rng('delta_e')} | {rng('altered_share')} | "
                     f"{rng('recoloured_share')} | {rng('local_redraw')} |")
    lines += ["", "| measure | threshold | worst faithful | margin |", "|---|---|---|---|"]
    for name, side in MEASURES:
        vals = [getattr(r, name) for p, r in rows if p.faithful]
        thr = getattr(t, f"{side}_{name}")
        worst = min(vals) if side == "min" else max(vals)
        margin = worst - thr if side == "min" else thr - worst
        lines.append(f"| {name} ({side}) | {thr} | {worst:.3f} | {margin:+.3f} |")
    false_alarms = [(p, r) for p, r in rows if p.faithful and not r.passed]
    missed = [(p, r) for p, r in rows if not p.faithful and r.passed]
    lines += ["", f"False alarms (faithful answers failed): {len(false_alarms)} of "
              f"{sum(p.faithful for p in pairs)}; altered answers passed: {len(missed)} of "
              f"{sum(not p.faithful for p in pairs)}."]
    for p, r in false_alarms + missed:
        lines.append(f"- {p.name}: failed {list(r.failed)} iou {r.iou:.3f} aspect {r.aspect_change:.3f} "
                     f"ssim {r.ssim:.3f} dE {r.delta_e:.2f} altered {r.altered_share:.3f} "
                     f"recoloured {r.recoloured_share:.3f} local {r.local_redraw:.3f}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(args.out.read_text().split("<!-- results -->")[0] + "<!-- results -->\n" + text + "\n"
                            if args.out.exists() else text + "\n")


if __name__ == "__main__":
    main()
