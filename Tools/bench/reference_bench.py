#!/usr/bin/env python3
"""Times diffusers/transformers (PyTorch, CPU, float32) on a model folder, per component, the way
Darkroom's benchmark times itself: text encoder (batch 2, 77 tokens), one UNet step with
guidance (batch 2), VAE decode (batch 1), and a 4096^3 float32 matmul for the machine's ceiling.
FLOPs are counted by torch.utils.flop_counter on the same calls. Prints one JSON object.

  Tools/.venv/bin/python Tools/bench/reference_bench.py --model M --size 512 --runs 3 --threads 2 \
      [--component text_encoder,unet,vae,matmul]
"""
import argparse, json, resource, time
import torch
from torch.utils.flop_counter import FlopCounterMode


def timed(fn, runs):
    fn()  # warm-up
    ts = []
    for _ in range(runs):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    ts.sort()
    return {"min": ts[0], "median": ts[len(ts) // 2], "max": ts[-1], "runs": runs}


def flops(fn):
    with FlopCounterMode(display=False) as m:
        fn()
    return m.get_total_flops()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model"); ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--runs", type=int, default=3); ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--component", default="text_encoder,unet,vae,matmul")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    comps = a.component.split(",")
    out = {"torch": torch.__version__, "threads": a.threads, "size": a.size}
    with torch.inference_mode():
        if "matmul" in comps:
            x = torch.randn(4096, 4096); y = torch.randn(4096, 4096)
            r = timed(lambda: torch.matmul(x, y), a.runs)
            r["gflop"] = 2 * 4096 ** 3 / 1e9
            out["matmul"] = r
        if a.model and any(c in comps for c in ("text_encoder", "unet", "vae")):
            from diffusers import UNet2DConditionModel, AutoencoderKL
            from transformers import CLIPTextModel
            g = torch.Generator().manual_seed(0)
            if "text_encoder" in comps:
                te = CLIPTextModel.from_pretrained(f"{a.model}/text_encoder", dtype=torch.float32).eval()
                ids = torch.randint(0, 49407, (2, 77), generator=g)
                f = lambda: te(ids)
                out["text_encoder"] = timed(f, a.runs) | {"gflop": flops(f) / 1e9}
                del te
            if "unet" in comps:
                unet = UNet2DConditionModel.from_pretrained(f"{a.model}/unet", torch_dtype=torch.float32).eval()
                h = a.size // 8
                x = torch.randn(2, unet.config.in_channels, h, h, generator=g)
                ctx = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g)
                f = lambda: unet(x, 500, encoder_hidden_states=ctx)
                out["unet"] = timed(f, a.runs) | {"gflop": flops(f) / 1e9}
                del unet
            if "vae" in comps:
                vae = AutoencoderKL.from_pretrained(f"{a.model}/vae", torch_dtype=torch.float32).eval()
                h = a.size // 8
                z = torch.randn(1, vae.config.latent_channels, h, h, generator=g)
                f = lambda: vae.decode(z)
                out["vae"] = timed(f, a.runs) | {"gflop": flops(f) / 1e9}
                del vae
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


if __name__ == "__main__":
    main()
