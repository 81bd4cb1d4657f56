#!/usr/bin/env python3
"""Golden values for long and weighted prompts (AUTOMATIC1111 semantics), for PromptTests.swift.

This is a step-by-step reference of AUTOMATIC1111's stable-diffusion-webui prompt handling,
written for this project (not copied), each function naming the A1111 function it mirrors:

    modules/prompt_parser.py   parse_prompt_attention   (weights, escapes, BREAK)
    modules/sd_hijack_clip.py  tokenize_line            (75-token chunks, comma backtracking)
                               process_tokens           (SD2 pad after the first EOS)
                               encode_with_transformers (clip skip: hidden_states[-N] + final LN)
                               forward                  (chunks encoded one by one, concatenated)
    modules/sd_emphasis.py     EmphasisOriginal         (z * multipliers, mean restored)
    modules/sd_samplers_cfg_denoiser.py pad_cond_uncond (shorter side padded with the
                                                          empty-prompt conditioning)

with the A1111 settings at their defaults: emphasis "Original", comma_padding_backtrack 20,
"Pad prompt/negative prompt" on for the pair cases. Two deliberate differences from A1111, both
shared with Darkroom's Swift code: fragments are tokenized by the model folder's transformers
CLIPTokenizer for SD2 too (A1111 uses open_clip's tokenizer there), and clip skip applies to SD2
as well (A1111 ignores it for SD2; a diffusers SD2 text encoder already ends at OpenCLIP's
penultimate layer, so clip skip 1 is what SD2 was trained with).

Writes Tests/DarkroomTests/Fixtures/prompts/:
    prompts.json            per case: the prompt, parse_prompt_attention's output, and per model
                            the token chunks (77 ids each) with their multipliers and token count;
                            floats as Python repr strings so Swift can compare them exactly
    tiny-sd1.safetensors    per case and clip skip: the final conditioning [1, 77*chunks, H]
    tiny-sd2.safetensors    (float32), plus the padded pair cases

Run from the repo root:  Tools/.venv/bin/python Tools/fixtures_prompts.py
Output is byte-identical from run to run.
"""
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

for k, v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
             "HF_HUB_DISABLE_TELEMETRY": "1", "TRANSFORMERS_VERBOSITY": "error"}.items():
    os.environ.setdefault(k, v)

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import CLIPTextModel, CLIPTokenizer  # noqa: E402

torch.set_num_threads(1)
OUT = os.path.join(ROOT, "Tests", "DarkroomTests", "Fixtures", "prompts")
MODELS = ["tiny-sd1", "tiny-sd2"]
CHUNK_LENGTH = 75            # FrozenCLIPEmbedderWithCustomWordsBase.chunk_length
COMMA_PADDING_BACKTRACK = 20  # opts.comma_padding_backtrack default
CLIP_SKIPS = [1, 2]

# ---------------------------------------------------------------------------------------------
# modules/prompt_parser.py: parse_prompt_attention

# The alternatives, in A1111's order (first one that matches wins, not the longest):
# \( \) \[ \] \\ (escapes), a lone backslash, ( [, ":<number>)" closing a weighted group,
# ) ], a run of ordinary text, a lone colon.
RE_ATTENTION = re.compile(r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|
]|
[^\\()\[\]:]+|
:
""", re.X)
RE_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_prompt_attention(text):
    out = []           # [text, weight] pairs; BREAK is ["BREAK", -1]
    round_open = []    # indices into out where an open "(" started
    square_open = []

    def scale_from(start, factor):
        for p in range(start, len(out)):
            out[p][1] *= factor

    for m in RE_ATTENTION.finditer(text):
        piece, number = m.group(0), m.group(1)
        if piece.startswith("\\"):
            out.append([piece[1:], 1.0])      # "\(" -> "(", "\\" -> "\", a lone "\" -> ""
        elif piece == "(":
            round_open.append(len(out))
        elif piece == "[":
            square_open.append(len(out))
        elif number is not None and round_open:
            scale_from(round_open.pop(), float(number))
        elif piece == ")" and round_open:
            scale_from(round_open.pop(), 1.1)
        elif piece == "]" and square_open:
            scale_from(square_open.pop(), 1 / 1.1)
        else:
            for i, part in enumerate(RE_BREAK.split(piece)):
                if i > 0:
                    out.append(["BREAK", -1])
                out.append([part, 1.0])
    # Unclosed brackets still apply, round ones first, each in opening order.
    for start in round_open:
        scale_from(start, 1.1)
    for start in square_open:
        scale_from(start, 1 / 1.1)
    if not out:
        out = [["", 1.0]]
    # Neighbours with equal weights are joined (BREAK markers included, as in A1111).
    i = 0
    while i + 1 < len(out):
        if out[i][1] == out[i + 1][1]:
            out[i][0] += out[i + 1][0]
            out.pop(i + 1)
        else:
            i += 1
    return out


def check_parser_doctests():
    """The examples in A1111's docstring."""
    assert parse_prompt_attention("normal text") == [["normal text", 1.0]]
    assert parse_prompt_attention("an (important) word") == [["an ", 1.0], ["important", 1.1], [" word", 1.0]]
    assert parse_prompt_attention("(unbalanced") == [["unbalanced", 1.1]]
    assert parse_prompt_attention("\\(literal\\]") == [["(literal]", 1.0]]
    assert parse_prompt_attention("(unnecessary)(parens)") == [["unnecessaryparens", 1.1]]
    assert parse_prompt_attention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).") == [
        ["a ", 1.0], ["house", 1.5730000000000004], [" ", 1.1], ["on", 1.0], [" a ", 1.1],
        ["hill", 0.55], [", sun, ", 1.1], ["sky", 1.4641000000000006], [".", 1.1]]


