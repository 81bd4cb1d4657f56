#!/usr/bin/env python3
"""Golden tensors for the Swift parity tests, computed by diffusers/transformers in float32 on
CPU from the tiny pipelines on disk (Models/tiny-sd1, Models/tiny-sd2, see make_tiny_models.py).

Writes, per model, Tests/DarkroomTests/Fixtures/tiny-sdN/:
    text_encoder.safetensors   tokenizer ids + last_hidden_state + every hidden_states entry
    unet.safetensors           one UNet forward with its intermediates (forward hooks)
    vae.safetensors            one VAE decode with its intermediates
    pipeline.safetensors/.json two full StableDiffusionPipeline runs (DDIM from the folder)

Every module is reloaded from the folder: nothing here reuses in-memory objects from the
builder, so the goldens are what a reader of the files must reproduce. Run from anywhere:
    Tools/.venv/bin/python Tools/fixtures_tiny_sd.py
Output is byte-identical from run to run.
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

for k, v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
             "HF_HUB_DISABLE_TELEMETRY": "1", "TRANSFORMERS_VERBOSITY": "error",
             "DIFFUSERS_VERBOSITY": "error"}.items():
    os.environ.setdefault(k, v)

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import diffusers  # noqa: E402
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextModel, CLIPTokenizer  # noqa: E402

FIXTURES = os.path.join(ROOT, "Tests", "DarkroomTests", "Fixtures")

TEXT_PROMPTS = ["a photo of a red heart, highly detailed", ""]

# Pipeline cases. eta > 0 (DDIM draws variance noise from the same generator after the initial
# latents) is exercised by tiny-sd1 case B.
CASES = {
    "tiny-sd1": {
        "caseA": dict(prompt="a photo of a red heart", negative_prompt="blurry", seed=42, steps=4,
                      guidance_scale=7.5, height=128, width=128, eta=0.0),
        "caseB": dict(prompt="an astronaut riding a horse on the moon", negative_prompt="", seed=7, steps=3,
                      guidance_scale=4.0, height=96, width=128, eta=0.5),
    },
    "tiny-sd2": {
        "caseA": dict(prompt="a photo of a red heart", negative_prompt="blurry", seed=42, steps=4,
                      guidance_scale=7.5, height=128, width=128, eta=0.0),
        "caseB": dict(prompt="a watercolor painting of a lighthouse at dusk", negative_prompt="", seed=7,
                      steps=3, guidance_scale=4.0, height=96, width=128, eta=0.0),
    },
}


def f32(t):
    return t.detach().to(torch.float32).contiguous().clone()


def stats(name, t):
    """Print max-abs/std and fail on degenerate tensors (all ~0, NaN/inf, or one constant)."""
    assert t.dtype == torch.float32, f"{name}: {t.dtype}"
    d = t.detach().double()
    mx, sd = d.abs().max().item(), d.std().item() if d.numel() > 1 else 0.0
    print(f"    {name:34s} {str(list(t.shape)):18s} max|x|={mx:9.4f} std={sd:8.4f}")
    assert torch.isfinite(d).all(), f"{name}: non-finite values"
    assert mx > 1e-3, f"{name}: all ~0"
    assert t.numel() == 1 or sd > 1e-4, f"{name}: constant"
    return t


def save(tensors, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file(tensors, path, metadata={"format": "pt"})
    print(f"  wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes)")


def first(x):
    # Down blocks return (hidden_states, residuals); text encoders return model outputs.
    return x[0] if isinstance(x, (tuple, list)) else x


def hooked(module_names, model):
    """Register forward hooks that store each named submodule's (first) output."""
    store, handles = {}, []
    modules = dict(model.named_modules())
    for name in module_names:
        def hook(_m, _inp, out, name=name):
            store[name] = f32(first(out))
        handles.append(modules[name].register_forward_hook(hook))
    return store, handles


