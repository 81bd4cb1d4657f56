#!/usr/bin/env python3
"""Side-by-side benchmark: Darkroom (Swift) vs diffusers (PyTorch) on the same model folder, the
same size and thread count, alternating A B A B so machine drift hits both. Prints a Markdown
table with medians, Darkroom/PyTorch time ratios, GFLOP/s (FLOPs as torch counts them) and peak
memory, plus the PyTorch 4096^3 matmul rate as the machine's ceiling.

  swift build -c release --product DarkroomBench
  Tools/.venv/bin/python Tools/bench/compare.py --model /path/to/sd15 --size 512 --threads 2 --rounds 2 --runs 2
"""
import argparse, json, os, platform, subprocess, sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True); ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2); ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--components", default="text_encoder,unet,vae")
    ap.add_argument("--bench", default=os.path.join(ROOT, ".build", "release", "DarkroomBench"))
    a = ap.parse_args()
    py = sys.executable
    ref_cmd = [py, os.path.join(ROOT, "Tools", "bench", "reference_bench.py"), "--model", a.model, "--size", str(a.size),
               "--runs", str(a.runs), "--threads", str(a.threads)]
    our_cmd = [a.bench, "--model", a.model, "--size", str(a.size), "--runs", str(a.runs), "--threads", str(a.threads)]
    rows = {}
    matmul = run(ref_cmd + ["--component", "matmul"])["matmul"]
    for comp in a.components.split(","):
        ref_t, our_t, flops, ref_mem, our_mem = [], [], None, 0, 0
        for _ in range(a.rounds):
            r = run(ref_cmd + ["--component", comp]); ref_t.append(r[comp]["median"]); flops = r[comp]["gflop"]
            ref_mem = max(ref_mem, r["peak_rss_mb"])
            o = run(our_cmd + ["--component", comp]); our_t.append(o[comp]["median"]); our_mem = max(our_mem, o["peak_rss_mb"])
        ref_t.sort(); our_t.sort()
        rows[comp] = dict(ref=ref_t[len(ref_t) // 2], ours=our_t[len(our_t) // 2], ref_all=ref_t, ours_all=our_t,
                          gflop=flops, ref_mem=ref_mem, our_mem=our_mem)
    ceiling = matmul["gflop"] / matmul["median"]
    print(f"Machine: {cpu_name()}, {os.cpu_count()} cores; threads {a.threads}; size {a.size}x{a.size}; "
          f"PyTorch 4096^3 fp32 matmul: {ceiling:.0f} GFLOP/s")
    print()
    print("| component | GFLOP | PyTorch s | Darkroom s | Darkroom / PyTorch | Darkroom GFLOP/s | % of matmul ceiling | peak MB PyTorch / Darkroom |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    names = {"text_encoder": "text encoder (batch 2)", "unet": "UNet step (batch 2)", "vae": "VAE decode"}
    for comp, r in rows.items():
        rate = r["gflop"] / r["ours"]
        print(f"| {names.get(comp, comp)} | {r['gflop']:.1f} | {r['ref']:.3f} | {r['ours']:.3f} | {r['ours'] / r['ref']:.2f}x | "
              f"{rate:.0f} | {100 * rate / ceiling:.0f}% | {r['ref_mem']:.0f} / {r['our_mem']:.0f} |")


if __name__ == "__main__":
    main()
