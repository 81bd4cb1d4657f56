import Dispatch
import Synchronization

/// A pointer that may cross into `concurrentPerform` closures. The caller guarantees that
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

/// Runs `body(i)` for i in 0..<n, split in contiguous chunks over `Threads.count` workers.
@inlinable
public func parallelFor(_ n: Int, minChunk: Int = 1, _ body: (Range<Int>) -> Void) {
    let workers = min(Threads.count, max(1, n / max(1, minChunk)))
    if workers <= 1 || n <= 1 {
        body(0..<n)
        return
    }
    parallelChunks(workers, workers: workers) { w in
        let lo = n * w / workers, hi = n * (w + 1) / workers
        if lo < hi { body(lo..<hi) }
    }
}

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
    withoutActuallyEscaping(body) { body in
        let box = UncheckedBox(body)
        DispatchQueue.concurrentPerform(iterations: min(workers, n)) { _ in
            while true {
                let i = next.wrappingAdd(1, ordering: .relaxed).oldValue
                if i >= n { break }
                box.value(i)
            }
        }
    }
}

public struct UncheckedBox<T>: @unchecked Sendable {
    public let value: T
    @inlinable public init(_ v: T) { value = v }
}