# ---------------------------------------------------------------------------------------------
# modules/sd_hijack_clip.py: FrozenCLIPEmbedderWithCustomWordsBase

class Reference:
    def __init__(self, folder):
        self.tokenizer = CLIPTokenizer.from_pretrained(os.path.join(folder, "tokenizer"))
        self.model = CLIPTextModel.from_pretrained(os.path.join(folder, "text_encoder"), dtype=torch.float32).eval()
        vocab = self.tokenizer.get_vocab()
        self.comma = vocab[",</w>"]
        self.bos = self.tokenizer.bos_token_id
        self.eos = self.tokenizer.eos_token_id
        # A1111: SD1 pads with EOS, SD2 with id 0; the folder's pad token says the same.
        self.pad = self.tokenizer.pad_token_id

    def tokenize(self, texts):
        return [self.tokenizer(t, truncation=False, add_special_tokens=False)["input_ids"] for t in texts]

    # tokenize_line (without textual-inversion embeddings)
    def tokenize_line(self, line, emphasis=True):
        parsed = parse_prompt_attention(line) if emphasis else [[line, 1.0]]
        tokenized = self.tokenize([text for text, _ in parsed])
        chunks = []                  # (tokens, multipliers), 77 each
        cur_tokens, cur_mults = [], []
        token_count = 0
        last_comma = -1

        def close_chunk(is_last=False):
            nonlocal token_count, last_comma, cur_tokens, cur_mults
            token_count += len(cur_tokens) if is_last else CHUNK_LENGTH
            fill = CHUNK_LENGTH - len(cur_tokens)
            if fill > 0:
                cur_tokens = cur_tokens + [self.eos] * fill
                cur_mults = cur_mults + [1.0] * fill
            chunks.append(([self.bos] + cur_tokens + [self.eos], [1.0] + cur_mults + [1.0]))
            last_comma = -1
            cur_tokens, cur_mults = [], []

        for ids, (text, weight) in zip(tokenized, parsed):
            if text == "BREAK" and weight == -1:
                close_chunk()
                continue
            for token in ids:
                if token == self.comma:
                    last_comma = len(cur_tokens)
                elif (COMMA_PADDING_BACKTRACK != 0 and len(cur_tokens) == CHUNK_LENGTH and last_comma != -1
                      and len(cur_tokens) - last_comma <= COMMA_PADDING_BACKTRACK):
                    # The chunk is full and a comma is near its end: move the words after the
                    # comma to the next chunk.
                    cut = last_comma + 1
                    moved_tokens, moved_mults = cur_tokens[cut:], cur_mults[cut:]
                    cur_tokens, cur_mults = cur_tokens[:cut], cur_mults[:cut]
                    close_chunk()
                    cur_tokens, cur_mults = moved_tokens, moved_mults
                if len(cur_tokens) == CHUNK_LENGTH:
                    close_chunk()
                cur_tokens.append(token)
                cur_mults.append(weight)
        if cur_tokens or not chunks:
            close_chunk(is_last=True)
        return chunks, token_count, parsed

    # process_tokens + encode_with_transformers + EmphasisOriginal.after_transformers, one chunk
    def encode_chunk(self, tokens, multipliers, clip_skip):
        ids = torch.asarray([tokens])
        if self.eos != self.pad:
            first_eos = tokens.index(self.eos)
            ids[0, first_eos + 1:] = self.pad
        with torch.no_grad():
            out = self.model(input_ids=ids, output_hidden_states=True)
            if clip_skip > 1:
                # transformers 5 flattened CLIPTextModel (no .text_model); older versions nest it.
                final_ln = getattr(self.model, "text_model", self.model).final_layer_norm
                z = final_ln(out.hidden_states[-clip_skip])
            else:
                z = out.last_hidden_state
            mults = torch.asarray([multipliers])           # float32, as A1111
            original_mean = z.mean()
            z = z * mults.reshape(mults.shape + (1,)).expand(z.shape)
            new_mean = z.mean()
            z = z * (original_mean / new_mean)
        return z, ids[0].tolist()

    # forward, for one text: chunks encoded one at a time and concatenated along the tokens
    def encode(self, line, clip_skip, emphasis=True):
        chunks, _, _ = self.tokenize_line(line, emphasis)
        zs = [self.encode_chunk(t, m, clip_skip)[0] for t, m in chunks]
        return torch.hstack(zs)

    # sd_samplers_cfg_denoiser.pad_cond_uncond: the shorter conditioning gets copies of the
    # empty prompt's conditioning (one chunk) appended until both have the same length.
    def encode_pair(self, prompt, negative, clip_skip):
        cond = self.encode(prompt, clip_skip)
        uncond = self.encode(negative, clip_skip)
        empty = self.encode("", clip_skip)
        repeats = (cond.shape[1] - uncond.shape[1]) // empty.shape[1]
        if repeats < 0:
            cond = torch.cat([cond, empty.repeat((cond.shape[0], -repeats, 1))], axis=1)
        elif repeats > 0:
            uncond = torch.cat([uncond, empty.repeat((uncond.shape[0], repeats, 1))], axis=1)
        return cond, uncond


