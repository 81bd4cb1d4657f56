#!/usr/bin/env python3
"""Build the emoji training set for Darkroom's default model from Debian packages.

Sources (fetched with `apt-get download`, unpacked with `dpkg -x`, never installed):
  fonts-noto-color-emoji  colour bitmaps in the font's CBDT table (art Apache-2.0, font OFL-1.1)
  ruby-tanuki-emoji       the same Noto art as PNGs; only images whose design differs from the
                          font's are kept (older Noto designs), art Apache-2.0, flags public domain
  unicode-data            emoji-test.txt (names, groups, subgroups), UnicodeData.txt (character names)
  unicode-cldr-core       English CLDR short names and keywords (annotations + annotationsDerived)
ruby-gemojione is deliberately NOT used (CC-BY-SA-4.0).

Output (OUT, default /work/darkroom-train/dataset-64):
  images/<id>.png     SIZE x SIZE RGB, composited over white
  images.npy          uint8 [N, SIZE, SIZE, 3], same pixels in metadata order (fast loading)
  metadata.jsonl      one JSON object per image: id, file, sequence, name, keywords, unicode_name,
                      captions, group, subgroup, base, skin_tone, source, license
  CREDITS.md          sources, versions and licences
  SHA256SUMS          hashes of every file above; two runs give identical files

Usage:
  Tools/.venv/bin/python Tools/dataset/make_dataset.py [--cache DIR] [--out DIR] [--size 64]
"""
import argparse
import glob
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
from PIL import Image
from fontTools.ttLib import TTFont

PACKAGES = ["fonts-noto-color-emoji", "ruby-tanuki-emoji", "unicode-cldr-core", "unicode-data"]
SKIN = set(range(0x1F3FB, 0x1F400))
FE0F = 0xFE0F
# A tanuki image is kept as a separate design when the mean absolute difference (0..255) between
# 12x12 thumbnails of its and the font's artwork (each cropped to its non-white bounding box, so
# that the two packages' different margins do not count) exceeds this. Below it, it is the same
# art at another scale (checked by eye on the sorted pairs).
TANUKI_DIFF = 9.0


def fetch(cache):
    """apt-get download + dpkg -x each package once into cache; returns {package: root dir}."""
    debs = os.path.join(cache, "debs")
    os.makedirs(debs, exist_ok=True)
    roots = {}
    for pkg in PACKAGES:
        found = sorted(glob.glob(os.path.join(debs, pkg + "_*.deb")))
        if not found:
            if subprocess.run(["apt-get", "download", pkg], cwd=debs).returncode != 0:
                sys.exit("make_dataset: `apt-get download %s` failed; on a fresh machine run "
                         "`apt-get update` first (the package lists may be empty)" % pkg)
            found = sorted(glob.glob(os.path.join(debs, pkg + "_*.deb")))
        deb = found[-1]
        root = os.path.join(debs, "x_" + os.path.basename(deb)[:-4])
        if not os.path.isdir(root):
            os.makedirs(root + ".tmp", exist_ok=True)
            subprocess.run(["dpkg", "-x", deb, root + ".tmp"], check=True)
            os.rename(root + ".tmp", root)
        roots[pkg] = (root, os.path.basename(deb))
    return roots


def parse_emoji_test(path):
    """Fully-qualified emoji in file order: (codepoints, name, group, subgroup)."""
    out, group, sub = [], None, None
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            sub = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#"):
            cps, rest = line.split(";", 1)
            status, comment = rest.split("#", 1)
            if status.strip() != "fully-qualified":
                continue
            # comment: "<emoji> E<version> <name>"
            name = re.sub(r"^\S+\s+E\d+\.\d+\s+", "", comment.strip())
            out.append((tuple(int(c, 16) for c in cps.split()), name, group, sub))
    return out


def parse_cldr(paths):
    """CLDR English annotations keyed by the sequence without FE0F: {key: (tts, [keywords])}."""
    tts, kws = {}, {}
    for path in paths:
        for a in ET.parse(path).getroot().iter("annotation"):
            key = tuple(ord(c) for c in a.get("cp") if ord(c) != FE0F)
            words = [w.strip() for w in (a.text or "").split("|") if w.strip()]
            if a.get("type") == "tts":
                tts.setdefault(key, words[0] if words else None)
            else:
                kws.setdefault(key, words)
    return {k: (tts.get(k), kws.get(k, [])) for k in set(tts) | set(kws)}


