#!/usr/bin/env python3
"""Single-file (original LDM layout) checkpoints for the Swift SingleFileTests.

A diffusers folder is converted to one .safetensors file in the key layout of the original
CompVis/Stability checkpoints (`model.diffusion_model.*`, `first_stage_model.*`,
`cond_stage_model.*`) by `to_ldm` below: the inverse of diffusers' single-file conversion,
written here from the two layouts. Every file is then VERIFIED with diffusers' own loader:
`StableDiffusionPipeline.from_single_file(file, config=<folder>)` must rebuild every module
bit-for-bit and render the same images as the folder for the same seeds.

Writes Tests/DarkroomTests/Fixtures/singlefile/:
    tiny-sd1.safetensors    Models/tiny-sd1 as an SD 1.x checkpoint (CLIP text encoder under
                            cond_stage_model.transformer.text_model.*); mixed dtypes: text encoder
                            F16, UNet BF16, VAE F32 (so the image differs from the fp32 folder's:
                            expected outputs come from diffusers on this file)
    tiny-sd1.expected.safetensors   diffusers' from_single_file renders of that file
    tiny-sd2.safetensors    Models/tiny-sd2 (float16 folder) as an SD 2.x checkpoint: OpenCLIP
                            names, fused q/k/v `in_proj_weight`, an extra last residual block
                            (SD 2 conditions on the penultimate layer: diffusers drops the last
                            block, so must Darkroom), `text_projection`, `logit_scale`. F16 as the
                            folder, i.e. lossless: it renders the folder's golden images exactly
    sd15-header.json, sd21-header.json   safetensors headers (names, dtypes, shapes, offsets)
                            of full-size SD 1.5 and SD 2.1 checkpoints made by this converter
                            from the standard configs (meta tensors, no weights): the tests write
                            them as sparse files to check inference on real shapes
    singlefile.json         per model: the overrides Darkroom needs for the tiny (non-standard)
                            sizes, the render cases, where the expected outputs are

Both checkpoints also carry what real ones carry and a loader must skip: LDM's schedule
buffers (`betas`, `alphas_cumprod`, ...), `model_ema.decay`/`num_updates`, and (SD 1) the
`position_ids` buffer.

    Tools/.venv/bin/python Tools/fixtures_singlefile.py             # fixtures (byte-identical reruns)
    Tools/.venv/bin/python Tools/fixtures_singlefile.py --convert FOLDER OUT.safetensors [--sd2] [--dtype f16]
                                                                    # any diffusers SD folder, verified
"""
import argparse
import json
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

for k, v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
             "HF_HUB_DISABLE_TELEMETRY": "1", "TRANSFORMERS_VERBOSITY": "error",
             "DIFFUSERS_VERBOSITY": "error"}.items():
    os.environ.setdefault(k, v)

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel  # noqa: E402
from diffusers.utils import logging as diffusers_logging  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402

OUT = os.path.join(ROOT, "Tests", "DarkroomTests", "Fixtures", "singlefile")
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}

# ---------------------------------------------------------------------------------------------
# diffusers -> LDM names


UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
               "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "conv_shortcut": "nin_shortcut"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "query": "q", "to_k": "k", "key": "k", "to_v": "v",
                 "value": "v", "to_out.0": "proj_out", "proj_attn": "proj_out"}


def _resnet(rest, table):
    for new, old in table.items():
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    raise KeyError(rest)


