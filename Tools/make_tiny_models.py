#!/usr/bin/env python3
"""Build the two tiny random Stable Diffusion pipelines used by the Swift parity tests.

    Models/tiny-sd1   SD1-style: CLIP quick_gelu text encoder, vocab.json+merges.txt tokenizer,
                      conv proj_in/proj_out, int attention_head_dim, epsilon / "leading" DDIM,
                      float32 weights, text encoder keys without a prefix (transformers 5.x).
    Models/tiny-sd2   SD2-style: gelu text encoder, tokenizer.json only (pad "!"), linear
                      proj_in/proj_out, per-block attention_head_dim, upcast_attention,
                      v_prediction / "trailing" / zero-terminal-SNR DDIM, float16 weights,
                      text encoder keys with the `text_model.` prefix (+ position_ids buffer) and
                      VAE attention keys in the legacy query/key/value/proj_attn spelling.

The weights are random (fixed seeds), but every parameter is drawn -- norm weights around 1,
biases small but non-zero -- so that a port that forgets a bias, a norm affine or a layer gets a
visibly different answer. Linear/conv weights are scaled by 1/sqrt(fan_in) so activations stay
O(1) through the network.

Run from anywhere:  Tools/.venv/bin/python Tools/make_tiny_models.py
Output is byte-identical from run to run.
"""
import json
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

import diffusers  # noqa: E402
import transformers  # noqa: E402
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

CLIP_TOKENIZER_DIR = os.path.join(ROOT, "Models", "clip-tokenizer")

# ---------------------------------------------------------------------------------------------
# Hand-written configs. Only the keys that matter are given; diffusers/transformers write the
# rest of their defaults into config.json when the folder is saved.
# ---------------------------------------------------------------------------------------------

SD1 = {
    "name": "tiny-sd1",
    "seed": 1001,
    "dtype": torch.float32,
    "text_encoder": dict(
        vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu",
        layer_norm_eps=1e-5, projection_dim=32,
        # the ids a real SD1 text_encoder/config.json carries (only the unused pooler reads eos)
        bos_token_id=0, eos_token_id=2, pad_token_id=1,
    ),
    "text_encoder_prefix": False,  # keep transformers 5.x spelling: no `text_model.` prefix
    "pad_token": "<|endoftext|>",
    "tokenizer_files": "vocab+merges",
    "unet": dict(
        sample_size=16, in_channels=4, out_channels=4, center_input_sample=False,
        flip_sin_to_cos=True, freq_shift=0,
        down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        block_out_channels=[24, 32, 48], layers_per_block=2, downsample_padding=1,
        mid_block_scale_factor=1, act_fn="silu", norm_num_groups=8, norm_eps=1e-5,
        cross_attention_dim=32, attention_head_dim=4, use_linear_projection=False,
        upcast_attention=False,
    ),
    "vae": dict(
        in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[16, 16, 32, 32], layers_per_block=1, act_fn="silu",
        latent_channels=4, norm_num_groups=8, sample_size=128, scaling_factor=0.18215,
    ),
    "vae_legacy_attention_keys": False,
    "scheduler": dict(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
        timestep_spacing="leading", rescale_betas_zero_snr=False,
    ),
}

SD2 = {
    "name": "tiny-sd2",
    "seed": 2002,
    "dtype": torch.float16,
    "text_encoder": dict(
        vocab_size=49408, hidden_size=48, intermediate_size=61, num_hidden_layers=3,
        num_attention_heads=3, max_position_embeddings=77, hidden_act="gelu",
        layer_norm_eps=1e-5, projection_dim=48,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=0,
    ),
    "text_encoder_prefix": True,  # real SD folders: `text_model.` prefix + position_ids buffer
    "pad_token": "!",
    "tokenizer_files": "tokenizer.json",
    "unet": dict(
        sample_size=16, in_channels=4, out_channels=4, center_input_sample=False,
        flip_sin_to_cos=True, freq_shift=0,
        down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        block_out_channels=[16, 32, 48], layers_per_block=2, downsample_padding=1,
        mid_block_scale_factor=1, act_fn="silu", norm_num_groups=8, norm_eps=1e-5,
        cross_attention_dim=48, attention_head_dim=[2, 4, 4], use_linear_projection=True,
        upcast_attention=True,
    ),
    "vae": dict(
        in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[16, 32, 32, 32], layers_per_block=2, act_fn="silu",
        latent_channels=4, norm_num_groups=8, sample_size=128, scaling_factor=0.13025,
    ),
    "vae_legacy_attention_keys": True,
    "scheduler": dict(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction",
        timestep_spacing="trailing", rescale_betas_zero_snr=True,
    ),
}

