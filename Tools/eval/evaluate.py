#!/usr/bin/env python3
"""Evaluate a Darkroom text-to-image model by rendering through the Swift CLI (`darkroom batch`,
never PyTorch) and judging the images with a small CNN trained on the real emoji dataset.

  (a) prompt fidelity: Tools/eval/prompts.jsonl (emoji names with their expected Unicode group
      and, where clear, dominant colour), --seeds images each; the judge's group and colour, and
      the colour rule applied directly, against the expected labels; compared with chance, with
      the judge on the real images of the same prompts and on real emoji it never saw.
  (b) negative prompts: Tools/eval/negatives.jsonl; each case rendered with and without its
      negative prompt at the same seeds; the change of the measured quantity (fraction of the
      named colour's pixels, or the judge's probability of the named group).
  (c) diversity: --div-seeds seeds of --div-prompts prompts; mean pairwise distances between seeds
      of one prompt against those between different prompts.

Outputs in --out: report.json, report.md (tables for the model card, the command at the top),
contact sheets fidelity.png, negatives.png, diversity.png, and the rendered images in images/.

  Tools/.venv/bin/python Tools/eval/evaluate.py --model Models/darkroom-emoji --out /tmp/eval
  Tools/.venv/bin/python Tools/eval/evaluate.py --real --out /tmp/eval-real   # the real images

The judge is cached in /work/darkroom-train/eval/judge.pt (retrained, ~3 CPU-minutes, when
missing or when the dataset, prompt list or judge code changed).
"""
import argparse
import itertools
import math
import json
import os
import shlex
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import COLOURS, GROUPS  # noqa: E402

SHORT = {"Smileys & Emotion": "Smileys", "People & Body": "People", "Animals & Nature": "Animals",
         "Food & Drink": "Food", "Travel & Places": "Travel", "Activities": "Activities",
         "Objects": "Objects", "Symbols": "Symbols", "Flags": "Flags"}
DIV_PROMPTS = ["red heart", "grinning face", "pizza", "rocket", "flag: japan", "dog face",
               "soccer ball", "light bulb", "blue circle", "sun"]


def pct(x):
    return "—" if x is None else "%.1f%%" % (100 * x)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------

def plan_jobs(prompts, negatives, args):
    """Every image to render, in batch order: (batch line dict, role dict)."""
    jobs = []
    base = common.render_overrides(args)
    for k, p in enumerate(prompts):
        for s in range(args.seeds):
            jobs.append((dict(prompt=p["prompt"], seed=args.seed + s, **base),
                         {"part": "fidelity", "prompt": k, "seed": args.seed + s}))
    for k, n in enumerate(negatives):
        for s in range(args.neg_seeds):
            seed = args.seed + s
            jobs.append((dict(prompt=n["prompt"], seed=seed, **base),
                         {"part": "negative", "case": k, "seed": seed, "with": False}))
            jobs.append((dict(prompt=n["prompt"], negative_prompt=n["negative"], seed=seed, **base),
                         {"part": "negative", "case": k, "seed": seed, "with": True}))
    for k, p in enumerate(args.div_prompts):
        for s in range(args.div_seeds):
            jobs.append((dict(prompt=p, seed=args.seed + s, **base),
                         {"part": "diversity", "prompt": k, "seed": args.seed + s}))
    return jobs


def render(jobs, args):
    img_dir = os.path.join(args.out, "images")
    if os.path.isdir(img_dir) and not args.resume:
        shutil.rmtree(img_dir)  # never reuse images of another model that had the same name
    os.makedirs(img_dir, exist_ok=True)
    batch_file = os.path.join(args.out, "jobs.jsonl")
    common.write_jsonl(batch_file, [j for j, _ in jobs])
    darkroom = common.find_darkroom(args.darkroom)
    files, cmd = common.run_batch(darkroom, batch_file, img_dir, args.model, args.threads, log=log)
    missing = [i for i in range(len(jobs)) if i not in files]
    if missing:
        sys.exit("darkroom batch made no image for jobs %s" % missing[:10])
    manifest = {int(r["index"]): r for r in common.read_manifests(img_dir)}
    images = [common.load_png(files[i]) for i in range(len(jobs))]
    return images, [os.path.relpath(files[i], args.out) for i in range(len(jobs))], cmd, manifest