def unet_to_ldm(sd, cfg):
    """UNet2DConditionModel state dict -> `model.diffusion_model.*`."""
    lpb = cfg["layers_per_block"]
    assert isinstance(lpb, int), "LDM has one num_res_blocks for every level"
    up_types = cfg["up_block_types"]
    out = {}
    for k, v in sd.items():
        p = k.split(".")
        if k.startswith("time_embedding.linear_1."):
            n = "time_embed.0." + p[-1]
        elif k.startswith("time_embedding.linear_2."):
            n = "time_embed.2." + p[-1]
        elif k.startswith("conv_in."):
            n = "input_blocks.0.0." + p[-1]
        elif k.startswith("conv_norm_out."):
            n = "out.0." + p[-1]
        elif k.startswith("conv_out."):
            n = "out.2." + p[-1]
        elif p[0] == "down_blocks":
            b, kind = int(p[1]), p[2]
            rest = ".".join(p[4:])
            if kind == "resnets":
                n = f"input_blocks.{1 + b * (lpb + 1) + int(p[3])}.0." + _resnet(rest, UNET_RESNET)
            elif kind == "attentions":
                n = f"input_blocks.{1 + b * (lpb + 1) + int(p[3])}.1." + rest
            elif kind == "downsamplers":
                assert p[4] == "conv"
                n = f"input_blocks.{1 + b * (lpb + 1) + lpb}.0.op." + p[-1]
            else:
                raise KeyError(k)
        elif p[0] == "mid_block":
            rest = ".".join(p[3:])
            if p[1] == "resnets":
                n = f"middle_block.{2 * int(p[2])}." + _resnet(rest, UNET_RESNET)
            elif p[1] == "attentions":
                n = "middle_block.1." + rest
            else:
                raise KeyError(k)
        elif p[0] == "up_blocks":
            b, kind = int(p[1]), p[2]
            rest = ".".join(p[4:])
            if kind == "resnets":
                n = f"output_blocks.{b * (lpb + 1) + int(p[3])}.0." + _resnet(rest, UNET_RESNET)
            elif kind == "attentions":
                n = f"output_blocks.{b * (lpb + 1) + int(p[3])}.1." + rest
            elif kind == "upsamplers":
                sub = 2 if up_types[b].startswith("CrossAttn") else 1
                n = f"output_blocks.{b * (lpb + 1) + lpb}.{sub}.conv." + p[-1]
            else:
                raise KeyError(k)
        else:
            raise KeyError(k)
        assert n not in out, n
        out["model.diffusion_model." + n] = v
    return out


def vae_to_ldm(sd, cfg):
    """AutoencoderKL state dict (either attention spelling) -> `first_stage_model.*`; the mid-block
    attention projections become 1x1 convolutions as in LDM."""
    levels = len(cfg["block_out_channels"])
    out = {}
    for k, v in sd.items():
        p = k.split(".")
        side = p[0]
        if side in ("quant_conv", "post_quant_conv"):
            n = k
        elif p[1] in ("conv_in", "conv_out"):
            n = k
        elif p[1] == "conv_norm_out":
            n = f"{side}.norm_out." + p[-1]
        elif p[1] == "mid_block":
            rest = ".".join(p[4:])
            if p[2] == "resnets":
                n = f"{side}.mid.block_{int(p[3]) + 1}." + _resnet(rest, VAE_RESNET)
            else:
                n = f"{side}.mid.attn_1." + _resnet(rest, VAE_ATTENTION)
                if n.endswith(("q.weight", "k.weight", "v.weight", "proj_out.weight")) and v.dim() == 2:
                    v = v[:, :, None, None]
        elif p[1] == "down_blocks":
            i, rest = int(p[2]), ".".join(p[5:])
            if p[3] == "resnets":
                n = f"encoder.down.{i}.block.{p[4]}." + _resnet(rest, VAE_RESNET)
            else:
                n = f"encoder.down.{i}.downsample.conv." + p[-1]
        elif p[1] == "up_blocks":
            i, rest = levels - 1 - int(p[2]), ".".join(p[5:])
            if p[3] == "resnets":
                n = f"decoder.up.{i}.block.{p[4]}." + _resnet(rest, VAE_RESNET)
            else:
                n = f"decoder.up.{i}.upsample.conv." + p[-1]
        else:
            raise KeyError(k)
        assert n not in out, n
        out["first_stage_model." + n] = v.contiguous()
    return out


def clip_to_ldm(sd, cfg):
    """CLIPTextModel -> SD 1's `cond_stage_model.transformer.text_model.*` (+ position_ids)."""
    out = {}
    for k, v in sd.items():
        k = k[len("text_model."):] if k.startswith("text_model.") else k
        if k.endswith("position_ids"):
            continue
        out["cond_stage_model.transformer.text_model." + k] = v
    out["cond_stage_model.transformer.text_model.embeddings.position_ids"] = \
        torch.arange(cfg["max_position_embeddings"], dtype=torch.int64)[None]
    return out


