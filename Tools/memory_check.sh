#!/usr/bin/env bash
# Compares Darkroom's memory estimate (what render and batch check before loading) with the
# peak RSS of real renders, measured with /usr/bin/time -v. Prints a Markdown table.
#   Tools/memory_check.sh MODEL SIZE...        SIZE = WIDTHxHEIGHT or WIDTHxHEIGHTxBATCH
#   DARKROOM=.build/debug/darkroom Tools/memory_check.sh Models/tiny-sd1 64x64 512x512 512x512x2
# One denoising step per render (the peak does not depend on the step count), with guidance.
set -euo pipefail
bin=${DARKROOM:-.build/release/darkroom}
model=$1; shift
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install time)"; exit 2; }
echo "| model | size | batch | estimate MiB (peak phase) | peak RSS MiB | estimate / RSS |"
echo "| --- | --- | --- | --- | --- | --- |"
for s in "$@"; do
    IFS=x read -r w h b <<< "$s"; b=${b:-1}
    report=$("$bin" info "$model" --memory "${w}x${h}x${b}")
    est=$(sed -nE 's/.*\(([0-9]+) bytes\).*/\1/p' <<< "$report")
    phase=$(sed -nE 's/.* \+ (.*) [0-9.]+ [KMG]iB \+ base.*/\1/p' <<< "$report")
    out=$(mktemp -d)
    /usr/bin/time -v "$bin" render "memory check" --model "$model" --width "$w" --height "$h" --count "$b" --batch-size "$b" \
        --steps 1 --seed 1 --output "$out/" -q --ignore-memory-check >/dev/null 2> "$out/time.txt" \
        || { cat "$out/time.txt"; exit 1; }
    rss_kb=$(sed -nE 's/.*Maximum resident set size \(kbytes\): ([0-9]+)/\1/p' "$out/time.txt")
    rm -rf "$out"
    awk -v m="$(basename "$model")" -v w="$w" -v h="$h" -v b="$b" -v e="$est" -v r="$rss_kb" -v p="$phase" \
        'BEGIN { printf "| %s | %sx%s | %s | %.0f (%s) | %.0f | %.2f |\n", m, w, h, b, e / 1048576, p, r / 1024, e / (r * 1024) }'
done
