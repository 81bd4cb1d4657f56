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

    /// Runs the command to completion. Output goes through files, so neither stream can fill a
    /// pipe and stall the child.
    func run(_ args: [String], environment: [String: String] = [:], stdin: String? = nil) throws -> Result {
        let p = try start(args, environment: environment, stdin: stdin)
        p.process.waitUntilExit()
        return p.result()
    }

    /// A started `darkroom` process whose output is collected in files.
    struct Running {
        let process: Process
        let out: URL, err: URL
        func result() -> Result {
            Result(status: process.terminationStatus,
                   stdout: (try? String(contentsOf: out, encoding: .utf8)) ?? "",
                   stderr: (try? String(contentsOf: err, encoding: .utf8)) ?? "")
        }
    }

    func start(_ args: [String], environment: [String: String] = [:], stdin: String? = nil) throws -> Running {
        let p = Process()
        p.executableURL = Self.executable
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        p.environment = env
        let id = UUID().uuidString
        let out = tmp.appendingPathComponent(".stdout-\(id)"), err = tmp.appendingPathComponent(".stderr-\(id)")
        _ = FileManager.default.createFile(atPath: out.path, contents: nil)
        _ = FileManager.default.createFile(atPath: err.path, contents: nil)
        p.standardOutput = try FileHandle(forWritingTo: out)
        p.standardError = try FileHandle(forWritingTo: err)
        if let stdin {
            let input = tmp.appendingPathComponent(".stdin-\(id)")
            try stdin.write(to: input, atomically: true, encoding: .utf8)
            p.standardInput = try FileHandle(forReadingFrom: input)
        } else {
            p.standardInput = FileHandle.nullDevice
        }
        try p.run()
        return Running(process: p, out: out, err: err)
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

    func testImageToImageFromTheCommandLine() throws {
        let model = TestPaths.model("tiny-sd1").path
        let src = tmp.appendingPathComponent("src.png"), out = tmp.appendingPathComponent("i2i.png")
        XCTAssertEqual(try run(["render", "a red heart", "--steps", "2", "--width", "64", "--height", "64", "--seed", "3",
                                "--model", model, "--output", src.path, "--quiet"]).status, 0)
        let r = try run(["render", "a blue heart", "--init-image", src.path, "--strength", "0.5", "--steps", "4", "--seed", "9",
                         "--model", model, "--output", out.path, "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let (image, text) = try PNGFile.read(out)
        XCTAssertEqual([image.width, image.height], [64, 64], "size taken from the init image")
        let params = try GenerationParameters(parsing: try XCTUnwrap(text["parameters"]))
        XCTAssertEqual(params[extra: "Denoising strength"], "0.5")
        XCTAssertNotEqual(try PNGFile.read(src).image, image)

        let missing = try run(["render", "x", "--init-image", tmp.appendingPathComponent("none.png").path, "--model", model,
                               "--output", tmp.appendingPathComponent("o.png").path])
        assertOneLineError(missing, status: 66, mentions: ["none.png"])
        XCTAssertEqual(try run(["render", "x", "--init-image", src.path, "--strength", "0", "--model", model]).status, 64)
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

    // MARK: - batch

    var tiny: String { TestPaths.model("tiny-sd1").path }

    /// Fast settings for tiny-sd1.
    func batchArgs(_ prompts: URL, _ out: URL, steps: Int = 1, _ extra: [String] = []) -> [String] {
        ["batch", "--prompts", prompts.path, "--output", out.path, "--steps", "\(steps)", "--width", "64", "--height", "64",
         "--model", tiny] + extra
    }

    /// Final (non-hidden) PNGs in a folder.
    func finalPNGs(_ dir: URL) -> [String] { pngs(in: dir).filter { !$0.hasPrefix(".") } }

    func hidden(_ dir: URL) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []).filter { $0.hasPrefix(".") }
    }

    func write(_ lines: [String], _ name: String) throws -> URL {
        let url = tmp.appendingPathComponent(name)
        try (lines.joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    /// Every final PNG is complete and carries parameters; the manifest lines are records.
    func assertFolderIsSound(_ dir: URL, file: StaticString = #filePath, line: UInt = #line) throws {
        for name in finalPNGs(dir) {
            let url = dir.appendingPathComponent(name)
            XCTAssertNoThrow(try PNGFile.read(url), "\(name) is a readable PNG", file: file, line: line)
            let text = try PNGFile.info(url).text["parameters"] ?? ""
            XCTAssertTrue(BatchRunner.isComplete(url, parametersText: text), "\(name) is complete", file: file, line: line)
        }
        for m in Manifest.files(in: dir) {
            XCTAssertEqual(try Manifest.read(m).badLines, [], "\(m.lastPathComponent) has only records", file: file, line: line)
        }
    }

    func thirtyLines() -> [String] {
        let subjects = ["a red heart", "a blue circle", "a castle on a hill", "Straße bei Nacht", "猫と月", "a lighthouse, stormy sea"]
        return (0..<30).map { i in
            let s = subjects[i % subjects.count] + " \(i)"
            return "{\"prompt\": \"\(s)\", \"negative_prompt\": \"blurry \(i)\", \"seed\": \(5000 + i * 13)}"
        }
    }

    func testBatchOfThirtyLinesThenNothingNewOnRerun() throws {
        let prompts = try write(["# thirty prompts, each with a negative prompt and a seed", ""] + thirtyLines(), "thirty.jsonl")
        let out = tmp.appendingPathComponent("out")
        let r = try run(batchArgs(prompts, out))
        XCTAssertEqual(r.status, 0, r.stderr)
        let names = finalPNGs(out)
        XCTAssertEqual(names.count, 30)
        XCTAssertEqual(names.first, "00000-5000-a-red-heart-0.png")
        XCTAssertEqual(names.last, "00029-5377-a-lighthouse-stormy-sea-29.png")
        XCTAssertTrue(names.contains("00004-5052-猫と月-4.png"), "\(names)")
        XCTAssertTrue(names.contains("00003-5039-straße-bei-nacht-3.png"), "\(names)")
        XCTAssertEqual(r.stdout.split(separator: "\n").count, 30, "one stdout line per image")
        XCTAssertTrue(r.stderr.contains("30 made, 0 skipped, 0 failed"), r.stderr)
        for (i, name) in names.enumerated() {
            let p = try GenerationParameters(parsing: try XCTUnwrap(try PNGFile.info(out.appendingPathComponent(name)).text["parameters"]))
            XCTAssertEqual(p.negativePrompt, "blurry \(i)")
            XCTAssertEqual(p.seed, UInt64(5000 + i * 13))
            XCTAssertEqual(p.steps, 1)
            XCTAssertEqual(p.width, 64)
        }
        let manifest = out.appendingPathComponent("manifest.jsonl")
        let (records, bad) = try Manifest.read(manifest)
        XCTAssertEqual(bad, [])
        XCTAssertEqual(records.map(\.file).sorted(), names)
        XCTAssertEqual(records.first { $0.index == 7 }?.source, "\(prompts.path):10", "two header lines, then job i on line i + 3")
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(try String(contentsOf: manifest, encoding: .utf8).split(separator: "\n")[0].utf8)) as? [String: Any])
        for key in ["file", "index", "source", "prompt", "negative_prompt", "seed", "steps", "guidance_scale", "width", "height", "sampler", "eta",
                    "model", "model_path", "model_hash", "model_hash_method", "seconds", "batch_size", "shard", "created"] {
            XCTAssertNotNil(json[key], "manifest key \(key)")
        }
        let before = try names.map { try FileManager.default.attributesOfItem(atPath: out.appendingPathComponent($0).path)[.modificationDate] as? Date }
        let manifestBefore = try Data(contentsOf: manifest)

        let again = try run(batchArgs(prompts, out))
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertEqual(again.stdout, "", "nothing new is written")
        XCTAssertTrue(again.stderr.contains("0 made, 30 skipped"), again.stderr)
        XCTAssertEqual(finalPNGs(out), names)
        let after = try names.map { try FileManager.default.attributesOfItem(atPath: out.appendingPathComponent($0).path)[.modificationDate] as? Date }
        XCTAssertEqual(before, after, "no file was rewritten")
        XCTAssertEqual(try Data(contentsOf: manifest), manifestBefore)
        XCTAssertEqual(hidden(out), [])

        let dry = try run(batchArgs(prompts, out, ["--dry-run"]))
        XCTAssertEqual(dry.status, 0, dry.stderr)
        XCTAssertEqual(dry.stdout.split(separator: "\n").filter { $0.hasPrefix("skip  ") }.count, 30)
        XCTAssertTrue(dry.stderr.contains("0 to make, 30 already made"), dry.stderr)
    }

    /// Starts a batch, waits for its first image, signals it, and checks what it leaves.
    func interruptedBatch(signal sig: Int32) throws -> (out: URL, prompts: URL, result: Result) {
        let prompts = try write((0..<24).map { "prompt number \($0)" }, "many.txt")
        let out = tmp.appendingPathComponent("out")
        let running = try start(batchArgs(prompts, out, steps: 3))
        let deadline = Date().addingTimeInterval(120)
        while finalPNGs(out).isEmpty && running.process.isRunning && Date() < deadline { usleep(20_000) }
        XCTAssertTrue(running.process.isRunning, "still running after the first image (the batch must be long enough)")
        kill(running.process.processIdentifier, sig)
        running.process.waitUntilExit()
        let made = finalPNGs(out)
        XCTAssertGreaterThanOrEqual(made.count, 1)
        XCTAssertLessThan(made.count, 24)
        try assertFolderIsSound(out)
        return (out, prompts, running.result())
    }

    func testKilledBatchLeavesNoBrokenPNGAndRerunCompletes() throws {
        let (out, prompts, r) = try interruptedBatch(signal: SIGKILL)
        XCTAssertEqual(r.status, SIGKILL, "terminated by the signal")
        let rerun = try run(batchArgs(prompts, out, steps: 3))
        XCTAssertEqual(rerun.status, 0, rerun.stderr)
        XCTAssertEqual(finalPNGs(out).count, 24)
        try assertFolderIsSound(out)
        XCTAssertEqual(hidden(out), [], "leftovers of the killed process are removed")
        XCTAssertEqual(Set(try Manifest.read(out.appendingPathComponent("manifest.jsonl")).records.map(\.file)), Set(finalPNGs(out)),
                       "every image has a record, even one finished just before the kill")
    }

    func testInterruptedBatchStopsCleanlyAndSaysHowToResume() throws {
        let (out, prompts, r) = try interruptedBatch(signal: SIGINT)
        XCTAssertEqual(r.status, 130, r.stderr)
        XCTAssertTrue(r.stderr.contains("interrupted") && r.stderr.contains("run the same command again"), r.stderr)
        XCTAssertTrue(r.stderr.contains("--prompts \(prompts.path)"), "the command to rerun is printed: \(r.stderr)")
        XCTAssertEqual(hidden(out), [], "no temporary file is left")
        XCTAssertEqual(try Manifest.read(out.appendingPathComponent("manifest.jsonl")).records.count, finalPNGs(out).count)
        let rerun = try run(batchArgs(prompts, out, steps: 3))
        XCTAssertEqual(rerun.status, 0, rerun.stderr)
        XCTAssertEqual(finalPNGs(out).count, 24)
        try assertFolderIsSound(out)
    }

    func testTerminatedBatchStopsCleanly() throws {
        let (out, prompts, r) = try interruptedBatch(signal: SIGTERM)
        XCTAssertEqual(r.status, 130, r.stderr)
        XCTAssertEqual(hidden(out), [])
        let rerun = try run(batchArgs(prompts, out, steps: 3, ["-q"]))
        XCTAssertEqual(rerun.status, 0, rerun.stderr)
        XCTAssertEqual(finalPNGs(out).count, 24)
    }

    func testTwoShardsMakeExactlyTheUnshardedImages() throws {
        let prompts = try write(["{\"prompt\": \"a red heart\", \"count\": 3}", "{\"prompt\": \"blue circle\"}", "{\"prompt\": \"c\", \"seed\": 9, \"count\": 2}",
                                 "{\"prompt\": \"d\", \"negative_prompt\": \"e\"}"], "shards.jsonl")
        let shared = tmp.appendingPathComponent("shared"), single = tmp.appendingPathComponent("single")
        // Both shards at once, into one folder.
        let a = try start(batchArgs(prompts, shared, ["--shard", "1/2"]))
        let b = try start(batchArgs(prompts, shared, ["--shard", "2/2", "--batch-size", "2"]))
        a.process.waitUntilExit()
        b.process.waitUntilExit()
        XCTAssertEqual(a.result().status, 0, a.result().stderr)
        XCTAssertEqual(b.result().status, 0, b.result().stderr)
        let r = try run(batchArgs(prompts, single))
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(finalPNGs(single).count, 7)
        XCTAssertEqual(finalPNGs(shared), finalPNGs(single), "same names")
        for name in finalPNGs(single) {
            let x = try PNGFile.read(shared.appendingPathComponent(name)), y = try PNGFile.read(single.appendingPathComponent(name))
            XCTAssertEqual(x.image, y.image, "same pixels: \(name)")
            XCTAssertEqual(x.text, y.text)
        }
        let manifests = Manifest.files(in: shared)
        XCTAssertEqual(manifests.map(\.lastPathComponent), ["manifest-1-of-2.jsonl", "manifest-2-of-2.jsonl"])
        let records = try manifests.flatMap { try Manifest.read($0).records }
        XCTAssertEqual(records.map(\.file).sorted(), finalPNGs(single))
        XCTAssertEqual(Set(records.filter { $0.shard == "1/2" }.map(\.index)), [0, 2, 4, 6])
        // Each shard alone is also resumable: rerunning shard 1 makes nothing.
        let again = try run(batchArgs(prompts, shared, ["--shard", "1/2"]))
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertEqual(again.stdout, "")
    }

    func testBadLinesAreReportedWithLineNumbersAndOthersRender() throws {
        let prompts = try write([
            "{\"prompt\": \"good one\", \"seed\": 1}",
            "{\"prompt\": \"bad steps\", \"steps\": 0}",
            "# a comment",
            "{\"prompt\": \"typo\" \"seed\": 2}",
            "{\"prompt\": \"unknown\", \"colour\": \"red\"}",
            "{\"prompt\": \"good two\", \"seed\": 3}",
        ], "bad.jsonl")
        let out = tmp.appendingPathComponent("out")
        let r = try run(batchArgs(prompts, out))
        XCTAssertEqual(r.status, 65, r.stderr)
        for n in [2, 4, 5] { XCTAssertTrue(r.stderr.contains("bad.jsonl:\(n): "), "line \(n) reported: \(r.stderr)") }
        XCTAssertFalse(r.stderr.contains("bad.jsonl:1:") || r.stderr.contains("bad.jsonl:6:"))
        XCTAssertTrue(r.stderr.contains("'colour'"))
        // Bad lines keep their indices: good two is job 4.
        XCTAssertEqual(finalPNGs(out), ["00000-1-good-one.png", "00004-3-good-two.png"])
        XCTAssertFalse(r.stderr.contains("Fatal error"))

        // The same as JSON events for scripts.
        let j = try run(batchArgs(prompts, tmp.appendingPathComponent("out2"), ["--progress", "jsonl"]))
        XCTAssertEqual(j.status, 65)
        let events = try j.stderr.split(separator: "\n").map { line -> [String: Any] in
            try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "JSON: \(line)")
        }
        XCTAssertEqual(events.filter { $0["event"] as? String == "error" }.compactMap { $0["source"] as? String }.sorted(),
                       ["\(prompts.path):2", "\(prompts.path):4", "\(prompts.path):5"])
        XCTAssertEqual(events.filter { $0["event"] as? String == "image" }.count, 2)
        XCTAssertTrue(events.contains { $0["event"] as? String == "step" })
        let summary = try XCTUnwrap(events.last)
        XCTAssertEqual(summary["event"] as? String, "summary")
        XCTAssertEqual(summary["made"] as? Int, 2)
        XCTAssertEqual(summary["invalid"] as? Int, 3)
    }

    func testNastyPromptsGiveSafeNames() throws {
        let long = String(repeating: "very long prompt ", count: 60)  // 1020 characters
        let prompts = try write(["../../etc/passwd", "/absolute/path", long, "日本語 ❤️ Ünïcödé", "\u{202E}evil\u{200B}.exe", "..", "   ..   "], "nasty.txt")
        let out = tmp.appendingPathComponent("out")
        let r = try run(batchArgs(prompts, out))
        XCTAssertEqual(r.status, 0, r.stderr)
        let all = try FileManager.default.subpathsOfDirectory(atPath: tmp.path)
        XCTAssertEqual(all.filter { $0.hasSuffix(".png") }.map { $0.split(separator: "/").dropLast().joined(separator: "/") }, Array(repeating: "out", count: 7),
                       "every image is inside the output folder: \(all)")
        let names = finalPNGs(out)
        XCTAssertEqual(names.count, 7, "'..' is a prompt like any other: \(names)")
        for n in names {
            XCTAssertLessThanOrEqual(n.utf8.count, 255)
            XCTAssertFalse(n.contains("/") || n.contains("..") || n.unicodeScalars.contains { $0.properties.generalCategory == .format })
        }
        XCTAssertTrue(names.contains("00000-0-etc-passwd.png"))
        XCTAssertTrue(names.contains("00005-5-image.png"), "\(names)")
        XCTAssertTrue(names.contains("00003-3-日本語-ünïcödé.png"), "\(names)")
    }

    func testMissingPromptsFileIsNoInputBeforeModelLoads() throws {
        let missing = tmp.appendingPathComponent("nope.txt").path
        let r = try run(["batch", "--prompts", missing, "--output", tmp.path, "--model", tmp.appendingPathComponent("no-model").path])
        assertOneLineError(r, status: 66, mentions: [missing])
        let empty = try write(["# only a comment", ""], "empty.txt")
        let e = try run(batchArgs(empty, tmp.appendingPathComponent("o")))
        assertOneLineError(e, status: 65, mentions: ["no prompts"])
        let badShard = try run(batchArgs(empty, tmp.appendingPathComponent("o"), ["--shard", "3/2"]))
        XCTAssertEqual(badShard.status, 64)
        let badPattern = try run(batchArgs(empty, tmp.appendingPathComponent("o"), ["--name-pattern", "{nope}"]))
        XCTAssertEqual(badPattern.status, 64)
        XCTAssertTrue(badPattern.stderr.contains("{prompt}"), "lists the placeholders: \(badPattern.stderr)")
    }

    func testPromptsFromStandardInput() throws {
        let out = tmp.appendingPathComponent("out")
        let r = try run(["batch", "--prompts", "-", "--output", out.path, "--steps", "1", "--width", "64", "--height", "64", "--model", tiny, "-q"],
                        stdin: "one\ntwo\n")
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(finalPNGs(out), ["00000-0-one.png", "00001-1-two.png"])
        XCTAssertEqual(try Manifest.read(out.appendingPathComponent("manifest.jsonl")).records.first?.source, "<stdin>:1")
    }

    // MARK: - inspect, render --from, sampler, info

    func testInspectThenRenderFromReproducesTheImageBitForBit() throws {
        let original = tmp.appendingPathComponent("original.png")
        let r = try run(["render", "a lighthouse, at night: stormy", "--negative-prompt", "blurry, low quality", "--steps", "3",
                         "--guidance-scale", "6.5", "--seed", "123456789", "--eta", "0.3", "--width", "64", "--height", "72",
                         "--model", tiny, "--output", original.path, "-q"])
        XCTAssertEqual(r.status, 0, r.stderr)

        let text = try run(["inspect", original.path])
        XCTAssertEqual(text.status, 0, text.stderr)
        for s in ["a lighthouse, at night: stormy", "blurry, low quality", "123456789", "64x72", "DDIM", "6.5", "0.3", "tiny-sd1", "render --from"] {
            XCTAssertTrue(text.stdout.contains(s), "inspect shows \(s): \(text.stdout)")
        }
        let json = try run(["inspect", "--json", original.path])
        XCTAssertEqual(json.status, 0)
        let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(obj["seed"] as? Int, 123456789)
        XCTAssertEqual(obj["negative_prompt"] as? String, "blurry, low quality")
        XCTAssertEqual(obj["sampler"] as? String, "ddim")
        XCTAssertEqual(obj["height"] as? Int, 72)

        let again = tmp.appendingPathComponent("again.png")
        let f = try run(["render", "--from", original.path, "--model", tiny, "--output", again.path, "-q"])
        XCTAssertEqual(f.status, 0, f.stderr)
        let a = try PNGFile.read(original), b = try PNGFile.read(again)
        XCTAssertEqual(a.image.pixels, b.image.pixels, "bit for bit")
        XCTAssertEqual(a.text["parameters"], b.text["parameters"])

        // Options given explicitly override the PNG's.
        let other = tmp.appendingPathComponent("other.png")
        let o = try run(["render", "--from", original.path, "--seed", "5", "--model", tiny, "--output", other.path, "-q"])
        XCTAssertEqual(o.status, 0, o.stderr)
        let p = try GenerationParameters(parsing: try XCTUnwrap(try PNGFile.info(other).text["parameters"]))
        XCTAssertEqual(p.seed, 5)
        XCTAssertEqual(p.prompt, "a lighthouse, at night: stormy")
        XCTAssertEqual(p.height, 72)
        XCTAssertNotEqual(try PNGFile.read(other).image.pixels, a.image.pixels)

        // An image without parameters, or no image at all.
        let plain = tmp.appendingPathComponent("plain.png")
        try PNGFile.write(RGBImage(width: 2, height: 2, pixels: [UInt8](repeating: 0, count: 12)), text: [], to: plain)
        assertOneLineError(try run(["inspect", plain.path]), status: 65, mentions: [plain.path, "no generation parameters"])
        assertOneLineError(try run(["render", "--from", plain.path, "--model", tiny]), status: 65, mentions: [plain.path])
        let nothing = tmp.appendingPathComponent("nothing.png").path
        assertOneLineError(try run(["render", "--from", nothing, "--model", tiny]), status: 66, mentions: [nothing])
    }

    func testBatchSizeGivesTheSameImagesAsOneAtATime() throws {
        let prompts = try write(["{\"prompt\": \"x\", \"count\": 3, \"seed\": 11}", "{\"prompt\": \"y\", \"guidance_scale\": 3}"], "b.jsonl")
        let one = tmp.appendingPathComponent("one"), three = tmp.appendingPathComponent("three")
        XCTAssertEqual(try run(batchArgs(prompts, one, steps: 2, ["-q"])).status, 0)
        let r = try run(batchArgs(prompts, three, steps: 2, ["-q", "--batch-size", "3"]))
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(finalPNGs(one), finalPNGs(three))
        for n in finalPNGs(one) {
            let a = try PNGFile.read(one.appendingPathComponent(n)).image.pixels, b = try PNGFile.read(three.appendingPathComponent(n)).image.pixels
            // Floats agree within 1e-5 (BatchTests); bytes within one level where a value sits on a rounding edge.
            XCTAssertLessThanOrEqual(zip(a, b).map { abs(Int($0) - Int($1)) }.max() ?? 0, 1, n)
        }
        XCTAssertEqual(try Manifest.read(three.appendingPathComponent("manifest.jsonl")).records.map(\.batchSize), [3, 3, 3, 1])
    }

    func testSamplerOptionListsEverySampler() throws {
        let help = try run(["render", "--help"])
        for k in SamplerKind.allCases { XCTAssertTrue(help.stdout.contains(k.rawValue), "--help lists \(k.rawValue)") }
        XCTAssertTrue(help.stdout.contains("--sampler"))
        XCTAssertTrue(help.stdout.contains("130"), "exit codes in --help")
        let batchHelp = try run(["batch", "--help"])
        for s in ["--shard", "--name-pattern", "--batch-size", "--progress", "65", "66"] { XCTAssertTrue(batchHelp.stdout.contains(s), s) }
        let bad = try run(["render", "x", "--sampler", "no-such-sampler", "--model", tiny])
        XCTAssertEqual(bad.status, 64)
        XCTAssertTrue(bad.stderr.contains("no-such-sampler") && bad.stderr.contains(SamplerKind.ddim.rawValue), bad.stderr)
        let ok = try run(["render", "x", "--sampler", "DDIM", "--steps", "1", "--width", "64", "--height", "64", "--model", tiny,
                          "--output", tmp.appendingPathComponent("s.png").path, "-q"])
        XCTAssertEqual(ok.status, 0, ok.stderr)
    }

    func testInfoDescribesTheModel() throws {
        let r = try run(["info", tiny])
        XCTAssertEqual(r.status, 0, r.stderr)
        for s in ["tiny-sd1", "text_encoder: CLIPTextModel", "unet: UNet2DConditionModel", "vae: AutoencoderKL", "DDIMScheduler",
                  "parameters", "F32", "128x128", "steps 50", "guidance scale 7.5", "sha256s:", "scaled_linear"] {
            XCTAssertTrue(r.stdout.contains(s), "info shows \(s)")
        }
        let j = try run(["info", "--json", tiny])
        XCTAssertEqual(j.status, 0, j.stderr)
        let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(j.stdout.utf8)) as? [String: Any])
        let comps = try XCTUnwrap(obj["components"] as? [[String: Any]])
        XCTAssertEqual(comps.map { $0["name"] as? String }, ["tokenizer", "text_encoder", "unet", "vae", "scheduler"])
        // Parameter counts straight from the safetensors headers.
        let unetFile = try SafetensorsFile(url: TestPaths.model("tiny-sd1").appendingPathComponent("unet/diffusion_pytorch_model.safetensors"))
        XCTAssertEqual(comps[2]["parameters"] as? Int, unetFile.entries.values.reduce(0) { $0 + $1.count })
        XCTAssertEqual((obj["render_defaults"] as? [String: Any])?["width"] as? Int, 128)
        assertOneLineError(try run(["info", tmp.appendingPathComponent("none").path]), status: 3, mentions: ["none"])
    }

    /// --clip-skip, --prompt-mode and --guidance-rescale reach the image, its metadata, inspect
    /// and --from; --help states clip skip's A1111 meaning.
    func testPromptOptionsAreRecordedAndReproduced() throws {
        let help = try run(["render", "--help"]).stdout
        for s in ["--clip-skip", "1 = none", "--prompt-mode", "auto", "a1111", "diffusers", "--guidance-rescale"] {
            XCTAssertTrue(help.contains(s), "render --help shows \(s)")
        }
        XCTAssertTrue(try run(["batch", "--help"]).stdout.contains("clip_skip"), "batch --help lists the JSON keys")
        let out = tmp.appendingPathComponent("skip.png")
        let long = Array(repeating: "a (red:1.2) cat,", count: 30).joined(separator: " ")
        let r = try run(["render", long, "--clip-skip", "2", "--guidance-rescale", "0.7", "--steps", "2", "--width", "64", "--height", "64",
                         "--seed", "4", "--model", tiny, "--output", out.path, "-q"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let p = try GenerationParameters(parsing: try XCTUnwrap(try PNGFile.info(out).text["parameters"]))
        XCTAssertEqual(p[extra: "Clip skip"], "2")
        XCTAssertEqual(p[extra: "Guidance rescale"], "0.7")
        let text = try run(["inspect", out.path])
        XCTAssertTrue(text.stdout.contains("clip skip") && text.stdout.contains("guidance rescale"), text.stdout)
        XCTAssertFalse(text.stdout.contains("does not use"), text.stdout)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(try run(["inspect", "--json", out.path]).stdout.utf8)) as? [String: Any])
        XCTAssertEqual(json["clip_skip"] as? Int, 2)
        XCTAssertEqual(json["prompt_mode"] as? String, "auto")
        let again = tmp.appendingPathComponent("again.png")
        let f = try run(["render", "--from", out.path, "--model", tiny, "--output", again.path, "-q"])
        XCTAssertEqual(f.status, 0, f.stderr)
        XCTAssertFalse(f.stderr.contains("ignored"), f.stderr)
        XCTAssertEqual(try PNGFile.read(out).image.pixels, try PNGFile.read(again).image.pixels, "bit for bit")
        let plain = tmp.appendingPathComponent("plain.png")
        XCTAssertEqual(try run(["render", long, "--prompt-mode", "diffusers", "--steps", "2", "--width", "64", "--height", "64",
                                "--seed", "4", "--model", tiny, "--output", plain.path, "-q"]).status, 0)
        let pp = try GenerationParameters(parsing: try XCTUnwrap(try PNGFile.info(plain).text["parameters"]))
        XCTAssertEqual(pp[extra: "Prompt mode"], "diffusers")
        XCTAssertNil(pp[extra: "Clip skip"])
        // tiny-sd1's text encoder has 2 layers: clip skip 3 is a usage error, 0 too.
        assertOneLineError(try run(["render", "x", "--clip-skip", "3", "--model", tiny, "--output", tmp.appendingPathComponent("x.png").path]),
                           status: 64, mentions: ["clip skip 3"])
        XCTAssertEqual(try run(["render", "x", "--clip-skip", "0", "--model", tiny]).status, 64)
        XCTAssertEqual(try run(["render", "x", "--guidance-rescale", "2", "--model", tiny]).status, 64)
        XCTAssertEqual(try run(["render", "x", "--prompt-mode", "comfy", "--model", tiny]).status, 64)

        // Batch lines carry the same settings.
        let prompts = try write([#"{"prompt": "x", "clip_skip": 2, "guidance_rescale": 0.5, "seed": 3}"#], "s.jsonl")
        let dir = tmp.appendingPathComponent("batch")
        let b = try run(batchArgs(prompts, dir, steps: 2, ["-q"]))
        XCTAssertEqual(b.status, 0, b.stderr)
        let name = try XCTUnwrap(finalPNGs(dir).first)
        let bp = try GenerationParameters(parsing: try XCTUnwrap(try PNGFile.info(dir.appendingPathComponent(name)).text["parameters"]))
        XCTAssertEqual(bp[extra: "Clip skip"], "2")
        let record = try XCTUnwrap(try Manifest.read(dir.appendingPathComponent("manifest.jsonl")).records.first)
        XCTAssertEqual(record.clipSkip, 2)
        XCTAssertEqual(record.guidanceRescale, 0.5)
    }

    /// --preview N writes NAME.preview.png during the render (jsonl 'preview' events), decoded
    /// with --preview-decoder or the model folder's vae_tiny/, removed at the end unless
    /// --keep-preview.
    func testPreviewsDuringRender() throws {
        let help = try run(["render", "--help"]).stdout
        for s in ["--preview", "--preview-decoder", "--keep-preview", "vae_tiny"] { XCTAssertTrue(help.contains(s), "render --help shows \(s)") }
        let taesd = TestPaths.model("tiny-taesd").path
        let out = tmp.appendingPathComponent("p.png"), preview = tmp.appendingPathComponent("p.preview.png")
        let args = ["render", "a red heart", "--steps", "4", "--width", "64", "--height", "64", "--seed", "2", "--output", out.path,
                    "--progress", "jsonl"]
        let r = try run(args + ["--model", tiny, "--preview", "2", "--preview-decoder", taesd])
        XCTAssertEqual(r.status, 0, r.stderr)
        let events = r.stderr.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        let previews = events.filter { $0["event"] as? String == "preview" }
        XCTAssertEqual(previews.compactMap { $0["step"] as? Int }, [2, 4])
        XCTAssertEqual(previews.first?["file"] as? String, preview.path)
        XCTAssertFalse(FileManager.default.fileExists(atPath: preview.path), "removed once the image is written")
        XCTAssertTrue(FileManager.default.fileExists(atPath: out.path))

        // The model folder's vae_tiny/ is used without --preview-decoder; --keep-preview keeps the last one.
        let model = try copyModel()
        try FileManager.default.copyItem(at: TestPaths.model("tiny-taesd"), to: model.appendingPathComponent("vae_tiny"))
        let k = try run(args + ["--model", model.path, "--preview", "3", "--keep-preview"])
        XCTAssertEqual(k.status, 0, k.stderr)
        let kept = try PNGFile.read(preview)
        XCTAssertEqual([kept.image.width, kept.image.height], [64, 64])
        XCTAssertEqual(kept.text["preview"], "step 3/4")
        // The same x̂₀ decoded by the same TAESD as with --preview-decoder.
        let again = tmp.appendingPathComponent("q.png")
        XCTAssertEqual(try run(["render", "a red heart", "--steps", "4", "--width", "64", "--height", "64", "--seed", "2", "--output", again.path,
                                "-q", "--model", tiny, "--preview", "3", "--keep-preview", "--preview-decoder", taesd]).status, 0)
        XCTAssertEqual(try PNGFile.read(tmp.appendingPathComponent("q.preview.png")).image, kept.image)
        // Previews never change the image.
        XCTAssertEqual(try PNGFile.read(again).image, try PNGFile.read(out).image)

        assertOneLineError(try run(["render", "x", "--preview", "1", "--preview-decoder", tmp.appendingPathComponent("none").path, "--model", tiny]),
                           status: 66, mentions: ["none"])
        XCTAssertEqual(try run(["render", "x", "--keep-preview", "--model", tiny]).status, 64)
        XCTAssertEqual(try run(["render", "x", "--preview", "0", "--model", tiny]).status, 64)
    }

    /// `--model file.safetensors`: a lossless single-file conversion of tiny-sd2 (made by
    /// Tools/fixtures_singlefile.py and checked there with diffusers' from_single_file) renders
    /// the folder's PNG exactly; --config gives the tiny sizes, --prediction overrides the
    /// inferred v-prediction; pickles and checkpoint options on a folder are refused.
    func testSingleFileCheckpointRendersLikeTheFolder() throws {
        let help = try run(["render", "--help"]).stdout
        for s in ["--prediction", "v_prediction", "--config", "--tokenizer", ".safetensors"] { XCTAssertTrue(help.contains(s), "render --help shows \(s)") }
        let file = TestPaths.fixtures.appendingPathComponent("singlefile/tiny-sd2.safetensors").path
        let folder = TestPaths.model("tiny-sd2").path
        let common = ["render", "a watercolor lighthouse", "--steps", "3", "--seed", "7", "--width", "64", "--height", "64", "-q"]
        let a = tmp.appendingPathComponent("folder.png"), b = tmp.appendingPathComponent("file.png"), c = tmp.appendingPathComponent("eps.png")
        XCTAssertEqual(try run(common + ["--model", folder, "--output", a.path]).status, 0)
        let r = try run(common + ["--model", file, "--config", folder, "--output", b.path])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try PNGFile.read(a).image, try PNGFile.read(b).image, "the same pixels as the folder")
        let p = try GenerationParameters(parsing: try XCTUnwrap(try PNGFile.info(b).text["parameters"]))
        XCTAssertEqual(p.model, "tiny-sd2")
        XCTAssertEqual(try run(common + ["--model", file, "--config", folder, "--prediction", "epsilon", "--output", c.path]).status, 0)
        XCTAssertNotEqual(try PNGFile.read(b).image, try PNGFile.read(c).image, "--prediction epsilon changes a v-prediction model's image")

        // The tiny sizes cannot be inferred: a clear error, and the hint.
        let bare = try run(common + ["--model", file])
        XCTAssertEqual(bare.status, 3, bare.stderr)
        XCTAssertTrue(bare.stderr.contains("--config"), bare.stderr)
        let pickle = tmp.appendingPathComponent("model.ckpt")
        try Data("not a pickle".utf8).write(to: pickle)
        assertOneLineError(try run(["render", "x", "--model", pickle.path]), status: 3, mentions: ["pickle", ".safetensors"])
        assertOneLineError(try run(["render", "x", "--model", folder, "--prediction", "epsilon"]), status: 64, mentions: ["single-file"])
        XCTAssertEqual(try run(["render", "x", "--model", file, "--prediction", "x0"]).status, 64)
    }
}
