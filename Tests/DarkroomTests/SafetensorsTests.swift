import Foundation
import XCTest
@testable import Darkroom

final class SafetensorsTests: XCTestCase {
    func testDTypeConversionsMatchTorch() throws {
        // Expected float32 values were widened by PyTorch (Tools/fixtures_dtypes.py).
        let f = try SafetensorsFile(url: TestPaths.fixtures.appendingPathComponent("dtypes.safetensors"))
        let f32 = try f.tensor("f32")
        XCTAssertEqual(f32.shape, [4, 5])
        XCTAssertEqual(try f.tensor("f16").scalars.map(\.bitPattern), try f.tensor("f32_expected_from_f16").scalars.map(\.bitPattern))
        XCTAssertEqual(try f.tensor("bf16").scalars.map(\.bitPattern), try f.tensor("f32_expected_from_bf16").scalars.map(\.bitPattern))
        XCTAssertEqual(try f.integers("i64").count, 8)
        XCTAssertEqual(try f.tensor("scalar_f32").shape, [])
    }

    /// Writes `header` (raw JSON text) followed by `dataBytes` zero bytes and tries to open it.
    func open(header: String, dataBytes: Int = 16, lengthOverride: UInt64? = nil) throws -> SafetensorsFile {
        var d = Data()
        let h = Array(header.utf8)
        withUnsafeBytes(of: (lengthOverride ?? UInt64(h.count)).littleEndian) { d.append(contentsOf: $0) }
        d.append(contentsOf: h)
        d.append(Data(count: dataBytes))
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("st-\(UUID().uuidString).safetensors")
        try d.write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        return try SafetensorsFile(url: url)
    }

    func assertRejected(_ header: String, dataBytes: Int = 16, lengthOverride: UInt64? = nil, mentions: String,
                        file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try open(header: header, dataBytes: dataBytes, lengthOverride: lengthOverride), file: file, line: line) { e in
            guard case DarkroomError.invalidFile(_, let reason) = e else { return XCTFail("\(e)", file: file, line: line) }
            XCTAssertTrue(reason.contains(mentions), "'\(reason)' should mention '\(mentions)'", file: file, line: line)
        }
    }

    func testValidMinimalFile() throws {
        let f = try open(header: #"{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"__metadata__":{"format":"pt"}}"#)
        XCTAssertEqual(f.entries["a"]?.shape, [2, 2])
        XCTAssertEqual(f.metadata["format"], "pt")
        XCTAssertEqual(try f.tensor("a").scalars, [0, 0, 0, 0])
    }

    func testHostileHeadersAreRejected() {
        assertRejected(#"{"a":{"dtype":"F32","shape":[2,4],"data_offsets":[0,32]}}"#, mentions: "run past the end")
        assertRejected(#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#, mentions: "needs 12 bytes")
        assertRejected(#"{"a":{"dtype":"F32","shape":[100000000000000,100000000000000],"data_offsets":[0,16]}}"#, mentions: "overflow")
        assertRejected(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, mentions: "overlaps")
        assertRejected(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#, mentions: "duplicate")
        assertRejected(#"{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}"#, mentions: "dtype")
        assertRejected(#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, mentions: "shape")
        assertRejected(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, mentions: "data_offsets")
        assertRejected(#"{"a": [1, 2"#, mentions: "JSON")
        assertRejected(#"[1,2,3]"#, mentions: "object")
        assertRejected(#"{}"#, lengthOverride: 1 << 40, mentions: "limit")
        assertRejected(#"{}"#, dataBytes: 0, lengthOverride: 100, mentions: "truncated")
    }

    func testTooShortFile() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("short-\(UUID().uuidString).safetensors")
        try Data([1, 2, 3]).write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        XCTAssertThrowsError(try SafetensorsFile(url: url)) { e in
            XCTAssertTrue("\(e)".contains("truncated"), "\(e)")
            XCTAssertTrue("\(e)".contains(url.path), "names the file: \(e)")
        }
    }

    func testMissingFile() {
        XCTAssertThrowsError(try SafetensorsFile(url: URL(fileURLWithPath: "/nonexistent/x.safetensors"))) { e in
            XCTAssertEqual(e as? DarkroomError, .fileNotFound(path: "/nonexistent/x.safetensors"))
        }
    }

    func testWriterRoundTrip() throws {
        let t = Tensor(shape: [3], values: [1.5, -2, 0.25])
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("rt-\(UUID().uuidString).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try SafetensorsWriter.write([.init(name: "x", tensor: t), .init(name: "y", tensor: t, dtype: .f16)], metadata: ["k": "v\"q"], to: url)
        let f = try SafetensorsFile(url: url)
        XCTAssertEqual(try f.tensor("x").scalars, [1.5, -2, 0.25])
        XCTAssertEqual(try f.tensor("y").scalars, [1.5, -2, 0.25])
        XCTAssertEqual(f.metadata["k"], "v\"q")
    }
}