def text_encoder_golden(folder, out_dir):
    tok = CLIPTokenizer.from_pretrained(os.path.join(folder, "tokenizer"))
    te = CLIPTextModel.from_pretrained(os.path.join(folder, "text_encoder"), dtype=torch.float32).eval()
    ids = tok(TEXT_PROMPTS, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids
    assert ids.shape == (2, 77) and ids.dtype == torch.int64
    with torch.no_grad():
        out = te(ids, output_hidden_states=True)
    n_layers = te.config.num_hidden_layers
    assert len(out.hidden_states) == n_layers + 1
    t = {"input_ids": ids.contiguous(), "last_hidden_state": stats("last_hidden_state", f32(out.last_hidden_state))}
    for i, h in enumerate(out.hidden_states):
        t[f"hidden_states.{i}"] = stats(f"hidden_states.{i}", f32(h))
    # The last hidden state is the final LayerNorm of the last layer's output.
    assert not torch.equal(t["last_hidden_state"], t[f"hidden_states.{n_layers}"])
    save(t, os.path.join(out_dir, "text_encoder.safetensors"))
    return ids


def unet_golden(folder, out_dir):
    unet = UNet2DConditionModel.from_pretrained(os.path.join(folder, "unet"), dtype=torch.float32).eval()
    cfg = unet.config
    g = torch.Generator().manual_seed(1234)
    sample = torch.randn(2, cfg.in_channels, 16, 16, generator=g)
    ehs = torch.randn(2, 77, cfg.cross_attention_dim, generator=g)
    timestep = torch.tensor([801.0], dtype=torch.float32)
    names = ["time_proj", "time_embedding", "conv_in"]
    names += [f"down_blocks.{i}" for i in range(len(unet.down_blocks))]
    names += ["mid_block"]
    names += [f"up_blocks.{i}" for i in range(len(unet.up_blocks))]
    names += ["conv_norm_out"]
    store, handles = hooked(names, unet)
    with torch.no_grad():
        out = unet(sample, timestep, encoder_hidden_states=ehs).sample
    for h in handles:
        h.remove()
    t = {"sample": sample, "timestep": timestep, "encoder_hidden_states": ehs}
    for n in names:
        t[n] = stats(n, store[n])
    t["out"] = stats("out", f32(out))
    save(t, os.path.join(out_dir, "unet.safetensors"))


def vae_golden(folder, out_dir):
    vae = AutoencoderKL.from_pretrained(os.path.join(folder, "vae"), dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(4321)
    # Non-square and small: catches H/W mix-ups, and keeps the 8x-upsampled intermediates to ~1 MB
    # (the pipeline goldens cover full 128x128 and 96x128 decodes).
    latent = torch.randn(1, vae.config.latent_channels, 8, 12, generator=g)
    names = ["post_quant_conv", "decoder.conv_in", "decoder.mid_block"]
    names += [f"decoder.up_blocks.{i}" for i in range(len(vae.decoder.up_blocks))]
    names += ["decoder.conv_norm_out"]
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
    assert 0.2 < inside, "VAE output mostly saturated"
    save(t, os.path.join(out_dir, "vae.safetensors"))


def pipeline_golden(folder, out_dir, name):
    pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=torch.float32, safety_checker=None,
                                                   feature_extractor=None, requires_safety_checker=False)
    assert isinstance(pipe.scheduler, DDIMScheduler)
    pipe.set_progress_bar_config(disable=True)
    tensors, info = {}, {"model": f"Models/{name}", "scheduler": dict(pipe.scheduler.config), "cases": {}}
    info["scheduler"] = {k: v for k, v in info["scheduler"].items() if not k.startswith("_")}
    for case, c in CASES[name].items():
        print(f"    {case}: {c}")
        unet_inputs, unet_outputs = [], []

        def pre(_m, args, kwargs):
            unet_inputs.append((f32(args[0]), f32(kwargs["encoder_hidden_states"])))

        def post(_m, _args, _kwargs, out):
            unet_outputs.append(f32(first(out)))

        h1 = pipe.unet.register_forward_pre_hook(pre, with_kwargs=True)
        h2 = pipe.unet.register_forward_hook(post, with_kwargs=True)
        per_step = {}

        def on_step_end(_pipe, step, timestep, kw):
            per_step[step] = (int(timestep), f32(kw["latents"]))
            return kw

        gen = torch.Generator().manual_seed(c["seed"])
        with torch.no_grad():
            image = pipe(c["prompt"], negative_prompt=c["negative_prompt"], height=c["height"], width=c["width"],
                         num_inference_steps=c["steps"], guidance_scale=c["guidance_scale"], eta=c["eta"],
                         generator=gen, output_type="np", callback_on_step_end=on_step_end).images
        h1.remove()
        h2.remove()
        lh, lw = c["height"] // 8, c["width"] // 8
        expected = torch.randn([1, 4, lh, lw], generator=torch.Generator().manual_seed(c["seed"]))
        first_sample, prompt_embeds = unet_inputs[0]
        assert first_sample.shape == (2, 4, lh, lw)
        # CFG duplicates the latents; DDIM's init_noise_sigma is 1 and scale_model_input the identity.
        assert torch.equal(first_sample[0:1], expected) and torch.equal(first_sample[1:2], expected), \
            "pipeline's initial latents are not torch.randn(seed)"
        timesteps = [int(t) for t in pipe.scheduler.timesteps]
        assert [per_step[i][0] for i in range(c["steps"])] == timesteps
        image = torch.from_numpy(image)
        assert image.shape == (1, c["height"], c["width"], 3)
        tensors[f"{case}.initial_latents"] = stats(f"{case}.initial_latents", expected)
        tensors[f"{case}.prompt_embeds"] = stats(f"{case}.prompt_embeds", prompt_embeds)
        for i in range(c["steps"]):
            tensors[f"{case}.unet_out.{i}"] = stats(f"{case}.unet_out.{i}", unet_outputs[i])
            tensors[f"{case}.latents.{i}"] = stats(f"{case}.latents.{i}", per_step[i][1])
        tensors[f"{case}.image"] = stats(f"{case}.image", f32(image))
        sat = ((image <= 0) | (image >= 1)).float().mean().item()
        print(f"    {case}.image: {sat:.1%} of values clipped to 0 or 1")
        assert sat < 0.5, "image mostly saturated"
        # diffusers' DDIM steps from t to t - T // steps (not to the next entry of `timesteps`: with
        # "trailing" spacing these differ, e.g. 666 -> 333 while the next timestep is 332); a negative
        # value means final_alpha_cumprod.
        stride = pipe.scheduler.config.num_train_timesteps // c["steps"]
        info["cases"][case] = dict(c, timesteps=timesteps, prev_timesteps=[t - stride for t in timesteps],
                                   latent_shape=[1, 4, lh, lw])
        cross_check(pipe, c, timesteps, {k[len(case) + 1:]: v for k, v in tensors.items() if k.startswith(case + ".")})
    save(tensors, os.path.join(out_dir, "pipeline.safetensors"))
    with open(os.path.join(out_dir, "pipeline.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2, sort_keys=True)
        f.write("\n")
    return pipe


def hand_ddim_alphas(cfg):
    """alphas_cumprod written out from the scheduler config (float64), independent of diffusers."""
    T = cfg["num_train_timesteps"]
    assert cfg["beta_schedule"] == "scaled_linear"
    betas = torch.linspace(cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5, T, dtype=torch.float64) ** 2
    ac = torch.cumprod(1 - betas, 0)
    if cfg["rescale_betas_zero_snr"]:
        s = ac.sqrt()
        s0, sT = s[0].item(), s[-1].item()
        s = (s - sT) * (s0 / (s0 - sT))
        ac = s ** 2
    return ac


def hand_timesteps(cfg, n):
    T = cfg["num_train_timesteps"]
    if cfg["timestep_spacing"] == "leading":
        return [i * (T // n) + cfg["steps_offset"] for i in reversed(range(n))]
    if cfg["timestep_spacing"] == "trailing":
        return [int(round(T - i * T / n)) - 1 for i in range(n)]
    raise NotImplementedError(cfg["timestep_spacing"])


def cross_check(pipe, c, timesteps, g):
    """Re-run one case outside the pipeline: text encoder on [negative, prompt], a hand-written
    DDIM (float64 schedule) around the UNet, then the VAE. Confirms what each golden means."""
    cfg = dict(pipe.scheduler.config)
    assert hand_timesteps(cfg, c["steps"]) == timesteps, (hand_timesteps(cfg, c["steps"]), timesteps)
    ac = hand_ddim_alphas(cfg)
    final = 1.0 if cfg["set_alpha_to_one"] else ac[0].item()
    tok, te = pipe.tokenizer, pipe.text_encoder
    ids = [tok([p], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
           for p in (c["negative_prompt"], c["prompt"])]
    with torch.no_grad():
        emb = torch.cat([te(i).last_hidden_state for i in ids])
        assert torch.allclose(emb, g["prompt_embeds"], atol=1e-5), "prompt_embeds are not [negative, positive]"
        gen = torch.Generator().manual_seed(c["seed"])
        x = torch.randn([1, 4, c["height"] // 8, c["width"] // 8], generator=gen)
        stride = cfg["num_train_timesteps"] // c["steps"]
        for i, t in enumerate(timesteps):
            out = pipe.unet(torch.cat([x, x]), t, encoder_hidden_states=emb).sample
            assert torch.allclose(out, g[f"unet_out.{i}"], atol=1e-4, rtol=1e-5)
            uncond, text = out.double().chunk(2)
            m = uncond + c["guidance_scale"] * (text - uncond)
            a = ac[t].item()
            ap = ac[t - stride].item() if t - stride >= 0 else final
            xd = x.double()
            if cfg["prediction_type"] == "epsilon":
                x0, eps = (xd - (1 - a) ** 0.5 * m) / a ** 0.5, m
            else:
                x0, eps = a ** 0.5 * xd - (1 - a) ** 0.5 * m, a ** 0.5 * m + (1 - a) ** 0.5 * xd
            std = c["eta"] * ((1 - ap) / (1 - a) * (1 - a / ap)) ** 0.5
            xd = ap ** 0.5 * x0 + (1 - ap - std ** 2) ** 0.5 * eps
            if c["eta"] > 0:
                xd = xd + std * torch.randn(x.shape, generator=gen).double()
            x = xd.float()
            err = (x - g[f"latents.{i}"]).abs().max().item()
            assert err <= 1e-4 * max(1.0, g[f"latents.{i}"].abs().max().item()), f"latents.{i}: {err}"
        img = pipe.vae.decode(g[f"latents.{len(timesteps) - 1}"] / pipe.vae.config.scaling_factor).sample
        img = (img / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
        assert torch.allclose(img, g["image"], atol=1e-5), "image is not (decode(latents / sf) / 2 + 0.5).clamp(0, 1)"
    print(f"    cross-check ok (hand-written DDIM, {len(timesteps)} steps)")


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
    for name in ("tiny-sd1", "tiny-sd2"):
        folder = os.path.join(ROOT, "Models", name)
        out_dir = os.path.join(FIXTURES, name)
        print(f"{name}:")
        text_encoder_golden(folder, out_dir)
        unet_golden(folder, out_dir)
        vae_golden(folder, out_dir)
        pipeline_golden(folder, out_dir, name)


if __name__ == "__main__":
    main()