def parse_unicode_names(path):
    names = {}
    for line in open(path, encoding="utf-8"):
        f = line.split(";")
        if not f[1].startswith("<"):
            names[int(f[0], 16)] = f[1]
    return names


def font_images(font_path):
    """{sequence without FE0F: PNG bytes} from the CBDT strike, via cmap and inverted GSUB ligatures."""
    font = TTFont(font_path)
    cmap = font.getBestCmap()
    strike = font["CBDT"].strikeData[0]
    gsub = font["GSUB"].table
    ligs = {}  # first glyph -> list of (components, ligature glyph)
    for lookup in gsub.LookupList.Lookup:
        if lookup.LookupType != 4:
            continue
        for st in lookup.SubTable:
            for first, items in st.ligatures.items():
                for lig in items:
                    ligs.setdefault(first, []).append((tuple(lig.Component), lig.LigGlyph))

    def resolve(seq):
        glyphs = []
        for cp in seq:
            if cp not in cmap:
                return None
            glyphs.append(cmap[cp])
        if len(glyphs) == 1:
            return glyphs[0]
        for comps, lig in ligs.get(glyphs[0], []):
            if comps == tuple(glyphs[1:]):
                return lig
        return None

    def png_for(seq):
        g = resolve(seq)
        if g is None or g not in strike:
            return None
        return strike[g].imageData

    return png_for


