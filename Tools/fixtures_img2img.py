#!/usr/bin/env python3
"""Golden values for image-to-image, the AutoencoderKL encoder and AutoencoderTiny (TAESD), from
diffusers 0.42.1 in float32 on the CPU. Also builds the tiny random TAESD model Models/tiny-taesd.

Usage (from anywhere): Tools/.venv/bin/python Tools/fixtures_img2img.py
Writes Models/tiny-taesd/ (config.json, diffusion_pytorch_model.safetensors, README.md) and
Tests/DarkroomTests/Fixtures/img2img/ (see the README.md written there). Deterministic: fixed
seeds, one thread; the output is byte-identical from run to run.
"""
import json
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for k, v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
             "HF_HUB_DISABLE_TELEMETRY": "1", "TRANSFORMERS_VERBOSITY": "error",
             "DIFFUSERS_VERBOSITY": "error"}.items():
    os.environ.setdefault(k, v)

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import diffusers  # noqa: E402
from diffusers import (AutoencoderKL, AutoencoderTiny, DDIMScheduler, DPMSolverMultistepScheduler,  # noqa: E402
                       EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, StableDiffusionImg2ImgPipeline)
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution  # noqa: E402

OUT = os.path.join(ROOT, "Tests", "DarkroomTests", "Fixtures", "img2img")
TAESD_DIR = os.path.join(ROOT, "Models", "tiny-taesd")

# Darkroom sampler names -> diffusers scheduler built from the folder's config (as SamplerKind.make).
SCHEDULERS = {
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "dpmpp_2m_karras": (DPMSolverMultistepScheduler, dict(algorithm_type="dpmsolver++", solver_order=2,
                                                          use_karras_sigmas=True)),
}

# Whole StableDiffusionImg2ImgPipeline runs. `image` names a PNG written below; "resized_70x52"
# is not a multiple of 8, so diffusers resizes it (PIL Lanczos) to 64x48 first.
CASES = {
    "tiny-sd1": {
        "ddim": dict(sampler="ddim", image="init_64x64.png", prompt="a photo of a red heart",
                     negative_prompt="blurry", seed=5, steps=4, strength=0.6, guidance_scale=7.5, eta=0.0),
        "euler_a": dict(sampler="euler_a", image="init_70x52.png", prompt="a watercolor lighthouse",
                        negative_prompt="", seed=11, steps=5, strength=0.75, guidance_scale=4.0, eta=0.0),
    },
    "tiny-sd2": {
        "ddim": dict(sampler="ddim", image="init_64x64.png", prompt="a photo of a red heart",
                     negative_prompt="blurry", seed=5, steps=4, strength=0.6, guidance_scale=7.5, eta=0.0),
        "dpmpp_2m_karras": dict(sampler="dpmpp_2m_karras", image="init_64x64.png", prompt="a green apple",
                                negative_prompt="", seed=3, steps=6, strength=0.5, guidance_scale=5.0, eta=0.0),
        "euler": dict(sampler="euler", image="init_64x64.png", prompt="a green apple", negative_prompt="",
                      seed=9, steps=4, strength=1.0, guidance_scale=1.0, eta=0.0),
    },
}

TAESD_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, act_fn="relu", upsample_fn="nearest",
    encoder_block_out_channels=[16, 16, 16, 16], decoder_block_out_channels=[16, 16, 16, 16],
    num_encoder_blocks=[1, 3, 3, 3], num_decoder_blocks=[3, 3, 3, 1], upsampling_scaling_factor=2,
    latent_magnitude=3, latent_shift=0.5, scaling_factor=1.0, force_upcast=False,
)


def f32(t):
    return t.detach().to(torch.float32).contiguous().clone()


def stats(name, t):
    """Print max-abs/std and fail on degenerate tensors (all ~0, NaN/inf, or one constant)."""
    assert t.dtype == torch.float32, f"{name}: {t.dtype}"
    d = t.detach().double()
    mx, sd = d.abs().max().item(), d.std().item() if d.numel() > 1 else 0.0
    print(f"    {name:40s} {str(list(t.shape)):18s} max|x|={mx:9.4f} std={sd:8.4f}")
    assert torch.isfinite(d).all(), f"{name}: non-finite values"
    assert mx > 1e-3, f"{name}: all ~0"
    assert t.numel() == 1 or sd > 1e-4, f"{name}: constant"
    return t


