#!/usr/bin/env python3
"""Builds a model with the exact Stable Diffusion 1.5 architecture (same configs, same FLOPs) and
random weights, in the diffusers layout, for benchmarks. No download: configs are written here.

  Tools/.venv/bin/python Tools/bench/make_sd15_model.py OUT_DIR [--dtype float16|float32]
"""
import argparse, os, shutil
import torch
from diffusers import UNet2DConditionModel, AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
from transformers import CLIPTextModel, CLIPTextConfig, CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB = os.path.join(HERE, "..", "..", "Models", "clip-tokenizer")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    a = ap.parse_args()
    torch.manual_seed(0)
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))
    tok = CLIPTokenizer(os.path.join(VOCAB, "vocab.json"), os.path.join(VOCAB, "merges.txt"),
                        pad_token="<|endoftext|>", model_max_length=77)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
        attention_head_dim=8, cross_attention_dim=768, norm_num_groups=32,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
        sample_size=512, scaling_factor=0.18215)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if a.dtype == "float16":
        pipe.to(torch.float16)
    if os.path.exists(a.out):
        shutil.rmtree(a.out)
    pipe.save_pretrained(a.out, safe_serialization=True)
    # transformers 5 writes a huge model_max_length; SD uses 77.
    print("wrote", a.out)


if __name__ == "__main__":
    main()