def to_square_rgb(png_bytes, size):
    """Composite over white, pad to a centred square, resize with Lanczos."""
    im = Image.open(io.BytesIO(png_bytes)).convert("RGBA")
    side = max(im.size)
    canvas = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    canvas.alpha_composite(im, ((side - im.size[0]) // 2, (side - im.size[1]) // 2))
    rgb = canvas.convert("RGB")
    if side != size:
        rgb = rgb.resize((size, size), Image.Resampling.LANCZOS)
    return rgb


def thumb(px):
    m = (px < 250).any(2)
    ys, xs = np.where(m)
    if len(ys):
        px = px[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    return np.asarray(Image.fromarray(px).resize((12, 12), Image.Resampling.BOX)).astype(np.float64)


def seq_id(seq):
    return "_".join("%04x" % c for c in seq)


def tanuki_seq(fname):
    stem = os.path.basename(fname)[:-4]
    if stem.startswith("emoji_u"):
        return tuple(int(p, 16) for p in stem[len("emoji_u"):].split("_"))
    if re.fullmatch(r"[A-Z]{2}", stem):  # region flags: two regional indicator symbols
        return tuple(0x1F1E6 + ord(ch) - ord("A") for ch in stem)
    return None


def captions_for(name, keywords, uname):
    caps = [name]
    kw = [k for k in keywords if k != name]
    if kw:
        caps.append(name + ", " + ", ".join(kw[:4]))
    if uname and uname != name:
        # Unicode names use "black"/"white" for filled/outlined shapes, not colours: skip those
        # unless the CLDR name says the same colour.
        if not any(w in uname.split() and w not in name.split() for w in ("black", "white")):
            caps.append(uname)
    return caps


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default="/work/darkroom-train/cache")
    ap.add_argument("--out", default=None)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    out = args.out or "/work/darkroom-train/dataset-%d" % args.size
    roots = fetch(args.cache)

    data_root = roots["unicode-data"][0] + "/usr/share/unicode"
    cldr_root = roots["unicode-cldr-core"][0] + "/usr/share/unicode/cldr/common"
    font_path = roots["fonts-noto-color-emoji"][0] + "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
    tanuki_dir = glob.glob(roots["ruby-tanuki-emoji"][0] +
                           "/usr/share/rubygems-integration/all/gems/tanuki_emoji-*/app/assets/images/tanuki_emoji")[0]

    emoji = parse_emoji_test(data_root + "/emoji/emoji-test.txt")
    cldr = parse_cldr([cldr_root + "/annotations/en.xml", cldr_root + "/annotationsDerived/en.xml"])
    unames = parse_unicode_names(data_root + "/UnicodeData.txt")
    png_for = font_images(font_path)

    os.makedirs(out + "/images", exist_ok=True)
    for old in glob.glob(out + "/images/*.png"):
        os.remove(old)
    records, pixels = [], []
    by_key = {}
    noto_lic = "Apache-2.0 (art) / OFL-1.1 (font); Copyright 2013-2017 Google Inc."
    skipped = 0
    for seq, name, group, sub in emoji:
        if group == "Component":
            continue
        key = tuple(c for c in seq if c != FE0F)
        png = png_for(key)
        if png is None:
            skipped += 1
            continue
        tts, keywords = cldr.get(key, (None, []))
        cname = (tts or name).lower()
        uname = unames[key[0]].lower() if len(key) == 1 and key[0] in unames else None
        rid = "noto_" + seq_id(key)
        img = to_square_rgb(png, args.size)
        rec = {
            "id": rid, "file": "images/%s.png" % rid, "sequence": "".join(map(chr, seq)),
            "codepoints": " ".join("%04X" % c for c in seq), "name": cname,
            "keywords": [k.lower() for k in keywords], "unicode_name": uname,
            "captions": captions_for(cname, [k.lower() for k in keywords], uname),
            "group": group, "subgroup": sub,
            "base": seq_id(tuple(c for c in key if c not in SKIN)), "skin_tone": any(c in SKIN for c in key),
            "source": "%s: NotoColorEmoji.ttf CBDT" % roots["fonts-noto-color-emoji"][1],
            "license": noto_lic,
        }
        by_key[key] = (rec, np.asarray(img))
        records.append(rec)
        pixels.append(np.asarray(img))

    tanuki_kept = 0
    for path in sorted(glob.glob(tanuki_dir + "/*.png")):
        key = tanuki_seq(path)
        if key is None:
            continue
        key = tuple(c for c in key if c != FE0F)
        if key not in by_key:
            continue
        base_rec, base_px = by_key[key]
        img = to_square_rgb(open(path, "rb").read(), args.size)
        px = np.asarray(img)
        if np.abs(thumb(px) - thumb(base_px)).mean() <= TANUKI_DIFF:
            continue
        rec = dict(base_rec)
        rec["id"] = "tanuki_" + seq_id(key)
        rec["file"] = "images/%s.png" % rec["id"]
        rec["source"] = "%s: %s" % (roots["ruby-tanuki-emoji"][1], os.path.basename(path))
        rec["license"] = ("public domain (flag)" if base_rec["group"] == "Flags"
                          else "Apache-2.0; Noto Emoji art, Copyright Google Inc.")
        records.append(rec)
        pixels.append(px)
        tanuki_kept += 1

    for rec, px in zip(records, pixels):
        Image.fromarray(px).save(os.path.join(out, rec["file"]), optimize=False, compress_level=9)
    np.save(out + "/images.npy", np.stack(pixels))
    with open(out + "/metadata.jsonl", "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")
    with open(out + "/CREDITS.md", "w", encoding="utf-8") as f:
        f.write("# Emoji dataset credits\n\n")
        f.write("- Images: Noto Color Emoji (%s), Copyright 2013-2017 Google Inc.; art Apache-2.0, font SIL OFL 1.1.\n" % roots["fonts-noto-color-emoji"][1])
        f.write("- Older Noto designs from %s (GitLab tanuki_emoji): art Apache-2.0, flags public domain.\n" % roots["ruby-tanuki-emoji"][1])
        f.write("- Names and groups: Unicode emoji-test.txt and UnicodeData.txt (%s), Unicode-DFS-2016.\n" % roots["unicode-data"][1])
        f.write("- Short names and keywords: Unicode CLDR (%s), Unicode-DFS-2016.\n" % roots["unicode-cldr-core"][1])
        f.write("\n%d images (%d from the font, %d tanuki designs); %d emoji without a glyph skipped.\n"
                % (len(records), len(records) - tanuki_kept, tanuki_kept, skipped))
    files = sorted(["images.npy", "metadata.jsonl", "CREDITS.md"] + [r["file"] for r in records])
    with open(out + "/SHA256SUMS", "w") as f:
        for name in files:
            f.write("%s  %s\n" % (hashlib.sha256(open(os.path.join(out, name), "rb").read()).hexdigest(), name))
    digest = hashlib.sha256(open(out + "/SHA256SUMS", "rb").read()).hexdigest()
    print("%d images (%d noto, %d tanuki), %d skipped -> %s; SHA256SUMS %s"
          % (len(records), len(records) - tanuki_kept, tanuki_kept, skipped, out, digest))


if __name__ == "__main__":
    sys.exit(main())
