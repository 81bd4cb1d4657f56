#!/usr/bin/env python3
"""Side-by-side benchmark: Darkroom (Swift) vs diffusers (PyTorch) on the same model folder, the
same size and thread count, alternating A B A B so machine drift hits both. Prints a Markdown
table with medians, Darkroom/PyTorch time ratios (taken within each round, then the median over
rounds), GFLOP/s (FLOPs as torch counts them) and peak memory, plus the PyTorch 4096^3 matmul
rate measured in every round as the machine's ceiling. --scaling adds the U-Net step on 1 thread
against --threads threads, alternated.

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
    ap.add_argument("--scaling", action="store_true", help="also time the U-Net step on 1 thread vs --threads")
    ap.add_argument("--bench", default=os.path.join(ROOT, ".build", "release", "DarkroomBench"))
    a = ap.parse_args()
    py = sys.executable
    ref_cmd = [py, os.path.join(ROOT, "Tools", "bench", "reference_bench.py"), "--model", a.model, "--size", str(a.size),
               "--runs", str(a.runs), "--threads", str(a.threads)]
    def our_cmd_on(threads):
        return [a.bench, "--model", a.model, "--size", str(a.size), "--runs", str(a.runs), "--threads", str(threads)]
    our_cmd = our_cmd_on(a.threads)
    rows = {}
    ceilings = []  # PyTorch's matmul rate, measured once per round next to the components
    for comp in a.components.split(","):
        r_all = []
        for _ in range(a.rounds):
            mm = run(ref_cmd + ["--component", "matmul"])["matmul"]
            ceiling = mm["gflop"] / mm["median"]; ceilings.append(ceiling)
            r = run(ref_cmd + ["--component", comp])
            o = run(our_cmd + ["--component", comp])
            r_all.append(dict(ref=r[comp]["median"], ours=o[comp]["median"], gflop=r[comp]["gflop"], ceiling=ceiling,
                              ref_mem=r["peak_rss_mb"], our_mem=o["peak_rss_mb"]))
        rows[comp] = r_all
    scaling = []
    if a.scaling:
        # The U-Net step on 1 thread and on --threads threads, alternated; fastest run of each process.
        for _ in range(a.rounds):
            one = run(our_cmd_on(1) + ["--component", "unet"])["unet"]["min"]
            many = run(our_cmd + ["--component", "unet"])["unet"]["min"]
            scaling.append((one, many))

    def med(v):
        v = sorted(v); n = len(v)
        return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2

    print(f"Machine: {cpu_name()}, {os.cpu_count()} cores; threads {a.threads}; size {a.size}x{a.size}; "
          f"PyTorch 4096^3 fp32 matmul: {med(ceilings):.0f} GFLOP/s (median of {len(ceilings)}: "
          f"{min(ceilings):.0f}-{max(ceilings):.0f})")
    print()
    print("Each round runs PyTorch's matmul, then the component in PyTorch, then in Darkroom (each process: one warm-up, then")
    print(f"{a.runs} timed runs, median); ratios and % of the ceiling are taken within a round, then the median over {a.rounds} rounds.")
    print()
    print("| component | GFLOP | PyTorch s | Darkroom s | Darkroom / PyTorch (rounds) | Darkroom GFLOP/s | % of matmul ceiling | peak MB PyTorch / Darkroom |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    names = {"text_encoder": "text encoder (batch 2)", "unet": "UNet step (batch 2)", "vae": "VAE decode"}
    for comp, rs in rows.items():
        ratios = [x["ours"] / x["ref"] for x in rs]
        gflop = rs[0]["gflop"]; ours = med([x["ours"] for x in rs])
        pct = med([100 * gflop / x["ours"] / x["ceiling"] for x in rs])
        per_round = ", ".join(f"{x:.2f}" for x in ratios)
        print(f"| {names.get(comp, comp)} | {gflop:.1f} | {med([x['ref'] for x in rs]):.3f} | {ours:.3f} | "
              f"**{med(ratios):.2f}x** ({per_round}) | {gflop / ours:.0f} | {pct:.0f}% | "
              f"{max(x['ref_mem'] for x in rs):.0f} / {max(x['our_mem'] for x in rs):.0f} |")
    if scaling:
        pairs = ", ".join(f"{o:.2f}/{m:.2f} s" for o, m in scaling)
        best = min(o for o, _ in scaling) / min(m for _, m in scaling)
        print()
        print(f"Thread scaling, Darkroom U-Net step, 1 vs {a.threads} threads (fastest run per process, alternated): "
              f"**{med([o / m for o, m in scaling]):.2f}x** median of pairs ({pairs}); fastest vs fastest {best:.2f}x")

if __name__ == "__main__":
    main()