# ---------------------------------------------------------------------------------------------
# The cases

WORDS = ["red", "blue", "green", "cat", "dog", "house", "tree", "sky", "sun", "moon", "river",
         "stone", "bird", "fish", "rain", "snow", "fire", "light", "dark", "gold"]


def words(n, start=0):
    return " ".join(WORDS[(start + i) % len(WORDS)] for i in range(n))


def segments(count, size, start=0):
    """`count` comma-terminated segments of `size` tokens each (size-1 words + comma)."""
    return " ".join(words(size - 1, start + i * 3) + "," for i in range(count))


# 10-token segments: the last comma before the first chunk's end is token 70 (index 69), so
# token 76 backtracks to it (6 <= 20). Then a 40-word run with no comma crosses the second
# boundary 26+ tokens after the last comma, so that split is hard. Weights cross boundaries.
LONG_COMMAS = segments(7, 10) + " " + words(12, 5) + " " + segments(3, 10, 7) + " " + words(40, 2) + \
    " (" + words(30, 9) + ":1.4) [" + words(20, 4) + "] end"
LONG_COMMA_AT_BOUNDARY = words(75) + ", " + words(30, 3)   # token 76 is a comma: no backtrack

CASES = [
    ("short", "a photo of a red heart, highly detailed"),
    ("empty", ""),
    ("tokens75", words(75)),
    ("tokens76", words(76)),
    ("long_commas", LONG_COMMAS),
    ("comma_at_boundary", LONG_COMMA_AT_BOUNDARY),
    ("break", "a red cat BREAK a blue dog"),
    ("break_edges", "BREAK sky BREAK  BREAK\tsun BREAKfast xBREAK (in BREAK parens) BREAK"),
    ("break_after_full_chunk", words(75, 1) + " BREAK " + words(3)),
    ("weights_nested", "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."),
    ("weights_forms", "(cat) [dog] ((bird)) [[fish]] ( gold : 1.25 ) (rain:+0.5) (snow:-1) (sun:.5) (moon:5.) (tree:0)"),
    ("escapes", "\\(literal\\] a \\\\ backslash, a lone \\ one, \\[x\\)"),
    ("unbalanced", "(open [close) only] and: (a:1.2 b:0.3) c) d] ((e"),
    ("colons", "style: photo, time: 12:30, ratio 2:1) done"),
    ("unicode", "café (naïve:1.1) 日本 (cat:١.٥) emoji 🐱!"),
    ("sd2_bang", "wow!! (shiny:1.2)! what"),
]

