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
}
