import Foundation
import XCTest
@testable import Darkroom

/// Paths of the repository, fixtures and tiny models, found from this file.
enum TestPaths {
    static let tests = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    static let fixtures = tests.appendingPathComponent("Fixtures")
    static let repo = tests.deletingLastPathComponent().deletingLastPathComponent()
    static let models = repo.appendingPathComponent("Models")
    static func model(_ name: String) -> URL { models.appendingPathComponent(name) }
    static func golden(_ model: String, _ file: String) -> URL { fixtures.appendingPathComponent(model).appendingPathComponent(file) }
}

/// Golden tensors written by Tools/ with PyTorch.
struct Golden {
    let file: SafetensorsFile
    init(_ model: String, _ name: String) throws { file = try SafetensorsFile(url: TestPaths.golden(model, name)) }
    func tensor(_ name: String) throws -> Tensor { try file.tensor(name) }
    func has(_ name: String) -> Bool { file.entries[name] != nil }
}

/// Largest absolute difference, and the largest absolute reference value (for relative checks).
func maxAbsDiff(_ a: Tensor, _ b: Tensor) -> (diff: Float, scale: Float) {
    precondition(a.count == b.count, "\(a.shape) vs \(b.shape)")
    var d: Float = 0, s: Float = 0
    for i in 0..<a.count {
        d = max(d, abs(a[i] - b[i]))
        s = max(s, abs(b[i]))
    }
    return (d, s)
}

func assertClose(_ actual: Tensor, _ expected: Tensor, atol: Float, rtol: Float = 0, _ what: String,
                 file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual.shape, expected.shape, "\(what): shape", file: file, line: line)
    guard actual.count == expected.count else { return }
    let (d, s) = maxAbsDiff(actual, expected)
    XCTAssertLessThanOrEqual(d, atol + rtol * s, "\(what): max-abs diff \(d) (reference max-abs \(s))", file: file, line: line)
    XCTAssertGreaterThan(s, 0, "\(what): reference is all zero", file: file, line: line)
}