def save(tensors, name):
    path = os.path.join(OUT, name)
    os.makedirs(OUT, exist_ok=True)
    save_file(tensors, path, metadata={"format": "pt"})
    print(f"  wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes)")


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def hooked(names, model):
    store, handles = {}, []
    modules = dict(model.named_modules())
    for name in names:
        def hook(_m, _inp, out, name=name):
            store[name] = f32(out[0] if isinstance(out, (tuple, list)) else out)
        handles.append(modules[name].register_forward_hook(hook))
    return store, handles


# ---------------------------------------------------------------------------------------------
# Deterministic input images
# ---------------------------------------------------------------------------------------------

def pattern(width, height, phase):
    """A smooth colour pattern with edges (disc, stripes, gradient): uint8 [H, W, 3]."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = x / width, y / height
    r = 0.5 + 0.5 * np.sin(2 * math.pi * (1.5 * u + phase))
    g = v
    b = 0.5 + 0.5 * np.cos(2 * math.pi * (u * v * 3 + phase))
    disc = ((x - 0.6 * width) ** 2 + (y - 0.4 * height) ** 2) < (0.22 * min(width, height)) ** 2
    stripes = (np.floor(x / 5) % 2 == 0) & (y > 0.75 * height)
    img = np.stack([r, g, b], axis=-1)
    img[disc] = [0.9, 0.15, 0.2]
    img[stripes] = img[stripes] * 0.3
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def write_png(array, name):
    path = os.path.join(OUT, name)
    PIL.Image.fromarray(array, mode="RGB").save(path, format="PNG", optimize=False, compress_level=9)
    print(f"  wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes)")
    return path


def load_png(name):
    im = PIL.Image.open(os.path.join(OUT, name))
    im.load()
    assert im.mode == "RGB"
    return im


# ---------------------------------------------------------------------------------------------
# PIL Lanczos resizes (what diffusers' VaeImageProcessor does to sizes that are not multiples of 8)
# ---------------------------------------------------------------------------------------------

RESIZES = [
    # (source PNG, source size, target size)
    ("init_70x52.png", (70, 52), (64, 48)),     # both axes down a little (the img2img case)
    ("resize_src_23x17.png", (23, 17), (64, 40)),  # both axes up
    ("resize_src_200x9.png", (200, 9), (48, 16)),  # strong downscale on x, upscale on y
]


def resize_goldens():
    spec = []
    for src, (w, h), (tw, th) in RESIZES:
        if src.startswith("resize_src_"):
            write_png(pattern(w, h, 0.37 * w / 10), src)
        im = load_png(src)
        assert im.size == (w, h)
        out = im.resize((tw, th), resample=PIL.Image.LANCZOS)
        name = f"resize_lanczos_{w}x{h}_to_{tw}x{th}.png"
        write_png(np.array(out), name)
        spec.append(dict(source=src, target=name, width=tw, height=th))
    return spec


# ---------------------------------------------------------------------------------------------
# AutoencoderKL encoder
# ---------------------------------------------------------------------------------------------

def encoder_golden(model):
    vae = AutoencoderKL.from_pretrained(os.path.join(ROOT, "Models", model, "vae"), dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(2024)
    # Non-square, in [-1, 1] like a preprocessed image; smooth structure plus noise.
    base = torch.from_numpy(pattern(64, 48, 0.2).astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    image = (2 * base - 1) * 0.8 + 0.2 * torch.randn(base.shape, generator=g)
    image = image.clamp(-1, 1).contiguous()
    names = ["encoder.conv_in"] + [f"encoder.down_blocks.{i}" for i in range(len(vae.encoder.down_blocks))]
    names += ["encoder.mid_block", "encoder.conv_norm_out", "encoder.conv_out", "quant_conv"]
    store, handles = hooked(names, vae)
    with torch.no_grad():
        dist = vae.encode(image).latent_dist
    for h in handles:
        h.remove()
    sample = dist.sample(torch.Generator().manual_seed(77))
    t = {"image": stats("image", image)}
    for n in names:
        t[n] = stats(n, store[n])
    t["mean"] = stats("mean", f32(dist.mean))
    t["logvar"] = stats("logvar", f32(dist.logvar))
    t["std"] = stats("std", f32(dist.std))
    t["sample_seed77"] = stats("sample_seed77", f32(sample))
    # Cross-check: the sample is mean + std * randn(mean.shape) from the generator.
    expected = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=torch.Generator().manual_seed(77))
    assert torch.equal(sample, expected)
    save(t, f"vae_encoder_{model}.safetensors")


def distribution_golden():
    """DiagonalGaussianDistribution on hand-made moments whose log-variances cross both clamps."""
    g = torch.Generator().manual_seed(99)
    mean = torch.randn(1, 4, 3, 5, generator=g)
    logvar = torch.linspace(-45.0, 35.0, 60).reshape(1, 4, 3, 5)
    moments = torch.cat([mean, logvar], dim=1).contiguous()
    dist = DiagonalGaussianDistribution(moments)
    t = {"moments": moments, "mean": f32(dist.mean), "logvar": f32(dist.logvar), "std": f32(dist.std),
         "sample_seed5": f32(dist.sample(torch.Generator().manual_seed(5))),
         "mode": f32(dist.mode())}
    assert dist.logvar.min().item() == -30.0 and dist.logvar.max().item() == 20.0
    save(t, "distribution.safetensors")


# ---------------------------------------------------------------------------------------------
# StableDiffusionImg2ImgPipeline
# ---------------------------------------------------------------------------------------------

def img2img_goldens():
    info = {"cases": {}}
    tensors = {}
    for model, cases in CASES.items():
        folder = os.path.join(ROOT, "Models", model)
        pipe = StableDiffusionImg2ImgPipeline.from_pretrained(folder, dtype=torch.float32, safety_checker=None,
                                                             feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        base_config = pipe.scheduler.config
        assert pipe.image_processor.config.resample == "lanczos"
        for case, c in cases.items():
            key = f"{model}.{case}"
            print(f"    {key}: {c}")
            cls, overrides = SCHEDULERS[c["sampler"]]
            pipe.scheduler = cls.from_config(base_config, **overrides)
            captured = {}
            original_prepare = StableDiffusionImg2ImgPipeline.prepare_latents

            def prepare(self, image, timestep, *args, **kwargs):
                captured["image"] = f32(image)
                # The processor's tensor is channels-last (a transposed numpy array); torch's conv
                # takes another path for that layout (differences ~1e-6), so keep it for the check.
                captured["strided_image"] = image.clone()
                captured["latent_timestep"] = timestep.clone()
                out = original_prepare(self, image, timestep, *args, **kwargs)
                captured["noisy_latents"] = f32(out)
                return out

            pipe.prepare_latents = prepare.__get__(pipe)
            per_step = {}

            def on_step_end(_pipe, step, timestep, kw):
                per_step[step] = (float(timestep), f32(kw["latents"]))
                return kw

            init = load_png(c["image"])
            gen = torch.Generator().manual_seed(c["seed"])
            with torch.no_grad():
                image = pipe(c["prompt"], image=init, strength=c["strength"], negative_prompt=c["negative_prompt"],
                             num_inference_steps=c["steps"], guidance_scale=c["guidance_scale"], eta=c["eta"],
                             generator=gen, output_type="np", callback_on_step_end=on_step_end).images
            del pipe.prepare_latents
            image = torch.from_numpy(image)
            timesteps = [float(t) for t in pipe.scheduler.timesteps]
            init_timestep = min(int(c["steps"] * c["strength"]), c["steps"])
            t_start = max(c["steps"] - init_timestep, 0)
            run = timesteps[t_start:]
            assert [per_step[i][0] for i in range(len(run))] == run, (per_step.keys(), run)

            # Re-derive the noisy latents by hand: encode, sample (first draw), scale, noise (second
            # draw), add_noise at the first timestep of the run.
            pre = captured["image"]
            with torch.no_grad():
                dist = pipe.vae.encode(captured["strided_image"]).latent_dist
            g2 = torch.Generator().manual_seed(c["seed"])
            sampled = dist.sample(g2)
            image_latents = pipe.vae.config.scaling_factor * sampled
            noise = torch.randn(image_latents.shape, generator=g2)
            sched = cls.from_config(base_config, **overrides)
            sched.set_timesteps(c["steps"])
            if hasattr(sched, "set_begin_index"):
                sched.set_begin_index(t_start)
            noisy = sched.add_noise(image_latents, noise, sched.timesteps[t_start:t_start + 1])
            assert torch.equal(noisy, captured["noisy_latents"]), "noisy latents differ from the hand derivation"

            h, w = pre.shape[2], pre.shape[3]
            tensors[f"{key}.image_in"] = stats(f"{key}.image_in", pre)
            tensors[f"{key}.mean"] = stats(f"{key}.mean", f32(dist.mean))
            tensors[f"{key}.image_latents"] = stats(f"{key}.image_latents", f32(image_latents))
            tensors[f"{key}.noise"] = stats(f"{key}.noise", f32(noise))
            tensors[f"{key}.noisy_latents"] = stats(f"{key}.noisy_latents", captured["noisy_latents"])
            for i in range(len(run)):
                tensors[f"{key}.latents.{i}"] = stats(f"{key}.latents.{i}", per_step[i][1])
            tensors[f"{key}.image"] = stats(f"{key}.image", f32(image))
            sat = ((image <= 0) | (image >= 1)).float().mean().item()
            print(f"    {key}.image {list(image.shape)}: {sat:.1%} of values clipped to 0 or 1")
            assert sat < 0.5, "image mostly saturated"
            info["cases"][key] = dict(c, model=model, width=w, height=h, all_timesteps=timesteps,
                                      run_timesteps=run, t_start=t_start)
    save(tensors, "img2img.safetensors")
    return info


# ---------------------------------------------------------------------------------------------
# AutoencoderTiny
# ---------------------------------------------------------------------------------------------

def build_taesd():
    """A random AutoencoderTiny: conv weights N(0, gain²/fan_in), the last conv of every residual
    block scaled down so that activations stay O(1) through the ~30 layers; biases N(0, 0.05).
    The decoder's output conv is small with bias 0.5 so that images land mostly inside [0, 1]."""
    torch.manual_seed(0)
    vae = AutoencoderTiny(**TAESD_CONFIG).eval()
    g = torch.Generator().manual_seed(5150)
    with torch.no_grad():
        for name, module in sorted(vae.named_modules(), key=lambda kv: kv[0]):
            if isinstance(module, torch.nn.Conv2d):
                w = module.weight
                fan_in = w[0].numel()
                last = name == f"decoder.layers.{len(vae.decoder.layers) - 1}"
                gain = 0.5 if name.endswith("conv.4") else 0.12 if last else 1.4
                w.copy_(torch.randn(w.shape, generator=g) * (gain / fan_in ** 0.5))
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=g) * 0.05 + (0.5 if last else 0))
            elif list(module.parameters(recurse=False)):
                raise RuntimeError(f"no init rule for {name}")
    os.makedirs(TAESD_DIR, exist_ok=True)
    vae = vae.to(torch.float16)
    vae.save_pretrained(TAESD_DIR, safe_serialization=True)
    print(f"  wrote {os.path.relpath(TAESD_DIR, ROOT)} "
          f"({os.path.getsize(os.path.join(TAESD_DIR, 'diffusion_pytorch_model.safetensors'))} bytes of weights)")
    with open(os.path.join(TAESD_DIR, "README.md"), "w", encoding="utf-8") as f:
        f.write(TAESD_README)