# ---------------------------------------------------------------------------------------------
# Random initialisation
# ---------------------------------------------------------------------------------------------

QK_NAMES = ("to_q", "to_k", "q_proj", "k_proj")


def randomize(model, seed, embedding_std=None):
    """Draw every parameter from a fixed generator, walking modules in name order.

    Linear/Conv: N(0, gain/sqrt(fan_in)), gain 1.5 on query/key projections so attention is
    visibly non-uniform; biases N(0, 0.05). GroupNorm/LayerNorm: weight N(1, 0.1), bias N(0, 0.1).
    Embeddings: N(0, std) from `embedding_std` (by module name).
    Fails if any parameter was left untouched.
    """
    g = torch.Generator().manual_seed(seed)
    done = set()
    with torch.no_grad():
        for name, module in sorted(model.named_modules(), key=lambda kv: kv[0]):
            params = dict(module.named_parameters(recurse=False))
            if not params:
                continue
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                w = module.weight
                fan_in = w[0].numel()
                gain = 1.5 if name.split(".")[-1] in QK_NAMES else 1.0
                w.copy_(torch.randn(w.shape, generator=g) * (gain / fan_in ** 0.5))
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=g) * 0.05)
            elif isinstance(module, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
                module.weight.copy_(1.0 + 0.1 * torch.randn(module.weight.shape, generator=g))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=g))
            elif isinstance(module, torch.nn.Embedding):
                std = embedding_std[name.split(".")[-1]]
                module.weight.copy_(torch.randn(module.weight.shape, generator=g) * std)
            else:
                raise RuntimeError(f"no init rule for {name} ({type(module).__name__})")
            for pname in params:
                done.add(f"{name}.{pname}" if name else pname)
    missing = {n for n, _ in model.named_parameters()} - done
    if missing:
        raise RuntimeError(f"parameters left at their default init: {sorted(missing)}")


# ---------------------------------------------------------------------------------------------
# Tokenizer files
# ---------------------------------------------------------------------------------------------


def added_token(content):
    # The AddedToken spelling real SD2 special_tokens_map.json files use.
    return {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")


def write_tokenizer(spec, out_dir):
    """SD1: vocab.json + merges.txt (+ configs), as the openai/clip-vit-large-patch14 folder.
    SD2: tokenizer.json only (+ configs), as transformers 5.x writes a fast tokenizer."""
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    pad = spec["pad_token"]
    config = {
        "add_prefix_space": False,
        "bos_token": "<|startoftext|>",
        "do_lower_case": True,
        "eos_token": "<|endoftext|>",
        "errors": "replace",
        "model_max_length": 77,
        "pad_token": pad,
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": "<|endoftext|>",
    }
    if spec["tokenizer_files"] == "vocab+merges":
        for fn in ("vocab.json", "merges.txt"):
            shutil.copyfile(os.path.join(CLIP_TOKENIZER_DIR, fn), os.path.join(out_dir, fn))
        special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                   "pad_token": pad, "unk_token": "<|endoftext|>"}
    else:
        tok = CLIPTokenizer.from_pretrained(CLIP_TOKENIZER_DIR, pad_token=pad, model_max_length=77)
        with tempfile.TemporaryDirectory() as tmp:
            tok.save_pretrained(tmp)
            # Re-serialised without indentation: same content, half the bytes (merges are pairs).
            text = Tokenizer.from_file(os.path.join(tmp, "tokenizer.json")).to_str(pretty=False)
        with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
            f.write(text)
        special = {"bos_token": added_token("<|startoftext|>"), "eos_token": added_token("<|endoftext|>"),
                   "pad_token": pad, "unk_token": added_token("<|endoftext|>")}
    write_json(os.path.join(out_dir, "tokenizer_config.json"), config)
    write_json(os.path.join(out_dir, "special_tokens_map.json"), special)


# ---------------------------------------------------------------------------------------------
# Key rewrites
# ---------------------------------------------------------------------------------------------


def rewrite_text_encoder_keys(path, want_prefix, max_positions):
    sd = load_file(path)
    has_prefix = all(k.startswith("text_model.") for k in sd)
    if want_prefix and not has_prefix:
        sd = {"text_model." + k: v for k, v in sd.items()}
        # Older transformers saved the position_ids buffer (int64) too; real SD folders carry it.
        sd["text_model.embeddings.position_ids"] = torch.arange(max_positions, dtype=torch.int64).unsqueeze(0)
    elif not want_prefix and has_prefix:
        sd = {k[len("text_model."):]: v for k, v in sd.items() if not k.endswith("position_ids")}
    save_file(sd, path, metadata={"format": "pt"})


