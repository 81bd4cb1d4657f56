#!/usr/bin/env python3
"""Render with diffusers exactly as `darkroom render` does, and optionally compare with a PNG
Darkroom wrote. Used to check parity on any diffusers model folder, not just the fixtures.

  Tools/.venv/bin/python Tools/reference_render.py MODEL "prompt" --negative "" --steps 20 \
      --guidance 7.5 --seed 42 --width 512 --height 512 --eta 0 --out ref.png [--compare darkroom.png]

Prints the mean and max absolute difference in 0-255 levels when --compare is given.
"""
import argparse
import numpy as np
import torch
from diffusers import StableDiffusionPipeline, DDIMScheduler


def read_png_rgb(path):
    # Minimal PNG reader (8-bit RGB, non-interlaced) so no imaging library is needed.
    import zlib, struct
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w = 8, b"", None
    while pos < len(data):
        n, = struct.unpack(">I", data[pos:pos + 4]); t = data[pos + 4:pos + 8]; body = data[pos + 8:pos + 8 + n]
        if t == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and ctype == 2, "expects 8-bit RGB"
        elif t == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = w * 3
    out = np.zeros((h, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    i = 0
    for y in range(h):
        f = raw[i]; line = np.frombuffer(raw[i + 1:i + 1 + stride], dtype=np.uint8).astype(np.int32); i += 1 + stride
        cur = np.zeros(stride, dtype=np.int32)
        for x in range(stride):
            a = cur[x - 3] if x >= 3 else 0
            b = prev[x]
            c = prev[x - 3] if x >= 3 else 0
            if f == 0: v = line[x]
            elif f == 1: v = line[x] + a
            elif f == 2: v = line[x] + b
            elif f == 3: v = line[x] + (a + b) // 2
            else:
                p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                v = line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)
            cur[x] = v & 255
        out[y] = cur; prev = cur
    return out.reshape(h, w, 3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model"); ap.add_argument("prompt")
    ap.add_argument("--negative", default=""); ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=7.5); ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--width", type=int); ap.add_argument("--height", type=int)
    ap.add_argument("--eta", type=float, default=0.0); ap.add_argument("--out", default="reference.png")
    ap.add_argument("--compare"); ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    pipe = StableDiffusionPipeline.from_pretrained(a.model, safety_checker=None, requires_safety_checker=False,
                                                   feature_extractor=None, torch_dtype=torch.float32)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    img = pipe(a.prompt, negative_prompt=a.negative, num_inference_steps=a.steps, guidance_scale=a.guidance,
               width=a.width, height=a.height, eta=a.eta, generator=torch.Generator().manual_seed(a.seed),
               output_type="np").images[0]
    ref = (img * 255).round().astype(np.uint8)
    import zlib, struct
    def chunk(t, b): return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b) & 0xffffffff)
    h, w, _ = ref.shape
    raw = b"".join(b"\x00" + ref[y].tobytes() for y in range(h))
    open(a.out, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    print(f"wrote {a.out} ({w}x{h})")
    if a.compare:
        mine = read_png_rgb(a.compare).astype(np.int32)
        d = np.abs(mine - ref.astype(np.int32))
        print(f"difference vs {a.compare}: mean {d.mean():.3f} levels, max {d.max()} levels, "
              f"{(d > 2).mean() * 100:.2f}% of values differ by more than 2")


if __name__ == "__main__":
    main()
