#!/usr/bin/env python3
"""Golden values for guidance rescale (diffusers' `guidance_rescale`, `rescale_noise_cfg`), from
diffusers 0.42.1 on the CPU.

Usage (from the repo root): Tools/.venv/bin/python Tools/fixtures_guidance_rescale.py [OUT_DIR]
(default OUT_DIR: Tests/DarkroomTests/Fixtures/guidance_rescale). Writes:

  rescale.safetensors   `rescale_noise_cfg(cfg, text, phi)` on random [1, 4, 8, 8] tensors for a
                        few φ: inputs `unit.cfg`, `unit.text`, outputs `unit.phi<φ×100>`.
  pipeline.json / pipeline.safetensors
                        StableDiffusionPipeline(..., guidance_rescale=φ) on Models/tiny-sd1 and
                        Models/tiny-sd2: the latents after every step (`callback_on_step_end`),
                        the final image (`output_type="np"`) and, to show the option matters, the
                        largest difference from the same run with guidance_rescale=0.

Deterministic: fixed seeds, one thread; the output is byte-identical from run to run.
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for k, v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
             "HF_HUB_DISABLE_TELEMETRY": "1", "TRANSFORMERS_VERBOSITY": "error",
             "DIFFUSERS_VERBOSITY": "error"}.items():
    os.environ.setdefault(k, v)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import diffusers  # noqa: E402
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline  # noqa: E402
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg  # noqa: E402

UNIT_PHIS = [0.3, 0.7, 1.0]

# Each case: model folder, settings, and the sampler (None: the folder's own DDIM scheduler).
CASES = {
    # SD1-style epsilon model, DDIM.
    "sd1_ddim": dict(model="tiny-sd1", prompt="a photo of a red heart", negative_prompt="blurry", seed=11, steps=3,
                     guidance_scale=7.5, guidance_rescale=0.7, size=64, sampler=None),
    # The same model with Euler (σ-scaled latents) and full rescale.
    "sd1_euler": dict(model="tiny-sd1", prompt="a castle on a hill", negative_prompt="", seed=5, steps=3,
                      guidance_scale=9.0, guidance_rescale=1.0, size=64, sampler="euler"),
    # SD2-style v-prediction, zero-terminal-SNR betas, trailing spacing: what the paper's rescale is for.
    "sd2_ddim": dict(model="tiny-sd2", prompt="a watercolor painting of a lighthouse", negative_prompt="", seed=3,
                     steps=3, guidance_scale=7.5, guidance_rescale=0.7, size=64, sampler=None),
}


def unit_cases():
    g = torch.Generator().manual_seed(99)
    text = torch.randn([1, 4, 8, 8], generator=g) * 1.3 + 0.2
    cfg = text * 4.0 - torch.randn([1, 4, 8, 8], generator=g) * 2.0
    out = {"unit.cfg": cfg.contiguous(), "unit.text": text.contiguous()}
    for phi in UNIT_PHIS:
        out[f"unit.phi{round(phi * 100)}"] = rescale_noise_cfg(cfg.clone(), text.clone(), guidance_rescale=phi).contiguous()
    return out


def run(pipe, c, rescale):
    steps = []

    def on_step_end(_pipe, step, timestep, kw):
        steps.append(kw["latents"].detach().to(torch.float32).clone())
        return kw

    with torch.no_grad():
        image = pipe(c["prompt"], negative_prompt=c["negative_prompt"], height=c["size"], width=c["size"],
                     num_inference_steps=c["steps"], guidance_scale=c["guidance_scale"], guidance_rescale=rescale,
                     generator=torch.Generator().manual_seed(c["seed"]), output_type="np",
                     callback_on_step_end=on_step_end).images
    return torch.from_numpy(np.ascontiguousarray(image)).to(torch.float32), steps


def pipeline_cases(out_dir):
    tensors, info = {}, {"cases": {}}
    pipes = {}
    for name, c in CASES.items():
        if c["model"] not in pipes:
            folder = os.path.join(ROOT, "Models", c["model"])
            pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=torch.float32, safety_checker=None,
                                                           feature_extractor=None, requires_safety_checker=False)
            pipe.set_progress_bar_config(disable=True)
            pipes[c["model"]] = (pipe, pipe.scheduler)
        pipe, folder_scheduler = pipes[c["model"]]
        if c["sampler"] == "euler":
            pipe.scheduler = EulerDiscreteScheduler.from_config(folder_scheduler.config)
        else:
            pipe.scheduler = folder_scheduler
        image, steps = run(pipe, c, c["guidance_rescale"])
        plain, _ = run(pipe, c, 0.0)
        effect = (image - plain).abs().max().item()
        assert effect > 1e-2, f"{name}: guidance_rescale changes the image by only {effect}"
        assert len(steps) == c["steps"]
        for i, l in enumerate(steps):
            tensors[f"{name}.latents.{i}"] = l.contiguous()
        tensors[f"{name}.image"] = image.contiguous()
        info["cases"][name] = dict(c, timesteps=[float(t) for t in pipe.scheduler.timesteps],
                                   max_effect_on_image=round(effect, 6))
        print(f"  {name}: image mean {image.mean().item():.4f}, rescale moves it by up to {effect:.4f}")
    save_file(tensors, os.path.join(out_dir, "pipeline.safetensors"), metadata={"format": "pt"})
    info["meta"] = {"torch": torch.__version__, "diffusers": diffusers.__version__}
    with open(os.path.join(out_dir, "pipeline.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1, sort_keys=True)
        f.write("\n")


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "Tests", "DarkroomTests", "Fixtures",
                                                                 "guidance_rescale")
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    save_file(unit_cases(), os.path.join(out_dir, "rescale.safetensors"), metadata={"format": "pt"})
    pipeline_cases(out_dir)


if __name__ == "__main__":
    main()
