"""Quality of the image-repair service on held-out digits, per mask and method, and what each costs.

Prints ``name: value`` lines (``aigc_<mask>_<method>_plausibility``, ``..._masked_mse``,
``..._s_per_image``) and, with ``--table FILE``, writes the Markdown table. Methods: RePaint
(N steps, jump length j, r resamples), plain replacement (r = 1), dataset-mean fill, and the
unrepaired hole. Usage: ``python benchmarks/aigc_quality.py [--images 100] [--steps 100]
[--jump-length 10] [--resamples 5] [--weights FILE] [--table docs/aigc-quality.md]``.
"""

from __future__ import annotations

import argparse

from mecsim.aigc import weights
from mecsim.aigc.quality import evaluate
from mecsim.aigc.repair import Repairer
from mecsim.results import write_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--jump-length", type=int, default=10)
    parser.add_argument("--resamples", type=int, default=5)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--table", default=None)
    args = parser.parse_args()
    model = weights.load(args.weights)
    table = evaluate(
        Repairer(model),
        images=args.images,
        steps=args.steps,
        jump_length=args.jump_length,
        resamples=args.resamples,
    )
    for r in table.itertuples():
        stem = f"aigc_{r.mask}_{r.method.replace('-', '_')}"
        print(f"{stem}_plausibility: {r.plausibility:.3f}")
        print(f"{stem}_masked_mse: {r.masked_mse:.4f}")
        print(f"{stem}_s_per_image: {r.seconds_per_image:.4f}")
    lines = [
        f"Held-out digits: the first {args.images} of the fixed held-out split; RePaint with N = {args.steps}, "
        f"j = {args.jump_length}, r = {args.resamples}; replacement with N = {args.steps}. Weights: "
        f"{model.meta.get('parameters')} parameters, {model.meta.get('iterations')} training iterations "
        f"(seed {model.meta.get('seed')}). Plausibility: an SVC trained on the training split names the true digit.",
        "",
        "| mask | hole | method | plausibility | masked-region MSE | network evaluations / image | s / image |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        lines.append(
            f"| {r.mask} | {r.hole_fraction:.0%} | {r.method} | {r.plausibility:.0%} | {r.masked_mse:.4f} "
            f"| {r.evaluations_per_image} | {r.seconds_per_image:.4f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.table:
        write_text(args.table, text)


if __name__ == "__main__":
    main()
