#!/usr/bin/env python3
"""Golden values for Darkroom's TorchGenerator (torch.randn on the CPU) and DDIMScheduler.

Usage: Tools/.venv/bin/python Tools/fixtures_scheduler.py [OUT_DIR]
(default OUT_DIR: Tests/DarkroomTests/Fixtures/scheduler). Writes randn.json and ddim.json.

randn.json holds two flavors of torch's CPU normal kernel: "avx2" (what torch dispatches to on any
x86-64 CPU with AVX2, AVX-512 included) and "portable" (ATEN_CPU_CAPABILITY=default, also the
non-x86 code path); the second set is produced by re-running this script in a child process with
that environment variable. Values are stored as float32 bit patterns so tests can demand exact
equality; large draws keep a few slices, an FNV-1a hash of all bit patterns and float64 sums.
"""
import json, math, os, subprocess, sys

import numpy as np
import torch
import diffusers
from diffusers import DDIMScheduler

SEEDS = [0, 1, 42, 2**32 + 5, 2**63 - 1]
SIZES = [1, 2, 3, 15, 16, 17, 31, 32, 33, 100, 1024, 4 * 64 * 64]
# Successive draws from one generator: the stream (and torch's cached scalar normal) carries over.
SEQUENCES = [
    (42, [[4, 16, 16], [4, 16, 16]]),
    (42, [[5], [20]]),
    (7, [[1], [1], [3], [20], [1], [2]]),
    (123, [[3], [17], [1]]),
    (2**63 - 1, [[1, 4, 8, 8], [15], [16]]),
]
FULL_LIMIT = 100  # store every value up to this many


def bits(t):
    return [int(x) for x in t.contiguous().flatten().view(torch.int32).numpy().astype(np.uint32)]


def fnv1a64(b):
    h = 0xCBF29CE484222325
    for w in b:
        for k in range(4):
            h ^= (w >> (8 * k)) & 0xFF
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def describe(t):
    b = bits(t)
    d = {"shape": list(t.shape), "count": len(b)}
    if len(b) <= FULL_LIMIT:
        d["bits"] = b
    else:
        v = t.double().flatten().tolist()
        d["head"] = b[:32]
        d["tail"] = b[-32:]
        mid = len(b) // 2
        d["middle_offset"] = mid
        d["middle"] = b[mid:mid + 16]
        d["fnv1a64"] = str(fnv1a64(b))  # string: JSON numbers lose bits above 2^53
        d["sum"] = math.fsum(v)
        d["sum_squares"] = math.fsum(x * x for x in v)
    return d


def randn_cases():
    singles = []
    for seed in SEEDS:
        for n in SIZES:
            g = torch.Generator().manual_seed(seed)
            singles.append({"seed": str(seed), **describe(torch.randn([n], generator=g, dtype=torch.float32))})
    sequences = []
    for seed, shapes in SEQUENCES:
        g = torch.Generator().manual_seed(seed)
        draws = [describe(torch.randn(s, generator=g, dtype=torch.float32)) for s in shapes]
        sequences.append({"seed": str(seed), "draws": draws})
    return {"capability": torch.backends.cpu.get_cpu_capability(), "single": singles, "sequences": sequences}


# ----------------------------------------------------------------------------------------------
# DDIM

SD1 = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
           clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")
CONFIGS = {
    # The scheduler_config.json of SD 1.x (a PNDM config: DDIM ignores the PNDM-only keys).
    "sd1": dict(_class_name="PNDMScheduler", skip_prk_steps=True, trained_betas=None, **SD1),
    "sd2_v": dict(SD1, prediction_type="v_prediction"),
    "trailing": dict(SD1, timestep_spacing="trailing", steps_offset=0),
    "linspace": dict(SD1, timestep_spacing="linspace", steps_offset=0),
    "linear_betas": dict(beta_schedule="linear", beta_start=0.0001, beta_end=0.02, clip_sample=False),
    "clip_sample": dict(SD1, clip_sample=True, clip_sample_range=1.5),
    "set_alpha_to_one": dict(SD1, set_alpha_to_one=True),
    "zero_snr": dict(SD1, rescale_betas_zero_snr=True, timestep_spacing="trailing", steps_offset=0,
                     prediction_type="v_prediction"),
    "sample_pred": dict(SD1, prediction_type="sample", clip_sample=True),
    "t500": dict(SD1, num_train_timesteps=500),
    "cosine": dict(beta_schedule="squaredcos_cap_v2", clip_sample=False, set_alpha_to_one=False),
    "defaults": dict(),  # every key missing: DDIMScheduler's own defaults
}
STEP_COUNTS = [1, 4, 7, 20, 50]
TIMESTEP_COUNTS = [1, 2, 3, 4, 7, 10, 13, 20, 25, 50, 61, 100, 103, 250, 333, 499, 500, 999, 1000]
ETAS = [0.0, 0.7]
SHAPE = [1, 4, 4, 4]