def open_clip_to_ldm(sd, cfg, seed=1234):
    """CLIPTextModel -> SD 2's OpenCLIP `cond_stage_model.model.*`. The folder's N layers are the
    first N residual blocks; block N is the unused last block of the real model (random here),
    plus `text_projection` [width, width] and `logit_scale`."""
    sd = {(k[len("text_model."):] if k.startswith("text_model.") else k): v for k, v in sd.items()}
    n_layers, h = cfg["num_hidden_layers"], cfg["hidden_size"]
    p = "cond_stage_model.model."
    out = {p + "token_embedding.weight": sd["embeddings.token_embedding.weight"],
           p + "positional_embedding": sd["embeddings.position_embedding.weight"],
           p + "ln_final.weight": sd["final_layer_norm.weight"],
           p + "ln_final.bias": sd["final_layer_norm.bias"]}
    like = sd["final_layer_norm.weight"]
    for i in range(n_layers):
        s, r = f"encoder.layers.{i}.", f"{p}transformer.resblocks.{i}."
        out[r + "ln_1.weight"], out[r + "ln_1.bias"] = sd[s + "layer_norm1.weight"], sd[s + "layer_norm1.bias"]
        out[r + "ln_2.weight"], out[r + "ln_2.bias"] = sd[s + "layer_norm2.weight"], sd[s + "layer_norm2.bias"]
        out[r + "attn.in_proj_weight"] = torch.cat([sd[s + f"self_attn.{x}_proj.weight"] for x in "qkv"], 0)
        out[r + "attn.in_proj_bias"] = torch.cat([sd[s + f"self_attn.{x}_proj.bias"] for x in "qkv"], 0)
        out[r + "attn.out_proj.weight"], out[r + "attn.out_proj.bias"] = sd[s + "self_attn.out_proj.weight"], sd[s + "self_attn.out_proj.bias"]
        out[r + "mlp.c_fc.weight"], out[r + "mlp.c_fc.bias"] = sd[s + "mlp.fc1.weight"], sd[s + "mlp.fc1.bias"]
        out[r + "mlp.c_proj.weight"], out[r + "mlp.c_proj.bias"] = sd[s + "mlp.fc2.weight"], sd[s + "mlp.fc2.bias"]
    # The last block: present in every SD 2 checkpoint, skipped by LDM, diffusers and Darkroom.
    g = torch.Generator().manual_seed(seed)
    last = f"{p}transformer.resblocks.{n_layers}."
    template = {k[len(f"{p}transformer.resblocks.0."):]: v for k, v in out.items() if k.startswith(f"{p}transformer.resblocks.0.")}
    for name, t in template.items():
        out[last + name] = _random_like(t, g, std=1.0 / math.sqrt(t.shape[-1]) if t.dim() == 2 else 0.5)
    out[p + "text_projection"] = _random_like(torch.empty(h, h, dtype=like.dtype, device=like.device), g, 1 / math.sqrt(h))
    out[p + "logit_scale"] = torch.tensor(math.log(100.0), dtype=torch.float32, device=like.device)
    return out


def _random_like(t, g, std):
    if t.device.type == "meta":
        return torch.empty_like(t)
    return (torch.randn(t.shape, generator=g) * std).to(t.dtype)


