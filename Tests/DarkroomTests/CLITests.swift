import Foundation
import XCTest
@testable import Darkroom

/// Runs the built `darkroom` executable as a user would and checks exit codes, messages and files.
final class CLITests: XCTestCase {
    struct Result { let status: Int32; let stdout: String; let stderr: String }

    static var executable: URL {
        // The test bundle sits in the build products folder, next to the executable.
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = dir.appendingPathComponent("darkroom")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        for b in Bundle.allBundles {
            let candidate = b.bundleURL.deletingLastPathComponent().appendingPathComponent("darkroom")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        return TestPaths.repo.appendingPathComponent(".build/debug/darkroom")
    }

    func run(_ args: [String], environment: [String: String] = [:]) throws -> Result {
        let p = Process()
        p.executableURL = Self.executable
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        p.environment = env
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    var tmp: URL!

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("darkroom-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: tmp)
    }

    /// A writable copy of a tiny model.
    func copyModel(_ name: String = "tiny-sd1") throws -> URL {
        let dst = tmp.appendingPathComponent(name)
        try FileManager.default.copyItem(at: TestPaths.model(name), to: dst)
        return dst
    }

    func pngs(in dir: URL) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []).filter { $0.hasSuffix(".png") }.sorted()
    }

    func assertOneLineError(_ r: Result, status: Int32, mentions: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(r.status, status, "exit status; stderr: \(r.stderr)", file: file, line: line)
        let lines = r.stderr.split(separator: "\n").filter { $0.hasPrefix("darkroom: error:") }
        XCTAssertEqual(lines.count, 1, "exactly one error line: \(r.stderr)", file: file, line: line)
        for m in mentions { XCTAssertTrue(r.stderr.contains(m), "error mentions \(m): \(r.stderr)", file: file, line: line) }
        XCTAssertFalse(r.stderr.contains("Fatal error"), "no trap", file: file, line: line)
    }

    func testRenderWritesPNGWithParameters() throws {
        let out = tmp.appendingPathComponent("heart.png")
        let r = try run(["render", "a red heart", "--negative-prompt", "blurry", "--steps", "2", "--seed", "42",
                         "--model", TestPaths.model("tiny-sd1").path, "--output", out.path, "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let (image, text) = try PNGFile.read(out)
        XCTAssertEqual(image.width, 128)
        XCTAssertEqual(image.height, 128)
        let params = try GenerationParameters(parsing: try XCTUnwrap(text["parameters"]))
        XCTAssertEqual(params.prompt, "a red heart")
        XCTAssertEqual(params.negativePrompt, "blurry")
        XCTAssertEqual(params.seed, 42)
        XCTAssertEqual(params.steps, 2)
    }

    func testCountWritesNumberedFilesWithConsecutiveSeeds() throws {
        let dir = tmp.appendingPathComponent("out/nested")
        let r = try run(["render", "blue heart", "--steps", "1", "--seed", "7", "--count", "2", "--width", "64", "--height", "64",
                         "--model", TestPaths.model("tiny-sd1").path, "--output", dir.path, "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(pngs(in: dir), ["00000-7-blue-heart.png", "00001-8-blue-heart.png"])
    }

    func testMissingModelFolder() throws {
        let missing = tmp.appendingPathComponent("no-such-model").path
        let r = try run(["render", "x", "--model", missing, "--output", tmp.path])
        assertOneLineError(r, status: 3, mentions: [missing])
        XCTAssertEqual(pngs(in: tmp), [])
    }

    func testMissingWeight() throws {
        let model = try copyModel()
        let file = model.appendingPathComponent("unet/diffusion_pytorch_model.safetensors")
        let st = try SafetensorsFile(url: file)
        let dropped = "conv_out.bias"
        let items = try st.names.filter { $0 != dropped }.map { SafetensorsWriter.Item(name: $0, tensor: try st.tensor($0)) }
        try SafetensorsWriter.write(items, to: file)
        let r = try run(["render", "x", "--model", model.path, "--output", tmp.appendingPathComponent("o").path])
        assertOneLineError(r, status: 3, mentions: [file.path, dropped, "missing"])
        XCTAssertEqual(pngs(in: tmp.appendingPathComponent("o")), [])
    }

    func testWrongShape() throws {
        let model = try copyModel()
        let file = model.appendingPathComponent("unet/diffusion_pytorch_model.safetensors")
        let st = try SafetensorsFile(url: file)
        let key = "conv_in.weight"
        let items = try st.names.map { n -> SafetensorsWriter.Item in
            let t = try st.tensor(n)
            if n == key { return SafetensorsWriter.Item(name: n, tensor: Tensor.zeros([t.shape[0] + 1] + t.shape.dropFirst())) }
            return SafetensorsWriter.Item(name: n, tensor: t)
        }
        try SafetensorsWriter.write(items, to: file)
        let r = try run(["render", "x", "--model", model.path, "--output", tmp.appendingPathComponent("o").path])
        assertOneLineError(r, status: 3, mentions: [file.path, key, "shape"])
    }

    func testTruncatedSafetensors() throws {
        let model = try copyModel()
        let file = model.appendingPathComponent("vae/diffusion_pytorch_model.safetensors")
        let data = try Data(contentsOf: file)
        try data.prefix(data.count / 2).write(to: file)
        let r = try run(["render", "x", "--model", model.path, "--output", tmp.appendingPathComponent("o").path])
        assertOneLineError(r, status: 3, mentions: [file.path, "truncated"])
    }

    func testBadArgumentsAreUsageErrors() throws {
        let r = try run(["render", "x", "--width", "100", "--model", TestPaths.model("tiny-sd1").path])
        XCTAssertEqual(r.status, 64, "ArgumentParser's validation exit code: \(r.stderr)")
        XCTAssertTrue(r.stderr.contains("--width"))
    }
}
