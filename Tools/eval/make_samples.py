#!/usr/bin/env python3
"""Render Darkroom's sample images with the Swift CLI and write the sample gallery.

Makes 64 images with one `darkroom batch` run (the model is loaded once): 48 different prompts
from the emoji set, 4 prompts each with and without a negative prompt at the same seed, and one
prompt with 8 seeds. Writes into --out (default Samples/):
  prompts.jsonl     the batch file that was rendered
  NN-PROMPT.png     the images (each carries its parameters in the PNG, `darkroom inspect`)
  grid.png          contact sheet, 8x8, each tile captioned with prompt, negative and seed
  README.md         every image with the `darkroom batch` command that made it and the equivalent
                    `darkroom render` command (byte-identical output, checked for --check images)

Deterministic: the same model and darkroom give the same files (the batch manifest, which holds
timestamps, is removed). Run from the repository root:

  Tools/.venv/bin/python Tools/eval/make_samples.py --model Models/darkroom-emoji --out Samples/
"""
import argparse
import glob
import hashlib
import os
import shlex
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

PROMPTS = [
    # the first prompts
    "red heart", "blue heart", "smiling face", "flag: japan", "pizza", "rocket",
    # Smileys & Emotion
    "grinning face", "face with tears of joy", "pile of poo", "ghost", "green heart", "purple heart",
    # People & Body
    "thumbs up", "waving hand", "santa claus",
    # Animals & Nature
    "dog face", "cat face", "frog", "penguin", "octopus", "sunflower", "rose", "cactus",
    # Food & Drink
    "red apple", "banana", "watermelon", "strawberry", "hamburger", "doughnut", "birthday cake",
    # Travel & Places
    "taxi", "fire engine", "sailboat", "house", "volcano", "sun", "rainbow", "snowflake",
    # Activities
    "jack-o-lantern", "christmas tree", "soccer ball", "trophy",
    # Objects
    "crown", "light bulb", "guitar",
    # Symbols and Flags
    "yellow circle", "warning", "flag: brazil",
]
NEGATIVES = [("heart", "red"), ("apple", "red"), ("circle", "red"), ("grinning face", "yellow")]
SEEDS_PROMPT = "grinning face"
N_SEEDS = 8


def jobs(seed, extra):
    out = []
    for k, p in enumerate(PROMPTS):
        out.append({"prompt": p, "seed": seed + k, **extra})
    for k, (p, n) in enumerate(NEGATIVES):
        out.append({"prompt": p, "seed": seed + k, **extra})
        out.append({"prompt": p, "negative_prompt": n, "seed": seed + k, **extra})
    for s in range(N_SEEDS):
        out.append({"prompt": SEEDS_PROMPT, "seed": seed + s, **extra})
    return out


def render_command(job, rec, model, output):
    cmd = ["darkroom", "render", job["prompt"]]
    if job.get("negative_prompt"):
        cmd += ["--negative-prompt", job["negative_prompt"]]
    cmd += ["--seed", str(rec["seed"]), "--steps", str(rec["steps"]),
            "--guidance-scale", "%g" % rec["guidance_scale"], "--width", str(rec["width"]),
            "--height", str(rec["height"])]
    if rec.get("sampler", "ddim") != "ddim":
        cmd += ["--sampler", rec["sampler"]]
    cmd += ["--model", model, "--output", output]
    return cmd


