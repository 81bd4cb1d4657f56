#!/usr/bin/env python3
"""Golden values for Darkroom's samplers beyond DDIM, from diffusers 0.42.1 on the CPU.

Usage (from the repo root): Tools/.venv/bin/python Tools/fixtures_samplers.py [OUT_DIR]
(default OUT_DIR: Tests/DarkroomTests/Fixtures/samplers). Writes:

  samplers.json   per sampler and scheduler config: timesteps, sigmas and init_noise_sigma for
                  1, 4, 20 and 25 steps, and a whole sampling loop per step count with a stand-in
                  model (the scaled model input and the latents after every step);
                  torch.log / torch.exp of float32 values (MKL, which DPM-Solver relies on);
                  get_guidance_scale_embedding for a few guidance values and sizes (LCM).
  pipeline.json / pipeline.safetensors
                  StableDiffusionPipeline on Models/tiny-sd1 with each sampler's scheduler
                  (`Scheduler.from_config(pipe.scheduler.config, ...)`): final latents and image.

Tensors in the JSON are base64 strings of little-endian float32 bytes (bit-exact and compact).
Deterministic: fixed seeds, one thread; the output is byte-identical from run to run.
"""
import base64
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
from diffusers import (DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,  # noqa: E402
                       EulerDiscreteScheduler, LCMScheduler, PNDMScheduler, StableDiffusionPipeline)

# Darkroom's sampler names -> (diffusers class, from_config overrides), as SamplerKind.make does.
SAMPLERS = {
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, dict(algorithm_type="dpmsolver++", solver_order=2,
                                                   use_karras_sigmas=False)),
    "dpmpp_2m_karras": (DPMSolverMultistepScheduler, dict(algorithm_type="dpmsolver++", solver_order=2,
                                                          use_karras_sigmas=True)),
    "pndm": (PNDMScheduler, {}),
    "lcm": (LCMScheduler, {}),
}

SD = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
          clip_sample=False, set_alpha_to_one=False, steps_offset=1, trained_betas=None)
CONFIGS = {
    # SD 1.x as saved by recent diffusers: a PNDM config with every key.
    "sd1": dict(_class_name="PNDMScheduler", skip_prk_steps=True, prediction_type="epsilon",
                timestep_spacing="leading", **SD),
    # The original SD 1.5 file: no timestep_spacing, so each scheduler applies its own default
    # (Euler and DPM-Solver: linspace, with fractional Euler timesteps).
    "sd1_legacy": dict(_class_name="PNDMScheduler", _diffusers_version="0.6.0", skip_prk_steps=True, **SD),
    # SD 2.x-like v-prediction with zero terminal SNR and trailing spacing (PNDM ignores the rescale).
    "sd2_v": dict(_class_name="DDIMScheduler", skip_prk_steps=True, prediction_type="v_prediction",
                  timestep_spacing="trailing", rescale_betas_zero_snr=True, **SD),
    # A DDIM folder config (as Models/tiny-sd1 ships): PNDM gets skip_prk_steps=False, Runge-Kutta.
    "ddim_folder": dict(_class_name="DDIMScheduler", prediction_type="epsilon", timestep_spacing="leading",
                        rescale_betas_zero_snr=False, thresholding=False, **SD),
    # Euler honours use_karras_sigmas from the folder's config (the `euler` name does not force it).
    "sd1_karras": dict(_class_name="EulerDiscreteScheduler", skip_prk_steps=True, prediction_type="epsilon",
                       timestep_spacing="leading", use_karras_sigmas=True, **SD),
    # DPM-Solver options a folder's DPM config may carry: λ clipping, Heun's second-order formula,
    # a final σ_min step (second order at the end for >= 15 steps).
    "dpm_options": dict(_class_name="DPMSolverMultistepScheduler", prediction_type="epsilon",
                        timestep_spacing="linspace", lambda_min_clipped=-2.0, solver_type="heun",
                        final_sigmas_type="sigma_min", **SD),
}
RUN_CONFIGS = {name: ["sd1", "sd1_legacy", "sd2_v"] for name in SAMPLERS}
RUN_CONFIGS["euler"] = ["sd1", "sd1_legacy", "sd2_v", "sd1_karras"]
RUN_CONFIGS["dpmpp_2m"] = ["sd1", "sd1_legacy", "sd2_v", "dpm_options"]
RUN_CONFIGS["dpmpp_2m_karras"] = ["sd1", "sd1_legacy", "sd2_v", "dpm_options"]
RUN_CONFIGS["pndm"] = ["sd1", "sd1_legacy", "sd2_v", "ddim_folder"]
STEP_COUNTS = [1, 4, 20, 25]
SHAPE = [1, 4, 4, 4]
SEED = 77

