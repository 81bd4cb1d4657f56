import Dispatch
import Foundation
import Synchronization
import XCTest
@testable import Kernels

final class ParallelTests: XCTestCase {
    func testParallelForCoversEveryIndexOnce() {
        var hits = [Int](repeating: 0, count: 1000)
        hits.withUnsafeMutableBufferPointer { b in
            let p = SendablePointer(b.baseAddress!)
            parallelFor(1000) { r in for i in r { p[i] += 1 } }
        }
        XCTAssertEqual(hits, [Int](repeating: 1, count: 1000))
    }

    func testParallelGuidedClaimsShrinkingRangesCoveringEveryIndexOnce() {
        for (n, workers, minChunk, maxChunk) in [(1000, 2, 1, Int.max), (1000, 3, 7, 50), (5, 4, 1, 1), (37, 1, 1, 8), (0, 2, 1, 4)] {
            var hits = [Int](repeating: 0, count: n)
            let sizes = Mutex<[Int]>([])
            hits.withUnsafeMutableBufferPointer { b in
                let p = SendablePointer(b.baseAddress!)
                parallelGuided(n, workers: workers, minChunk: minChunk, maxChunk: maxChunk) { w, r in
                    XCTAssertTrue((0..<max(1, workers)).contains(w))
                    for i in r { p[i] += 1 }
                    sizes.withLock { $0.append(r.count) }
                }
            }
            XCTAssertEqual(hits, [Int](repeating: 1, count: n), "n \(n) workers \(workers)")
            let s = sizes.withLock { $0 }
            XCTAssertTrue(s.allSatisfy { $0 <= maxChunk }, "\(s)")
            // Every range but the last is at least minChunk.
            XCTAssertLessThanOrEqual(s.filter { $0 < minChunk }.count, 1, "\(s)")
            if n == 1000 && maxChunk == .max {
                // Guided: a large first range (1000 / 4) and small ones at the end.
                XCTAssertEqual(s.max(), 250)
                XCTAssertEqual(s.min(), 1)
            }
        }
    }

    /// Counts, per chunk, how often `parallelChunks` ran it.
    private func chunkCounts(_ n: Int, workers: Int) -> [Int] {
        var hits = [Int](repeating: 0, count: n)
        hits.withUnsafeMutableBufferPointer { b in
            let p = SendablePointer(b.baseAddress!)
            parallelChunks(n, workers: workers) { i in p[i] += 1 }
        }
        return hits
    }

    /// The spinning pool over many short regions back to back (a lost job would hang or drop a
    /// chunk), after pauses long enough for its threads to go to sleep (the wake-up path), and
    /// with more workers than it has threads (it grows).
    func testWorkerPoolRunsEveryChunkOnceAcrossRegionsAndSleeps() {
        for round in 0..<2000 {
            let n = 1 + round % 9
            XCTAssertEqual(chunkCounts(n, workers: 2), [Int](repeating: 1, count: n), "round \(round)")
        }
        for _ in 0..<5 {
            Thread.sleep(forTimeInterval: 0.02)
            XCTAssertEqual(chunkCounts(16, workers: 2), [Int](repeating: 1, count: 16))
        }
        XCTAssertEqual(chunkCounts(64, workers: 5), [Int](repeating: 1, count: 64))
        XCTAssertEqual(chunkCounts(64, workers: 2), [Int](repeating: 1, count: 64))
    }

    /// A region started inside a region, and regions started from several threads at once, run
    /// (on GCD while the pool is taken) and complete.
    func testNestedAndConcurrentRegionsComplete() {
        var outer = [Int](repeating: 0, count: 8 * 8)
        outer.withUnsafeMutableBufferPointer { b in
            let p = SendablePointer(b.baseAddress!)
            parallelChunks(8, workers: 2) { i in
                parallelChunks(8, workers: 2) { j in p[i * 8 + j] += 1 }
            }
        }
        XCTAssertEqual(outer, [Int](repeating: 1, count: 64))
        let total = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for _ in 0..<200 {
                parallelChunks(10, workers: 2) { _ in total.wrappingAdd(1, ordering: .relaxed) }
            }
        }
        XCTAssertEqual(total.load(ordering: .relaxed), 4 * 200 * 10)
    }
}
