import Dispatch
import Foundation
import Synchronization

/// A pointer that may cross into parallel-region closures. The caller guarantees that
/// concurrent workers touch disjoint elements.
public struct SendablePointer<T>: @unchecked Sendable {
    public let p: UnsafeMutablePointer<T>
    @inlinable public init(_ p: UnsafeMutablePointer<T>) { self.p = p }
    @inlinable public subscript(i: Int) -> T {
        get { p[i] }
        nonmutating set { p[i] = newValue }
    }
}

/// Number of worker threads kernels split work across (default: all cores).
public enum Threads {
    nonisolated(unsafe) public static var count: Int = max(1, ProcessInfoShim.activeProcessorCount)
}

enum ProcessInfoShim {
    static var activeProcessorCount: Int {
        #if canImport(Glibc)
        return Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        #else
        return 1
        #endif
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// Runs `body` over 0..<n in contiguous ranges of about `minChunk` or more on `Threads.count`
/// workers: up to `parallelForChunksPerWorker` ranges per worker, each claimed by the next free
/// worker (see `parallelChunks`), so a core slowed by another job does not hold the others back.
@inlinable
public func parallelFor(_ n: Int, minChunk: Int = 1, _ body: (Range<Int>) -> Void) {
    let pieces = max(1, n / max(1, minChunk))
    let workers = min(Threads.count, pieces)
    if workers <= 1 || n <= 1 {
        body(0..<n)
        return
    }
    let chunks = min(pieces, parallelForChunksPerWorker * workers)
    parallelChunks(chunks, workers: workers) { c in
        let lo = n * c / chunks, hi = n * (c + 1) / chunks
        if lo < hi { body(lo..<hi) }
    }
}

/// Ranges per worker in `parallelFor`.
@usableFromInline let parallelForChunksPerWorker = 4

/// Runs `body(i)` for every chunk i in 0..<n on `workers` threads, each taking the next
/// unclaimed chunk when it finishes one. On a shared machine one core is often slowed by other
/// work; with a fixed split the fast core would then wait for the slow one at every call.
@inlinable
public func parallelChunks(_ n: Int, workers: Int, _ body: (Int) -> Void) {
    if workers <= 1 || n <= 1 {
        for i in 0..<n { body(i) }
        return
    }
    let next = Atomic<Int>(0)
    runOnWorkers(min(workers, n)) { _ in
        while true {
            let i = next.wrappingAdd(1, ordering: .relaxed).oldValue
            if i >= n { break }
            body(i)
        }
    }
}

/// Runs `body(worker, range)` over 0..<n on `workers` threads (worker in 0..<workers, so a
/// worker can keep its own buffers) in ranges claimed as workers free up, each a share of what
/// is left (guided self-scheduling): remaining / (2·workers), within minChunk...maxChunk. The
/// work starts in large ranges (which keep per-range costs, e.g. a GEMM streaming its shared
/// operand again, low) and ends in small ones that even out the finish when one core is slowed
/// by another job.
public func parallelGuided(_ n: Int, workers: Int, minChunk: Int = 1, maxChunk: Int = .max,
                           _ body: (Int, Range<Int>) -> Void) {
    let minChunk = max(1, minChunk), maxChunk = max(minChunk, maxChunk)
    if workers <= 1 || n <= minChunk {
        var lo = 0
        while lo < n { body(0, lo..<min(n, lo + maxChunk)); lo += maxChunk }
        return
    }
    let next = Atomic<Int>(0)
    runOnWorkers(workers) { w in
        var lo = next.load(ordering: .relaxed)
        while lo < n {
            let hi = min(n, lo + min(maxChunk, max(minChunk, (n - lo) / (2 * workers))))
            let (claimed, seen) = next.compareExchange(expected: lo, desired: hi, ordering: .relaxed)
            if claimed {
                body(w, lo..<hi)
                lo = next.load(ordering: .relaxed)
            } else {
                lo = seen
            }
        }
    }
}

/// Runs `job(w)` for w in 0..<count, w = 0 on the calling thread and the others on the spinning
/// pool; a call made while the pool is busy (from inside a job, or from another thread) goes to
/// GCD instead.
@usableFromInline
func runOnWorkers(_ count: Int, _ job: (Int) -> Void) {
    withoutActuallyEscaping(job) { job in
        let box = UncheckedBox(job)
        if WorkerPool.shared.run(count, box) { return }
        DispatchQueue.concurrentPerform(iterations: count) { box.value($0) }
    }
}

/// Worker threads that keep spinning for about a millisecond after a parallel region before they
/// sleep. A U-Net step runs thousands of short regions back to back; with GCD's workers, which
/// block at once, an idle virtual CPU halts between regions and waking it again can take the host
/// far longer than the gap (measured on the 2-core VM: ~1.5 of 2 cores busy during a U-Net step
/// with GCD). OpenMP runtimes spin the same way.
@usableFromInline
final class WorkerPool: @unchecked Sendable {
    @usableFromInline static let shared = WorkerPool()

    private let generation = Atomic<Int>(0)     // bumped once per job
    private let remaining = Atomic<Int>(0)      // pool threads not yet done with the current job
    private let inUse = Atomic<Bool>(false)     // one job at a time
    private let sleepers = Atomic<Int>(0)
    private var job: UncheckedBox<(Int) -> Void>? = nil   // written before the bump, read after it
    private var jobWorkers = 0
    private var threads = 0                     // guarded by `lock` (only grows)
    private var lock = pthread_mutex_t()
    private var wake = pthread_cond_t()
    /// Polls of the generation counter a thread spins through before it sleeps (~1 ms; Swift
    /// has no portable pause instruction, so a poll is a plain atomic load of an L1 line).
    private let spinLimit = 1 << 20

    private init() {
        pthread_mutex_init(&lock, nil)
        pthread_cond_init(&wake, nil)
    }

    /// Runs the job on `count` workers; false when the pool is busy (the caller then uses GCD).
    func run(_ count: Int, _ body: UncheckedBox<(Int) -> Void>) -> Bool {
        guard inUse.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return false }
        pthread_mutex_lock(&lock)
        while threads < count - 1 {
            // The thread starts from the current generation, so the bump below is its first job
            // even if it only starts running after it.
            let index = threads + 1, start = generation.load(ordering: .acquiring)
            let t = Thread { [unowned self] in self.loop(index, from: start) }
            t.stackSize = 8 << 20
            t.start()
            threads += 1
        }
        let pool = threads
        pthread_mutex_unlock(&lock)
        job = body
        jobWorkers = count
        remaining.store(pool, ordering: .relaxed)
        generation.wrappingAdd(1, ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
            pthread_mutex_lock(&lock)
            pthread_cond_broadcast(&wake)
            pthread_mutex_unlock(&lock)
        }
        body.value(0)
        while remaining.load(ordering: .acquiring) > 0 {}
        job = nil
        inUse.store(false, ordering: .releasing)
        return true
    }

    private func loop(_ index: Int, from start: Int) {
        var seen = start
        while true {
            var spins = 0
            var g = generation.load(ordering: .acquiring)
            while g == seen {
                if spins < spinLimit {
                    spins += 1
                } else {
                    pthread_mutex_lock(&lock)
                    sleepers.wrappingAdd(1, ordering: .sequentiallyConsistent)
                    while generation.load(ordering: .sequentiallyConsistent) == seen { pthread_cond_wait(&wake, &lock) }
                    sleepers.wrappingSubtract(1, ordering: .sequentiallyConsistent)
                    pthread_mutex_unlock(&lock)
                }
                g = generation.load(ordering: .acquiring)
            }
            seen = g
            if index < jobWorkers, let body = job { body.value(index) }
            remaining.wrappingSubtract(1, ordering: .releasing)
        }
    }
}

public struct UncheckedBox<T>: @unchecked Sendable {
    public let value: T
    @inlinable public init(_ v: T) { value = v }
}
