"""Shared pieces of Darkroom's model evaluation (Tools/eval).

- the dataset (images.npy + metadata.jsonl from Tools/dataset/make_dataset.py)
- the colour rule: one definition of a pixel's palette colour and of an image's dominant colour,
  used for the judge's training labels, for the expected colours of the prompt list and for
  measuring generated images
- the judge: a small CNN trained on the real images to predict the emoji group and the dominant
  colour, cached on disk and retrained when missing or stale
- rendering through the Swift CLI (`darkroom batch`), contact sheets

Everything heavy runs on the CPUs given by --cpus (default: core 1 only; the machine's core 0 may
belong to a training job) with one torch thread per CPU.
"""
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DATASET = "/work/darkroom-train/dataset-64"
JUDGE_PATH = "/work/darkroom-train/eval/judge.pt"

GROUPS = ["Smileys & Emotion", "People & Body", "Animals & Nature", "Food & Drink",
          "Travel & Places", "Activities", "Objects", "Symbols", "Flags"]
COLOURS = ["red", "orange", "yellow", "green", "blue", "purple", "brown", "black", "white/grey"]
# colour words in prompts/negatives -> palette entry
COLOUR_WORDS = {c: c for c in COLOURS[:8]}
COLOUR_WORDS.update({"white": "white/grey", "grey": "white/grey", "gray": "white/grey"})


# ---------------------------------------------------------------------------------------------
# CPU placement

def pin_cpus(spec):
    """Restrict this process (and so its children: torch threads, the darkroom CLI) to the CPUs
    in spec ("1", "0,1", "all"); returns the number of CPUs kept."""
    if spec != "all":
        cpus = {int(c) for c in spec.split(",")}
        avail = os.sched_getaffinity(0)
        cpus &= avail
        if not cpus:
            cpus = avail
        os.sched_setaffinity(0, cpus)
    try:
        os.nice(5)
    except OSError:
        pass
    n = len(os.sched_getaffinity(0))
    import torch
    torch.set_num_threads(n)
    return n


# ---------------------------------------------------------------------------------------------
# dataset

