import XCTest
@testable import Kernels

/// Deterministic xorshift generator for test data (values in [-1, 1)).
struct TestRNG {
    var state: UInt64
    init(_ seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 | 1 }
    mutating func next() -> Float {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return Float(state >> 40) / Float(1 << 23) - 1
    }
    mutating func array(_ n: Int, scale: Float = 1) -> [Float] {
        (0..<n).map { _ in next() * scale }
    }
}

/// Runs `body` with Threads.count temporarily set (tests exercise both the serial and split paths).
func withThreads<R>(_ n: Int, _ body: () throws -> R) rethrows -> R {
    let saved = Threads.count
    Threads.count = n
    defer { Threads.count = saved }
    return try body()
}

/// Asserts |got − want| ≤ tol · scale[i] element-wise (scale = magnitude of the computation).
func assertClose(_ got: [Float], _ want: [Double], scale: [Double], tol: Double, _ what: String,
                 file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(got.count, want.count, what, file: file, line: line)
    var worst = 0.0, worstAt = -1
    for i in 0..<min(got.count, want.count) {
        let err = abs(Double(got[i]) - want[i])
        let bound = tol * max(scale[i], 1e-30)
        if !(err <= bound) {
            if worstAt < 0 || err / bound > worst { worst = err / bound; worstAt = i }
        }
    }
    if worstAt >= 0 {
        XCTFail("\(what): element \(worstAt) got \(got[worstAt]) want \(want[worstAt]) (error \(worst)× tolerance)",
                file: file, line: line)
    }
}

func withOptionalPointer<R>(_ a: [Float]?, _ body: (UnsafePointer<Float>?) -> R) -> R {
    guard let a else { return body(nil) }
    return a.withUnsafeBufferPointer { body($0.baseAddress) }
}
