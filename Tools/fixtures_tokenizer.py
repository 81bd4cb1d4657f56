#!/usr/bin/env python3
"""Golden ids for Darkroom's CLIPTokenizer, made with Hugging Face's CLIPTokenizer.

Run from the repo root with the pinned venv (transformers 5.23.0, tokenizers 0.23.3, no ftfy):
    /work/main/Tools/.venv/bin/python Tools/fixtures_tokenizer.py

In transformers 5 `CLIPTokenizer` is the `tokenizers`-backed class (there is no slow class any
more): NFC, `\\s+` -> " ", lowercase, the CLIP split regex, byte-level, BPE with `</w>`. Which
special tokens are "added tokens" (matched literally before/after normalisation) depends on the
config files, so the fixtures cover four folder layouts met in the wild:

  sd1   vocab.json + merges.txt, SD1.x configs (pad `<|endoftext|>`)
  sd2   vocab.json + merges.txt, SD2.x configs (special_tokens_map.json says pad `!`)
  sdxl  vocab.json + merges.txt, a transformers-4 style tokenizer_config.json with
        `added_tokens_decoder` (special_tokens_map.json is then ignored) and pad `!`
  json  tokenizer.json + tokenizer_config.json only (what transformers 5 `save_pretrained`
        writes), saved from the sd2 tokenizer, pad `!`

Writes Tests/DarkroomTests/Fixtures/tokenizer/{sd1,sd2,sdxl,json}/ (config files; json/ also
holds tokenizer.json, re-serialised compactly) and ids.json. The Swift tests copy vocab.json and
merges.txt from Models/clip-tokenizer next to the sd1/sd2/sdxl configs.
"""
import json, os, random, shutil, sys, tempfile

import tokenizers
import transformers
from transformers import CLIPTokenizer

ROOT = os.getcwd()
VOCAB_DIR = os.path.join(ROOT, "Models", "clip-tokenizer")
OUT = os.path.join(ROOT, "Tests", "DarkroomTests", "Fixtures", "tokenizer")


