#!/usr/bin/env python3
"""Eps- and layout-sensitive probes: single submodules of the tiny models run on inputs with a
tiny variance (std 0.01 around an offset), where a wrong norm epsilon (1e-5 vs 1e-6) or a swapped
weight/bias changes the output by percents instead of parts per million.

Writes Tests/DarkroomTests/Fixtures/probes/<model>.safetensors. Run from the repository root with
the reference venv: Tools/.venv/bin/python Tools/fixtures_probes.py
"""
import os
import torch
from safetensors.torch import save_file
from diffusers import UNet2DConditionModel, AutoencoderKL
from transformers import CLIPTextModel

torch.manual_seed(0)
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
OUT = "Tests/DarkroomTests/Fixtures/probes"


def small(shape, gen, offset=0.3):
    # Tiny variance: GroupNorm/LayerNorm outputs depend strongly on eps here.
    return (offset + 0.01 * torch.randn(shape, generator=gen)).float()


@torch.no_grad()
def probe(model_dir, name):
    gen = torch.Generator().manual_seed(1234)
    out = {}
    unet = UNet2DConditionModel.from_pretrained(f"{model_dir}/unet").float().eval()
    c = unet.config
    ch = c.block_out_channels
    tdim = unet.time_embedding.linear_1.out_features
    cross = c.cross_attention_dim if isinstance(c.cross_attention_dim, int) else c.cross_attention_dim[0]

    x = small((1, ch[0], 8, 8), gen)
    temb = torch.randn((1, tdim), generator=gen)
    res = unet.down_blocks[1].resnets[0]  # channel change: has conv_shortcut
    out["unet.resnet.x"] = small((1, ch[0], 8, 8), gen)
    out["unet.resnet.temb"] = temb
    out["unet.resnet.out"] = res(out["unet.resnet.x"], temb)

    ctx = torch.randn((1, 77, cross), generator=gen)
    tr = unet.down_blocks[0].attentions[0]
    out["unet.transformer.x"] = x
    out["unet.transformer.context"] = ctx
    out["unet.transformer.out"] = tr(x, encoder_hidden_states=ctx).sample

    blk = tr.transformer_blocks[0]
    tokens = small((1, 64, blk.norm1.normalized_shape[0]), gen)
    out["unet.block.x"] = tokens
    out["unet.block.out"] = blk(tokens, encoder_hidden_states=ctx)

    out["unet.conv_norm_out.x"] = small((1, ch[0], 8, 8), gen)
    out["unet.conv_norm_out.out"] = unet.conv_norm_out(out["unet.conv_norm_out.x"])

    vae = AutoencoderKL.from_pretrained(f"{model_dir}/vae").float().eval()
    vc = vae.config.block_out_channels
    out["vae.attention.x"] = small((1, vc[-1], 6, 6), gen)
    out["vae.attention.out"] = vae.decoder.mid_block.attentions[0](out["vae.attention.x"])
    r = vae.decoder.up_blocks[1].resnets[0]
    out["vae.resnet.x"] = small((1, r.conv1.in_channels, 6, 6), gen)
    out["vae.resnet.out"] = r(out["vae.resnet.x"], None)

    te = CLIPTextModel.from_pretrained(f"{model_dir}/text_encoder").float().eval()
    h = te.config.hidden_size
    out["text.final_layer_norm.x"] = small((1, 5, h), gen)
    out["text.final_layer_norm.out"] = (te.text_model if hasattr(te, "text_model") else te).final_layer_norm(out["text.final_layer_norm.x"])

    os.makedirs(OUT, exist_ok=True)
    save_file({k: v.contiguous().float() for k, v in sorted(out.items())}, f"{OUT}/{name}.safetensors")
    for k, v in sorted(out.items()):
        if k.endswith(".out"):
            print(name, k, tuple(v.shape), f"max-abs {v.abs().max().item():.4g}")


if __name__ == "__main__":
    for n in ["tiny-sd1", "tiny-sd2"]:
        probe(f"Models/{n}", n)
