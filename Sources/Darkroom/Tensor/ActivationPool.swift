import Foundation

/// Storage of freed activations kept for the next tensor of the same byte size, while a model
/// call runs (`withReuse`). A UNet step allocates the same few sizes over and over (every
/// ResNet and transformer block of a level makes tensors of one shape); large ones are mmap'd
/// by malloc, so each fresh one page-faults and is zeroed by the kernel (~7 % of a 512x512 SD
/// step). At most `limitBytes` is kept, and everything kept is freed when the outermost call
/// ends, so the extra memory is bounded and never outlives the call.
final class ActivationPool: @unchecked Sendable {
    static let shared = ActivationPool()
    /// Below this malloc serves blocks from its own free lists without page faults.
    var minimumBytes = 1 << 20
    /// Tests: fill reused storage with NaN, so an op that reads memory it did not write shows.
    var poisonReused = false

    private let lock = NSLock()
    private var depth = 0
    private var free: [Int: [UnsafeMutableRawPointer]] = [:]
    private var keptBytes = 0
    /// Tensors served from kept storage so far (tests check that reuse happens).
    private(set) var reuses = 0
    /// Bytes of freed storage kept at most (beyond it, freed storage goes back to malloc).
    var limitBytes = 160 << 20

    /// Runs `body` with reuse on; nested calls share the outermost scope.
    func withReuse<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        depth += 1
        lock.unlock()
        defer {
            lock.lock()
            depth -= 1
            var drop: [UnsafeMutableRawPointer] = []
            if depth == 0 {
                drop = free.values.flatMap { $0 }
                free.removeAll()
                keptBytes = 0
            }
            lock.unlock()
            for p in drop { p.deallocate() }
        }
        return try body()
    }

    /// Kept storage of exactly `bytes`, or nil.
    func take(_ bytes: Int) -> UnsafeMutableRawPointer? {
        guard bytes >= minimumBytes else { return nil }
        lock.lock()
        defer { lock.unlock() }
        guard depth > 0, let p = free[bytes]?.popLast() else { return nil }
        keptBytes -= bytes
        reuses += 1
        if poisonReused { p.initializeMemory(as: Float.self, repeating: .nan, count: bytes / 4) }
        return p
    }

    /// Keeps `p` (of `bytes`) for reuse if a scope is open and the limit allows; false if the
    /// caller must free it.
    func give(_ p: UnsafeMutableRawPointer, _ bytes: Int) -> Bool {
        guard bytes >= minimumBytes else { return false }
        lock.lock()
        defer { lock.unlock() }
        guard depth > 0, keptBytes + bytes <= limitBytes else { return false }
        free[bytes, default: []].append(p)
        keptBytes += bytes
        return true
    }
}
