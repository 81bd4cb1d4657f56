#!/usr/bin/env python3
"""Train Darkroom's default emoji model on the CPU (see Tools/train/README.md for the commands).

Stages (each resumable, state under /work/darkroom-train/):
  vae     train the f=4 AutoencoderKL on 64x64 emoji (L1 + L2 + small KL)      -> vae/
  cache   encode every image once with the frozen VAE (posterior mean + std)   -> latents.pt
  pilot   time candidate UNet sizes (forward + backward, samples/s)
  unet    train the CLIP text encoder (from scratch) + UNet jointly on the cached latents,
          caption dropout for classifier-free guidance, EMA, rebalanced sampling    -> unet-<name>/
"""
import argparse
import copy
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402


def count(m):
    return sum(p.numel() for p in m.parameters())


# ----------------------------------------------------------------------------------------- VAE
def cmd_vae(a):
    from diffusers import AutoencoderKL
    C.set_threads()
    torch.manual_seed(a.seed)
    recs, images = C.load_dataset(a.data)
    x_all = C.to_pixels(images)
    vae = AutoencoderKL(**C.VAE_CONFIG)
    opt = torch.optim.AdamW(vae.parameters(), lr=a.lr, weight_decay=0.0, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(a.seed)
    ck = C.Checkpointer(os.path.join(C.WORK, "vae-train"), a.ckpt_every)
    step, spent = 0, 0.0
    if a.resume and ck.exists():
        step, spent = C.resume(ck, {"vae": vae}, opt, gen, "VAE")
    print("VAE params %.2fM" % (count(vae) / 1e6))
    n = len(x_all)
    hdr = ["step", "cpu_seconds", "wall_seconds", "loss", "l1", "kl", "lr"]
    t0, c0, acc = time.time(), time.process_time(), []

    def save():
        ck.save({"vae": vae.state_dict(), "opt": opt.state_dict(), "step": step,
                 "spent": spent + time.process_time() - c0, "rng": C.rng_state(gen)})

    while step < a.steps and (spent + time.process_time() - c0) < a.minutes * 60 and not C.STOP:
        lr = a.lr * min(1.0, (step + 1) / 200) * (0.5 * (1 + math.cos(math.pi * step / a.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        full = a.crop <= 0 or step >= a.steps - a.full_steps
        B = a.batch if not full else max(1, a.batch * a.crop * a.crop // (64 * 64)) if a.crop > 0 else a.batch
        idx = torch.randint(0, n, (B,), generator=gen)
        x = x_all[idx]
        if not full:
            # Random crops (aligned to the f=4 grid): the autoencoder is convolutional, so small
            # crops teach the same local reconstruction at a fraction of the cost per sample. The
            # last --full-steps steps run on whole images so GroupNorm sees whole-image statistics.
            oy, ox = (int(v) * 4 for v in torch.randint(0, (x.shape[-1] - a.crop) // 4 + 1, (2,), generator=gen))
            x = x[:, :, oy:oy + a.crop, ox:ox + a.crop]
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        l1 = (rec - x).abs().mean()
        l2 = F.mse_loss(rec, x)
        kl = post.kl().mean() / x[0].numel()
        loss = l1 + l2 + a.kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        acc.append((loss.item(), l1.item(), kl.item()))
        if step % 50 == 0:
            C.poll_threads()
            m = np.mean(acc, 0)
            acc = []
            ck.log([step, round(spent + time.process_time() - c0, 1), round(time.time() - t0, 1), "%.5f" % m[0], "%.5f" % m[1], "%.5f" % m[2], "%.2e" % lr], hdr)
            print("vae step %d loss %.4f l1 %.4f kl %.3f  %.1fs" % (step, m[0], m[1], m[2], spent + time.process_time() - c0), flush=True)
        if ck.due():
            save()
    save()
    vae.eval()
    vae.save_pretrained(os.path.join(C.WORK, "vae"))
    print("saved", os.path.join(C.WORK, "vae"))


# --------------------------------------------------------------------------------------- cache
@torch.no_grad()
def cmd_cache(a):
    from diffusers import AutoencoderKL
    C.set_threads()
    recs, images = C.load_dataset(a.data)
    vae = AutoencoderKL.from_pretrained(os.path.join(C.WORK, "vae")).eval()
    x_all = C.to_pixels(images)
    means, stds, l1 = [], [], []
    for i in range(0, len(x_all), 64):
        x = x_all[i:i + 64]
        post = vae.encode(x).latent_dist
        means.append(post.mean)
        stds.append(post.std)
        if i % 512 == 0:  # reconstruction error on a sample of the set (decoding all costs minutes)
            l1.append((vae.decode(post.mean).sample - x).abs().mean(dim=(1, 2, 3)))
    mean, std = torch.cat(means), torch.cat(stds)
    scale = 1.0 / float(mean.std())
    l1 = torch.cat(l1)
    torch.save({"mean": mean, "std": std, "scaling_factor": scale, "ids": [r["id"] for r in recs]},
               os.path.join(C.WORK, "latents.pt"))
    print("latents", tuple(mean.shape), "std %.4f -> scaling_factor %.5f; posterior std mean %.4f; "
          "reconstruction L1 (of [-1,1]) mean %.4f, worst %.4f" % (1 / scale, scale, float(std.mean()), float(l1.mean()), float(l1.max())))
    # A strip of originals over reconstructions to look at.
    from PIL import Image
    pick = list(range(0, len(x_all), max(1, len(x_all) // 16)))[:16]
    rec = vae.decode(mean[pick]).sample
    top = ((x_all[pick] + 1) * 127.5).clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    bot = ((rec + 1) * 127.5).clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    grid = np.concatenate([np.concatenate(list(top), 1), np.concatenate(list(bot), 1)], 0)
    Image.fromarray(grid).save(os.path.join(C.WORK, "vae-reconstruction.png"))


# --------------------------------------------------------------------------------------- UNet
def build(unet_name):
    from transformers import CLIPTextConfig, CLIPTextModel
    from diffusers import UNet2DConditionModel
    te = CLIPTextModel(CLIPTextConfig(**C.TEXT_CONFIG))
    unet = UNet2DConditionModel(**C.unet_config(unet_name))
    return te, unet


def cmd_pilot(a):
    C.set_threads()
    for name in a.candidates.split(","):
        torch.manual_seed(0)
        te, unet = build(name)
        params = list(te.parameters()) + list(unet.parameters())
        opt = C.adamw(params, lr=1e-4)
        ids = torch.randint(0, 49408, (a.batch, C.MAX_TOKENS))
        times = []
        for i in range(a.steps + 2):
            t0 = time.process_time()
            z = torch.randn(a.batch, 4, 16, 16)
            t = torch.randint(0, 1000, (a.batch,))
            with C.autocast(a.bf16):
                enc = te(ids).last_hidden_state
                out = unet(z, t, enc).sample
            loss = F.mse_loss(out.float(), z)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.process_time() - t0)
        # CPU time of the process (both threads), not wall time: other people share the machine
        # and a niced process gets a small share of it.
        s = float(np.median(times[2:]))
        print("pilot %s%s: unet %.2fM params, text %.2fM; batch %d: %.2f CPU-s/step, %.3f CPU-s/sample"
              % (name, " bf16" if a.bf16 else "", count(unet) / 1e6, count(te) / 1e6, a.batch, s, s / a.batch), flush=True)


def caption_table(recs, tok):
    """All captions tokenized once; per record the indices and draw probabilities of its captions."""
    texts, per = [""], []
    for r in recs:
        caps = r["captions"]
        # name 60%, name + keywords 25%, Unicode name 15% (renormalised over those present)
        kinds = [0.6] + [0.25 if c.startswith(r["name"] + ", ") else 0.15 for c in caps[1:]]
        p = np.array(kinds) / sum(kinds)
        per.append((list(range(len(texts), len(texts) + len(caps))), p))
        texts.extend(caps)
    ids = C.tokenize(tok, texts)
    return ids, per


def x0_weight(snr, a):
    """Weight of the squared x0 error at these SNRs: min-SNR-gamma's min(SNR, gamma), raised to
    at least --x0-floor. Plain min-SNR leaves x0 errors at high noise a weight of about SNR,
    which under the linear schedule is below 0.01 for t >= 674 — yet those steps decide what
    the picture shows, and a model trained that way drew the family of a rare concept (a flag,
    a food) instead of the concept (measured: at t 800-1000 the caption "flag: japan" did not
    lower the x0 error of the Japanese flag below the unconditional prediction's)."""
    return torch.clamp(torch.clamp(snr, max=a.min_snr), min=a.x0_floor)


def cmd_unet(a):
    C.set_threads()
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    recs, _ = C.load_dataset(a.data)
    lat = torch.load(os.path.join(C.WORK, "latents.pt"))
    assert lat["ids"] == [r["id"] for r in recs], "latents.pt does not match the dataset: rerun `cache`"
    lmean, lstd, scale = lat["mean"], lat["std"], lat["scaling_factor"]
    tok = C.load_tokenizer()
    ids_table, per = caption_table(recs, tok)
    weights = torch.tensor(C.sampling_weights(recs), dtype=torch.float64)
    sched = C.training_scheduler()
    acp = sched.alphas_cumprod
    snr = acp / (1 - acp)
    te, unet = build(a.unet)
    params = list(te.parameters()) + list(unet.parameters())
    opt = C.adamw(params, lr=a.lr, weight_decay=0.01, betas=(0.9, 0.99))
    ema_te, ema_unet = copy.deepcopy(te).eval(), copy.deepcopy(unet).eval()
    for p in list(ema_te.parameters()) + list(ema_unet.parameters()):
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(a.seed)
    ck = C.Checkpointer(os.path.join(C.WORK, a.run or "unet-" + a.unet), a.ckpt_every)
    step, spent = 0, 0.0
    if a.init_from and not (a.resume and ck.exists()):
        # Start from another run's weights (e.g. an epsilon run switched to v-prediction): the
        # features carry over; optimizer moments and EMA start fresh for the new objective.
        st = torch.load(a.init_from, map_location="cpu", weights_only=False)
        te.load_state_dict(st["te"])
        unet.load_state_dict(st["unet"])
        ema_te.load_state_dict(st["te"])
        ema_unet.load_state_dict(st["unet"])
        print("initialised from %s (step %d, %s)" % (a.init_from, st["step"], st.get("prediction", "epsilon")))
    if a.resume and ck.exists():
        step, spent = C.resume(ck, {"te": te, "unet": unet, "ema_te": ema_te, "ema_unet": ema_unet}, opt, gen, "text encoder + UNet")
        C.keep_fused(opt)
    print("text encoder %.2fM, unet %.2fM params; %d images; batch %d" % (count(te) / 1e6, count(unet) / 1e6, len(recs), a.batch))
    ema_params = list(ema_te.parameters()) + list(ema_unet.parameters())
    hdr = ["step", "cpu_seconds", "wall_seconds", "loss", "lr", "samples_per_wall_s"]
    t0, c0, acc, tlog = time.time(), time.process_time(), [], time.time()

    def save():
        ck.save({"te": te.state_dict(), "unet": unet.state_dict(), "ema_te": ema_te.state_dict(),
                 "ema_unet": ema_unet.state_dict(), "opt": opt.state_dict(), "step": step,
                 "spent": spent + time.process_time() - c0, "rng": C.rng_state(gen), "unet_name": a.unet,
                 "scaling_factor": scale, "args": vars(a), "bf16": a.bf16,
                 "prediction": a.prediction})
        print("checkpoint at step %d" % step, flush=True)

    te.train()
    unet.train()
    start = step
    while step < a.steps and (spent + time.process_time() - c0) < a.minutes * 60 and not C.STOP:
        lr = a.lr * min(1.0, (step + 1) / a.warmup)
        if a.rewarm:
            # A resumed run whose lr had decayed climbs back to --lr over --rewarm steps (a restart
            # of the schedule for more training), so the jump does not throw the weights around.
            lr *= min(1.0, (step - start + 1) / a.rewarm)
        if a.decay_from and step >= a.decay_from:
            # A falling lr at the end lets the weights settle (the EMA alone averages a noisy walk).
            lr *= 1.0 - 0.9 * min(1.0, (step - a.decay_from) / max(1, a.steps - a.decay_from))
        for g in opt.param_groups:
            g["lr"] = lr
        B = a.batch
        idx = torch.multinomial(weights, B, replacement=True, generator=gen)
        u = torch.rand(B, generator=gen)
        cap = []
        for j, i in enumerate(idx.tolist()):
            choices, p = per[i]
            cap.append(0 if u[j] < a.drop else choices[int(np.searchsorted(np.cumsum(p), float(torch.rand(1, generator=gen)), side="right").clip(0, len(p) - 1))])
        ids = ids_table[cap]
        z0 = (lmean[idx] + lstd[idx] * torch.randn(lmean[idx].shape, generator=gen)) * scale
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, 1000, (B,), generator=gen)
        zt = sched.add_noise(z0, noise, t)
        with C.autocast(a.bf16):
            enc = te(ids).last_hidden_state
            pred = unet(zt, t, enc).sample.float()
        if a.prediction == "v_prediction":
            # v = sqrt(abar)*eps - sqrt(1-abar)*x0: at high noise the model predicts the image (an
            # under-trained model gives a blurry mean with the right colours, not noise); at low
            # noise it predicts the noise. |v error|² = (SNR + 1)·|x0 error|², so dividing the
            # x0 weight by SNR + 1 gives the v weight.
            target = sched.get_velocity(z0, noise, t)
            w = x0_weight(snr[t], a) / (snr[t] + 1)
        else:
            target = noise
            w = x0_weight(snr[t], a) / snr[t]  # |eps error|² = SNR·|x0 error|²
        per_sample = ((pred - target) ** 2).mean(dim=(1, 2, 3))
        loss = (w * per_sample).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        d = min(a.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1 - d)
        acc.append(per_sample.mean().item())
        if step % a.log_every == 0:
            C.poll_threads()
            now = time.time()
            ck.log([step, round(spent + time.process_time() - c0, 1), round(now - t0, 1), "%.5f" % np.mean(acc), "%.2e" % lr,
                    "%.2f" % (a.log_every * B / (now - tlog))], hdr)
            print("step %d loss %.4f lr %.1e %.1f samples/s" % (step, np.mean(acc), lr, a.log_every * B / (now - tlog)), flush=True)
            acc, tlog = [], now
        if ck.due():
            save()
    save()


def main():
    C.stop_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(C.WORK, "dataset-64"))
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--ckpt-every", type=int, default=600, help="seconds between checkpoints")
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("vae")
    v.add_argument("--steps", type=int, default=3000)
    v.add_argument("--minutes", type=float, default=30, help="CPU-minutes (process CPU time)")
    v.add_argument("--batch", type=int, default=16)
    v.add_argument("--lr", type=float, default=1e-3)
    v.add_argument("--kl", type=float, default=1e-4)
    v.add_argument("--crop", type=int, default=0, help="train on random CROPxCROP crops (0: whole images)")
    v.add_argument("--full-steps", type=int, default=200, help="with --crop: the last N steps use whole images")
    v.add_argument("--resume", action="store_true")
    sub.add_parser("cache")
    p = sub.add_parser("pilot")
    p.add_argument("--candidates", default="s,m,l")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--bf16", action="store_true", help=C.BF16_HELP)
    u = sub.add_parser("unet")
    u.add_argument("--unet", default="m", choices=sorted(C.UNET_CONFIGS))
    u.add_argument("--steps", type=int, default=10 ** 9)
    u.add_argument("--minutes", type=float, default=330, help="stop after this many CPU-minutes of training (process CPU time, total across resumes; 2 threads)")
    u.add_argument("--batch", type=int, default=32)
    u.add_argument("--lr", type=float, default=3e-4)
    u.add_argument("--warmup", type=int, default=300)
    u.add_argument("--decay-from", type=int, default=0, help="from this step, lr falls linearly to 10%% at --steps (0: constant)")
    u.add_argument("--rewarm", type=int, default=0, help="with --resume: ramp lr up again over this many steps from the resumed step")
    u.add_argument("--drop", type=float, default=0.1, help="caption dropout (empty caption)")
    u.add_argument("--ema", type=float, default=0.999)
    u.add_argument("--min-snr", type=float, default=5.0)
    u.add_argument("--x0-floor", type=float, default=0.0,
                   help="lowest weight of the x0 error at high noise (0 = plain min-SNR; 0.1 from step 10,825 of the default model)")
    u.add_argument("--log-every", type=int, default=20)
    u.add_argument("--prediction", default="epsilon", choices=["epsilon", "v_prediction"])
    u.add_argument("--run", default="", help="run folder name under the training dir (default unet-<name>)")
    u.add_argument("--init-from", default="", help="start from this checkpoint's weights (fresh optimizer and EMA)")
    u.add_argument("--resume", action="store_true")
    u.add_argument("--bf16", action="store_true", help=C.BF16_HELP)
    a = ap.parse_args()
    {"vae": cmd_vae, "cache": cmd_cache, "pilot": cmd_pilot, "unet": cmd_unet}[a.cmd](a)


if __name__ == "__main__":
    main()