def rel(path):
    p = os.path.relpath(os.path.abspath(path), os.getcwd())
    return p if not p.startswith("..") else os.path.abspath(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model folder (e.g. Models/darkroom-emoji)")
    ap.add_argument("--out", default="Samples")
    ap.add_argument("--seed", type=int, default=1, help="first seed (default 1)")
    ap.add_argument("--steps", type=int, help="default: the model's (darkroom.json)")
    ap.add_argument("--guidance", type=float, help="default: the model's")
    ap.add_argument("--size", type=int, help="width and height; default: the model's")
    ap.add_argument("--darkroom", help="the darkroom executable (default: .build/release/darkroom, then PATH)")
    ap.add_argument("--cpus", default="1", help="CPUs to run on, e.g. 1 or 0,1 or all (default: 1)")
    ap.add_argument("--check", type=int, default=2,
                    help="re-render this many images with `darkroom render` and check they are identical (default 2)")
    args = ap.parse_args()
    threads = common.pin_cpus(args.cpus)
    out = args.out.rstrip("/") or "."
    os.makedirs(out, exist_ok=True)
    # this script owns these names in the folder: remove the previous run's images, so that
    # images of an older model with the same name are never kept by the batch's resume logic
    for old in glob.glob(os.path.join(out, "[0-9][0-9]-*.png")) + glob.glob(os.path.join(out, "manifest*.jsonl")):
        os.remove(old)
    for name in ("grid.png", "README.md"):
        if os.path.exists(os.path.join(out, name)):
            os.remove(os.path.join(out, name))

    batch = jobs(args.seed, common.render_overrides(args))
    images_ds, records = common.load_dataset()
    names = {r["name"] for r in records}
    unknown = [p for p in PROMPTS + [n[0] for n in NEGATIVES] + [SEEDS_PROMPT] if p not in names]
    if unknown:
        print("note: not emoji names in the dataset (keywords only): %s" % ", ".join(unknown), file=sys.stderr)
    prompts_file = os.path.join(out, "prompts.jsonl")
    common.write_jsonl(prompts_file, batch)
    darkroom = common.find_darkroom(args.darkroom)
    pattern = "{index:02}-{prompt:40}"
    cmd = [darkroom, "batch", "--prompts", prompts_file, "--output", out, "--model", args.model,
           "--name-pattern", pattern, "--threads", str(threads), "--progress", "quiet"]
    print("$ " + shlex.join(cmd), file=sys.stderr)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        sys.exit("darkroom batch failed (exit %d)" % proc.returncode)
    recs = {int(r["index"]): r for r in common.read_manifests(out)}
    if sorted(recs) != list(range(len(batch))):
        sys.exit("darkroom batch made %d of %d images" % (len(recs), len(batch)))
    for m in glob.glob(os.path.join(out, "manifest*.jsonl")):
        os.remove(m)  # timestamps and timings: not deterministic
    model_shown = rel(args.model)
    batch_shown = ["darkroom", "batch", "--prompts", rel(prompts_file), "--output", rel(out),
                   "--model", model_shown, "--name-pattern", pattern]

    # equivalence check: `darkroom render` makes the very same file
    checked = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in list(range(len(batch)))[:: max(1, len(batch) // max(1, args.check))][:args.check]:
            target = os.path.join(tmp, "check.png")
            c = render_command(batch[i], recs[i], args.model, target)
            c[0] = darkroom
            c += ["--threads", str(threads), "--progress", "quiet"]
            subprocess.run(c, check=True, stdout=subprocess.DEVNULL)
            a = open(target, "rb").read()
            b = open(os.path.join(out, recs[i]["file"]), "rb").read()
            if a != b:
                sys.exit("`darkroom render` did not reproduce %s byte for byte" % recs[i]["file"])
            checked.append(recs[i]["file"])
            os.remove(target)

    tiles, rows = [], []
    for i, job in enumerate(batch):
        r = recs[i]
        img = common.load_png(os.path.join(out, r["file"]))
        cap = job["prompt"] + ("  −\"%s\"" % job["negative_prompt"] if job.get("negative_prompt") else "") + \
            "  (seed %d)" % r["seed"]
        tiles.append((img, cap, None))
        rows.append((i, r, job))
    r0 = recs[0]
    opts = "".join(" --%s %s" % (k, v) for k, v in (("steps", args.steps), ("guidance", args.guidance),
                                                     ("size", args.size), ("seed", args.seed if args.seed != 1 else None))
                   if v is not None)
    common.contact_sheet(tiles, os.path.join(out, "grid.png"), cols=8, scale=2, caption_lines=3, font_size=11)

    L = ["# Samples", "",
         "Images made by Darkroom's Swift CLI with `%s` (%dx%d, %s, %d steps, guidance %g), "
         "regenerated by `Tools/.venv/bin/python Tools/eval/make_samples.py --model %s --out %s%s` "
         "(deterministic: the same model gives the same files)." % (
             model_shown, r0["width"], r0["height"], r0["sampler"], r0["steps"], r0["guidance_scale"],
             model_shown, rel(out), opts),
         "", "![samples](grid.png)", "",
         "%d different prompts (one seed each), %d prompts with and without a negative prompt at the same "
         "seed, and \"%s\" with %d seeds." % (len(PROMPTS), len(NEGATIVES), SEEDS_PROMPT, N_SEEDS),
         "", "All %d were rendered in one batch (the model loaded once) from [`prompts.jsonl`](prompts.jsonl):"
         % len(batch), "", "```sh", shlex.join(batch_shown), "```", "",
         "Each line below gives the `darkroom render` command that makes the same file byte for byte "
         "(checked for %s when these samples were made). Every PNG also carries its parameters: "
         "`darkroom inspect FILE` prints them and `darkroom render --from FILE` renders it again." % (
             ", ".join("`%s`" % c for c in checked) or "none"),
         "", "| # | image | prompt | negative prompt | seed | command |", "| --- | --- | --- | --- | --- | --- |"]
    for i, r, job in rows:
        c = render_command(job, r, model_shown, os.path.join(rel(out), r["file"]))
        L.append("| %d | ![](%s) | %s | %s | %d | `%s` |" % (
            i, r["file"], job["prompt"], job.get("negative_prompt", ""), r["seed"],
            shlex.join(c).replace("|", "\\|")))
    L.append("")
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(L))
    digest = hashlib.sha256()
    for i in range(len(batch)):
        digest.update(open(os.path.join(out, recs[i]["file"]), "rb").read())
    print("%d images, grid.png, README.md in %s (images sha256 %s)" % (len(batch), out, digest.hexdigest()[:16]))


if __name__ == "__main__":
    sys.exit(main())
