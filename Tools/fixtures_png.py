#!/usr/bin/env python3
"""Writes the PNG test fixtures for Tests/DarkroomTests/PNGTests.swift.

PIL is not installed, so the PNGs are assembled by hand (chunks + zlib), which also lets us make
deliberately broken files. Next to them, expected.json holds the 8-bit RGB pixels every valid file
must decode to, under Darkroom's documented conversion:
  * palette -> colours; grey 1/2/4-bit -> v * 255 / (2^d - 1); grey -> R = G = B;
  * 16-bit samples -> round(v * 255 / 65535);
  * tRNS and alpha channels -> composited over white: round((c * a + 255 * (255 - a)) / 255);
  * no gamma correction (gAMA is ignored).
The expected values are computed here independently of libpng.

decoded.json holds RGBImage(decoded:) cases computed by diffusers' own VaeImageProcessor.postprocess
(output_type="np") followed by numpy_to_pil's `(x * 255).round().astype("uint8")`.

Run: /work/main/Tools/.venv/bin/python Tools/fixtures_png.py
"""
import json
import os
import struct
import zlib

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "DarkroomTests", "Fixtures", "png")
rng = np.random.default_rng(1234)

GREY, RGB, PALETTE, GREY_ALPHA, RGBA = 0, 2, 3, 4, 6
CHANNELS = {GREY: 1, RGB: 3, PALETTE: 1, GREY_ALPHA: 2, RGBA: 4}


def chunk(kind: bytes, data: bytes, crc_xor: int = 0) -> bytes:
    crc = zlib.crc32(kind + data) ^ crc_xor
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc & 0xFFFFFFFF)


def ihdr(w, h, depth, color, interlace=0) -> bytes:
    return chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, interlace))


def pack_row(samples: np.ndarray, depth: int) -> bytes:
    """samples: 1-D array of sample values (channels interleaved) for one (sub-)row."""
    if depth == 16:
        return b"".join(struct.pack(">H", int(v)) for v in samples)
    if depth == 8:
        return bytes(int(v) for v in samples)
    per_byte = 8 // depth
    out = bytearray()
    for i in range(0, len(samples), per_byte):
        byte = 0
        group = samples[i:i + per_byte]
        for j in range(per_byte):
            v = int(group[j]) if j < len(group) else 0
            byte |= v << (8 - depth * (j + 1))
        out.append(byte)
    return bytes(out)