def as64(images):
    """uint8 [N,64,64,3] (images of other sizes resized like the judge sees them)."""
    out = []
    for im in images:
        if im.shape[:2] != (64, 64):
            from PIL import Image
            im = np.asarray(Image.fromarray(im).resize((64, 64), Image.Resampling.BILINEAR))
        out.append(im)
    return np.stack(out)


# ---------------------------------------------------------------------------------------------

def fidelity(prompts, images, net, seeds):
    """images: uint8 [len(prompts)*seeds, 64,64,3] in prompt-major order."""
    x = common.to_tensor(images)
    pg, pc, _ = common.predict(net, x)
    rows = []
    for i, im in enumerate(images):
        p = prompts[i // seeds]
        eg = GROUPS.index(p["group"])
        ec = COLOURS.index(p["colour"]) if p["colour"] else None
        rule = common.dominant_colour(im)
        rows.append({
            "prompt": p["prompt"], "expected_group": p["group"], "expected_colour": p["colour"],
            "group": GROUPS[int(pg[i].argmax())], "p_expected_group": float(pg[i, eg]),
            "group_top3": bool(eg in np.argsort(-pg[i])[:3]),
            "colour_judge": COLOURS[int(pc[i].argmax())], "colour_rule": COLOURS[rule],
            "colour_rule_fraction": float(common.colour_histogram(im)[0][rule]),
        })
        rows[-1]["group_ok"] = rows[-1]["group"] == p["group"]
        if ec is not None:
            rows[-1]["colour_judge_ok"] = rows[-1]["colour_judge"] == p["colour"]
            rows[-1]["colour_rule_ok"] = rows[-1]["colour_rule"] == p["colour"]
    col = [r for r in rows if r["expected_colour"]]
    per_group = {}
    for g in GROUPS:
        rs = [r for r in rows if r["expected_group"] == g]
        per_group[g] = {"n": len(rs), "accuracy": float(np.mean([r["group_ok"] for r in rs])) if rs else None}
    summary = {
        "images": len(rows),
        "group_accuracy": float(np.mean([r["group_ok"] for r in rows])),
        "group_top3_accuracy": float(np.mean([r["group_top3"] for r in rows])),
        "group_balanced_accuracy": float(np.mean([v["accuracy"] for v in per_group.values() if v["n"]])),
        "mean_p_expected_group": float(np.mean([r["p_expected_group"] for r in rows])),
        "colour_images": len(col),
        "colour_accuracy_rule": float(np.mean([r["colour_rule_ok"] for r in col])) if col else None,
        "colour_accuracy_judge": float(np.mean([r["colour_judge_ok"] for r in col])) if col else None,
        "per_group": per_group,
    }
    return summary, rows


def chance(prompts):
    groups = [p["group"] for p in prompts]
    colours = [p["colour"] for p in prompts if p["colour"]]
    mg = max(set(groups), key=groups.count)
    mc = max(set(colours), key=colours.count) if colours else None
    return {
        "group_uniform": 1.0 / len(GROUPS),
        "group_majority": groups.count(mg) / len(groups), "group_majority_label": mg,
        "colour_uniform": 1.0 / len(COLOURS),
        "colour_majority": colours.count(mc) / len(colours) if colours else None,
        "colour_majority_label": mc,
        # always answering the group that dominates the raw dataset
        "group_dataset_majority_label": "People & Body",
        "group_dataset_majority": groups.count("People & Body") / len(groups),
    }


def negative_effects(negatives, jobs, images, net):
    x = common.to_tensor(images)
    pg, pc, _ = common.predict(net, x)
    pairs = {}
    for i, (_, role) in enumerate(jobs):
        if role["part"] == "negative":
            pairs.setdefault((role["case"], role["seed"]), {})[role["with"]] = i
    cases = []
    for k, n in enumerate(negatives):
        m = n["measure"]
        seeds = []
        for (case, seed), pair in sorted(pairs.items()):
            if case != k:
                continue
            vals = {}
            for w, i in pair.items():
                if m["kind"] == "colour":
                    t = COLOURS.index(m["target"])
                    vals[w] = {"value": float(common.colour_histogram(images[i])[0][t]),
                               "judge_p": float(pc[i, t])}
                else:
                    t = GROUPS.index(m["target"])
                    vals[w] = {"value": float(pg[i, t]), "judge_p": float(pg[i, t])}
            seeds.append({"seed": seed, "without": vals[False]["value"], "with": vals[True]["value"],
                          "change": vals[True]["value"] - vals[False]["value"],
                          "judge_p_change": vals[True]["judge_p"] - vals[False]["judge_p"],
                          "images": [pair[False], pair[True]]})
        ch = [s["change"] for s in seeds]
        cases.append({"prompt": n["prompt"], "negative": n["negative"], "measure": m,
                      "without": float(np.mean([s["without"] for s in seeds])),
                      "with": float(np.mean([s["with"] for s in seeds])),
                      "change": float(np.mean(ch)),
                      "moved": int(sum(c < 0 for c in ch)), "unchanged": int(sum(c == 0 for c in ch)),
                      "seeds": seeds})
    all_ch = [s["change"] for c in cases for s in c["seeds"]]
    col = [s["change"] for c in cases if c["measure"]["kind"] == "colour" for s in c["seeds"]]
    grp = [s["change"] for c in cases if c["measure"]["kind"] == "group" for s in c["seeds"]]
    # how much the measure moves between two seeds of the same prompt (no negative): the noise
    # that a change has to stand out from
    seed_noise = [abs(a["without"] - b["without"]) for c in cases
                  for a, b in itertools.combinations(c["seeds"], 2)]
    moved = int(sum(c < 0 for c in all_ch))
    n_changed = int(sum(c != 0 for c in all_ch))
    summary = {
        "cases": len(cases), "pairs": len(all_ch),
        "seed_noise_mean_abs": float(np.mean(seed_noise)) if seed_noise else None,
        "mean_abs_change": float(np.mean(np.abs(all_ch))) if all_ch else None,
        # one-sided sign test over the pairs that changed: P(>= moved of n_changed | p = 1/2)
        "sign_test_p": sum(math.comb(n_changed, k) for k in range(moved, n_changed + 1)) / 2 ** n_changed
        if n_changed else None,
        "pairs_moved": int(sum(c < 0 for c in all_ch)),
        "cases_moved": int(sum(c["change"] < 0 for c in cases)),
        "mean_change": float(np.mean(all_ch)) if all_ch else None,
        "mean_change_colour": float(np.mean(col)) if col else None,
        "mean_change_group": float(np.mean(grp)) if grp else None,
        "pairs_colour": len(col), "pairs_colour_moved": int(sum(c < 0 for c in col)),
        "pairs_group": len(grp), "pairs_group_moved": int(sum(c < 0 for c in grp)),
    }
    return summary, cases


def distances(a, b, fa, fb):
    """Simple image distances between uint8 64x64 images a and b (and their judge features)."""
    x, y = a.astype(np.float64) / 255, b.astype(np.float64) / 255
    dx = lambda im: im.reshape(16, 4, 16, 4, 3).mean((1, 3))
    cos = float(fa @ fb / (np.linalg.norm(fa) * np.linalg.norm(fb) + 1e-12))
    return {"pixel_mad": float(np.abs(x - y).mean()),
            "pixel_rms": float(np.sqrt(((x - y) ** 2).mean())),
            "coarse16_rms": float(np.sqrt(((dx(x) - dx(y)) ** 2).mean())),
            "colour_hist_l1": float(np.abs(common.colour_histogram(a)[0] - common.colour_histogram(b)[0]).sum()),
            "judge_feature_cosine": 1.0 - cos,
            "identical": bool((a == b).all())}


def mean_dist(pairs):
    keys = ["pixel_mad", "pixel_rms", "coarse16_rms", "colour_hist_l1", "judge_feature_cosine"]
    out = {k: float(np.mean([p[k] for p in pairs])) for k in keys} if pairs else {}
    out["pairs"] = len(pairs)
    out["identical_pairs"] = int(sum(p["identical"] for p in pairs))
    return out


def diversity(div_prompts, jobs, images, net, real_images=None):
    _, _, feats = common.predict(net, common.to_tensor(images))
    idx = {}
    for i, (_, role) in enumerate(jobs):
        if role["part"] == "diversity":
            idx.setdefault(role["prompt"], {})[role["seed"]] = i
    within, between = [], []
    per_prompt = []
    for k, seeds in sorted(idx.items()):
        ps = [distances(images[a], images[b], feats[a], feats[b])
              for a, b in itertools.combinations([seeds[s] for s in sorted(seeds)], 2)]
        within += ps
        per_prompt.append({"prompt": div_prompts[k], **mean_dist(ps)})
    for k1, k2 in itertools.combinations(sorted(idx), 2):
        for s in sorted(idx[k1]):
            if s in idx[k2]:
                a, b = idx[k1][s], idx[k2][s]
                between.append(distances(images[a], images[b], feats[a], feats[b]))
    out = {"within_prompt": mean_dist(within), "between_prompts_same_seed": mean_dist(between),
           "per_prompt": per_prompt}
    if real_images is not None:
        _, _, rf = common.predict(net, common.to_tensor(real_images))
        out["real_between_prompts"] = mean_dist([distances(real_images[a], real_images[b], rf[a], rf[b])
                                                 for a, b in itertools.combinations(range(len(real_images)), 2)])
    return out


# ---------------------------------------------------------------------------------------------

def sheets(args, prompts, jobs, images, fid_rows, neg_cases, seeds):
    ok, bad = (0, 110, 0), (190, 0, 0)
    tiles = []
    for r, im in zip(fid_rows, images[:len(fid_rows)]):
        good = r["group_ok"] and r.get("colour_rule_ok", True)
        cap = "%s → %s, %s" % (r["prompt"], SHORT[r["group"]], r["colour_rule"])
        tiles.append((im, cap, ok if good else bad))
    title = "fidelity: prompt → judge's group, rule colour (green: group right and colour right or not set)"
    common.contact_sheet(tiles, os.path.join(args.out, "fidelity.png"), cols=12, title=title)
    out = ["fidelity.png"]
    if neg_cases:
        tiles = []
        for c in neg_cases:
            for s in c["seeds"]:
                a, b = s["images"]
                fmt = "%.0f%%" if c["measure"]["kind"] == "colour" else "p=%.2f"
                scale = 100 if c["measure"]["kind"] == "colour" else 1
                tiles.append((images[a], "%s (seed %d) %s: %s" % (c["prompt"], s["seed"], c["measure"]["target"],
                                                                  fmt % (scale * s["without"])), None))
                tiles.append((images[b], "−\"%s\" %s: %s" % (c["negative"], c["measure"]["target"],
                                                              fmt % (scale * s["with"])),
                              ok if s["change"] < 0 else bad))
        common.contact_sheet(tiles, os.path.join(args.out, "negatives.png"), cols=8,
                             title="negative prompts: without | with (green: moved the expected way)")
        out.append("negatives.png")
    div = [(images[i], "%s, seed %d" % (j["prompt"], j["seed"]), None)
           for i, (j, role) in enumerate(jobs) if role["part"] == "diversity"]
    if div:
        common.contact_sheet(div, os.path.join(args.out, "diversity.png"), cols=args.div_seeds * 2,
                             title="diversity: seeds of one prompt")
        out.append("diversity.png")
    return out


def write_markdown(args, report, command):
    L = []
    fid, ch, jd = report["fidelity"], report["chance"], report["judge"]
    real = report.get("real_same_prompts")
    L.append("# Darkroom model evaluation: %s" % (report["model"] or "real dataset images"))
    L.append("")
    L.append("```sh\n%s\n```" % command)
    L.append("")
    if report.get("render"):
        r = report["render"]
        L.append("Rendered with the Swift CLI (`darkroom batch`, %d images in %.0f s): %s, %s steps, "
                 "guidance %s, %sx%s. Judge: `%s` (trained in %.0f CPU-s; see the last section)." % (
                     r["images"], r["seconds"], r["sampler"], r["steps"], r["guidance_scale"], r["width"],
                     r["height"], report["judge_path"], jd["cpu_seconds"]))
        L.append("")
        L.append("Batch command: `%s`" % report["render"]["command"])
        L.append("")
    L.append("## (a) Prompt fidelity")
    L.append("")
    L.append("%d prompts from `Tools/eval/prompts.jsonl` (emoji names, %d Unicode groups), %d seed(s) each; "
             "%d of the prompts have an expected colour." % (
                 len(report["prompts"]), len(GROUPS), report["settings"]["seeds"],
                 sum(1 for p in report["prompts"] if p["colour"])))
    L.append("")
    L.append("| measure | %s | real images of the same emoji | judge on unseen real emoji | chance: uniform / majority |"
             % ("generated" if report["model"] else "—"))
    L.append("| --- | --- | --- | --- | --- |")
    gen = lambda k: pct(fid[k]) if report["model"] else "—"
    L.append("| group (judge), accuracy | %s | %s | %s | %s / %s |" % (
        gen("group_accuracy"), pct(real["group_accuracy"]), pct(jd["heldout"]["group"]["accuracy"]),
        pct(ch["group_uniform"]), pct(ch["group_majority"])))
    L.append("| group (judge), balanced accuracy | %s | %s | %s | %s |" % (
        gen("group_balanced_accuracy"), pct(real["group_balanced_accuracy"]),
        pct(jd["heldout"]["group"]["balanced_accuracy"]), pct(ch["group_uniform"])))
    L.append("| group (judge), expected group in top 3 | %s | %s | — | %s |" % (
        gen("group_top3_accuracy"), pct(real["group_top3_accuracy"]), pct(3 * ch["group_uniform"])))
    L.append("| dominant colour (pixel rule) | %s | %s | (exact by definition) | %s / %s |" % (
        gen("colour_accuracy_rule"), pct(real["colour_accuracy_rule"]), pct(ch["colour_uniform"]),
        pct(ch["colour_majority"])))
    L.append("| dominant colour (judge) | %s | %s | %s | %s / %s |" % (
        gen("colour_accuracy_judge"), pct(real["colour_accuracy_judge"]), pct(jd["heldout"]["colour"]["accuracy"]),
        pct(ch["colour_uniform"]), pct(ch["colour_majority"])))
    L.append("")
    L.append("Majority chance = always answering the most common expected label of the prompt list "
             "(group: %s; colour: %s). Always answering the dataset's largest group (People & Body, "
             "60%% of the raw images) scores %s. \"Real images of the same emoji\" are the dataset "
             "images the prompts name (the judge was trained on them: this is what a perfect copy "
             "scores); \"unseen real emoji\" are the judge's %d held-out images." % (
                 ch["group_majority_label"], ch["colour_majority_label"], pct(ch["group_dataset_majority"]),
                 jd["heldout_images"]))
    L.append("")
    if report["model"]:
        L.append("Per group (judge's group accuracy on generated images):")
        L.append("")
        L.append("| " + " | ".join(SHORT[g] for g in GROUPS) + " |")
        L.append("|" + " --- |" * len(GROUPS))
        L.append("| " + " | ".join(pct(fid["per_group"][g]["accuracy"]) for g in GROUPS) + " |")
        L.append("")
    neg = report.get("negatives")
    if neg:
        s = neg["summary"]
        L.append("## (b) Negative prompts")
        L.append("")
        L.append("Each case from `Tools/eval/negatives.jsonl` rendered with and without the negative prompt at "
                 "the same seed(s) (%d per case). Measure: the fraction of the foreground pixels in the named "
                 "colour (pixel rule), or the judge's probability of the named group. Expected: it falls." %
                 report["settings"]["neg_seeds"])
        L.append("")
        L.append("| prompt | negative | measure | without | with | change | seeds moved |")
        L.append("| --- | --- | --- | --- | --- | --- | --- |")
        for c in neg["cases"]:
            m = c["measure"]
            if m["kind"] == "colour":
                fmt = lambda v: "%.1f%%" % (100 * v)
                chg = "%+.1f pts" % (100 * c["change"])
                what = "%s pixels" % m["target"]
            else:
                fmt = lambda v: "%.2f" % v
                chg = "%+.2f" % c["change"]
                what = "P(%s)" % m["target"]
            L.append("| %s | %s | %s | %s | %s | %s | %d/%d |" % (
                c["prompt"], c["negative"], what, fmt(c["without"]), fmt(c["with"]), chg, c["moved"],
                len(c["seeds"])))
        L.append("")
        L.append("Moved the expected way: **%d of %d cases** (mean over seeds), %d of %d image pairs "
                 "(colour %d/%d, group %d/%d). Mean change: colour fraction %+.1f points, group "
                 "probability %+.3f." % (
                     s["cases_moved"], s["cases"], s["pairs_moved"], s["pairs"], s["pairs_colour_moved"],
                     s["pairs_colour"], s["pairs_group_moved"], s["pairs_group"],
                     100 * (s["mean_change_colour"] or 0), s["mean_change_group"] or 0))
        L.append("")
        if s["sign_test_p"] is not None:
            L.append("One-sided sign test over the image pairs: p = %.2g. For scale: the measure differs by %.3f "
                     "on average between two seeds of the same prompt without a negative prompt; the mean "
                     "absolute change from adding the negative prompt is %.3f." % (
                         s["sign_test_p"], s["seed_noise_mean_abs"] or 0, s["mean_abs_change"] or 0))
            L.append("")
    div = report.get("diversity")
    if div:
        L.append("## (c) Diversity")
        L.append("")
        L.append("%d prompts x %d seeds. Mean distance between two images (pixels in [0, 1]):" % (
            len(report["settings"]["div_prompts"]), report["settings"]["div_seeds"]))
        L.append("")
        keys = [("pixel_mad", "mean abs. pixel difference"), ("pixel_rms", "RMS pixel difference"),
                ("coarse16_rms", "RMS difference at 16x16"), ("colour_hist_l1", "palette histogram L1 (0-2)"),
                ("judge_feature_cosine", "judge feature cosine distance")]
        have_real = "real_between_prompts" in div
        L.append("| distance | same prompt, different seeds | different prompts, same seed |%s ratio same/different |"
                 % (" real images, different prompts |" if have_real else ""))
        L.append("| --- | --- | --- |%s --- |" % (" --- |" if have_real else ""))
        w, b = div["within_prompt"], div["between_prompts_same_seed"]
        for k, label in keys:
            if k in w:
                L.append("| %s | %.3f | %.3f |%s %.2f |" % (
                    label, w[k], b[k], (" %.3f |" % div["real_between_prompts"][k]) if have_real else "",
                    w[k] / b[k] if b[k] else float("nan")))
        L.append("")
        L.append("Identical image pairs among different seeds: %d of %d." % (w["identical_pairs"], w["pairs"]))
        L.append("")
    rb = report.get("real_between_prompts")
    if rb:
        L.append("## (c) Distances between the real images of the diversity prompts")
        L.append("")
        L.append("| distance | real images, different prompts |")
        L.append("| --- | --- |")
        for k in ("pixel_mad", "pixel_rms", "coarse16_rms", "colour_hist_l1", "judge_feature_cosine"):
            L.append("| %s | %.3f |" % (k, rb[k]))
        L.append("")
    L.append("## The judge")
    L.append("")
    L.append("A small CNN (%s) trained on the real dataset images (every group and base equally likely, "
             "shift/scale/flip/blur/noise augmentation) to predict the Unicode group (%d classes) and the "
             "dominant colour (%d classes: %s) given by the pixel rule in `Tools/eval/common.py`. "
             "%d images of %d randomly chosen emoji (15%% of the bases, never one named by the prompt list) "
             "are held out:" % (
                 "5 conv layers, 0.4M parameters", len(GROUPS), len(COLOURS), ", ".join(COLOURS),
                 jd["heldout_images"], jd["heldout_bases"]))
    L.append("")
    L.append("| held-out real images | accuracy | balanced accuracy | blurred (σ=1 px) accuracy |")
    L.append("| --- | --- | --- | --- |")
    for k in ("group", "colour"):
        h = jd["heldout"]
        L.append("| %s | %s | %s | %s |" % (k, pct(h[k]["accuracy"]), pct(h[k]["balanced_accuracy"]),
                                           pct(h[k + "_blurred"]["accuracy"])))
    L.append("")
    L.append("Contact sheets: %s." % ", ".join("`%s`" % s for s in report["sheets"]))
    L.append("")
    with open(os.path.join(args.out, "report.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(L))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model folder given to `darkroom batch --model`")
    ap.add_argument("--out", required=True, help="output folder (report.md, report.json, images/)")
    ap.add_argument("--real", action="store_true",
                    help="no rendering: run the fidelity metrics on the real dataset images of the prompts "
                         "(the upper bound), and the distances between them")
    ap.add_argument("--darkroom", help="the darkroom executable (default: .build/release/darkroom, then PATH)")
    ap.add_argument("--dataset", default=common.DATASET)
    ap.add_argument("--judge", default=common.JUDGE_PATH, help="cached judge (trained when missing/stale)")
    ap.add_argument("--retrain-judge", action="store_true")
    ap.add_argument("--prompts", default=os.path.join(common.HERE, "prompts.jsonl"))
    ap.add_argument("--negatives", default=os.path.join(common.HERE, "negatives.jsonl"))
    ap.add_argument("--seed", type=int, default=1, help="first seed (default 1)")
    ap.add_argument("--seeds", type=int, default=1, help="seeds per fidelity prompt (default 1)")
    ap.add_argument("--neg-seeds", type=int, default=2, help="seeds per negative-prompt case (default 2)")
    ap.add_argument("--div-seeds", type=int, default=4, help="seeds per diversity prompt (default 4)")
    ap.add_argument("--div-prompts", default=",".join(DIV_PROMPTS), help="comma-separated")
    ap.add_argument("--steps", type=int, help="default: the model's (darkroom.json)")
    ap.add_argument("--guidance", type=float, help="default: the model's")
    ap.add_argument("--size", type=int, help="width and height; default: the model's")
    ap.add_argument("--cpus", default="1", help="CPUs to run on, e.g. 1 or 0,1 or all (default: 1)")
    ap.add_argument("--resume", action="store_true", help="keep images already rendered in OUT/images")
    args = ap.parse_args()
    if not args.real and not args.model:
        ap.error("--model is required (or --real)")
    args.div_prompts = [p.strip() for p in args.div_prompts.split(",") if p.strip()]
    command = "Tools/.venv/bin/python Tools/eval/evaluate.py " + shlex.join(sys.argv[1:])
    args.threads = common.pin_cpus(args.cpus)
    os.makedirs(args.out, exist_ok=True)

    images_ds, records = common.load_dataset(args.dataset)
    by_id = common.record_by_id(records)
    prompts = common.read_jsonl(args.prompts)
    negatives = common.read_jsonl(args.negatives)
    for p in prompts:
        if p["id"] not in by_id:
            sys.exit("%s: %r names id %s, which is not in the dataset" % (args.prompts, p["prompt"], p["id"]))
    net, jinfo = common.load_or_train_judge(images_ds, records, [p["id"] for p in prompts],
                                            path=args.judge, retrain=args.retrain_judge, log=log)
    real_imgs = images_ds[[by_id[p["id"]] for p in prompts]]
    real_fid, real_rows = fidelity(prompts, real_imgs, net, 1)
    report = {"model": None if args.real else args.model, "command": command,
              "judge_path": args.judge, "judge": jinfo, "chance": chance(prompts), "prompts": prompts,
              "settings": {"seed": args.seed, "seeds": args.seeds, "neg_seeds": args.neg_seeds,
                           "div_seeds": args.div_seeds, "div_prompts": args.div_prompts},
              "real_same_prompts": real_fid}

    if args.real:
        report["fidelity"] = real_fid
        report["fidelity_rows"] = real_rows
        div_ids = []
        name_to = {p["prompt"]: p["id"] for p in prompts}
        for p in args.div_prompts:
            if p in name_to:
                div_ids.append(by_id[name_to[p]])
        if len(div_ids) >= 2:
            _, _, rf = common.predict(net, common.to_tensor(images_ds[div_ids]))
            report["real_between_prompts"] = mean_dist([
                distances(images_ds[a], images_ds[b], rf[i], rf[j])
                for (i, a), (j, b) in itertools.combinations(list(enumerate(div_ids)), 2)])
        common.contact_sheet([(im, "%s → %s, %s" % (r["prompt"], SHORT[r["group"]], r["colour_rule"]),
                               (0, 110, 0) if r["group_ok"] else (190, 0, 0))
                              for im, r in zip(real_imgs, real_rows)],
                             os.path.join(args.out, "fidelity.png"), cols=12,
                             title="real dataset images of the prompts → judge's group, rule colour")
        report["sheets"] = ["fidelity.png"]
    else:
        jobs = plan_jobs(prompts, negatives, args)
        t0 = time.time()
        images, files, cmd, manifest = render(jobs, args)
        seconds = time.time() - t0
        images = as64(images)
        m0 = manifest.get(0, {})
        report["render"] = {"images": len(jobs), "seconds": round(seconds, 1),
                            "command": shlex.join(cmd), "steps": m0.get("steps"),
                            "guidance_scale": m0.get("guidance_scale"), "width": m0.get("width"),
                            "height": m0.get("height"), "sampler": m0.get("sampler"),
                            "model_hash": m0.get("model_hash")}
        nf = len(prompts) * args.seeds
        fid, rows = fidelity(prompts, images[:nf], net, args.seeds)
        for r, f in zip(rows, files[:nf]):
            r["file"] = f
        report["fidelity"] = fid
        report["fidelity_rows"] = rows
        ns, cases = negative_effects(negatives, jobs, images, net)
        for c in cases:
            for s in c["seeds"]:
                s["files"] = [files[i] for i in s["images"]]
        report["negatives"] = {"summary": ns, "cases": cases}
        div_ids = {p["prompt"]: by_id[p["id"]] for p in prompts}
        real_div = [div_ids[p] for p in args.div_prompts if p in div_ids]
        report["diversity"] = diversity(args.div_prompts, jobs, images, net,
                                        real_images=images_ds[real_div] if len(real_div) >= 2 else None)
        report["sheets"] = sheets(args, prompts, jobs, images, rows, cases, args.seeds)

    with open(os.path.join(args.out, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1, ensure_ascii=False)
    write_markdown(args, report, command)
    f = report["fidelity"]
    print("group accuracy %s (chance %s uniform, %s majority; real images %s, unseen real %s); "
          "colour accuracy rule %s judge %s" % (
              pct(f["group_accuracy"]), pct(report["chance"]["group_uniform"]),
              pct(report["chance"]["group_majority"]), pct(real_fid["group_accuracy"]),
              pct(jinfo["heldout"]["group"]["accuracy"]), pct(f["colour_accuracy_rule"]),
              pct(f["colour_accuracy_judge"])))
    if "negatives" in report:
        s = report["negatives"]["summary"]
        print("negatives: %d/%d cases moved the expected way, mean change colour %+.1f pts, group %+.3f" % (
            s["cases_moved"], s["cases"], 100 * (s["mean_change_colour"] or 0), s["mean_change_group"] or 0))
    if "diversity" in report:
        d = report["diversity"]
        print("diversity: pixel MAD within prompt %.3f vs between prompts %.3f" % (
            d["within_prompt"]["pixel_mad"], d["between_prompts_same_seed"]["pixel_mad"]))
    print("report: %s" % os.path.join(args.out, "report.md"))


if __name__ == "__main__":
    sys.exit(main())
