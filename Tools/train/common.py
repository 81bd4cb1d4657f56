"""Shared pieces of the Darkroom emoji training recipe: model configs, dataset, tokenizer, checkpoints."""
import csv
import json
import os
import random
import shutil
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLIP_VOCAB = os.path.join(REPO, "Models", "clip-tokenizer")
# Training state (checkpoints, logs, latents, tokenizer copy); outside the repo.
WORK = os.environ.get("DARKROOM_TRAIN_DIR", "/work/darkroom-train")

# Tokens per prompt. Captions are at most ~30 CLIP tokens with keywords; 32 positions instead of
# 77 cut the text encoder's and the cross-attention's cost by 2.4x. The tokenizer's
# model_max_length is written to match, so every pipeline pads/truncates to 32.
MAX_TOKENS = 32

TEXT_CONFIG = dict(
    vocab_size=49408, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
    num_attention_heads=4, max_position_embeddings=MAX_TOKENS, hidden_act="quick_gelu",
    layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    projection_dim=256,
)

# f=4 autoencoder: 64x64x3 pixels <-> 16x16x4 latents.
VAE_CONFIG = dict(
    in_channels=3, out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
    block_out_channels=[32, 64, 128], layers_per_block=1, act_fn="silu", latent_channels=4,
    norm_num_groups=32, sample_size=64, scaling_factor=1.0,
)

# UNet candidates timed by `train.py pilot`; `unet` trains the one named by --unet.
UNET_CONFIGS = {
    "xs": dict(block_out_channels=[64, 128, 128], layers_per_block=1, attention_head_dim=[2, 4, 4],
               down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
               up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]),
    "s": dict(block_out_channels=[64, 128, 192], layers_per_block=1, attention_head_dim=[2, 4, 6],
              down_block_types=["CrossAttnDownBlock2D"] * 3, up_block_types=["CrossAttnUpBlock2D"] * 3),
    "m": dict(block_out_channels=[96, 192, 288], layers_per_block=1, attention_head_dim=[3, 6, 9],
              down_block_types=["CrossAttnDownBlock2D"] * 3, up_block_types=["CrossAttnUpBlock2D"] * 3),
    "l": dict(block_out_channels=[128, 256, 256], layers_per_block=2, attention_head_dim=[4, 8, 8],
              down_block_types=["CrossAttnDownBlock2D"] * 3, up_block_types=["CrossAttnUpBlock2D"] * 3),
    "s2": dict(block_out_channels=[64, 128, 256], layers_per_block=2, attention_head_dim=[2, 4, 8],
               down_block_types=["CrossAttnDownBlock2D"] * 3, up_block_types=["CrossAttnUpBlock2D"] * 3),
}


def unet_config(name):
    c = dict(sample_size=16, in_channels=4, out_channels=4, center_input_sample=False,
             flip_sin_to_cos=True, freq_shift=0, mid_block_type="UNetMidBlock2DCrossAttn",
             norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=TEXT_CONFIG["hidden_size"],
             use_linear_projection=True, act_fn="silu", downsample_padding=1)
    c.update(UNET_CONFIGS[name])
    return c


SCHEDULER_CONFIG = dict(
    _class_name="DDIMScheduler", num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02,
    beta_schedule="linear", prediction_type="epsilon", clip_sample=False, set_alpha_to_one=False,
    steps_offset=0, timestep_spacing="trailing", rescale_betas_zero_snr=False,
)


def training_scheduler():
    """The noise schedule of training: a DDPMScheduler on SCHEDULER_CONFIG (without the DDIM-only keys)."""
    from diffusers import DDPMScheduler
    return DDPMScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items()
                            if not k.startswith("_") and k not in ("set_alpha_to_one", "steps_offset")})


# A file holding a thread count (1 or 2) that a running job rereads every few steps, so a long
# run can give a core back to other work on the shared machine without stopping.
THREADS_FILE = os.environ.get("DARKROOM_TRAIN_THREADS_FILE", os.path.join(WORK, "threads"))


def set_threads():
    torch.set_num_threads(2)
    torch.set_num_interop_threads(1)
    poll_threads()


def poll_threads():
    try:
        n = int(open(THREADS_FILE).read().strip())
    except (OSError, ValueError):
        return
    if n >= 1 and n != torch.get_num_threads():
        torch.set_num_threads(n)
        print("threads ->", n, flush=True)


BF16_HELP = ("run the forward pass under torch.autocast(bfloat16): matmuls and convolutions in bf16 with fp32 "
             "accumulation (AMX / AVX512-BF16 kernels where the CPU has them); attention, weights, optimizer "
             "and loss stay fp32")


