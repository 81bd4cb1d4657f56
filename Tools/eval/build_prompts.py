#!/usr/bin/env python3
"""Write Tools/eval/prompts.jsonl, the fixed prompt list of the fidelity evaluation, from the
hand-picked names below and the dataset's metadata, and check Tools/eval/negatives.jsonl.

Each prompt is an emoji's CLDR short name exactly as the training captions spell it. Every line:
  {"prompt": NAME, "id": dataset id of the Noto image, "group": its Unicode group,
   "colour": expected dominant colour or null, "colour_from": "name" | "image" | null}
The expected colour is given when the name says a palette colour (red, orange, yellow, green, blue,
purple, brown, black, white, grey), or else when the real image is clearly one colour: its dominant
colour (common.dominant_colour, the same rule the evaluation applies to generated images) covers at
least 60% of its foreground pixels. The file is committed; rerun this only to change the list.

Usage: Tools/.venv/bin/python Tools/eval/build_prompts.py [--dataset DIR] [--check]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

NAMES = {
    "Smileys & Emotion": [
        "grinning face", "smiling face", "winking face", "thinking face", "sleeping face",
        "loudly crying face", "angry face", "skull", "pile of poo", "ghost", "robot", "red heart",
        "blue heart", "green heart", "purple heart", "broken heart"],
    "People & Body": [
        "waving hand", "thumbs up", "thumbs down", "ok hand", "clapping hands", "folded hands",
        "flexed biceps", "ear", "eyes", "baby", "old man", "santa claus", "astronaut",
        "police officer", "zombie"],
    "Animals & Nature": [
        "dog face", "cat face", "pig face", "panda", "penguin", "frog", "turtle", "whale", "octopus",
        "lady beetle", "sunflower", "cactus", "rose", "maple leaf", "evergreen tree"],
    "Food & Drink": [
        "red apple", "green apple", "banana", "grapes", "watermelon", "strawberry", "lemon", "carrot",
        "broccoli", "eggplant", "pizza", "hamburger", "doughnut", "birthday cake", "beer mug"],
    "Travel & Places": [
        "rocket", "automobile", "taxi", "bus", "fire engine", "bicycle", "sailboat", "house",
        "volcano", "sun", "crescent moon", "cloud", "rainbow", "snowflake", "fire"],
    "Activities": [
        "jack-o-lantern", "christmas tree", "fireworks", "balloon", "wrapped gift", "trophy",
        "soccer ball", "basketball", "american football", "tennis", "game die", "teddy bear", "kite",
        "artist palette", "crystal ball"],
    "Objects": [
        "crown", "sunglasses", "t-shirt", "lipstick", "gem stone", "guitar", "mobile phone", "laptop",
        "light bulb", "green book", "blue book", "money bag", "key", "bomb", "scissors"],
    "Symbols": [
        "red circle", "orange circle", "yellow circle", "green circle", "blue circle",
        "purple circle", "brown circle", "black circle", "white circle", "red square",
        "blue square", "warning", "no entry", "recycling symbol", "check mark button",
        "red question mark"],
    "Flags": [
        "flag: japan", "flag: united states", "flag: canada", "flag: france", "flag: germany",
        "flag: italy", "flag: brazil", "flag: china", "flag: united kingdom", "flag: india",
        "flag: sweden", "flag: switzerland", "chequered flag", "pirate flag", "rainbow flag"],
}
CLEAR = 0.6


def name_colour(name):
    for w in name.replace(":", " ").split():
        if w in common.COLOUR_WORDS:
            return common.COLOUR_WORDS[w]
    return None


def build(images, records):
    by_name = {}
    for i, r in enumerate(records):
        if r["id"].startswith("noto_") and not r["skin_tone"]:
            by_name.setdefault(r["name"], i)
    rows, problems = [], []
    for group, names in NAMES.items():
        for name in names:
            if name not in by_name:
                problems.append("%r is not a name in the dataset" % name)
                continue
            i = by_name[name]
            r = records[i]
            if r["group"] != group:
                problems.append("%r is in %s, not %s" % (name, r["group"], group))
            hist, _ = common.colour_histogram(images[i])
            dom = common.COLOURS[common.dominant_colour(images[i])]
            said = name_colour(name)
            if said:
                colour, source = said, "name"
                if said != dom:
                    problems.append("%r says %s but the rule finds %s in its image" % (name, said, dom))
            elif hist.max() >= CLEAR:
                colour, source = dom, "image"
            else:
                colour, source = None, None
            rows.append({"prompt": name, "id": r["id"], "group": r["group"], "colour": colour,
                         "colour_from": source})
    return rows, problems


def check_negatives(path):
    problems = []
    for n, row in enumerate(common.read_jsonl(path), 1):
        m = row.get("measure", {})
        if m.get("kind") == "colour" and m.get("target") not in common.COLOURS:
            problems.append("negatives.jsonl:%d: unknown colour %r" % (n, m.get("target")))
        elif m.get("kind") == "group" and m.get("target") not in common.GROUPS:
            problems.append("negatives.jsonl:%d: unknown group %r" % (n, m.get("target")))
        elif m.get("kind") not in ("colour", "group"):
            problems.append("negatives.jsonl:%d: measure.kind must be colour or group" % n)
        if not row.get("prompt") or not row.get("negative"):
            problems.append("negatives.jsonl:%d: prompt and negative are required" % n)
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=common.DATASET)
    ap.add_argument("--check", action="store_true", help="only compare with the committed file")
    args = ap.parse_args()
    images, records = common.load_dataset(args.dataset)
    rows, problems = build(images, records)
    problems += check_negatives(os.path.join(common.HERE, "negatives.jsonl"))
    for p in problems:
        print("problem:", p)
    path = os.path.join(common.HERE, "prompts.jsonl")
    if args.check:
        same = os.path.exists(path) and common.read_jsonl(path) == rows
        print("prompts.jsonl %s the dataset" % ("matches" if same else "DIFFERS from"))
        return 0 if same and not problems else 1
    common.write_jsonl(path, rows)
    counts = {}
    for r in rows:
        counts[r["group"]] = counts.get(r["group"], 0) + 1
    print("%d prompts (%d with an expected colour) -> %s" % (
        len(rows), sum(r["colour"] is not None for r in rows), path))
    print(counts)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