TAESD_README = """# tiny-taesd

A tiny **random** `AutoencoderTiny` (TAESD architecture) in diffusers layout, for tests only: it
decodes noise into noise. Made by `Tools/fixtures_img2img.py` (fixed seed, float16 weights).

Config: 16 channels everywhere, encoder blocks (1, 3, 3, 3), decoder blocks (3, 3, 3, 1), ReLU,
nearest 2x upsampling, 4 latent channels, scaling factor 1 (TAESD for SD 1.x/2.x decodes the
UNet's scaled latents directly). Keys: `encoder.layers.N...`, `decoder.layers.N...`.
"""


def taesd_goldens():
    vae = AutoencoderTiny.from_pretrained(TAESD_DIR, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(8080)
    latent = torch.randn(1, 4, 8, 12, generator=g)
    # Outputs of the last block of each stage (before each upsample) and of the first ReLU.
    dec_layers = vae.decoder.layers
    stage_ends = [i for i, m in enumerate(dec_layers) if isinstance(m, torch.nn.Upsample)]
    names = ["decoder.layers.1"] + [f"decoder.layers.{i - 1}" for i in stage_ends]
    store, handles = hooked(names, vae)
    with torch.no_grad():
        decoded = vae.decode(latent).sample
    for h in handles:
        h.remove()
    t = {"latent": latent}
    for n in names:
        t[n] = stats(n, store[n])
    t["decoded"] = stats("decoded", f32(decoded))
    inside = (decoded.abs() < 1).float().mean().item()
    print(f"    decoded: {inside:.1%} of values inside (-1, 1)")
    assert inside > 0.3, "TAESD output mostly saturated"

    # Encoder: image in [-1, 1] -> latents.
    base = torch.from_numpy(pattern(96, 64, 0.6).astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    image = (2 * base - 1).contiguous()
    with torch.no_grad():
        latents = vae.encode(image).latents
    t["image"] = stats("image", image)
    t["encoded"] = stats("encoded", f32(latents))
    save(t, "taesd.safetensors")
    # The preview as diffusers' postprocess(output_type="pil") makes it.
    pil = diffusers.image_processor.VaeImageProcessor(vae_scale_factor=8).postprocess(decoded, output_type="pil")[0]
    write_png(np.array(pil), "taesd_preview.png")


README = """# img2img fixtures — `Tools/fixtures_img2img.py`

diffusers 0.42.1, float32 on the CPU. Tensors are F32 safetensors, images 8-bit RGB PNGs.

## `vae_encoder_tiny-sd1.safetensors`, `vae_encoder_tiny-sd2.safetensors`
`AutoencoderKL.encode` of `image` [1, 3, 48, 64] (a pattern in [-1, 1] plus noise). Forward-hook
outputs: `encoder.conv_in`, `encoder.down_blocks.{0..3}` (after each block's downsampler),
`encoder.mid_block`, `encoder.conv_norm_out` (GroupNorm, before SiLU), `encoder.conv_out`
[1, 8, 6, 8], `quant_conv` (the moments). `latent_dist`: `mean`, `logvar` (clamped), `std`;
`sample_seed77` = `latent_dist.sample(torch.Generator().manual_seed(77))`.

## `distribution.safetensors`
`DiagonalGaussianDistribution(moments)` for hand-made `moments` [1, 8, 3, 5] whose log-variances
run from -45 to 35 (both clamps hit): `mean`, `logvar`, `std`, `mode`, `sample_seed5`.

## `img2img.safetensors` + `img2img.json`
`StableDiffusionImg2ImgPipeline` runs (`output_type="np"`). `img2img.json` gives each case
(`MODEL.CASE`): model, sampler (Darkroom name; the scheduler is `Class.from_config(folder config,
...)` as `SamplerKind.make`), input PNG, prompt, negative_prompt, seed, steps, strength,
guidance_scale, eta, the resulting width/height, all timesteps, `t_start` and the timesteps run.
Per case: `image_in` (the preprocessed image [1, 3, H, W] in [-1, 1]), `mean` (encoder mean),
`image_latents` (sampled latent × scaling_factor: the generator's first draw), `noise` (its second
draw), `noisy_latents` (`scheduler.add_noise` at the first timestep run), `latents.{i}` (after
each step run) and `image` [1, H, W, 3] in [0, 1]. `init_70x52.png` is not a multiple of 8:
diffusers resizes it to 64x48 with PIL's Lanczos filter first.

## `resize_*.png`
`PIL.Image.resize(size, resample=LANCZOS)` (Pillow 13) of the source PNGs, as
`resize_lanczos_WxH_to_WxH.png` (see `resizes` in `img2img.json`).

## `taesd.safetensors`, `taesd_preview.png`
`Models/tiny-taesd` (made by the same script). `AutoencoderTiny.decode(latent)` of `latent`
[1, 4, 8, 12] → `decoded` [1, 3, 64, 96], with hook outputs `decoder.layers.1` (first ReLU) and
the last block before each upsample; `encode(image)` of `image` [1, 3, 64, 96] → `encoded`
[1, 4, 8, 12]. `taesd_preview.png` is `VaeImageProcessor.postprocess(decoded, "pil")`.
"""


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    diffusers.utils.logging.disable_progress_bar()
    try:
        import ftfy  # noqa: F401
        sys.exit("ftfy is installed: CLIPTokenizer would clean text differently. Remove it from the venv.")
    except ImportError:
        pass
    os.makedirs(OUT, exist_ok=True)
    write_png(pattern(64, 64, 0.0), "init_64x64.png")
    write_png(pattern(70, 52, 0.25), "init_70x52.png")
    print("resize:")
    resizes = resize_goldens()
    print("vae encoder:")
    for model in ("tiny-sd1", "tiny-sd2"):
        encoder_golden(model)
    distribution_golden()
    print("img2img:")
    info = img2img_goldens()
    info["resizes"] = resizes
    write_json(os.path.join(OUT, "img2img.json"), info)
    print("taesd:")
    build_taesd()
    taesd_goldens()
    with open(os.path.join(OUT, "README.md"), "w", encoding="utf-8") as f:
        f.write(README)


if __name__ == "__main__":
    main()