PIPE_PROMPT, PIPE_NEGATIVE, PIPE_SEED, PIPE_GUIDANCE, PIPE_SIZE = "a photo of a red heart", "", 3, 5.0, 64
PIPE_STEPS = {name: 3 for name in SAMPLERS}
PIPE_STEPS["pndm"] = 4  # tiny-sd1's DDIM config means Runge-Kutta warm-up, which needs 4 steps


def b64(t):
    a = t.detach().to(torch.float32).contiguous().numpy().astype("<f4")
    return base64.b64encode(a.tobytes()).decode("ascii")


def floats(t):
    return [float(x) for x in torch.as_tensor(t).to(torch.float32).flatten().tolist()]


def fake_model(sample, base, t, T):
    """Stand-in UNet from float32 multiplies and adds only: sample * f32(0.25 + 0.5 t/T) +
    base * f32(1 - 0.75 t/T), t the (possibly fractional) timestep as a Python float."""
    k1 = 0.25 + 0.5 * t / T
    k2 = 1.0 - 0.75 * t / T
    return sample * k1 + base * k2


def make(name, cfg):
    cls, overrides = SAMPLERS[name]
    return cls.from_config(cfg, **overrides)


def run_case(name, cfg_name, base):
    cfg = CONFIGS[cfg_name]
    case = {"sampler": name, "config_name": cfg_name, "config": cfg, "runs": []}
    for n in STEP_COUNTS:
        s = make(name, cfg)
        try:
            s.set_timesteps(n)
        except Exception as e:  # e.g. PNDM's Runge-Kutta warm-up with n < 4
            case["runs"].append({"steps": n, "error": f"{type(e).__name__}: {e}"})
            continue
        T = s.config.num_train_timesteps
        run = {"steps": n, "timesteps": [float(t) for t in s.timesteps]}
        if hasattr(s, "sigmas") and name in ("euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras"):
            run["sigmas"] = floats(s.sigmas)
        run["init_noise_sigma"] = float(s.init_noise_sigma)
        g = torch.Generator().manual_seed(SEED)
        latents = torch.randn(SHAPE, generator=g, dtype=torch.float32) * s.init_noise_sigma
        inputs, states = [], []
        try:
            for t in s.timesteps:
                inp = s.scale_model_input(latents, t)
                mo = fake_model(inp, base, float(t), T)
                kwargs = {} if name == "pndm" else {"generator": g}
                latents = s.step(mo, t, latents, **kwargs).prev_sample
                inputs.append(b64(inp))
                states.append(b64(latents))
        except IndexError as e:
            # diffusers starts at step index 1 when the first timestep occurs twice (zero-SNR σ_max
            # with Karras spacing) and runs off the end of its sigmas; Darkroom steps in order.
            run["run_error"] = f"{type(e).__name__}: {e}"
            case["runs"].append(run)
            continue
        if name in ("euler", "euler_a"):
            run["model_inputs"] = inputs
        run["latents"] = states
        case["runs"].append(run)
    return case


def math_cases():
    """torch.log / torch.exp of float32 tensors (MKL VML), stored as raw bits."""
    g = torch.Generator().manual_seed(11)
    ac = DPMSolverMultistepScheduler.from_config(CONFIGS["sd1"]).alphas_cumprod
    lx = torch.cat([ac.sqrt(), (1 - ac).sqrt(), torch.rand(1000, generator=g) * 0.9999 + 1e-4,
                    torch.rand(200, generator=g) * 5000, torch.tensor([1.0, 2.0, 0.5, 10000.0, 4096.0, 1e-30])])
    ex = torch.cat([(torch.rand(1500, generator=g) - 0.5) * 20, (torch.rand(200, generator=g) - 0.5) * 170,
                    torch.tensor([0.0, -0.0, 1.0, -1.0, 87.0, -87.0, -9.21])])
    out = {}
    for key, x, f in (("log", lx, torch.log), ("exp", ex, torch.exp)):
        # One 0-d call per value as well as the vector: both must agree (same MKL kernel).
        vec = f(x)
        single = torch.stack([f(v.clone()) for v in x])
        assert torch.equal(vec.view(torch.int32), single.view(torch.int32)), key
        out[key] = {"x": b64(x), "torch": b64(vec)}
    # numpy's float32 log (its own SIMD kernel), which _sigma_to_t applies to the training σ.
    sig = np.array(((1 - ac) / ac) ** 0.5)
    nx = np.concatenate([sig, (torch.rand(1000, generator=g) * 100).numpy(), np.array([1e-40, 0.7071067, 0.7071068,
                                                                                      1.0, 3.0e38], np.float32)])
    out["numpy_log"] = {"x": b64(torch.from_numpy(nx)), "numpy": b64(torch.from_numpy(np.log(nx)))}
    return out