def bytes_per_pixel(depth, channels):
    return max(1, depth * channels // 8)


def apply_filter(ftype: int, row: bytes, prev: bytes, bpp: int) -> bytes:
    """PNG filters 0-4 (encoder side)."""
    out = bytearray()
    for i, x in enumerate(row):
        a = row[i - bpp] if i >= bpp else 0
        b = prev[i] if prev else 0
        c = prev[i - bpp] if prev and i >= bpp else 0
        if ftype == 0:
            pred = 0
        elif ftype == 1:
            pred = a
        elif ftype == 2:
            pred = b
        elif ftype == 3:
            pred = (a + b) // 2
        else:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
        out.append((x - pred) & 0xFF)
    return bytes(out)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def raw_data(img: np.ndarray, depth: int, interlace: bool, filters=None) -> bytes:
    """img: (H, W, C) array of samples. Returns the filtered, uncompressed scanlines."""
    h, w, ch = img.shape
    bpp = bytes_per_pixel(depth, ch)
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    out = bytearray()
    row_index = 0
    for (x0, y0, dx, dy) in passes:
        sub = img[y0::dy, x0::dx, :]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            continue
        prev = b""
        for r in range(sub.shape[0]):
            packed = pack_row(sub[r].reshape(-1), depth)
            ftype = filters[row_index % len(filters)] if filters else 0
            out.append(ftype)
            out += apply_filter(ftype, packed, prev, bpp)
            prev = packed
            row_index += 1
    return bytes(out)


def text_chunk(key: str, value: str) -> bytes:
    return chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1"))


def ztxt_chunk(key: str, value: bytes) -> bytes:
    return chunk(b"zTXt", key.encode("latin-1") + b"\0\0" + zlib.compress(value))


def itxt_chunk(key: str, value: str, compressed=False) -> bytes:
    body = value.encode("utf-8")
    if compressed:
        body = zlib.compress(body)
    return chunk(b"iTXt", key.encode("latin-1") + b"\0" + bytes([1 if compressed else 0, 0]) + b"en\0" + b"\0" + body)


def png(w, h, depth, color, img, interlace=False, before=(), after=(), filters=None) -> bytes:
    idat = zlib.compress(raw_data(img, depth, interlace, filters), 9)
    return (b"\x89PNG\r\n\x1a\n" + ihdr(w, h, depth, color, 1 if interlace else 0) + b"".join(before)
            + chunk(b"IDAT", idat) + b"".join(after) + chunk(b"IEND", b""))


# ---- expected conversion (independent of libpng) ----

def to8(v, depth):
    v = np.asarray(v, dtype=np.int64)
    if depth == 16:
        return (2 * v + 257) // 514  # round(v / 257) = round(v * 255 / 65535); never a tie
    if depth == 8:
        return v
    return v * (255 // ((1 << depth) - 1))


def over_white(c, a):
    return (c * a + 255 * (255 - a) + 127) // 255


def expected_rgb(img, depth, color, palette=None, trns=None):
    h, w, _ = img.shape
    if color == PALETTE:
        pal = np.array(palette, dtype=np.int64)
        alpha_table = np.full(len(palette), 255, dtype=np.int64)
        if trns is not None:
            alpha_table[:len(trns)] = trns
        idx = img[:, :, 0]
        rgb, a = pal[idx], alpha_table[idx]
    else:
        ch = CHANNELS[color]
        colour = img[:, :, :ch - (1 if color in (GREY_ALPHA, RGBA) else 0)]
        if color in (GREY_ALPHA, RGBA):
            a = to8(img[:, :, -1], depth)
        elif trns is not None:
            a = np.where(np.all(colour == np.array(trns), axis=-1), 0, 255)
        else:
            a = np.full((h, w), 255)
        c8 = to8(colour, depth)
        rgb = np.repeat(c8, 3, axis=-1) if c8.shape[-1] == 1 else c8
    out = over_white(rgb.astype(np.int64), a.astype(np.int64)[..., None])
    assert out.min() >= 0 and out.max() <= 255
    return out.astype(np.uint8)


files = {}
expected = {}


def add(name, data, img=None, depth=None, color=None, palette=None, trns=None, text=None):
    files[name] = data
    if img is not None:
        rgb = expected_rgb(img, depth, color, palette, trns)
        expected[name] = {"width": int(img.shape[1]), "height": int(img.shape[0]),
                          "rgb": rgb.reshape(-1).tobytes().hex(), "text": text or {}}


def rand(h, w, ch, depth):
    return rng.integers(0, 1 << depth, size=(h, w, ch), dtype=np.int64)


def plte(palette):
    return chunk(b"PLTE", bytes(v for c in palette for v in c))


# Palette, 4-bit, with partial tRNS (entries beyond the tRNS list are opaque).
pal = [tuple(int(x) for x in rng.integers(0, 256, 3)) for _ in range(10)]
img = rng.integers(0, 10, size=(4, 5, 1))
trns = [0, 128, 200]
add("palette4_trns.png", png(5, 4, 4, PALETTE, img, before=[plte(pal), chunk(b"tRNS", bytes(trns))]),
    img, 4, PALETTE, pal, trns)

# Palette, 8-bit, no tRNS, width not a multiple of anything.
pal8 = [tuple(int(x) for x in rng.integers(0, 256, 3)) for _ in range(200)]
img = rng.integers(0, 200, size=(3, 7, 1))
add("palette8.png", png(7, 3, 8, PALETTE, img, before=[plte(pal8)]), img, 8, PALETTE, pal8)

# Grey 1-bit (9 px wide: a partial last byte) and 4-bit.
img = rand(3, 9, 1, 1)
add("grey1.png", png(9, 3, 1, GREY, img), img, 1, GREY)
img = rand(4, 5, 1, 4)
add("grey4.png", png(5, 4, 4, GREY, img), img, 4, GREY)

# Grey 8-bit with a tRNS grey value.
img = rand(4, 4, 1, 8)
img[0, 0, 0] = img[2, 3, 0] = 7
add("grey8_trns.png", png(4, 4, 8, GREY, img, before=[chunk(b"tRNS", struct.pack(">H", 7))]),
    img, 8, GREY, trns=[7])

# Grey 16-bit, with values around the rounding boundaries of v / 257.
vals = [0, 1, 128, 129, 257, 385, 386, 32767, 32768, 65407, 65408, 65535]
img = np.array(vals, dtype=np.int64).reshape(3, 4, 1)
add("grey16.png", png(4, 3, 16, GREY, img), img, 16, GREY)

# Grey + alpha, 8 and 16 bit.
img = rand(3, 4, 2, 8)
img[0, 0, 1], img[0, 1, 1] = 0, 255
add("greyalpha8.png", png(4, 3, 8, GREY_ALPHA, img), img, 8, GREY_ALPHA)
img = rand(3, 3, 2, 16)
add("greyalpha16.png", png(3, 3, 16, GREY_ALPHA, img), img, 16, GREY_ALPHA)

# RGB 16-bit with a tRNS colour.
img = rand(3, 3, 3, 16)
img[1, 1] = [1000, 2000, 3000]
add("rgb16_trns.png", png(3, 3, 16, RGB, img, before=[chunk(b"tRNS", struct.pack(">HHH", 1000, 2000, 3000))]),
    img, 16, RGB, trns=[1000, 2000, 3000])

# RGBA 8 and 16 bit.
img = rand(4, 5, 4, 8)
img[0, 0, 3], img[0, 1, 3] = 0, 255
add("rgba8.png", png(5, 4, 8, RGBA, img), img, 8, RGBA)
img = rand(4, 4, 4, 16)
add("rgba16.png", png(4, 4, 16, RGBA, img), img, 16, RGBA)

# RGB 8-bit using all five filter types.
img = rand(6, 8, 3, 8)
add("rgb8_filters.png", png(8, 6, 8, RGB, img, filters=[0, 1, 2, 3, 4]), img, 8, RGB)

# Interlaced (Adam7): RGB 8-bit with a gAMA chunk that must be ignored, and 2-bit palette.
img = rand(9, 11, 3, 8)
add("rgb8_interlaced.png",
    png(11, 9, 8, RGB, img, interlace=True, before=[chunk(b"gAMA", struct.pack(">I", 45455))], filters=[0, 1, 4]),
    img, 8, RGB)
pal2 = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (10, 20, 30)]
img = rng.integers(0, 4, size=(7, 10, 1))
add("palette2_interlaced.png", png(10, 7, 2, PALETTE, img, interlace=True, before=[plte(pal2)]),
    img, 2, PALETTE, pal2)

# Text chunks: tEXt (Latin-1), zTXt, iTXt plain and compressed, and a tEXt after the image data.
img = rand(2, 2, 3, 8)
text = {
    "parameters": "a caf\u00e9 at night\nSteps: 20, Sampler: DDIM, CFG scale: 7.5, Seed: 42, Size: 2x2",
    "Comment": "compressed zTXt \u00b5",
    "Title": "\u65e5\u672c\u8a9e \U0001F600",
    "Description": "iTXt compressed \u00fc\u4e2d",
    "Author": "after IDAT",
}
add("text_chunks.png",
    png(2, 2, 8, RGB, img,
        before=[text_chunk("parameters", text["parameters"]),
                ztxt_chunk("Comment", text["Comment"].encode("latin-1")),
                itxt_chunk("Title", text["Title"]),
                itxt_chunk("Description", text["Description"], compressed=True)],
        after=[text_chunk("Author", text["Author"])]),
    img, 8, RGB, text=text)

# ---- broken files ----
errors = {}
good = files["rgba8.png"]
idat_at = good.index(b"IDAT") - 4
idat_len = struct.unpack(">I", good[idat_at:idat_at + 4])[0]

files["truncated_idat.png"] = good[:idat_at + 8 + idat_len // 2]
errors["truncated_idat.png"] = "truncated"
files["truncated_no_iend.png"] = good[:-12]
errors["truncated_no_iend.png"] = "truncated"
files["truncated_ihdr.png"] = good[:20]
errors["truncated_ihdr.png"] = "truncated"
bad = bytearray(good)
bad[idat_at + 8 + idat_len] ^= 0x55  # first CRC byte of IDAT
files["bad_crc_idat.png"] = bytes(bad)
errors["bad_crc_idat.png"] = "CRC"
img = rand(2, 2, 3, 8)
files["bad_crc_text.png"] = png(2, 2, 8, RGB, img, before=[chunk(b"tEXt", b"parameters\0x", crc_xor=1)])
errors["bad_crc_text.png"] = "CRC"
# Valid chunk CRC, but the IDAT payload is not a zlib stream.
files["bad_zlib.png"] = (b"\x89PNG\r\n\x1a\n" + ihdr(4, 4, 8, RGB) + chunk(b"IDAT", bytes(range(7, 60)))
                         + chunk(b"IEND", b""))
errors["bad_zlib.png"] = ""
# A complete zlib stream that holds only half of the scanlines.
half = zlib.compress(raw_data(rand(4, 4, 3, 8), 8, False)[:2 * (1 + 12)])
files["short_idat.png"] = b"\x89PNG\r\n\x1a\n" + ihdr(4, 4, 8, RGB) + chunk(b"IDAT", half) + chunk(b"IEND", b"")
errors["short_idat.png"] = ""
files["not_png.png"] = b"hello, this is not a PNG file at all\n"
errors["not_png.png"] = "not a PNG"
files["empty.png"] = b""
errors["empty.png"] = "not a PNG"
# 100000 x 100000 RGB: rejected from IHDR alone (the IDAT is a token 1-row stream).
files["huge_ihdr.png"] = (b"\x89PNG\r\n\x1a\n" + ihdr(100000, 100000, 8, RGB) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                          + chunk(b"IEND", b""))
errors["huge_ihdr.png"] = "100000x100000"
files["zero_width.png"] = b"\x89PNG\r\n\x1a\n" + ihdr(0, 4, 8, RGB) + chunk(b"IEND", b"")
errors["zero_width.png"] = ""
# A critical chunk libpng does not know.
files["unknown_critical.png"] = (b"\x89PNG\r\n\x1a\n" + ihdr(2, 2, 8, RGB) + chunk(b"ABCD", b"xyz")
                                 + chunk(b"IDAT", zlib.compress(raw_data(rand(2, 2, 3, 8), 8, False)))
                                 + chunk(b"IEND", b""))
errors["unknown_critical.png"] = ""

# A zTXt that inflates to 16 MiB (over the 4 MiB chunk limit): the chunk is skipped, the image
# still reads, and memory stays bounded.
img = rand(2, 2, 3, 8)
add("ztxt_bomb.png",
    png(2, 2, 8, RGB, img, before=[ztxt_chunk("bomb", b"a" * (16 << 20)), text_chunk("ok", "kept")]),
    img, 8, RGB, text={"ok": "kept"})

os.makedirs(OUT, exist_ok=True)
for name, data in files.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
with open(os.path.join(OUT, "expected.json"), "w") as f:
    json.dump({"images": expected, "errors": errors}, f, indent=1, sort_keys=True)


# ---- RGBImage(decoded:) cases, through diffusers' own post-processing ----
import torch  # noqa: E402
from diffusers.image_processor import VaeImageProcessor  # noqa: E402

values = [-3.0, -1.0, -0.999, -0.5, 0.0, 0.25, 0.5, 0.999, 1.0, 1.0001, 2.5, -1e-8, 1e-8]
# Inputs whose (x * 0.5 + 0.5) * 255 lands exactly on k + 0.5 in float32: round-half-to-even cases.
ties = []
for k in range(0, 255):
    x0 = np.float32(((k + 0.5) / 255.0 - 0.5) * 2.0)
    for x in (np.nextafter(x0, np.float32(-2)), x0, np.nextafter(x0, np.float32(2))):
        v = (np.float32(x) * np.float32(0.5) + np.float32(0.5)) * np.float32(255)
        if v == np.float32(k + 0.5):
            ties.append(float(x))
values += ties[:24]
values += [float(v) for v in rng.standard_normal(48).astype(np.float32)]
n = len(values)
w = 6
h = (n + 3 * w - 1) // (3 * w)
flat = np.zeros(3 * h * w, dtype=np.float32)
flat[:n] = np.array(values, dtype=np.float32)
tensor = torch.from_numpy(flat.reshape(1, 3, h, w).copy())
proc = VaeImageProcessor(do_normalize=True)
np_img = proc.postprocess(tensor, output_type="np")  # (1, H, W, 3) float32 in [0, 1]
u8 = (np_img * 255).round().astype("uint8")  # numpy_to_pil's conversion
with open(os.path.join(OUT, "decoded.json"), "w") as f:
    json.dump({"shape": [1, 3, h, w], "input": [float(v) for v in flat], "ties": len(ties[:24]),
               "rgb": [int(v) for v in u8.reshape(-1)]}, f)

print(f"wrote {len(files)} PNGs, {len(expected)} with expected pixels, decoded.json with {n} values ({len(ties[:24])} ties)")