LEGACY_VAE = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def rewrite_vae_legacy_keys(path):
    sd = load_file(path)
    out = {}
    n = 0
    for k, v in sd.items():
        nk = k
        if ".attentions." in k:
            for new, old in LEGACY_VAE.items():
                marker = f".{new}."
                if marker in k:
                    nk = k.replace(marker, f".{old}.")
                    n += 1
        out[nk] = v
    assert n == 16, f"expected 2 attention blocks x 4 linears x 2 tensors, rewrote {n}"
    save_file(out, path, metadata={"format": "pt"})


# ---------------------------------------------------------------------------------------------


def build(spec):
    out_dir = os.path.join(ROOT, "Models", spec["name"])
    seed = spec["seed"]
    te = CLIPTextModel(CLIPTextConfig(**spec["text_encoder"])).eval()
    randomize(te, seed + 1, embedding_std={"token_embedding": 1.0, "position_embedding": 0.5})
    unet = UNet2DConditionModel(**spec["unet"]).eval()
    randomize(unet, seed + 2)
    vae = AutoencoderKL(**spec["vae"]).eval()
    randomize(vae, seed + 3)
    scheduler = DDIMScheduler(**spec["scheduler"])
    dtype = spec["dtype"]
    # Round to the storage dtype first: every golden is computed from what is on disk.
    te, unet, vae = te.to(dtype), unet.to(dtype), vae.to(dtype)

    tok = CLIPTokenizer.from_pretrained(CLIP_TOKENIZER_DIR, pad_token=spec["pad_token"], model_max_length=77)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    # Keep files the repo owns (README.md) but drop everything we generate.
    if os.path.isdir(out_dir):
        for entry in os.listdir(out_dir):
            if entry == "README.md":
                continue
            p = os.path.join(out_dir, entry)
            shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
    os.makedirs(out_dir, exist_ok=True)
    pipe.save_pretrained(out_dir, safe_serialization=True)

    write_tokenizer(spec, os.path.join(out_dir, "tokenizer"))
    rewrite_text_encoder_keys(os.path.join(out_dir, "text_encoder", "model.safetensors"),
                              spec["text_encoder_prefix"], spec["text_encoder"]["max_position_embeddings"])
    if spec["vae_legacy_attention_keys"]:
        rewrite_vae_legacy_keys(os.path.join(out_dir, "vae", "diffusion_pytorch_model.safetensors"))

    # Normalise the JSON files (sorted keys, trailing newline) so reruns are byte-identical.
    for dirpath, _, files in os.walk(out_dir):
        for fn in files:
            if fn.endswith(".json") and fn not in ("vocab.json", "tokenizer.json"):
                p = os.path.join(dirpath, fn)
                with open(p, encoding="utf-8") as f:
                    obj = json.load(f)
                write_json(p, obj)
    verify(spec, out_dir, te, unet, vae)


def verify(spec, out_dir, te, unet, vae):
    """Reload the folder and check each module matches the in-memory one exactly."""
    pipe = StableDiffusionPipeline.from_pretrained(out_dir, dtype=torch.float32, safety_checker=None,
                                                   feature_extractor=None, requires_safety_checker=False)
    te, unet, vae = te.float(), unet.float(), vae.float()
    for m in (pipe.text_encoder, pipe.unet, pipe.vae):
        assert all(p.dtype == torch.float32 for p in m.parameters())
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        ids = pipe.tokenizer(["a photo of a red heart", ""], padding="max_length", max_length=77,
                             return_tensors="pt").input_ids
        a, b = te(ids).last_hidden_state, pipe.text_encoder(ids).last_hidden_state
        assert torch.equal(a, b), "text encoder differs after reload"
        x = torch.randn(2, 4, 16, 16, generator=g)
        c = torch.randn(2, 77, spec["unet"]["cross_attention_dim"], generator=g)
        a, b = unet(x, 501, c).sample, pipe.unet(x, 501, c).sample
        assert torch.equal(a, b), "unet differs after reload"
        z = torch.randn(1, 4, 16, 16, generator=g)
        a, b = vae.decode(z).sample, pipe.vae.decode(z).sample
        assert torch.equal(a, b), "vae differs after reload (legacy attention keys?)"
    print(f"{spec['name']}: reload check ok; pad={pipe.tokenizer.pad_token!r} id={pipe.tokenizer.pad_token_id} "
          f"max_len={pipe.tokenizer.model_max_length}")


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    try:
        import ftfy  # noqa: F401
        sys.exit("ftfy is installed: CLIPTokenizer would clean text differently. Remove it from the venv.")
    except ImportError:
        pass
    for spec in (SD1, SD2):
        build(spec)


if __name__ == "__main__":
    main()