def load_dataset(root=DATASET):
    """(images uint8 [N,64,64,3], records list of dicts), records in images.npy order."""
    images = np.load(os.path.join(root, "images.npy"))
    with open(os.path.join(root, "metadata.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    if len(records) != len(images):
        sys.exit("dataset: %d images but %d metadata lines in %s" % (len(images), len(records), root))
    return images, records


def dataset_digest(root=DATASET):
    path = os.path.join(root, "SHA256SUMS")
    if os.path.exists(path):
        return hashlib.sha256(open(path, "rb").read()).hexdigest()[:16]
    return hashlib.sha256(open(os.path.join(root, "metadata.jsonl"), "rb").read()).hexdigest()[:16]


def record_by_id(records):
    return {r["id"]: i for i, r in enumerate(records)}


# ---------------------------------------------------------------------------------------------
# the colour rule (the single definition used everywhere)

BACKGROUND_MIN = 0.86   # a pixel whose three channels are all above this (219/255) is background
MIN_FOREGROUND = 0.01   # images with less foreground than this are "white/grey"


def pixel_colours(img):
    """Palette index (0..8, COLOURS) of every pixel of uint8 [...,H,W,3] images; -1 = background.

    With v = max(R,G,B), s = (max-min)/max and the hue h in degrees:
      background  min(R,G,B) > 0.86 (near white)
      black       v < 0.2, or v < 0.4 with s < 0.35 (dark greys)
      white/grey  s < 0.2 (any other low-saturation pixel)
      brown       8 <= h < 45 with v < 0.75 (dark orange), or a dull dark red (h < 8 or h >= 345,
                  v < 0.6, s < 0.6)
      red h >= 330 or h < 18; orange < 38; yellow < 64; green < 165; blue < 255; purple < 330
    """
    x = np.asarray(img, dtype=np.float32) / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    mx = x.max(-1)
    mn = x.min(-1)
    c = mx - mn
    s = np.where(mx > 0, c / np.maximum(mx, 1e-6), 0.0)
    cc = np.maximum(c, 1e-6)
    h = np.where(mx == r, ((g - b) / cc) % 6.0,
                 np.where(mx == g, (b - r) / cc + 2.0, (r - g) / cc + 4.0)) * 60.0
    hue = np.select([(h >= 330) | (h < 18), h < 38, h < 64, h < 165, h < 255, h < 330],
                    [0, 1, 2, 3, 4, 5], default=0)
    brown = ((h >= 8) & (h < 45) & (mx < 0.75)) | (((h < 8) | (h >= 345)) & (mx < 0.6) & (s < 0.6))
    cls = np.where(brown, 6, hue)
    cls = np.where(s < 0.2, 8, cls)
    cls = np.where((mx < 0.2) | ((mx < 0.4) & (s < 0.35)), 7, cls)
    return np.where(mn > BACKGROUND_MIN, -1, cls).astype(np.int64)


def colour_histogram(img):
    """Fractions of the foreground pixels in each palette colour, and the foreground fraction."""
    cls = pixel_colours(img).reshape(-1)
    fg = cls[cls >= 0]
    counts = np.bincount(fg, minlength=len(COLOURS)).astype(np.float64)
    total = counts.sum()
    return (counts / total if total else counts), total / cls.size


def dominant_colour(img):
    """Index of the image's dominant palette colour (white/grey for an almost empty image)."""
    hist, fg = colour_histogram(img)
    if fg < MIN_FOREGROUND:
        return COLOURS.index("white/grey")
    return int(hist.argmax())


# ---------------------------------------------------------------------------------------------
# the judge

JUDGE_VERSION = 3  # bump when the architecture, augmentation or split changes


def judge_net():
    import torch.nn as nn

    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    class Judge(nn.Module):
        def __init__(self):
            super().__init__()
            # 64x64 input, averaged down to 32x32 (enough for the group and the colour, and
            # 4x cheaper: the judge must train in a few CPU-minutes)
            self.features = nn.Sequential(
                nn.AvgPool2d(2),
                *block(3, 32), nn.AvgPool2d(2),                    # 16x16
                *block(32, 64), nn.AvgPool2d(2),                  # 8x8
                *block(64, 128), *block(128, 128), nn.AvgPool2d(2),  # 4x4
                *block(128, 256),
                nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.drop = nn.Dropout(0.2)
            self.group = nn.Linear(256, len(GROUPS))
            self.colour = nn.Linear(256, len(COLOURS))

        def forward(self, x):
            f = self.features(x)
            d = self.drop(f)
            return self.group(d), self.colour(d), f

    return Judge()


def to_tensor(images):
    """uint8 [N,H,W,3] -> float [N,3,64,64] in [0,1] (resized with bilinear filtering if needed)."""
    import torch
    import torch.nn.functional as F
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-1] != 64 or x.shape[-2] != 64:
        x = F.interpolate(x, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)
    return x


def normalise(x):
    return (x - 0.5) / 0.25


def augment(x, gen):
    """Random shift/scale (white fill), horizontal flip, blur, contrast and noise, per sample."""
    import torch
    import torch.nn.functional as F
    n = x.shape[0]
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=gen)
    scale = u(0.85, 1.15)
    tx, ty = u(-0.1, 0.1), u(-0.1, 0.1)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = scale * flip
    theta[:, 1, 1] = scale
    theta[:, 0, 2] = tx
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x - 1.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1.0
    # Gaussian blur with a per-sample sigma in [0, 1.5] (generated images are softer than the art)
    sigma = u(0.0, 1.5).clamp(min=1e-3)
    k = torch.arange(-3, 4, dtype=torch.float32)
    w = torch.exp(-(k[None, :] ** 2) / (2 * sigma[:, None] ** 2))
    w = w / w.sum(1, keepdim=True)                                     # [n, 7]
    wc = w.repeat_interleave(3, 0)                                     # [3n, 7]
    y = x.reshape(1, n * 3, 64, 64)
    y = F.pad(y, (3, 3, 0, 0), mode="replicate")
    y = F.conv2d(y, wc[:, None, None, :], groups=n * 3)
    y = F.pad(y, (0, 0, 3, 3), mode="replicate")
    y = F.conv2d(y, wc[:, None, :, None], groups=n * 3)
    x = y.reshape(n, 3, 64, 64)
    contrast = u(0.85, 1.1)[:, None, None, None]
    x = (x - 1.0) * contrast + 1.0
    x = x + torch.randn(x.shape, generator=gen) * u(0.0, 0.05)[:, None, None, None]
    return x.clamp(0.0, 1.0)


def blur(x, sigma):
    """Fixed Gaussian blur of a float [N,3,64,64] batch (a stand-in for a soft decoder)."""
    import torch
    import torch.nn.functional as F
    k = torch.arange(-3, 4, dtype=torch.float32)
    w = torch.exp(-k ** 2 / (2 * sigma ** 2))
    w = (w / w.sum()).repeat(3, 1)
    y = F.conv2d(F.pad(x, (3, 3, 0, 0), mode="replicate"), w[:, None, None, :], groups=3)
    return F.conv2d(F.pad(y, (0, 0, 3, 3), mode="replicate"), w[:, None, :, None], groups=3)


def split_bases(records, prompt_ids, holdout_frac=0.15, seed=0):
    """(train mask, held-out mask) over the images. A seeded random 15% of the bases is held out
    to measure the judge on real emoji it never saw; the bases named by the prompt list are always
    in the training part, so that the judge knows the real art of everything that is prompted
    (a generated image that looks like it is then recognised as such). Skin-tone variants and
    the tanuki designs share their base, so no near-copy of a held-out image is trained on."""
    by_id = record_by_id(records)
    prompt_bases = {records[by_id[i]]["base"] for i in prompt_ids}
    others = sorted({r["base"] for r in records} - prompt_bases)
    rng = np.random.RandomState(seed)
    rng.shuffle(others)
    held = set(others[:int(round(holdout_frac * len(others)))])
    test = np.array([r["base"] in held for r in records])
    return ~test, test


def sample_weights(records, idx):
    """Draw weights for training images: every group equally likely, every base equally likely
    within its group (skin-tone variants share their base's weight)."""
    per_base = {}
    for i in idx:
        per_base.setdefault(records[i]["base"], []).append(i)
    bases_per_group = {}
    for b, members in per_base.items():
        bases_per_group.setdefault(records[members[0]]["group"], 0)
        bases_per_group[records[members[0]]["group"]] += 1
    w = np.zeros(len(idx))
    pos = {i: k for k, i in enumerate(idx)}
    for b, members in per_base.items():
        g = records[members[0]]["group"]
        for i in members:
            w[pos[i]] = 1.0 / (len(members) * bases_per_group[g] * len(bases_per_group))
    return w / w.sum()


def predict(net, x, batch=256):
    """Group probabilities, colour probabilities and features of float [N,3,64,64] in [0,1]."""
    import torch
    net.eval()
    pg, pc, fs = [], [], []
    with torch.no_grad():
        for k in range(0, x.shape[0], batch):
            g, c, f = net(normalise(x[k:k + batch]))
            pg.append(torch.softmax(g, 1))
            pc.append(torch.softmax(c, 1))
            fs.append(f)
    return torch.cat(pg).numpy(), torch.cat(pc).numpy(), torch.cat(fs).numpy()


def accuracy_summary(pred, true, n_classes):
    pred, true = np.asarray(pred), np.asarray(true)
    recalls = [float((pred[true == k] == k).mean()) for k in range(n_classes) if (true == k).any()]
    return {"n": int(len(true)), "accuracy": float((pred == true).mean()) if len(true) else None,
            "balanced_accuracy": float(np.mean(recalls)) if recalls else None}


def confusion(pred, true, n):
    m = np.zeros((n, n), dtype=np.int64)
    for p, t in zip(pred, true):
        m[t, p] += 1
    return m.tolist()


def train_judge(images, records, prompt_ids, steps=1200, batch=48, seed=0, log=print):
    """Train the judge; returns (net, info dict with the held-out scores)."""
    import torch
    import torch.nn.functional as F
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same judge on every machine, bit for bit
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train_mask, test_mask = split_bases(records, prompt_ids, seed=seed)
    tr = np.nonzero(train_mask)[0]
    te = np.nonzero(test_mask)[0]
    group_y = np.array([GROUPS.index(r["group"]) for r in records])
    colour_y = np.array([dominant_colour(img) for img in images])
    x_all = to_tensor(images)
    w = torch.from_numpy(sample_weights(records, tr))
    net = judge_net()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.15)
    gy, cy = torch.from_numpy(group_y), torch.from_numpy(colour_y)
    t0 = time.process_time()
    run = []
    for step in range(steps):
        net.train()
        pick = torch.from_numpy(tr)[torch.multinomial(w, batch, replacement=True, generator=gen)]
        xb = augment(x_all[pick], gen)
        g, c, _ = net(normalise(xb))
        loss = F.cross_entropy(g, gy[pick], label_smoothing=0.05) + \
            F.cross_entropy(c, cy[pick], label_smoothing=0.05)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        run.append(loss.item())
        if (step + 1) % 100 == 0:
            log("judge step %d/%d loss %.3f (%.0f CPU-s)" % (step + 1, steps, np.mean(run[-100:]),
                                                             time.process_time() - t0))
    cpu = time.process_time() - t0
    torch.set_num_threads(threads)
    pg, pc, _ = predict(net, x_all[te])
    pgb, pcb, _ = predict(net, blur(x_all[te], 1.0))
    by_id = record_by_id(records)
    prompt_rows = np.array([by_id[i] for i in prompt_ids])
    xp = x_all[prompt_rows]
    ppg, ppc, _ = predict(net, xp)
    ppgb, ppcb, _ = predict(net, blur(xp, 1.0))
    info = {
        "version": JUDGE_VERSION, "seed": seed, "steps": steps, "batch": batch,
        "train_images": int(len(tr)), "heldout_images": int(len(te)),
        "heldout_bases": int(len({records[i]["base"] for i in te})),
        "cpu_seconds": round(cpu, 1),
        "heldout": {
            "group": accuracy_summary(pg.argmax(1), group_y[te], len(GROUPS)),
            "colour": accuracy_summary(pc.argmax(1), colour_y[te], len(COLOURS)),
            "group_blurred": accuracy_summary(pgb.argmax(1), group_y[te], len(GROUPS)),
            "colour_blurred": accuracy_summary(pcb.argmax(1), colour_y[te], len(COLOURS)),
            "group_confusion": confusion(pg.argmax(1), group_y[te], len(GROUPS)),
            "colour_confusion": confusion(pc.argmax(1), colour_y[te], len(COLOURS)),
        },
        # the real images of the prompt list (trained on): what a perfect copy would score
        "prompt_images": {
            "group": accuracy_summary(ppg.argmax(1), group_y[prompt_rows], len(GROUPS)),
            "colour": accuracy_summary(ppc.argmax(1), colour_y[prompt_rows], len(COLOURS)),
            "group_blurred": accuracy_summary(ppgb.argmax(1), group_y[prompt_rows], len(GROUPS)),
            "colour_blurred": accuracy_summary(ppcb.argmax(1), colour_y[prompt_rows], len(COLOURS)),
        },
        "heldout_group_counts": np.bincount(group_y[te], minlength=len(GROUPS)).tolist(),
        "heldout_colour_counts": np.bincount(colour_y[te], minlength=len(COLOURS)).tolist(),
    }
    return net, info


