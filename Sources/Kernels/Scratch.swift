import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A small pool of 64-byte-aligned float buffers reused across kernel calls.
/// Packing buffers are a few hundred KB to a few MB; allocating them afresh on every GEMM would
/// page-fault them in each time (mmap'd by malloc), which costs more than the packing itself
/// for mid-sized products. Workers take a buffer at the start of a call and give it back at the end.
final class ScratchPool: @unchecked Sendable {
    private let lock = NSLock()
    private var free: [(pointer: UnsafeMutablePointer<Float>, capacity: Int)] = []
    /// Buffers kept for reuse; beyond this the largest spare ones are released.
    private let maxKept = 12
    /// Bytes kept for reuse; beyond this the largest spare buffers are released too (a decoder
    /// at 512×512 cycles through many transform buffers of 10–40 MB; keeping all of them would
    /// add their sum to the peak). 192 MB holds the Winograd V and U buffers of a 512×512 U-Net
    /// step: with 96 MB they were dropped and page-faulted in again every step (SD 1.5, 3 calls:
    /// 2.74 → 2.33 M faults, 5.3 → 4.3 s system time); the render's peak, reached in the U-Net,
    /// stayed 2.32 GB, the decoder's alone grows by ~90 MB. DARKROOM_SCRATCH_MB overrides it.
    private let maxKeptBytes = (Int(ProcessInfo.processInfo.environment["DARKROOM_SCRATCH_MB"] ?? "") ?? 192) << 20

    /// A buffer of at least `count` floats, 64-byte aligned. Contents are unspecified.
    func take(_ count: Int) -> (pointer: UnsafeMutablePointer<Float>, capacity: Int) {
        let need = max(count, 16)
        lock.lock()
        var best = -1
        for (i, b) in free.enumerated() where b.capacity >= need {
            if best < 0 || b.capacity < free[best].capacity { best = i }
        }
        if best >= 0 {
            let b = free.remove(at: best)
            lock.unlock()
            return b
        }
        lock.unlock()
        // Round up so that slightly different sizes share buffers.
        let cap = (need + 4095) & ~4095
        let raw = UnsafeMutableRawPointer.allocate(byteCount: cap * MemoryLayout<Float>.stride, alignment: 64)
        return (raw.bindMemory(to: Float.self, capacity: cap), cap)
    }

    /// Frees every buffer kept for reuse (buffers in use are unaffected).
    func trim() {
        lock.lock()
        let drop = free
        free.removeAll()
        lock.unlock()
        for d in drop { UnsafeMutableRawPointer(d.pointer).deallocate() }
    }

    /// Bytes held by the buffers kept for reuse.
    var retainedBytes: Int {
        lock.lock()
        defer { lock.unlock() }
        return free.reduce(0) { $0 + $1.capacity * MemoryLayout<Float>.stride }
    }

    func give(_ b: (pointer: UnsafeMutablePointer<Float>, capacity: Int)) {
        lock.lock()
        free.append(b)
        var drop: [(pointer: UnsafeMutablePointer<Float>, capacity: Int)] = []
        var kept = free.reduce(0) { $0 + $1.capacity * MemoryLayout<Float>.stride }
        if free.count > maxKept || kept > maxKeptBytes {
            free.sort { $0.capacity < $1.capacity }
            while free.count > maxKept || (kept > maxKeptBytes && free.count > 1) {
                let d = free.removeLast()
                kept -= d.capacity * MemoryLayout<Float>.stride
                drop.append(d)
            }
        }
        lock.unlock()
        for d in drop { UnsafeMutableRawPointer(d.pointer).deallocate() }
    }
}

let scratchPool = ScratchPool()

/// Frees the kernels' pooled scratch buffers (GEMM packing, Winograd transforms, padded images)
/// and hands freed heap memory back to the system: glibc keeps freed blocks below its mmap
/// threshold (which grows up to 32 MB as large blocks are freed) resident. Call between phases
/// whose buffers differ, e.g. after loading weights and between denoising and decoding, so one
/// phase's working set does not stay resident under the next one's peak.
public func releaseScratchMemory() {
    scratchPool.trim()
    #if canImport(Glibc)
    if let trim = mallocTrim { _ = trim(0) }
    #endif
}

/// Makes glibc hand every block of 8 MB or more straight back to the system when it is freed.
/// By default glibc raises its mmap threshold up to 32 MB as large blocks are freed, so the
/// 8-32 MB activations of a 512x512 UNet step (10 MB per 320-channel plane with guidance) stay
/// in its heap: measured on SD 1.5 at 512x512, the whole render's peak RSS falls by 65 MB with
/// no change in time (a 1 MB threshold cost 2x the time in page faults). A process-wide
/// setting, so the CLI and the benchmarks call it, not the library. No-op off glibc.
public func limitHeapRetention(threshold: Int = 8 << 20) {
    #if canImport(Glibc)
    guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") else { return }
    let mallopt = unsafeBitCast(sym, to: (@convention(c) (Int32, Int32) -> Int32).self)
    _ = mallopt(-3 /* M_MMAP_THRESHOLD */, Int32(clamping: threshold))
    #endif
}

#if canImport(Glibc)
/// glibc's malloc_trim (malloc.h is not in Swift's Glibc module), looked up once.
private let mallocTrim: (@convention(c) (Int) -> Int32)? = {
    guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") else { return nil }
    return unsafeBitCast(sym, to: (@convention(c) (Int) -> Int32).self)
}()
#endif

/// Runs `body` with a scratch buffer of at least `count` floats (64-byte aligned, uninitialised).
@inline(__always)
func withScratch<R>(_ count: Int, _ body: (UnsafeMutablePointer<Float>) -> R) -> R {
    let b = scratchPool.take(count)
    defer { scratchPool.give(b) }
    return body(b.pointer)
}
