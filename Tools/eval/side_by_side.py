#!/usr/bin/env python3
"""Render the same prompts and seeds with several models through the Swift CLI, on one sheet.

The by-eye check of the default model: one row per prompt, one column per (model, seed), every
image made by `darkroom batch` (one run per model, so each model is loaded once). By default the
prompts are the issue's done-criterion prompts and seeds 1-3, at each model's own defaults.

  Tools/.venv/bin/python Tools/eval/side_by_side.py --model old=/tmp/emoji-old \\
      --model new=Models/darkroom-emoji --out /tmp/side.png [--guidance 6] [--seeds 1,2,3,4]
"""
import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

PROMPTS = ["red heart", "blue heart", "green heart", "smiling face", "flag: japan", "pizza", "rocket"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, help="LABEL=PATH (repeat); or PATH")
    ap.add_argument("--out", required=True, help="PNG contact sheet to write")
    ap.add_argument("--prompt", action="append", help="prompt (repeat); default: the issue's prompts")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--darkroom", help="darkroom executable (default: .build/release/darkroom)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int)
    ap.add_argument("--guidance", type=float)
    ap.add_argument("--size", type=int)
    a = ap.parse_args()

    darkroom = common.find_darkroom(a.darkroom)
    prompts = a.prompt or PROMPTS
    seeds = [int(s) for s in a.seeds.split(",")]
    models = []
    for spec in a.model:
        label, _, path = spec.rpartition("=")
        models.append((label or os.path.basename(os.path.normpath(path)), path))
    extra = common.render_overrides(a)

    images = {}  # (model label, prompt, seed) -> image
    with tempfile.TemporaryDirectory() as tmp:
        rows = [{"prompt": p, "seed": s, **extra} for p in prompts for s in seeds]
        jobs = os.path.join(tmp, "jobs.jsonl")
        common.write_jsonl(jobs, rows)
        for m, (label, path) in enumerate(models):
            out = os.path.join(tmp, "m%d" % m)
            files, _ = common.run_batch(darkroom, jobs, out, path, a.threads)
            for k, row in enumerate(rows):
                images[(label, row["prompt"], row["seed"])] = common.load_png(files[k])

    tiles = []
    for p in prompts:
        for label, _ in models:
            for s in seeds:
                tiles.append((images[(label, p, s)], "%s | %s | seed %d" % (p, label, s), None))
    title = "columns: " + ", ".join("%s seeds %s" % (label, a.seeds) for label, _ in models)
    if extra:
        title += "  " + " ".join("%s=%s" % kv for kv in extra.items())
    common.contact_sheet(tiles, a.out, cols=len(models) * len(seeds), scale=2, caption_lines=2,
                         font_size=9, title=title)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
