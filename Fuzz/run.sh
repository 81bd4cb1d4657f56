#!/usr/bin/env bash
# Builds and runs Darkroom's libFuzzer targets for a bounded time each.
#   Fuzz/run.sh [SECONDS_PER_TARGET] [TARGET ...]     targets: safetensors config tokenizer png json prompts parameters
# Crashes are written to Fuzz/crashes/<target>/; the corpus grows in a scratch copy of
# Fuzz/corpus/<target>/ (commit interesting new inputs by hand). Exits non-zero on any crash.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(json safetensors config tokenizer png prompts parameters)
build=.build-fuzz; mkdir -p "$build" Fuzz/crashes
arch_flags=(); [ "$(uname -m)" = x86_64 ] && arch_flags=(-target-cpu haswell)

# libpng shim, instrumented, and a module map so Swift can import it as SwiftPM does.
mkdir -p "$build/CPNG"
printf 'module CPNG {\n  header "%s"\n  link "png16"\n  export *\n}\n' "$PWD/Sources/CPNG/include/png_shim.h" > "$build/CPNG/module.modulemap"
clang -c -O1 -g -fsanitize=fuzzer-no-link,address -ISources/CPNG/include Sources/CPNG/png_shim.c -o "$build/png_shim.o"

# Kernels as its own module (the library imports it), instrumented too.
swiftc -O -g -sanitize=fuzzer,address -parse-as-library -module-name Kernels "${arch_flags[@]}" \
    -emit-module -emit-module-path "$build/Kernels.swiftmodule" -emit-library -static -o "$build/libKernels.a" \
    $(find Sources/Kernels -name '*.swift' | sort) 2>&1 | grep -v warning || true

bin="$build/darkroom-fuzz"
echo "== building the fuzz binary (library + targets, libFuzzer + AddressSanitizer)"
swiftc -O -g -sanitize=fuzzer,address -parse-as-library -module-name DarkroomFuzz "${arch_flags[@]}" \
    -I "$build/CPNG" -I "$build" $(find Sources/Darkroom -name '*.swift' | sort) Fuzz/Targets/FuzzEntry.swift \
    "$build/libKernels.a" "$build/png_shim.o" -lpng16 -o "$bin" 2>&1 | grep -v warning || true
[ -x "$bin" ] || { echo "build failed"; exit 2; }

status=0
for t in "${targets[@]}"; do
    corpus="$build/corpus-$t"; rm -rf "$corpus"; mkdir -p "$corpus" "Fuzz/crashes/$t"
    cp -r "Fuzz/corpus/$t/." "$corpus/" 2>/dev/null || true
    echo "== fuzzing $t for ${seconds}s"
    if ! DARKROOM_FUZZ_TARGET=$t "$bin" "$corpus" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
        -artifact_prefix="Fuzz/crashes/$t/" -print_final_stats=1 2>&1 | tail -n 12; then
        echo "!! $t found a crash: see Fuzz/crashes/$t/"; status=1
    fi
done
exit $status
