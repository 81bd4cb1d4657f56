#!/usr/bin/env python3
"""Export the EMA weights of a training checkpoint as a diffusers StableDiffusionPipeline folder
(float16 safetensors), then load it back with diffusers and render check grids.

Usage:
  Tools/.venv/bin/python Tools/train/export.py [--unet s2] [--out Models/darkroom-emoji]
      [--steps 25] [--guidance 4.0] [--grid /work/darkroom-train/grids/NAME.png]
  Tools/.venv/bin/python Tools/train/export.py --render-only --out Models/darkroom-emoji ...
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402

PROMPTS = ["red heart", "blue heart", "green heart", "yellow heart", "pizza", "flag: japan",
           "flag: united states", "rocket", "smiling face", "grinning face", "red apple", "banana",
           "cat face", "dog face", "sun", "fire"]


def export(a):
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel
    from diffusers import UNet2DConditionModel
    st = torch.load(os.path.join(C.WORK, a.run or "unet-" + a.unet, "checkpoint.pt"), map_location="cpu", weights_only=False)
    out = a.out
    os.makedirs(out, exist_ok=True)
    te = CLIPTextModel(CLIPTextConfig(**C.TEXT_CONFIG))
    te.load_state_dict(st["ema_te" if not a.raw else "te"])
    unet = UNet2DConditionModel(**C.unet_config(st["unet_name"]))
    unet.load_state_dict(st["ema_unet" if not a.raw else "unet"])
    # The decoder fine-tuned with the colour term (decoder.py) when it exists; same encoder.
    vae_dir = os.path.join(C.WORK, "vae-ft")
    if not os.path.isdir(vae_dir):
        vae_dir = os.path.join(C.WORK, "vae")
    print("VAE from", vae_dir)
    vae = AutoencoderKL.from_pretrained(vae_dir)
    vae.register_to_config(scaling_factor=float(st["scaling_factor"]))
    for m in (te, unet, vae):
        m.to(torch.float16)
    te.save_pretrained(os.path.join(out, "text_encoder"), safe_serialization=True)
    unet.save_pretrained(os.path.join(out, "unet"), safe_serialization=True)
    vae.save_pretrained(os.path.join(out, "vae"), safe_serialization=True)
    C.write_tokenizer(os.path.join(out, "tokenizer"))
    sched = DDIMScheduler(**{k: v for k, v in C.SCHEDULER_CONFIG.items() if not k.startswith("_")})
    sched.register_to_config(prediction_type=st.get("prediction", "epsilon"))
    sched.save_pretrained(os.path.join(out, "scheduler"))
    index = {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": __import__("diffusers").__version__,
        "feature_extractor": [None, None], "requires_safety_checker": False, "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    with open(os.path.join(out, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(out, "darkroom.json"), "w") as f:
        json.dump({"steps": a.steps, "guidance_scale": a.guidance, "width": 64, "height": 64}, f, indent=2)
        f.write("\n")
    for root, _, files in os.walk(out):
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)  # safetensors writes 0600
    vcfg = os.path.join(out, "vae", "config.json")
    cfg = json.load(open(vcfg))
    cfg.pop("_name_or_path", None)  # a path on the training machine
    with open(vcfg, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    info = {"training_steps": st["step"], "training_seconds": round(st["spent"]), "unet": st["unet_name"],
            "scaling_factor": st["scaling_factor"], "args": st.get("args"),
            "prediction": st.get("prediction", "epsilon")}
    print(json.dumps(info))
    return info


@torch.no_grad()
def render(a, guidance=None, grid_path=None):
    from diffusers import StableDiffusionPipeline
    from PIL import Image
    pipe = StableDiffusionPipeline.from_pretrained(a.out, torch_dtype=torch.float32, safety_checker=None,
                                                   feature_extractor=None, requires_safety_checker=False)
    cfg = json.load(open(os.path.join(a.out, "darkroom.json")))
    rows = []
    for seed in range(a.seeds):
        g = torch.Generator().manual_seed(seed)
        imgs = pipe(PROMPTS, num_inference_steps=cfg["steps"], guidance_scale=guidance or cfg["guidance_scale"],
                    width=cfg["width"], height=cfg["height"], generator=g, output_type="np").images
        rows.append(np.concatenate(list((imgs * 255).round().astype(np.uint8)), 1))
    grid = np.concatenate(rows, 0)
    path = grid_path or a.grid
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(grid).save(path)
    print("grid:", path, "guidance", guidance or cfg["guidance_scale"], "columns:", ", ".join(PROMPTS))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unet", default="s2", choices=sorted(C.UNET_CONFIGS))
    ap.add_argument("--out", default=os.path.join(C.REPO, "Models", "darkroom-emoji"))
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--grid", default=os.path.join(C.WORK, "grids", "latest.png"))
    ap.add_argument("--run", default="", help="run folder under the training dir (default unet-<unet>)")
    ap.add_argument("--raw", action="store_true", help="export the raw (non-EMA) weights")
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("--no-render", action="store_true", help="export only (no diffusers check grid)")
    ap.add_argument("--try-guidance", default="", help="also render grids at these guidance scales, e.g. 2,7.5")
    a = ap.parse_args()
    C.set_threads()
    if not a.render_only:
        export(a)
    if a.no_render:
        return
    render(a)
    for g in [float(v) for v in a.try_guidance.split(",") if v]:
        render(a, g, a.grid.replace(".png", "-g%g.png" % g))


if __name__ == "__main__":
    main()
