#!/usr/bin/env python3
"""Does the caption help the model at each noise level? A training diagnostic.

For a few dataset images, noises each image's latent at timesteps drawn from five bands and
reports the EMA model's x0 error (mean squared, latent units) with the image's own caption, with
the empty caption and with a wrong caption. Where the right caption does not beat the empty one,
the model has not learned that concept at that noise level; the high-noise bands decide what a
sampled picture shows.

  Tools/.venv/bin/python Tools/train/probe.py /work/darkroom-train/unet-sv2/checkpoint.pt
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402
from train import build  # noqa: E402

# (record id, its caption, a wrong caption of the same family)
TARGETS = [
    ("noto_2764", "red heart", "blue heart"),
    ("noto_1f49a", "green heart", "purple heart"),
    ("noto_1f60a", "smiling face with smiling eyes", "crying face"),
    ("noto_1f1ef_1f1f5", "flag: japan", "flag: france"),
    ("noto_1f355", "pizza", "hamburger"),
    ("noto_1f680", "rocket", "airplane"),
]
BANDS = [(0, 200), (200, 400), (400, 600), (600, 800), (800, 1000)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--data", default=os.path.join(C.WORK, "dataset-64"))
    ap.add_argument("--samples", type=int, default=48, help="noised copies per image and band")
    a = ap.parse_args()
    torch.set_num_threads(1)
    recs, _ = C.load_dataset(a.data)
    lat = torch.load(os.path.join(C.WORK, "latents.pt"))
    assert lat["ids"] == [r["id"] for r in recs], "latents.pt does not match the dataset: rerun `train.py cache`"
    st = torch.load(a.checkpoint, map_location="cpu", weights_only=False)
    te, unet = build(st["unet_name"])
    te.load_state_dict(st["ema_te"])
    unet.load_state_dict(st["ema_unet"])
    te.eval()
    unet.eval()
    sched = C.training_scheduler()
    acp = sched.alphas_cumprod
    tok = C.load_tokenizer()
    index = {r["id"]: i for i, r in enumerate(recs)}
    gen = torch.Generator().manual_seed(0)  # the same noises for every checkpoint
    n = a.samples
    print("checkpoint step %d; x0 MSE with the right / empty / wrong caption" % st["step"])
    print("%-32s" % "caption" + "".join("  t %3d-%-4d        " % b for b in BANDS))
    with torch.no_grad():
        for rid, caption, wrong in TARGETS:
            i = index[rid]
            z0 = (lat["mean"][i:i + 1] * lat["scaling_factor"]).expand(n, -1, -1, -1)
            enc = te(C.tokenize(tok, [caption, "", wrong])).last_hidden_state
            cells = []
            for lo, hi in BANDS:
                t = torch.randint(lo, hi, (n,), generator=gen)
                zt = sched.add_noise(z0, torch.randn(z0.shape, generator=gen), t)
                ab = acp[t].view(-1, 1, 1, 1)
                err = []
                for k in range(3):
                    out = unet(zt, t, enc[k:k + 1].expand(n, -1, -1)).sample
                    x0 = ab.sqrt() * zt - (1 - ab).sqrt() * out if st.get("prediction") == "v_prediction" \
                        else (zt - (1 - ab).sqrt() * out) / ab.sqrt()
                    err.append(((x0 - z0) ** 2).mean().item())
                cells.append("%5.3f/%5.3f/%5.3f" % tuple(err))
            print("%-32s" % caption + "".join("  " + c for c in cells), flush=True)


if __name__ == "__main__":
    main()
