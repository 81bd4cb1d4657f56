import Foundation
import XCTest
@testable import Darkroom

/// Hostile files, faults and limits, through the `darkroom` command as a user meets them: one
/// error line, a non-zero exit code, nothing lost.
extension CLITests {
    /// Rewrites a safetensors file's header (the data section is kept as it is).
    func rewriteHeader(_ file: URL, lengthOverride: UInt64? = nil, _ change: (inout [String: Any]) -> Void) throws {
        let data = try Data(contentsOf: file)
        let n = Int(data.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        var header = try XCTUnwrap(try JSONSerialization.jsonObject(with: data[8..<(8 + n)]) as? [String: Any])
        change(&header)
        let json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        var out = Data()
        withUnsafeBytes(of: (lengthOverride ?? UInt64(json.count)).littleEndian) { out.append(contentsOf: $0) }
        out.append(json)
        out.append(data[(8 + n)...])
        try out.write(to: file)
    }

    func testHostileModelFilesGiveOneLine() throws {
        let out = tmp.appendingPathComponent("o")
        // A header that lies about offsets: the last tensor claims bytes past the end of the file.
        var model = try copyModel()
        var file = model.appendingPathComponent("unet/diffusion_pytorch_model.safetensors")
        try rewriteHeader(file) { h in
            let (name, e) = h.filter { $0.key != "__metadata__" }.max { (($0.value as! [String: Any])["data_offsets"] as! [Int])[1] < (($1.value as! [String: Any])["data_offsets"] as! [Int])[1] }!
            var entry = e as! [String: Any]
            let o = entry["data_offsets"] as! [Int]
            let shape = entry["shape"] as! [Int]
            entry["shape"] = [shape.reduce(1, *) + 1000]
            entry["data_offsets"] = [o[0], o[1] + 4000]
            h[name] = entry
        }
        assertOneLineError(try run(["render", "x", "--model", model.path, "--output", out.path]), status: 3, mentions: [file.path, "run past the end"])

        // Two tensors over the same bytes.
        try FileManager.default.removeItem(at: model)
        model = try copyModel()
        file = model.appendingPathComponent("vae/diffusion_pytorch_model.safetensors")
        try rewriteHeader(file) { h in
            let names = h.keys.filter { $0 != "__metadata__" }.sorted()
            var a = h[names[0]] as! [String: Any]
            let b = h[names[1]] as! [String: Any]
            a["data_offsets"] = b["data_offsets"]; a["shape"] = b["shape"]; a["dtype"] = b["dtype"]
            h[names[0]] = a
        }
        assertOneLineError(try run(["render", "x", "--model", model.path, "--output", out.path]), status: 3, mentions: [file.path, "overlaps"])

        // A header length of 2^40: refused before any allocation.
        try FileManager.default.removeItem(at: model)
        model = try copyModel()
        file = model.appendingPathComponent("text_encoder/model.safetensors")
        try rewriteHeader(file, lengthOverride: 1 << 40) { _ in }
        assertOneLineError(try run(["render", "x", "--model", model.path, "--output", out.path]), status: 3, mentions: [file.path, "limit"])

        // A config with an absurd size, and one with a wrong type.
        for (key, value) in [("layers_per_block", 100_000_000 as Any), ("block_out_channels", "wide" as Any)] {
            try FileManager.default.removeItem(at: model)
            model = try copyModel()
            let config = model.appendingPathComponent("unet/config.json")
            var json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: config)) as? [String: Any])
            json[key] = value
            try JSONSerialization.data(withJSONObject: json).write(to: config)
            assertOneLineError(try run(["render", "x", "--model", model.path, "--output", out.path]), status: 3, mentions: [config.path, key])
        }

        // A truncated single-file checkpoint.
        let ckpt = tmp.appendingPathComponent("cut.safetensors")
        let whole = try Data(contentsOf: TestPaths.fixtures.appendingPathComponent("singlefile/tiny-sd1.safetensors"))
        try whole.prefix(whole.count * 2 / 3).write(to: ckpt)
        assertOneLineError(try run(["render", "x", "--model", ckpt.path, "--output", out.path]), status: 3, mentions: [ckpt.path, "truncated"])

        // A pickle is never opened.
        let pickle = tmp.appendingPathComponent("model.ckpt")
        try Data("PK\u{3}\u{4}".utf8).write(to: pickle)
        assertOneLineError(try run(["render", "x", "--model", pickle.path, "--output", out.path]), status: 3, mentions: [pickle.path, "pickle"])
        XCTAssertEqual(pngs(in: out), [])
    }

    func testHostileInputsGiveOneLine() throws {
        let out = tmp.appendingPathComponent("o.png")
        // A PNG whose header says 100000x100000: refused from the header, nothing allocated.
        let huge = TestPaths.fixtures.appendingPathComponent("png/huge_ihdr.png")
        let r = try run(["render", "x", "--init-image", huge.path, "--model", tiny, "--output", out.path])
        assertOneLineError(r, status: 65, mentions: [huge.path, "100000x100000", "limit"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))

        // A prompts file that is not UTF-8 and has broken JSON lines: those lines are reported, the rest render.
        let prompts = tmp.appendingPathComponent("p.jsonl")
        var bytes = Data("{\"prompt\": \"fine\", \"seed\": 1}\n".utf8)
        bytes += Data([0x7B, 0x22, 0x70, 0x22, 0x3A, 0x20, 0x22, 0xFF, 0xFE, 0x22, 0x7D, 0x0A])  // {"p": "\xFF\xFE"}
        bytes += Data("{\"prompt\": [1, 2\n{\"prompt\": \"width\", \"width\": \"wide\"}\n{\"prompt\": \"huge\", \"width\": 100000, \"height\": 100000}\n".utf8)
        try bytes.write(to: prompts)
        let b = try run(batchArgs(prompts, tmp.appendingPathComponent("b")))
        XCTAssertEqual(b.status, 65, b.stderr)
        for n in 2...5 { XCTAssertTrue(b.stderr.contains("p.jsonl:\(n): "), "line \(n): \(b.stderr)") }
        XCTAssertTrue(b.stderr.contains("UTF-8"), b.stderr)
        XCTAssertEqual(finalPNGs(tmp.appendingPathComponent("b")).count, 1)
        XCTAssertFalse(b.stderr.contains("Fatal error"))

        // A prompts file that is a folder, and one that does not exist.
        assertOneLineError(try run(batchArgs(tmp, tmp.appendingPathComponent("c"))), status: 66, mentions: [tmp.path])
    }

    func testOutOfRangeOptionsAreUsageErrors() throws {
        for (args, option) in [(["--steps", "0"], "--steps"), (["--steps", "5000"], "--steps"), (["--count", "0"], "--count"),
                               (["--width", "9000"], "--width"), (["--height", "12"], "--height"), (["--batch-size", "100"], "--batch-size"),
                               (["--guidance-scale", "1000"], "--guidance-scale"), (["--threads", "0"], "--threads")] {
            let r = try run(["render", "x", "--model", tiny] + args)
            XCTAssertEqual(r.status, 64, "\(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(option), "\(args): \(r.stderr)")
        }
    }

    func testNotEnoughMemoryIsRefusedBeforeLoading() throws {
        let profile = try ModelMemoryProfile(model: TestPaths.model("tiny-sd1"))
        // A limit between what 128x128 and 512x512 need.
        let limit = (profile.estimate(width: 128, height: 128).total + profile.estimate(width: 512, height: 512).total) / 2
        let env = ["DARKROOM_MEMORY_LIMIT": "\(limit)"]
        let out = tmp.appendingPathComponent("big.png")
        let r = try run(["render", "x", "--steps", "1", "--width", "512", "--height", "512", "--model", tiny, "--output", out.path], environment: env)
        assertOneLineError(r, status: 1, mentions: ["not enough memory", "512x512 needs about", "is available (DARKROOM_MEMORY_LIMIT)",
                                                    "the largest size that fits is", "--ignore-memory-check"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
        // The size it names renders under the same limit.
        let fit = try XCTUnwrap(r.stderr.range(of: #"fits is (\d+)x(\d+)"#, options: .regularExpression).map { String(r.stderr[$0]) })
        let sides = fit.dropFirst("fits is ".count).split(separator: "x").map(String.init)
        XCTAssertGreaterThanOrEqual(Int(sides[0]) ?? 0, 128)
        XCTAssertLessThan(Int(sides[0]) ?? 999, 512)
        let ok = try run(["render", "x", "--steps", "1", "--width", sides[0], "--height", sides[1], "--model", tiny, "--output", out.path, "-q"], environment: env)
        XCTAssertEqual(ok.status, 0, ok.stderr)
        // --ignore-memory-check goes on, with a warning.
        try FileManager.default.removeItem(at: out)
        let forced = try run(["render", "x", "--steps", "1", "--width", "512", "--height", "512", "--model", tiny, "--output", out.path,
                              "--ignore-memory-check", "-q"], environment: env)
        XCTAssertEqual(forced.status, 0, forced.stderr)
        XCTAssertTrue(forced.stderr.contains("warning") && forced.stderr.contains("--ignore-memory-check"), forced.stderr)
        XCTAssertNoThrow(try PNGFile.read(out))
        // A batch is checked against its largest image, before the model loads.
        let prompts = try write(["{\"prompt\": \"small\"}", "{\"prompt\": \"large\", \"width\": 512, \"height\": 512}"], "m.jsonl")
        let b = try run(batchArgs(prompts, tmp.appendingPathComponent("b")), environment: env)
        assertOneLineError(b, status: 1, mentions: ["not enough memory", "512x512"])
        XCTAssertEqual(finalPNGs(tmp.appendingPathComponent("b")), [])
        // A limit that is not a size is a usage error.
        assertOneLineError(try run(["render", "x", "--model", tiny], environment: ["DARKROOM_MEMORY_LIMIT": "lots"]), status: 64,
                           mentions: ["DARKROOM_MEMORY_LIMIT"])
        // info --memory shows the estimate.
        let i = try run(["info", tiny, "--memory", "512x512"], environment: env)
        XCTAssertEqual(i.status, 0, i.stderr)
        XCTAssertTrue(i.stdout.contains("memory for 512x512") && i.stdout.contains("does not fit") && i.stdout.contains("largest size that fits"), i.stdout)
    }

    func testSecondBatchOnTheSameFolderIsRefusedWithTheHoldersPid() throws {
        let prompts = try write((0..<24).map { "prompt number \($0)" }, "many.txt")
        let out = tmp.appendingPathComponent("out")
        let first = try start(batchArgs(prompts, out, steps: 3))
        let deadline = Date().addingTimeInterval(120)
        while finalPNGs(out).isEmpty && first.process.isRunning && Date() < deadline { usleep(20_000) }
        XCTAssertTrue(first.process.isRunning)
        let second = try run(batchArgs(prompts, out, steps: 3))
        assertOneLineError(second, status: 1, mentions: [out.path, "another darkroom process pid \(first.process.processIdentifier)"])
        XCTAssertEqual(second.stdout, "", "the refused process wrote nothing")
        kill(first.process.processIdentifier, SIGTERM)
        first.process.waitUntilExit()
        XCTAssertEqual(first.process.terminationStatus, 130)
        try assertFolderIsSound(out)
        XCTAssertEqual(hidden(out), [], "the lock file is gone with its holder")
        let rerun = try run(batchArgs(prompts, out, steps: 3, ["-q"]))
        XCTAssertEqual(rerun.status, 0, rerun.stderr)
        XCTAssertEqual(finalPNGs(out).count, 24)
    }

    func testRenderTerminatedMidImageLeavesOnlyCompletePNGs() throws {
        let out = tmp.appendingPathComponent("out")
        let running = try start(["render", "a red heart", "--count", "12", "--steps", "4", "--width", "64", "--height", "64", "--seed", "5",
                                 "--model", tiny, "--output", out.path + "/"])
        let deadline = Date().addingTimeInterval(120)
        while finalPNGs(out).isEmpty && running.process.isRunning && Date() < deadline { usleep(10_000) }
        kill(running.process.processIdentifier, SIGTERM)
        running.process.waitUntilExit()
        let r = running.result()
        XCTAssertEqual(r.status, 130, r.stderr)
        XCTAssertTrue(r.stderr.contains("interrupted"), r.stderr)
        let made = finalPNGs(out)
        XCTAssertGreaterThanOrEqual(made.count, 1)
        XCTAssertLessThan(made.count, 12)
        for name in made { XCTAssertNoThrow(try PNGFile.read(out.appendingPathComponent(name)), name) }
        XCTAssertEqual(hidden(out), [], "no temporary file is left")
    }

    /// A real full disk: a 320 KB tmpfs (needs root and mount; skipped otherwise).
    func testFullDiskStopsTheBatchAndARerunFinishes() throws {
        guard geteuid() == 0 else { throw XCTSkip("mounting a tmpfs needs root") }
        let mnt = tmp.appendingPathComponent("tiny-disk")
        try FileManager.default.createDirectory(at: mnt, withIntermediateDirectories: true)
        func mount(_ args: [String]) -> Int32 {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/mount")
            p.arguments = args
            p.standardError = FileHandle.nullDevice
            guard (try? p.run()) != nil else { return -1 }
            p.waitUntilExit()
            return p.terminationStatus
        }
        guard mount(["-t", "tmpfs", "-o", "size=320k", "tmpfs", mnt.path]) == 0 else { throw XCTSkip("cannot mount a tmpfs here") }
        defer {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/umount")
            p.arguments = [mnt.path]
            try? p.run()
            p.waitUntilExit()
        }
        let prompts = try write((0..<40).map { "prompt number \($0)" }, "forty.txt")
        let r = try run(batchArgs(prompts, mnt))
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("No space left on device"), r.stderr)
        XCTAssertTrue(r.stderr.contains("run the same command again"), r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").filter { $0.hasPrefix("darkroom: error:") }.count, 1, "one error line: \(r.stderr)")
        XCTAssertTrue(r.stderr.contains("darkroom: error: stopped at \(prompts.path):"), r.stderr)
        let made = finalPNGs(mnt)
        XCTAssertGreaterThan(made.count, 0)
        XCTAssertLessThan(made.count, 40)
        try assertFolderIsSound(mnt)
        XCTAssertEqual(hidden(mnt), [], "no temporary or lock file is left on the full disk")
        let records = try Manifest.read(mnt.appendingPathComponent("manifest.jsonl")).records.map(\.file)
        XCTAssertEqual(Set(records), Set(made).intersection(records), "every record names a complete image")
        // More space, same command: the rest is made, nothing twice.
        XCTAssertEqual(mount(["-o", "remount,size=8m", mnt.path]), 0)
        let rerun = try run(batchArgs(prompts, mnt))
        XCTAssertEqual(rerun.status, 0, rerun.stderr)
        XCTAssertEqual(finalPNGs(mnt).count, 40)
        try assertFolderIsSound(mnt)
        XCTAssertEqual(Set(try Manifest.read(mnt.appendingPathComponent("manifest.jsonl")).records.map(\.file)), Set(finalPNGs(mnt)))
    }
}
