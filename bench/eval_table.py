"""Markdown table of `everloop eval` reports side by side: worst (max over horizons) ratio to
the real band per drift metric, the failure flags, and prediction PSNR at steps 1 and 16.

    .venv/bin/python bench/eval_table.py NAME=REPORT_DIR [NAME=REPORT_DIR ...]"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from everloop.report import FLAGS  # the one list of failure flags (twins included)


def main() -> None:
    rows = [a.split("=", 1) for a in sys.argv[1:]]
    if not rows or any(len(r) != 2 for r in rows):
        sys.exit(__doc__)
    reps = [(name, json.loads((Path(d) / "report.json").read_text())) for name, d in rows]
    metrics = list(reps[0][1]["drift"])
    print("| run | " + " | ".join(metrics) + " | flags | PSNR @1 / @16 (copy-last) |")
    print("|---|" + "---:|" * len(metrics) + "---|---|")
    for name, r in reps:
        cells = [f"{max(r['drift'][m].values()):.2f}" for m in metrics]
        flags = ", ".join(f for f in FLAGS if r.get(f)) or "none"
        p, b = r.get("prediction") or {}, r.get("prediction_baseline") or {}
        pred = (f"{p['1']['psnr']:.1f} / {p['16']['psnr']:.1f} ({b['1']['psnr']:.1f} / {b['16']['psnr']:.1f})"
                if "16" in p else "")
        print(f"| {name} | " + " | ".join(cells) + f" | {flags} | {pred} |")


if __name__ == "__main__":
    main()
