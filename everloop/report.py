"""The files `everloop eval` writes: report.json, report.md, a plot per drift metric (ratio to
the real band against the horizon) and a sample sheet per horizon."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .errors import EverloopError


def _plot(path: Path, name: str, horizons: list[int], ratios: dict, cv: float) -> None:
    """Ratio vs horizon (log-log), with the band (ratio 1 +- its draw-to-draw spread) in green."""
    from PIL import Image, ImageDraw
    w, h, left, right, top, bottom = 480, 300, 56, 16, 28, 36
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    vals = [max(ratios[str(t)], 1e-3) for t in horizons]
    lo = math.floor(math.log10(min(vals + [0.5])))
    hi = math.ceil(math.log10(max(vals + [2.0])))
    xs = [left + (w - left - right) * (i + 0.5) / len(horizons) for i in range(len(horizons))]

    def y(v):
        return top + (h - top - bottom) * (hi - math.log10(max(v, 1e-3))) / (hi - lo)
    d.rectangle([left, y(1 + cv), w - right, y(max(1 - cv, 10.0 ** lo))], fill=(215, 240, 215))
    d.line([left, y(1), w - right, y(1)], fill=(0, 140, 0), width=2)
    for e in range(lo, hi + 1):
        d.line([left - 4, y(10.0 ** e), left, y(10.0 ** e)], fill="black")
        d.text((4, y(10.0 ** e) - 6), f"{10.0 ** e:g}", fill="black")
    d.line([left, top, left, h - bottom, w - right, h - bottom], fill="black")
    pts = [(x, y(v)) for x, v in zip(xs, vals)]
    if len(pts) > 1:
        d.line(pts, fill=(30, 60, 200), width=2)
    for (x, yy), t in zip(pts, horizons):
        d.ellipse([x - 3, yy - 3, x + 3, yy + 3], fill=(30, 60, 200))
        d.text((x - 12, h - bottom + 6), f"t={t}", fill="black")
    d.text((left, 6), f"{name}: ratio to real-vs-real band (green = 1 +- spread)", fill="black")
    img.save(path)


def write_outputs(rep: dict, ev, out) -> Path:
    """`ev`: the everloop.evaluate.Evaluator that holds the horizon windows."""
    """report.json, report.md, drift_<metric>.png and sheet_t<horizon>.png into `out`."""
    from .sheets import save_sheet
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(rep, indent=1, default=str) + "\n")
        hz = ev.horizons
        for m, ratios in rep["drift"].items():
            b = rep["band"][m]
            _plot(out / f"drift_{m}.png", m, hz, ratios, b["std"] / max(b["mean"], 1e-12))
        cols = np.linspace(0, ev.ref.window - 1, min(8, ev.ref.window)).round().astype(int)
        for t in hz:
            save_sheet(ev.win[t][:, cols], out / f"sheet_t{t}.png",
                       labels=[str(ev.starts[t] + c) for c in cols])
        (out / "report.md").write_text(_markdown(rep, hz))
    except OSError as e:
        raise EverloopError(f"cannot write {out}: {e}") from None
    return out


FLAGS = ("frozen", "flicker", "loop", "collapse", "twins", "nan", "saturation")
"""The failure flags of report.json, in the order reports list them."""


def failures(rep: dict) -> list[str]:
    """The flags a report raises."""
    return [k for k in FLAGS if rep.get(k)]


def _markdown(rep: dict, hz: list[int]) -> str:
    flags = failures(rep)
    lines = [f"# everloop eval: {rep['frames']} frames x {rep['streams']} stream(s)", "",
             f"Failures: **{', '.join(flags) if flags else 'none'}**", "",
             "Drift: distance to real half A / real-vs-real band (1 = as far as real footage is from itself).",
             "", "| metric | band | " + " | ".join(f"t={t}" for t in hz) + " |",
             "|---|---|" + "---|" * len(hz)]
    for m, r in rep["drift"].items():
        b = rep["band"][m]
        lines.append(f"| {m} | {b['mean']:.4g} ± {b['std']:.2g} | "
                     + " | ".join(f"{r[str(t)]:.2f}" for t in hz) + " |")
    if rep["latent"]:
        lines += ["", "| latent | " + " | ".join(f"t={t}" for t in rep["latent"]) + " |",
                  "|---|" + "---|" * len(rep["latent"])]
        for k in ("mean", "std", "skew", "kurt"):
            lines.append(f"| {k} | " + " | ".join(f"{v[k]:.3f}" for v in rep["latent"].values()) + " |")
    det = rep["detectors"]
    lines += ["", "| detector | threshold | needed run | longest run | first at |", "|---|---|---|---|---|"]
    for k in ("frozen", "flicker", "loop"):
        x = det[k]
        lines.append(f"| {k} | {x['threshold']:.3g} | {x['min_run']} | {x['longest_run']} | {x['first_at']} |")
    if rep.get("prediction"):
        lines += ["", _prediction_markdown(rep)]
    if rep.get("control"):
        lines += ["", _control_markdown(rep["control"])]
    lines += [""] + [f"- {n}" for n in rep["notes"]]
    return "\n".join(lines) + "\n"


def _prediction_markdown(rep: dict) -> str:
    """Per recursion step scores (steps 1, 2, 4, ...) next to the copy-last-frame baseline."""
    pred, base, setup = rep["prediction"], rep["prediction_baseline"], rep["prediction_setup"]
    steps = [s for s in pred if int(s) & (int(s) - 1) == 0 or s == list(pred)[-1]]
    lines = [(f"Prediction from {setup['context_frames']} real frames, {setup['clips']} held-out clips "
              f"(PSNR: {setup['psnr']}; model / copy-last-frame baseline):"), "",
             "| step | PSNR | SSIM | sharp diff | moving-pixel PSNR |", "|---|---|---|---|---|"]
    for s in steps:
        a, b = pred[s], base[s]
        lines.append(f"| {s} | " + " | ".join(f"{a[k]:.2f} / {b[k]:.2f}" if k != "ssim" else f"{a[k]:.3f} / {b[k]:.3f}"
                                             for k in ("psnr", "ssim", "sharp_diff", "psnr_moving")) + " |")
    return "\n".join(lines)


def _control_markdown(c: dict) -> str:
    """The world-model table (everloop.control; names in docs/play.md)."""
    setup, maze = c["setup"], c["maze"]
    lines = [f"Control: {setup['starts']} held-out starts, true actions / the same actions shuffled in time:", ""]
    if "position" in c:
        lines += ["| step | within a tile (8 px) | median error (px) | found | copy last: within a tile |",
                  "|---|---|---|---|---|"]
        for t, true in c["position"]["true"].items():
            other, still = c["position"]["shuffled"][t], c["position"]["copy_last"][t]
            lines.append(f"| {t} | {true['within_tile']:.2f} / {other['within_tile']:.2f} | "
                         f"{true['median_px']:.1f} / {other['median_px']:.1f} | "
                         f"{true['found']:.2f} / {other['found']:.2f} | {still['within_tile']:.2f} |")
        lines.append("")
    p = c["psnr_moving"]
    lines += ["| step | moving-pixel PSNR: true | shuffled | copy last |", "|---|---|---|---|"]
    lines += [f"| {t} | {p['true'][t]:.2f} | {p['shuffled'][t]:.2f} | {p['copy_last'][t]:.2f} |" for t in p["true"]]
    iou = f"maze IoU {maze['iou_mean']:.3f} (min {maze['iou_min']:.3f}); " if "iou_mean" in maze else ""
    lines += ["", (f"Random keys, {maze['streams']} streams x {maze['steps']} steps: {iou}longest still "
              f"{maze['longest_still']} steps (real {maze['real_longest_still']}); frozen: {maze['frozen']}; "
              f"NaN: {c['nan'] or maze['nan']}")]
    return "\n".join(lines)