def autocast(enabled):
    """bf16 autocast on the CPU, or a no-op context. The first call with enabled=True also routes
    scaled_dot_product_attention through fp32: PyTorch's bf16 flash-attention backward on the CPU
    took 3x the time of the fp32 one here (torch 2.13, head widths 32-64), which ate the gain."""
    if enabled and not getattr(torch.nn.functional.scaled_dot_product_attention, "darkroom_fp32", False):
        bf16_sdpa = torch.nn.functional.scaled_dot_product_attention

        def sdpa_fp32(q, k, v, *args, **kwargs):
            with torch.autocast("cpu", enabled=False):
                return bf16_sdpa(q.float(), k.float(), v.float(), *args, **kwargs).to(q.dtype)

        sdpa_fp32.darkroom_fp32 = True
        torch.nn.functional.scaled_dot_product_attention = sdpa_fp32
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


def adamw(params, **kwargs):
    """AdamW with PyTorch's fused CPU kernel: one pass over each tensor instead of ~10 foreach ops
    (measured 0.107 -> 0.083 CPU-s per sample for UNet `s` at batch 16; the 12.6M-row token
    embedding makes the optimizer a fifth of a step)."""
    return torch.optim.AdamW(params, fused=True, **kwargs)


def keep_fused(opt):
    """A resumed optimizer takes its param-group flags from the checkpoint; set fused again."""
    for g in opt.param_groups:
        g["fused"], g["foreach"] = True, False


def write_tokenizer(folder):
    """CLIP BPE files in the Hugging Face layout, padded with <|endoftext|> to MAX_TOKENS."""
    os.makedirs(folder, exist_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(os.path.join(CLIP_VOCAB, name), os.path.join(folder, name))
    eot = "<|endoftext|>"
    cfg = {
        "tokenizer_class": "CLIPTokenizer", "model_max_length": MAX_TOKENS, "do_lower_case": True,
        "bos_token": "<|startoftext|>", "eos_token": eot, "unk_token": eot, "pad_token": eot,
        "errors": "replace", "clean_up_tokenization_spaces": False,
    }
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
        json.dump({"bos_token": "<|startoftext|>", "eos_token": eot, "pad_token": eot, "unk_token": eot},
                  f, indent=2, sort_keys=True)
        f.write("\n")


def load_tokenizer():
    from transformers import CLIPTokenizer
    folder = os.path.join(WORK, "tokenizer")
    write_tokenizer(folder)
    return CLIPTokenizer.from_pretrained(folder)


def tokenize(tok, texts):
    return tok(texts, padding="max_length", max_length=MAX_TOKENS, truncation=True,
               return_tensors="pt").input_ids


def load_dataset(path):
    recs = [json.loads(l) for l in open(os.path.join(path, "metadata.jsonl"), encoding="utf-8")]
    images = np.load(os.path.join(path, "images.npy"))
    assert len(recs) == len(images)
    return recs, images


def sampling_weights(recs):
    """Rebalance: every base emoji (skin tones and duplicate designs folded) gets the same mass;
    within a base, the default (yellow / toneless) variants share half of it and the skin-tone
    variants the other half. People & Body falls from 60% of the images to ~20% of the draws."""
    bases = {}
    for i, r in enumerate(recs):
        bases.setdefault(r["base"], []).append(i)
    w = np.zeros(len(recs))
    for idx in bases.values():
        plain = [i for i in idx if not recs[i]["skin_tone"]]
        toned = [i for i in idx if recs[i]["skin_tone"]]
        for part, share in ((plain, 0.5 if toned else 1.0), (toned, 0.5 if plain else 1.0)):
            for i in part:
                w[i] = share / len(part)
    return w / w.sum()


def to_pixels(images):
    """uint8 NHWC -> float NCHW in [-1, 1]."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


class Checkpointer:
    """Atomic checkpoints (write temp, fsync, rename) and a CSV loss log."""

    def __init__(self, folder, every_seconds=600):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        self.path = os.path.join(folder, "checkpoint.pt")
        self.every = every_seconds
        self.last = time.time()

    def exists(self):
        return os.path.exists(self.path)

    def load(self):
        return torch.load(self.path, map_location="cpu", weights_only=False)

    def due(self):
        return time.time() - self.last >= self.every

    def save(self, state):
        tmp = self.path + ".tmp"
        torch.save(state, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.last = time.time()

    def log(self, row, header):
        path = os.path.join(self.folder, "loss.csv")
        new = not os.path.exists(path)
        with open(path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(header)
            w.writerow(row)


def resume(ck, modules, opt, gen, label):
    """Loads ck's checkpoint into modules ({state key: module}), opt and gen; returns (step, spent)."""
    st = ck.load()
    for key, module in modules.items():
        module.load_state_dict(st[key])
    opt.load_state_dict(st["opt"])
    set_rng_state(st["rng"], gen)
    print("resumed %s at step %d" % (label, st["step"]))
    return st["step"], st["spent"]


def rng_state(gen):
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "gen": gen.get_state()}


def set_rng_state(st, gen):
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    gen.set_state(st["gen"])


STOP = False


def stop_on_sigterm():
    """`kill PID` (SIGTERM) ends a training loop after its current step with a checkpoint,
    instead of losing the work since the last periodic one."""
    import signal

    def handler(signum, frame):
        global STOP
        STOP = True
        print("SIGTERM: stopping after this step", flush=True)

    signal.signal(signal.SIGTERM, handler)