# Cases also run with emphasis "None" (no parsing at all: brackets are text).
NO_EMPHASIS = ["weights_nested", "break"]

# Positive/negative pairs with different chunk counts (padding on either side).
PAIRS = [
    ("long_vs_short", LONG_COMMAS, "blurry, low quality"),
    ("short_vs_long", "a red cat", words(80, 3) + " BREAK ugly"),
    ("same", "a (red:1.2) cat", "blurry"),
]


def check_cases_exercise_what_they_claim(ref):
    def chunks_of(name):
        return ref.tokenize_line(dict(CASES)[name])[0]
    assert len(chunks_of("tokens75")) == 1 and ref.eos not in chunks_of("tokens75")[0][0][1:76]
    assert len(chunks_of("tokens76")) == 2
    lc = chunks_of("long_commas")
    assert len(lc) >= 3, len(lc)
    # First chunk ended at the comma: its 71st id (index 70) is the comma, then EOS padding.
    assert lc[0][0][70] == ref.comma and lc[0][0][71] == ref.eos, lc[0][0]
    # Some later chunk is completely full (the hard split).
    assert any(ref.eos not in c[0][1:76] for c in lc[1:]), "no hard split"
    cab = chunks_of("comma_at_boundary")
    assert cab[1][0][1] == ref.comma and ref.eos not in cab[0][0][1:76]
    b = chunks_of("break_after_full_chunk")
    assert len(b) == 2 and ref.eos not in b[0][0][1:76]
    assert len(chunks_of("break")) == 2


def repr_list(xs):
    return [repr(float(x)) for x in xs]


def main():
    check_parser_doctests()
    os.makedirs(OUT, exist_ok=True)
    doc = {"chunk_length": CHUNK_LENGTH, "comma_padding_backtrack": COMMA_PADDING_BACKTRACK,
           "clip_skips": CLIP_SKIPS, "cases": [], "pairs": []}
    refs = {name: Reference(os.path.join(ROOT, "Models", name)) for name in MODELS}
    check_cases_exercise_what_they_claim(refs["tiny-sd1"])
    tensors = {name: {} for name in MODELS}

    for case, prompt in CASES:
        entry = {"name": case, "prompt": prompt,
                 "parsed": [[t, repr(float(w))] for t, w in parse_prompt_attention(prompt)],
                 "no_emphasis": case in NO_EMPHASIS}
        for model in MODELS:
            ref = refs[model]
            per = {}
            for emphasis in ([True, False] if case in NO_EMPHASIS else [True]):
                chunks, count, _ = ref.tokenize_line(prompt, emphasis)
                key = "" if emphasis else "_no_emphasis"
                # Ids as sent to the model (SD2: pad id after the first EOS).
                sent = [ref.encode_chunk(t, m, 1)[1] for t, m in chunks]
                per["chunks" + key] = [{"tokens": t, "multipliers": repr_list(m)} for t, m in chunks]
                per["input_ids" + key] = sent
                per["token_count" + key] = count
                for skip in CLIP_SKIPS:
                    z = ref.encode(prompt, skip, emphasis)
                    assert z.shape == (1, 77 * len(chunks), ref.model.config.hidden_size)
                    assert torch.isfinite(z).all()
                    tensors[model][f"{case}{key}.skip{skip}"] = z.contiguous()
            entry[model] = per
        doc["cases"].append(entry)

    for case, prompt, negative in PAIRS:
        doc["pairs"].append({"name": case, "prompt": prompt, "negative": negative})
        for model in MODELS:
            for skip in CLIP_SKIPS:
                cond, uncond = refs[model].encode_pair(prompt, negative, skip)
                assert cond.shape == uncond.shape
                tensors[model][f"pair.{case}.positive.skip{skip}"] = cond.contiguous()
                tensors[model][f"pair.{case}.negative.skip{skip}"] = uncond.contiguous()

    path = os.path.join(OUT, "prompts.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes)")
    for model in MODELS:
        path = os.path.join(OUT, f"{model}.safetensors")
        save_file(dict(sorted(tensors[model].items())), path, metadata={"format": "pt"})
        print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
