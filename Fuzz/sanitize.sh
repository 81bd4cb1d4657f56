#!/usr/bin/env bash
# Runs the test suite under AddressSanitizer and ThreadSanitizer.
#   Fuzz/sanitize.sh [address|thread ...]            both by default
#   SANITIZE_FILTER=REGEX Fuzz/sanitize.sh thread    only the tests matching REGEX (swift test --filter)
#   SANITIZE_SKIP=REGEX Fuzz/sanitize.sh thread      every test except those matching REGEX (--skip)
# Each sanitizer builds into its own scratch folder (.build-asan, .build-tsan), so the normal
# .build is untouched; logs go to .build-<san>/sanitize.log. Exits non-zero when a test fails or
# a sanitizer reports anything (a report makes the test process exit non-zero).
#
# ThreadSanitizer slows the kernels 5-20x. By default it skips the few tests that render many
# images end to end (their code paths are the same as the fast tests', only longer):
#   CLITests.testBatchOfThirtyLinesThenNothingNewOnRerun, SingleFileTests (whole SD-shaped
#   checkpoints), the pipeline parity tests that run every sampler.
# On this machine, pin it: taskset -c 1 nice -n 5 Fuzz/sanitize.sh
set -uo pipefail
cd "$(dirname "$0")/.."
sanitizers=("$@"); [ ${#sanitizers[@]} -gt 0 ] || sanitizers=(address thread)
tsan_default_skip='testBatchOfThirtyLinesThenNothingNewOnRerun|SingleFileTests|SamplerTests.testPipelineMatchesDiffusers'
# Nothing is skipped under AddressSanitizer (the scheduler goldens now have cross-CPU tolerances).
exact_skip=''

status=0
for san in "${sanitizers[@]}"; do
    case "$san" in
        address) scratch=.build-asan ;;
        thread) scratch=.build-tsan ;;
        *) echo "unknown sanitizer '$san' (address or thread)"; exit 64 ;;
    esac
    mkdir -p "$scratch"
    log="$scratch/sanitize.log"
    args=(--scratch-path "$scratch" --sanitize="$san")
    if [ -n "${SANITIZE_FILTER:-}" ]; then args+=(--filter "$SANITIZE_FILTER"); fi
    skip=${SANITIZE_SKIP-$exact_skip}
    [ "$san" = thread ] && [ -z "${SANITIZE_SKIP+x}" ] && [ -z "${SANITIZE_FILTER:-}" ] && skip="${skip:+$skip|}$tsan_default_skip"
    [ -n "$skip" ] && args+=(--skip "$skip")
    echo "== swift test ${args[*]}  (log: $log)"
    start=$(date +%s)
    # halt_on_error: the first report fails the test process (TSan otherwise only warns).
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:halt_on_error=1} \
    TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1} \
        swift test "${args[@]}" >"$log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    reports=$(grep -cE "^(==[0-9]+==ERROR: AddressSanitizer|WARNING: ThreadSanitizer|SUMMARY: (Address|Thread)Sanitizer)" "$log")
    summary=$(grep -E "Executed [0-9]+ tests?" "$log" | tail -n 1 | sed 's/^[[:space:]]*//')
    echo "   $san: exit $rc, ${secs}s, sanitizer reports: $reports; ${summary:-no XCTest summary}"
    if [ "$rc" -ne 0 ] || [ "$reports" -ne 0 ]; then
        status=1
        grep -nE "SUMMARY: |error: |failed \(" "$log" | head -n 20
    fi
done
exit $status