def fake_model(sample, base, t, T):
    """A deterministic stand-in for the UNet built only from float32 multiplies and adds, so the
    Swift test can rebuild it bit for bit: sample * k1(t) + base * k2(t), k in float64 -> float32."""
    k1 = 0.25 + 0.5 * t / T
    k2 = 1.0 - 0.75 * t / T
    return sample * k1 + base * k2


def f32list(t):
    return [float(x) for x in t.flatten().tolist()]


def ddim_cases():
    out = {}
    base = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2024), dtype=torch.float32)
    out["base"] = f32list(base)
    out["shape"] = SHAPE
    out["model"] = "model_output = sample * f32(0.25 + 0.5*t/T) + base * f32(1 - 0.75*t/T)"
    cases = []
    for name, cfg in CONFIGS.items():
        sched = DDIMScheduler.from_config(cfg)
        T = sched.config.num_train_timesteps
        case = {"name": name, "config": cfg,
                "alphas_cumprod": f32list(sched.alphas_cumprod),
                "final_alpha_cumprod": float(sched.final_alpha_cumprod)}
        tss = {}
        for n in TIMESTEP_COUNTS:
            if n > T:
                continue
            s = DDIMScheduler.from_config(cfg)
            s.set_timesteps(n)
            tss[str(n)] = [int(x) for x in s.timesteps]
        case["timesteps"] = tss
        runs = []
        for n in STEP_COUNTS:
            for eta in ETAS:
                s = DDIMScheduler.from_config(cfg)
                s.set_timesteps(n)
                g = torch.Generator().manual_seed(77)
                # As in the pipeline: the initial latents and the eta noise share one generator.
                sample = torch.randn(SHAPE, generator=g, dtype=torch.float32) * s.init_noise_sigma
                first = None
                for i, t in enumerate(s.timesteps):
                    t = int(t)
                    mo = fake_model(sample, base, t, T)
                    sample = s.step(mo, t, sample, eta=eta, generator=g).prev_sample
                    if i == 0:
                        first = f32list(sample)
                runs.append({"steps": n, "eta": eta, "seed": 77, "timesteps": [int(x) for x in s.timesteps],
                             "after_first_step": first, "final": f32list(sample)})
        case["runs"] = runs
        # add_noise at a few timesteps, on the base tensor with noise from seed 5.
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5), dtype=torch.float32)
        case["add_noise"] = [{"timestep": t, "result": f32list(sched.add_noise(base, noise, torch.tensor([t])))}
                             for t in (0, T // 3, T - 1)]
        case["add_noise_noise"] = f32list(noise)
        cases.append(case)
    out["cases"] = cases
    # torch's float32 sqrt (MKL vsSqrt), which diffusers' `x ** 0.5` on 0-d tensors goes through.
    x = torch.cat([torch.rand(2000, generator=torch.Generator().manual_seed(3)),
                   torch.rand(48, generator=torch.Generator().manual_seed(4)) * 1000,
                   torch.tensor([0.0, 1.0, 0.25, 2.0, 1e-40, 1e-30, 3.0e38])])
    out["sqrt"] = {"x": bits(x), "torch": bits(x.sqrt()), "pow_half": bits(x ** 0.5)}
    return out


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--randn-only":
        json.dump(randn_cases(), sys.stdout)
        return
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "DarkroomTests", "Fixtures", "scheduler")
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    avx2 = randn_cases()
    assert avx2["capability"] in ("AVX2", "AVX512"), f"run on an AVX2 machine (got {avx2['capability']})"
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
    child = subprocess.run([sys.executable, os.path.abspath(__file__), "--randn-only"], env=env,
                           check=True, capture_output=True, text=True)
    portable = json.loads(child.stdout)
    assert portable["capability"] == "DEFAULT", portable["capability"]
    meta = {"torch": torch.__version__, "diffusers": diffusers.__version__, "numpy": np.__version__}
    with open(os.path.join(out_dir, "randn.json"), "w") as f:
        json.dump({"meta": meta, "avx2": avx2, "portable": portable}, f, separators=(",", ":"))
    with open(os.path.join(out_dir, "ddim.json"), "w") as f:
        json.dump({"meta": meta, **ddim_cases()}, f, separators=(",", ":"))


if __name__ == "__main__":
    main()
