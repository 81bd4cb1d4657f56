#!/usr/bin/env python3
"""Fine-tune the VAE decoder alone on the cached latents, with a colour term.

The encoder (and so latents.pt, which the UNet trains on) stays frozen: this stage can run before,
during or after the UNet run without invalidating it. A short autoencoder run reproduces layout and
most colours but pulls some saturated hues toward grey-brown (green hearts came back olive); the
loss here adds an L1 term on 8x8 average-pooled images, which weighs the flat colour areas that
dominate emoji more than the per-pixel terms do.

Reads  /work/darkroom-train/vae (trained by `train.py vae`) and latents.pt (`train.py cache`).
Writes /work/darkroom-train/vae-decoder/ (checkpoint, loss.csv) and /work/darkroom-train/vae-ft/
(the whole AutoencoderKL, encoder unchanged), which export.py prefers when it exists.

Usage:
  Tools/.venv/bin/python Tools/train/decoder.py --steps 600 --batch 16 [--resume]
"""
import argparse
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402


def main():
    C.stop_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(C.WORK, "dataset-64"))
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--colour", type=float, default=2.0, help="weight of the pooled-colour L1 term")
    ap.add_argument("--minutes", type=float, default=30, help="CPU-minutes (process CPU time)")
    ap.add_argument("--seed", type=int, default=4321)
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args()
    from diffusers import AutoencoderKL
    C.set_threads()
    torch.manual_seed(a.seed)
    recs, images = C.load_dataset(a.data)
    lat = torch.load(os.path.join(C.WORK, "latents.pt"))
    assert lat["ids"] == [r["id"] for r in recs], "latents.pt does not match the dataset: rerun `train.py cache`"
    x_all = C.to_pixels(images)
    vae = AutoencoderKL.from_pretrained(os.path.join(C.WORK, "vae"))
    for p in vae.parameters():
        p.requires_grad_(False)
    dec = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    for p in dec:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(dec, lr=a.lr, weight_decay=0.0, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(a.seed)
    ck = C.Checkpointer(os.path.join(C.WORK, "vae-decoder"), 600)
    step, spent = 0, 0.0
    if a.resume and ck.exists():
        step, spent = C.resume(ck, {"vae": vae}, opt, gen, "decoder")
    # Same rebalanced draws as the UNet: rare colours (green, purple) get their share.
    weights = torch.tensor(C.sampling_weights(recs), dtype=torch.float64)
    hdr = ["step", "cpu_seconds", "loss", "l1", "colour"]
    c0, acc = time.process_time(), []

    def save():
        ck.save({"vae": vae.state_dict(), "opt": opt.state_dict(), "step": step,
                 "spent": spent + time.process_time() - c0, "rng": C.rng_state(gen)})

    while step < a.steps and (spent + time.process_time() - c0) < a.minutes * 60 and not C.STOP:
        lr = a.lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / a.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.multinomial(weights, a.batch, replacement=True, generator=gen)
        x = x_all[idx]
        z = lat["mean"][idx] + lat["std"][idx] * torch.randn(lat["mean"][idx].shape, generator=gen)
        rec = vae.decode(z).sample
        l1 = (rec - x).abs().mean()
        colour = (F.avg_pool2d(rec, 8) - F.avg_pool2d(x, 8)).abs().mean()
        loss = l1 + F.mse_loss(rec, x) + a.colour * colour
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dec, 1.0)
        opt.step()
        step += 1
        acc.append((loss.item(), l1.item(), colour.item()))
        if step % 25 == 0:
            C.poll_threads()
            m = np.mean(acc, 0)
            acc = []
            ck.log([step, round(spent + time.process_time() - c0, 1), "%.5f" % m[0], "%.5f" % m[1], "%.5f" % m[2]], hdr)
            print("decoder step %d loss %.4f l1 %.4f colour %.4f  %.0f CPU-s" % (step, m[0], m[1], m[2], spent + time.process_time() - c0), flush=True)
        if ck.due():
            save()
    save()
    vae.eval()
    vae.save_pretrained(os.path.join(C.WORK, "vae-ft"))
    print("saved", os.path.join(C.WORK, "vae-ft"))


if __name__ == "__main__":
    main()