def added(content, **kw):
    d = {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
    d.update(kw)
    return d


def typed(content):
    return {"__type": "AddedToken", **added(content)}


SD_CONFIG = {
    "add_prefix_space": False,
    "bos_token": typed("<|startoftext|>"),
    "do_lower_case": True,
    "eos_token": typed("<|endoftext|>"),
    "errors": "replace",
    "model_max_length": 77,
    "name_or_path": "openai/clip-vit-large-patch14",
    "pad_token": "<|endoftext|>",
    "special_tokens_map_file": "./special_tokens_map.json",
    "tokenizer_class": "CLIPTokenizer",
    "unk_token": typed("<|endoftext|>"),
}
SD1_MAP = {
    "bos_token": added("<|startoftext|>"),
    "eos_token": added("<|endoftext|>"),
    "pad_token": "<|endoftext|>",
    "unk_token": added("<|endoftext|>"),
}
SD2_MAP = dict(SD1_MAP, pad_token="!")
SDXL_CONFIG = {
    "add_prefix_space": False,
    "added_tokens_decoder": {
        "0": added("!", special=True),
        "49406": added("<|startoftext|>", special=True),
        "49407": added("<|endoftext|>", normalized=False, special=True),
    },
    "bos_token": "<|startoftext|>",
    "clean_up_tokenization_spaces": True,
    "do_lower_case": True,
    "eos_token": "<|endoftext|>",
    "errors": "replace",
    "model_max_length": 77,
    "pad_token": "!",
    "tokenizer_class": "CLIPTokenizer",
    "unk_token": "<|endoftext|>",
}
# Ignored by transformers 5 because tokenizer_config.json has added_tokens_decoder.
SDXL_MAP = dict(SD1_MAP, pad_token="<|endoftext|>")

FOLDERS = {
    "sd1": {"tokenizer_config.json": SD_CONFIG, "special_tokens_map.json": SD1_MAP},
    "sd2": {"tokenizer_config.json": SD_CONFIG, "special_tokens_map.json": SD2_MAP},
    "sdxl": {"tokenizer_config.json": SDXL_CONFIG, "special_tokens_map.json": SDXL_MAP},
}

LONG = ("a highly detailed matte painting of a lighthouse on a cliff at sunset, dramatic clouds, "
        "crashing waves, volumetric light, by greg rutkowski and alphonse mucha, trending on "
        "artstation, 8k, octane render, unreal engine 5, sharp focus, intricate details, "
        "golden hour, cinematic composition, wide angle lens, ultra realistic, award winning")

PROMPTS = [
    "",
    " ",
    "     ",
    "\t\n",
    "a photo of a cat",
    "A Photo Of A CAT",
    "an astronaut riding a horse on mars",
    "  leading spaces",
    "trailing spaces   ",
    "extra   spaces    between     words",
    "tabs\tand\nnewlines\r\nand\rcarriage returns",
    "mixed \t \n whitespace\u000b\u000cvt ff",
    "hello, world!",
    "wow!!! really?!? ... ---- *** ~~~",
    "!!!???!!!",
    "!",
    "!!",
    "hello!",
    "x!y !z",
    "a-b_c.d/e\\f|g",
    "(((masterpiece))), [[best quality]], {{detailed}}",
    "(word:1.2) [word] (cat:0.8) \\(escaped\\) BREAK",
    "1234 3.14 1,000,000 -42 +7 0.5x 2024-01-01",
    "12345678901234567890",
    "v1.5 sd2.1 x4 4k 8k 1080p 60fps",
    "it's don't they're we've i'm you'll he'd",
    "IT'S DON'T THEY'RE WE'VE I'M YOU'LL HE'D",
    "it'S dOn'T",
    "rock 'n' roll 'quoted' ''double'' '''triple'''",
    "'s 't 're 've 'm 'll 'd",
    "cat's dog's'",
    "\u2018curly\u2019 \u201cquotes\u201d it\u2019s",
    "caf\u00e9 na\u00efve \u00c5ngstr\u00f6m r\u00e9sum\u00e9",
    "cafe\u0301 decomposed e + combining acute",
    "A\u030angstro\u0308m decomposed",
    "Stra\u00dfe gro\u00df \u1e9e capital sharp s",
    "\u0130stanbul \u0131s\u0131k Turkish dotted I",
    "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u039f\u0394\u03a5\u03a3\u03a3\u0395\u03a5\u03a3 \u03c3\u03bf\u03c6\u03af\u03b1",
    "\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440 \u041c\u041e\u0421\u041a\u0412\u0410",
    "\u4e00\u53ea\u732b\u5750\u5728\u7a97\u53f0\u4e0a",
    "\u3072\u3089\u304c\u306a \u30ab\u30bf\u30ab\u30ca \u30fc \u6f22\u5b57",
    "\uff8a\uff9d\uff76\uff78 half-width katakana \uff21\uff22\uff23 full-width",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
    "\u1100\u1161\u11a8 conjoining jamo",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35 thai",
    "\u05e9\u05dc\u05d5\u05dd hebrew",
    "\U0001f600",
    "\U0001f431 cat emoji \U0001f436\U0001f98a",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 family",
    "\U0001f44d\U0001f3fd \U0001f44b\U0001f3ff skin tones",
    "\U0001f1ef\U0001f1f5 \U0001f1fa\U0001f1f8 \U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f flags",
    "\u2764\ufe0f \u2764 \u263a\ufe0f variation selectors",
    "control\u0000chars\u0001here\u001f\u007f\u0085\u009f",
    "zero\u200bwidth\u200cjoiner\u200dspace\ufeffbom",
    "non\u00a0breaking\u2007figure\u202fnarrow\u3000ideographic\u2028line\u2029para",
    "<|endoftext|>",
    "<|startoftext|>",
    "a <|endoftext|> b",
    "a<|endoftext|>b<|startoftext|>c",
    "<|ENDOFTEXT|> and <|StartOfText|>",
    "!<|endoftext|>! <| endoftext |> <|endoftext",
    "</w> literal end of word</w>marker",
    "fish &amp; chips &lt;tag&gt; &quot;q&quot; &#39;s &nbsp;",
    "https://example.com/path?q=1&x=y#frag www.test.org",
    "user@example.com @mention",
    "#hashtag #sunset #NoFilter",
    "\u2211 \u222b \u221e \u2264 \u2265 \u2260 \u00b1 \u00d7 \u00f7 \u221a \u03c0 \u2202 \u2207",
    "E=mc\u00b2 x\u2081 \u00bd \u2153 \u2167 \u2460 \u0663\u0664",
    "\u00a9 \u00ae \u2122 \u00b0C \u20ac100 \u00a35 \u00a5 $9.99",
    "\u2014 em dash \u2013 en dash \u2026 ellipsis \u2022 bullet",
    "\ufb01ne \ufb02ow ligatures \u2126 ohm \u212b angstrom sign",
    "\u01c4\u01c5\u01c6 \u1f88 titlecase",
    "\u03a3\u039f\u03a6\u039f\u03a3 final sigma",
    "x\u0345 i\u0307 combining marks alone \u0301",
    "snake_case CamelCase kebab-case SCREAMING_CASE",
    "a" * 100,
    "abc" * 40,
    "!" * 90,
    ". " * 80,
    LONG,
    LONG + " " + LONG,
    " ".join(str(i) for i in range(100)),
    "\U0001f600" * 30,
    "\u732b" * 60,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "photorealistic hyperdetailed ultrasharp",
    "score_9, score_8_up, 1girl, solo, looking at viewer",
    "masterpiece, best quality, ((ultra-detailed)), (illustration:1.1), [lowres]",
    "<lora:detail:0.5> embedding:neg_style",
    "text with \"double quotes\" and 'single quotes'",
    "semi;colon: pipe| caret^ tilde~ backtick` dollar$ percent%",
    "C++ C# F# .NET node.js",
    "\U0001d400\U0001d401\U0001d402 math bold \U0001d538\U0001d539",
    "\U000105c0\U00010d4a new scripts",
    "\U0010ffff\ue000 private use",
    "\u1e9b\u0323 \u0344 \u0958 composition exclusions",
    "e\u0301\u0301 double combining",
    # tokenizers' NFC is Unicode 9.0: later marks have class 0 (no reordering), no U+11938.
    "x\u07fd\u0334 x\u0345\u0898 a\u1ac1\u0316 \U00011935\U00011930",
    # Hangul: precomposed LV syllable + trailing jamo composes; conjoining L V T too.
    "\uac00\u11b4 \uac1c\u11bf \u1100\u1161\u11a8",
    # Unicode 17 letters/numbers are unassigned to tokenizers' Oniguruma (Unicode 16) regex.
    "\ua7ce\ua7cfx \u088fabc \U00011de0\U00011de1 \U000105c0z",
]


def random_prompts(n, seed=1234):
    """Mixed-script noise: words, punctuation, digits, whitespace kinds and special literals."""
    rng = random.Random(seed)
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "0123456789",
        "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
        " \t\n\u00a0\u3000\u2009",
        "\u00e9\u00c9\u00df\u0130\u0131\u00f1\u00e5\u00c5\u00f8\u0153\u0301\u0308",
        "\u03b1\u03b2\u03a3\u03c2\u0416\u0436\u05d0\u0627\u0928\u094d\u0e01",
        "\u732b\u72ac\u3042\u30a2\ud55c\uff21\uff8a",
        "\U0001f600\U0001f44d\U0001f3fd\u200d\u2764\ufe0f\U0001f1ef\U0001f1f5",
        "\u00b2\u00bd\u2167\u2460\u0663\u200b\u0000\u0085",
    ]
    literals = ["<|endoftext|>", "<|startoftext|>", "'s", "'ll", "!", "</w>"]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 12)):
            if rng.random() < 0.08:
                parts.append(rng.choice(literals))
            else:
                pool = rng.choice(pools)
                parts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 8))))
        out.append("".join(parts))
    return out


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def main():
    assert transformers.__version__ == "5.23.0", transformers.__version__
    assert tokenizers.__version__ == "0.23.3", tokenizers.__version__
    try:
        import ftfy  # noqa: F401
        sys.exit("ftfy is installed: HF's CLIPTokenizer would clean text differently; uninstall it")
    except ImportError:
        pass

    tmp = tempfile.mkdtemp()
    folders = {}
    for name, files in FOLDERS.items():
        fixture = os.path.join(OUT, name)
        shutil.rmtree(fixture, ignore_errors=True)
        os.makedirs(fixture)
        folder = os.path.join(tmp, name)
        os.makedirs(folder)
        for fname, obj in files.items():
            write_json(os.path.join(fixture, fname), obj)
            shutil.copy(os.path.join(fixture, fname), folder)
        for fname in ("vocab.json", "merges.txt"):
            shutil.copy(os.path.join(VOCAB_DIR, fname), folder)
        folders[name] = folder

    # transformers 5 saves tokenizer.json + tokenizer_config.json only.
    saved = os.path.join(tmp, "saved")
    CLIPTokenizer.from_pretrained(folders["sd2"]).save_pretrained(saved)
    assert sorted(os.listdir(saved)) == ["tokenizer.json", "tokenizer_config.json"], os.listdir(saved)
    json_dir = os.path.join(OUT, "json")
    shutil.rmtree(json_dir, ignore_errors=True)
    os.makedirs(json_dir)
    with open(os.path.join(saved, "tokenizer.json"), encoding="utf-8") as f:
        tok_json = json.load(f)
    with open(os.path.join(json_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok_json, f, ensure_ascii=False, separators=(",", ":"))
    shutil.copy(os.path.join(saved, "tokenizer_config.json"), json_dir)
    folders["json"] = json_dir  # load the committed copy itself

    prompts = PROMPTS + random_prompts(120)
    toks = {name: CLIPTokenizer.from_pretrained(path) for name, path in folders.items()}
    variants = {}
    for name, tok in toks.items():
        added = {str(i): {"content": t.content, "normalized": t.normalized, "special": t.special}
                 for i, t in sorted(tok.added_tokens_decoder.items())}
        variants[name] = {
            "bos": tok.bos_token_id, "eos": tok.eos_token_id, "pad": tok.pad_token_id,
            "pad_token": str(tok.pad_token), "max_length": tok.model_max_length, "added_tokens": added,
        }
        print(name, variants[name])

    cases = []
    for p in prompts:
        case = {"prompt": p, "tokens": {}, "encoded": {}, "decoded": {}, "decoded_skip": {}}
        for name, tok in toks.items():
            ids = tok(p, add_special_tokens=False)["input_ids"]
            enc = tok(p, padding="max_length", max_length=tok.model_max_length, truncation=True)["input_ids"]
            assert len(enc) == 77
            case["tokens"][name] = ids
            case["encoded"][name] = enc
            case["decoded"][name] = tok.decode(ids)
            case["decoded_skip"][name] = tok.decode(enc, skip_special_tokens=True)
        cases.append(case)

    with open(os.path.join(OUT, "ids.json"), "w", encoding="utf-8") as f:
        f.write('{"transformers": "%s", "tokenizers": "%s",\n' % (transformers.__version__, tokenizers.__version__))
        f.write('"variants": %s,\n"cases": [\n' % json.dumps(variants, ensure_ascii=False))
        f.write(",\n".join(json.dumps(c, ensure_ascii=False, separators=(",", ":")) for c in cases))
        f.write("\n]}\n")
    shutil.rmtree(tmp)
    print(f"{len(cases)} prompts -> {os.path.relpath(os.path.join(OUT, 'ids.json'))}")


if __name__ == "__main__":
    main()