def judge_key(prompt_ids):
    h = hashlib.sha256()
    h.update(("v%d|%s|" % (JUDGE_VERSION, dataset_digest())).encode())
    h.update("|".join(sorted(prompt_ids)).encode())
    return h.hexdigest()[:16]


def load_or_train_judge(images, records, prompt_ids, path=JUDGE_PATH, retrain=False, log=print):
    """The cached judge if it matches this dataset, prompt list and judge version; else train and
    cache a new one."""
    import torch
    key = judge_key(prompt_ids)
    if not retrain and os.path.exists(path):
        blob = torch.load(path, map_location="cpu", weights_only=False)
        if blob.get("key") == key:
            net = judge_net()
            net.load_state_dict(blob["state"])
            net.eval()
            return net, blob["info"]
        log("judge: cached %s is stale (dataset, prompt list or judge version changed); retraining" % path)
    else:
        log("judge: training (cache %s)" % path)
    net, info = train_judge(images, records, prompt_ids, log=log)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"key": key, "state": net.state_dict(), "info": info}, path + ".tmp")
    os.replace(path + ".tmp", path)
    net.eval()
    return net, info


# ---------------------------------------------------------------------------------------------
# prompt files

def read_jsonl(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if line and not line.startswith("#"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    sys.exit("%s:%d: %s" % (path, n, e))
    return out


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------------------------
# the Swift CLI

def find_darkroom(explicit=None):
    if explicit:
        return os.path.abspath(explicit)
    for cand in (os.path.join(REPO, ".build/release/darkroom"), os.path.join(REPO, ".build/debug/darkroom")):
        if os.path.exists(cand):
            return cand
    from shutil import which
    found = which("darkroom")
    if found:
        return found
    sys.exit("darkroom executable not found: build it with `swift build -c release --product darkroom` "
             "or pass --darkroom PATH")


def run_batch(darkroom, prompts_file, out_dir, model, threads, extra=(), log=print):
    """`darkroom batch` over a JSONL file; returns {job index: absolute PNG path} from the
    manifest, and the command line that was run."""
    cmd = [darkroom, "batch", "--prompts", prompts_file, "--output", out_dir, "--model", model,
           "--name-pattern", "{index:04}-{prompt:40}", "--threads", str(threads),
           "--progress", "quiet"] + list(extra)
    log("$ " + shlex.join(cmd))
    t0 = time.time()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        sys.exit("darkroom batch failed with exit code %d" % proc.returncode)
    files = {}
    for rec in read_manifests(out_dir):
        files[int(rec["index"])] = os.path.join(out_dir, rec["file"])
    log("rendered %d images in %.0f s" % (len(files), time.time() - t0))
    return files, cmd


def read_manifests(out_dir):
    recs = []
    for name in sorted(os.listdir(out_dir)):
        if name.startswith("manifest") and name.endswith(".jsonl"):
            with open(os.path.join(out_dir, name), encoding="utf-8") as f:
                for line in f:
                    try:
                        recs.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass  # a torn last line
    return recs


def load_png(path):
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


# ---------------------------------------------------------------------------------------------
# contact sheets

def font(size):
    from PIL import ImageFont
    for path in ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",):
        if os.path.exists(path):
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def wrap(draw, text, fnt, width, max_lines):
    words, lines, cur = text.split(), [], ""
    for w in words:
        trial = (cur + " " + w).strip()
        if draw.textlength(trial, font=fnt) <= width or not cur:
            cur = trial
        else:
            lines.append(cur)
            cur = w
    if cur:
        lines.append(cur)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        while lines[-1] and draw.textlength(lines[-1] + "…", font=fnt) > width:
            lines[-1] = lines[-1][:-1]
        lines[-1] += "…"
    return lines


def contact_sheet(tiles, path, cols=8, scale=2, caption_lines=3, font_size=10, title=None):
    """tiles: list of (uint8 HxWx3 image, caption, colour of the caption or None). Each image is
    upscaled `scale` times (nearest) with its caption below it."""
    from PIL import Image, ImageDraw
    fnt = font(font_size)
    tile = 64 * scale
    pad = 6
    line_h = font_size + 3
    cap_h = caption_lines * line_h + 4
    rows = (len(tiles) + cols - 1) // cols
    top = (font_size + 10) if title else 0
    W = cols * (tile + pad) + pad
    H = top + rows * (tile + cap_h + pad) + pad
    sheet = Image.new("RGB", (W, H), (255, 255, 255))
    d = ImageDraw.Draw(sheet)
    if title:
        d.text((pad, 4), title, fill=(0, 0, 0), font=font(font_size + 2))
    for k, (img, caption, colour) in enumerate(tiles):
        r, c = divmod(k, cols)
        x0 = pad + c * (tile + pad)
        y0 = top + pad + r * (tile + cap_h + pad)
        im = Image.fromarray(img).resize((tile, tile), Image.Resampling.NEAREST)
        sheet.paste(im, (x0, y0))
        d.rectangle([x0 - 1, y0 - 1, x0 + tile, y0 + tile], outline=(200, 200, 200))
        for j, line in enumerate(wrap(d, caption, fnt, tile, caption_lines)):
            d.text((x0, y0 + tile + 2 + j * line_h), line, fill=colour or (0, 0, 0), font=fnt)
    sheet.save(path, optimize=True)


def render_overrides(args):
    """Batch-line keys for the --steps/--guidance/--size options given (the model's defaults otherwise)."""
    extra = {}
    if args.steps:
        extra["steps"] = args.steps
    if args.guidance is not None:
        extra["guidance_scale"] = args.guidance
    if args.size:
        extra["width"] = extra["height"] = args.size
    return extra