def embedding_cases():
    cases = []
    for w, dim in ((8.0, 256), (1.5, 32), (4.0, 33), (1.0, 8), (15.0, 512)):
        e = StableDiffusionPipeline.get_guidance_scale_embedding(None, torch.tensor([w - 1.0]), embedding_dim=dim)
        cases.append({"guidance_scale": w, "dimension": dim, "embedding": b64(e)})
    return cases


def pipeline_cases(out_dir):
    folder = os.path.join(ROOT, "Models", "tiny-sd1")
    pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=torch.float32, safety_checker=None,
                                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    folder_config = dict(pipe.scheduler.config)
    tensors, info = {}, {"model": "Models/tiny-sd1", "prompt": PIPE_PROMPT, "negative_prompt": PIPE_NEGATIVE,
                         "seed": PIPE_SEED, "guidance_scale": PIPE_GUIDANCE, "width": PIPE_SIZE,
                         "height": PIPE_SIZE, "cases": {}}
    for name in SAMPLERS:
        pipe.scheduler = make(name, folder_config)
        last = {}

        def on_step_end(_pipe, step, timestep, kw):
            last["latents"] = kw["latents"].detach().clone()
            last["count"] = step + 1
            return kw

        with torch.no_grad():
            image = pipe(PIPE_PROMPT, negative_prompt=PIPE_NEGATIVE, height=PIPE_SIZE, width=PIPE_SIZE,
                         num_inference_steps=PIPE_STEPS[name], guidance_scale=PIPE_GUIDANCE,
                         generator=torch.Generator().manual_seed(PIPE_SEED), output_type="np",
                         callback_on_step_end=on_step_end).images
        image = torch.from_numpy(np.ascontiguousarray(image)).to(torch.float32)
        assert image.shape == (1, PIPE_SIZE, PIPE_SIZE, 3), image.shape
        assert image.std() > 1e-3, f"{name}: flat image"
        tensors[f"{name}.image"] = image.contiguous()
        tensors[f"{name}.latents"] = last["latents"].to(torch.float32).contiguous()
        info["cases"][name] = {"steps": PIPE_STEPS[name], "unet_evaluations": last["count"],
                               "timesteps": [float(t) for t in pipe.scheduler.timesteps]}
        print(f"  pipeline {name}: {last['count']} UNet evaluations, image mean {image.mean().item():.4f}")
    save_file(tensors, os.path.join(out_dir, "pipeline.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out_dir, "pipeline.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1, sort_keys=True)
        f.write("\n")


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "Tests", "DarkroomTests", "Fixtures",
                                                                 "samplers")
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    assert torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"), "run on an x86-64 AVX2 machine"
    base = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2024), dtype=torch.float32)
    cases = [run_case(name, c, base) for name in SAMPLERS for c in RUN_CONFIGS[name]]
    doc = {
        "meta": {"torch": torch.__version__, "diffusers": diffusers.__version__, "numpy": np.__version__},
        "shape": SHAPE, "seed": SEED, "base": b64(base),
        "model": "model_output = model_input * f32(0.25 + 0.5*t/T) + base * f32(1 - 0.75*t/T)",
        "cases": cases, "math": math_cases(), "guidance_embedding": embedding_cases(),
    }
    with open(os.path.join(out_dir, "samplers.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, separators=(",", ":"), sort_keys=True)
        f.write("\n")
    pipeline_cases(out_dir)


if __name__ == "__main__":
    main()