def ldm_buffers(device="cpu"):
    """What LDM's DDPM wrapper saves besides weights (a selection of the real set)."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    return {"betas": betas.float().to(device), "alphas_cumprod": alphas_cumprod.float().to(device),
            "alphas_cumprod_prev": torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]]).float().to(device),
            "model_ema.decay": torch.tensor(0.9999, dtype=torch.float32, device=device),
            "model_ema.num_updates": torch.tensor(0, dtype=torch.int32, device=device)}


def to_ldm(unet_sd, unet_cfg, vae_sd, vae_cfg, te_sd, te_cfg, open_clip, dtypes):
    """The whole checkpoint; `dtypes` maps unet/vae/text_encoder to a torch dtype (None keeps)."""
    def cast(d, dt):
        return {k: (v.to(dt) if dt is not None and v.is_floating_point() else v).contiguous() for k, v in d.items()}
    te = open_clip_to_ldm(te_sd, te_cfg) if open_clip else clip_to_ldm(te_sd, te_cfg)
    out = {}
    out.update(cast(unet_to_ldm(unet_sd, unet_cfg), dtypes.get("unet")))
    out.update(cast(vae_to_ldm(vae_sd, vae_cfg), dtypes.get("vae")))
    te_dtype = dtypes.get("text_encoder")
    out.update({k: (v.to(te_dtype) if te_dtype is not None and v.is_floating_point() and not k.endswith("logit_scale") else v).contiguous()
                for k, v in te.items()})
    out.update(ldm_buffers(next(iter(unet_sd.values())).device))
    return out


# ---------------------------------------------------------------------------------------------
# Reading folders, verifying with diffusers


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_component(folder, sub, stem):
    path = os.path.join(folder, sub, f"{stem}.safetensors")
    with safe_open(path, "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def load_folder(folder):
    return dict(unet_sd=load_component(folder, "unet", "diffusion_pytorch_model"),
                unet_cfg=read_json(os.path.join(folder, "unet", "config.json")),
                vae_sd=load_component(folder, "vae", "diffusion_pytorch_model"),
                vae_cfg=read_json(os.path.join(folder, "vae", "config.json")),
                te_sd=load_component(folder, "text_encoder", "model"),
                te_cfg=read_json(os.path.join(folder, "text_encoder", "config.json")))


def save(tensors, path, metadata=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file(tensors, path, metadata=metadata or {"format": "pt"})
    print(f"  wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes)")


def folder_pipeline(folder):
    pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=torch.float32, safety_checker=None,
                                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def single_file_pipeline(path, folder):
    pipe = StableDiffusionPipeline.from_single_file(path, config=folder, torch_dtype=torch.float32,
                                                    local_files_only=True, safety_checker=None,
                                                    feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def strip_text_model(sd):
    return {(k[len("text_model."):] if k.startswith("text_model.") else k): v for k, v in sd.items()}


def compare_modules(a, b, label, rounded=None):
    """Every parameter of pipeline b equals pipeline a's (after rounding a to `rounded` dtypes)."""
    for name in ("unet", "vae", "text_encoder"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        if name == "text_encoder":
            sa, sb = strip_text_model(sa), strip_text_model(sb)
        sa = {k: v for k, v in sa.items() if not k.endswith("position_ids")}
        sb = {k: v for k, v in sb.items() if not k.endswith("position_ids")}
        assert sa.keys() == sb.keys(), f"{label} {name}: keys differ: {sorted(set(sa) ^ set(sb))[:5]}"
        dt = (rounded or {}).get(name)
        for k in sa:
            x = sa[k].to(dt).float() if dt is not None and sa[k].is_floating_point() else sa[k]
            assert torch.equal(x, sb[k].to(x.dtype)), f"{label} {name}.{k} differs"
        print(f"    {label}: {name} parameters identical ({len(sa)} tensors)")


def render(pipe, c):
    gen = torch.Generator().manual_seed(c["seed"])
    seen = {}

    def pre(_m, args, kwargs):
        seen.setdefault("prompt_embeds", kwargs["encoder_hidden_states"].detach().float().clone())

    h = pipe.unet.register_forward_pre_hook(pre, with_kwargs=True)
    with torch.no_grad():
        image = pipe(c["prompt"], negative_prompt=c["negative_prompt"], height=c["height"], width=c["width"],
                     num_inference_steps=c["steps"], guidance_scale=c["guidance_scale"], eta=c["eta"],
                     generator=gen, output_type="np").images
    h.remove()
    return torch.from_numpy(image).float().contiguous(), seen["prompt_embeds"]


def convert_folder(folder, out_path, open_clip, dtypes):
    f = load_folder(folder)
    tensors = to_ldm(f["unet_sd"], f["unet_cfg"], f["vae_sd"], f["vae_cfg"], f["te_sd"], f["te_cfg"], open_clip, dtypes)
    save(tensors, out_path)
    return tensors


def verify(folder, path, cases, rounded=None, exact=True):
    """from_single_file(path, config=folder) against from_pretrained(folder)."""
    ref, single = folder_pipeline(folder), single_file_pipeline(path, folder)
    compare_modules(ref, single, os.path.basename(path), rounded)
    results = {}
    for name, c in cases.items():
        img_s, emb_s = render(single, c)
        if exact:
            img_r, emb_r = render(ref, c)
            assert torch.equal(img_r, img_s) and torch.equal(emb_r, emb_s), f"{name}: single file renders differently"
            print(f"    {name}: same image as the folder (bit-identical), max {img_s.abs().max():.4f}")
        results[name] = (img_s, emb_s)
    return results


# ---------------------------------------------------------------------------------------------
# Standard SD 1.5 / SD 2.1 configs, for headers of full-size checkpoints


SD_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
               block_out_channels=[320, 640, 1280, 1280],
               down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
               up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
               cross_attention_dim=768, attention_head_dim=8)
SD21_UNET = dict(SD_UNET, sample_size=96, cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20],
                 use_linear_projection=True, upcast_attention=True)
SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
              block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
              up_block_types=["UpDecoderBlock2D"] * 4)
