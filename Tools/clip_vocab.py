#!/usr/bin/env python3
"""Derive the CLIP BPE tokenizer files (Hugging Face layout: vocab.json + merges.txt) from the
vocabulary that OpenAI published and that the PyPI wheel `open_clip_torch` carries as
open_clip/bpe_simple_vocab_16e6.txt.gz. No model hub needed.

Usage: python3 Tools/clip_vocab.py OUT_DIR
Writes OUT_DIR/vocab.json and OUT_DIR/merges.txt (byte-identical on every run).
"""
import gzip, json, os, subprocess, sys, tempfile, zipfile

WHEEL = "open_clip_torch==3.3.0"
MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"


def bytes_to_unicode():
    # The reversible byte -> printable unicode map used by GPT-2 and CLIP.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def main(out_dir):
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, WHEEL], check=True)
        wheel = [f for f in os.listdir(tmp) if f.endswith(".whl")][0]
        with zipfile.ZipFile(os.path.join(tmp, wheel)) as z:
            lines = gzip.decompress(z.read(MEMBER)).decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]  # 48894 merges, as CLIP uses them
    byte_chars = list(bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "Models/clip-tokenizer")