SD15_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu")
SD21_TEXT = dict(SD15_TEXT, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                 num_attention_heads=16, hidden_act="gelu", projection_dim=512)


def header_of(unet_cfg, vae_cfg, te_cfg, open_clip):
    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_cfg)
        vae = AutoencoderKL(**vae_cfg)
        te = CLIPTextModel(CLIPTextConfig(**te_cfg))
    # Real SD 1.x/2.x files are mostly float16 with float32 buffers.
    tensors = to_ldm(unet.state_dict(), unet_cfg, vae.state_dict(), vae_cfg, te.state_dict(), te_cfg, open_clip,
                     {"unet": torch.float16, "vae": torch.float16, "text_encoder": torch.float16})
    counts = {"unet": len(unet.state_dict()), "vae": len(vae.state_dict()),
              "text_encoder": len([k for k in te.state_dict() if not k.endswith("position_ids")])}
    names = {torch.float16: "F16", torch.float32: "F32", torch.int64: "I64", torch.int32: "I32"}
    header, offset = {}, 0
    for k in sorted(tensors):
        t = tensors[k]
        size = t.numel() * t.element_size()
        header[k] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    return header, counts


def write_header(path, header):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(header, f, sort_keys=True, separators=(",", ":"))
        f.write("\n")
    print(f"  wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes, {len(header)} tensors)")


# ---------------------------------------------------------------------------------------------


def overrides_for(folder):
    """What Darkroom cannot infer for the tiny models (their sizes are not SD's)."""
    unet, vae, te = (read_json(os.path.join(folder, s, "config.json")) for s in ("unet", "vae", "text_encoder"))
    sched = read_json(os.path.join(folder, "scheduler", "scheduler_config.json"))
    heads = unet["attention_head_dim"]
    heads = heads if isinstance(heads, list) else [heads] * len(unet["block_out_channels"])
    return {"unet_attention_heads": heads, "text_attention_heads": te["num_attention_heads"],
            "unet_norm_groups": unet["norm_num_groups"], "vae_norm_groups": vae["norm_num_groups"],
            "vae_scaling_factor": vae["scaling_factor"],
            "image_size": unet["sample_size"] * 2 ** (len(vae["block_out_channels"]) - 1),
            "scheduler": {k: v for k, v in sched.items() if not k.startswith("_")}}


def fixtures():
    spec = {"note": "written by Tools/fixtures_singlefile.py", "models": {}}

    # tiny-sd1: a lossless fp32 file first (verified bit-identical to the folder), then the
    # committed mixed-dtype one, whose renders by diffusers are the expected outputs.
    folder = os.path.join(ROOT, "Models", "tiny-sd1")
    cases = read_json(os.path.join(ROOT, "Tests", "DarkroomTests", "Fixtures", "tiny-sd1", "pipeline.json"))["cases"]
    cases = {k: {f: v[f] for f in ("prompt", "negative_prompt", "seed", "steps", "guidance_scale", "height", "width", "eta")}
             for k, v in cases.items()}
    tmp = os.path.join("/tmp", "darkroom-singlefile-tiny-sd1-f32.safetensors")
    print("tiny-sd1, float32 (lossless):")
    convert_folder(folder, tmp, open_clip=False, dtypes={})
    verify(folder, tmp, cases)
    os.remove(tmp)
    print("tiny-sd1, committed (text encoder F16, UNet BF16, VAE F32):")
    mixed = {"text_encoder": torch.float16, "unet": torch.bfloat16, "vae": torch.float32}
    path = os.path.join(OUT, "tiny-sd1.safetensors")
    convert_folder(folder, path, open_clip=False, dtypes=mixed)
    results = verify(folder, path, cases, rounded=mixed, exact=False)
    expected = {}
    for name, (img, emb) in results.items():
        expected[f"{name}.image"], expected[f"{name}.prompt_embeds"] = img, emb
        print(f"    {name}: image max {img.abs().max():.4f} std {img.std():.4f}")
    save(expected, os.path.join(OUT, "tiny-sd1.expected.safetensors"))
    spec["models"]["tiny-sd1"] = {"checkpoint": "singlefile/tiny-sd1.safetensors", "folder": "Models/tiny-sd1",
                                  "family": "sd1", "prediction_type": "epsilon",
                                  "expected": "singlefile/tiny-sd1.expected.safetensors",
                                  "overrides": overrides_for(folder), "cases": cases}

    # tiny-sd2: stored in the folder's float16, so the committed file is lossless and renders
    # exactly the folder's goldens (Fixtures/tiny-sd2/pipeline.safetensors).
    folder = os.path.join(ROOT, "Models", "tiny-sd2")
    golden_json = read_json(os.path.join(ROOT, "Tests", "DarkroomTests", "Fixtures", "tiny-sd2", "pipeline.json"))
    cases = {k: {f: v[f] for f in ("prompt", "negative_prompt", "seed", "steps", "guidance_scale", "height", "width", "eta")}
             for k, v in golden_json["cases"].items()}
    print("tiny-sd2, F16 as the folder (lossless):")
    path = os.path.join(OUT, "tiny-sd2.safetensors")
    convert_folder(folder, path, open_clip=True, dtypes={})
    results = verify(folder, path, cases)
    # The committed goldens were rendered from the folder by another run of PyTorch, whose
    # float32 reductions may be ordered differently (thread count): equal within 1e-4.
    with safe_open(os.path.join(ROOT, "Tests", "DarkroomTests", "Fixtures", "tiny-sd2", "pipeline.safetensors"), "pt") as g:
        for name, (img, emb) in results.items():
            d_img = (img - g.get_tensor(f"{name}.image")).abs().max().item()
            d_emb = (emb - g.get_tensor(f"{name}.prompt_embeds")).abs().max().item()
            print(f"    {name}: vs Fixtures/tiny-sd2/pipeline.safetensors: image {d_img:.2e}, embeddings {d_emb:.2e}")
            assert d_img < 1e-4 and d_emb < 1e-5, f"{name}: differs from the folder golden"
    spec["models"]["tiny-sd2"] = {"checkpoint": "singlefile/tiny-sd2.safetensors", "folder": "Models/tiny-sd2",
                                  "family": "sd2", "prediction_type": "v_prediction",
                                  "expected": "tiny-sd2/pipeline.safetensors",
                                  "overrides": overrides_for(folder), "cases": cases}

    print("headers of full-size checkpoints:")
    h15, n15 = header_of(SD_UNET, SD_VAE, SD15_TEXT, open_clip=False)
    h21, n21 = header_of(SD21_UNET, SD_VAE, SD21_TEXT, open_clip=True)
    write_header(os.path.join(OUT, "sd15-header.json"), h15)
    write_header(os.path.join(OUT, "sd21-header.json"), h21)
    # `diffusers_tensors`: how many tensors each diffusers module has (what the mapping must yield).
    spec["headers"] = {
        "sd15": {"file": "singlefile/sd15-header.json", "family": "sd1", "prediction_type": "epsilon", "image_size": 512,
                 "unet": SD_UNET, "vae": dict(SD_VAE, scaling_factor=0.18215), "text_encoder": SD15_TEXT,
                 "diffusers_tensors": n15},
        "sd21": {"file": "singlefile/sd21-header.json", "family": "sd2", "prediction_type": "v_prediction", "image_size": 768,
                 "unet": SD21_UNET, "vae": dict(SD_VAE, sample_size=768, scaling_factor=0.18215), "text_encoder": SD21_TEXT,
                 "diffusers_tensors": n21},
    }
    with open(os.path.join(OUT, "singlefile.json"), "w", encoding="utf-8") as f:
        json.dump(spec, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"  wrote {os.path.relpath(os.path.join(OUT, 'singlefile.json'), ROOT)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--convert", nargs=2, metavar=("FOLDER", "OUT"), help="convert a diffusers SD folder and verify it")
    ap.add_argument("--sd2", action="store_true", help="write the text encoder as OpenCLIP (SD 2.x)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), help="store every weight in this dtype (default: as in the folder)")
    ap.add_argument("--no-verify", action="store_true", help="skip the diffusers round trip (large models)")
    args = ap.parse_args()
    torch.manual_seed(0)
    diffusers_logging.disable_progress_bar()
    if args.convert:
        folder, out = args.convert
        dt = DTYPES[args.dtype] if args.dtype else None
        dtypes = {k: dt for k in ("unet", "vae", "text_encoder")}
        convert_folder(folder, out, open_clip=args.sd2, dtypes=dtypes)
        if not args.no_verify:
            case = {"x": dict(prompt="a photo of a cat", negative_prompt="", seed=1, steps=2, guidance_scale=7.5,
                              height=64, width=64, eta=0.0)}
            verify(folder, out, case, rounded=dtypes if dt is not None else None, exact=dt is None)
        return
    fixtures()


if __name__ == "__main__":
    sys.exit(main())
