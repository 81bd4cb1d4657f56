import Foundation
import XCTest
@testable import Darkroom

/// Faults while a batch runs (full disk, the folder removed or unwritable, a manifest on a full
/// device, two writers) and the memory estimate. Images come from Models/tiny-sd1 at 64x64.
final class ReliabilityTests: XCTestCase {
    var tmp: URL!

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("darkroom-rel-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        chmod(tmp.appendingPathComponent("out").path, 0o755)
        try? FileManager.default.removeItem(at: tmp)
    }

    static let pipeline: StableDiffusionPipeline = try! StableDiffusionPipeline(folder: TestPaths.model("tiny-sd1"))

    func jobs(_ n: Int) -> [BatchJob] {
        let text = (0..<n).map { "{\"prompt\": \"fault \($0)\", \"seed\": \(300 + $0)}" }.joined(separator: "\n")
        return PromptFile(data: Data(text.utf8), path: "faults.jsonl").jobs(defaults: BatchDefaults(steps: 1, width: 64, height: 64)).jobs
    }

    func listing(_ dir: URL) -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []).sorted() }
    func pngs(_ dir: URL) -> [String] { listing(dir).filter { $0.hasSuffix(".png") && !$0.hasPrefix(".") } }

    /// Every PNG is complete with its parameters, the manifest has only records, one per PNG
    /// when `recordsMatch`, and no temporary or lock file is left.
    func assertSound(_ out: URL, recordsMatch: Bool = true, allowLockFile: Bool = false, file: StaticString = #filePath, line: UInt = #line) throws {
        for name in pngs(out) {
            let url = out.appendingPathComponent(name)
            let text = try XCTUnwrap(try PNGFile.info(url).text["parameters"], file: file, line: line)
            XCTAssertTrue(BatchRunner.isComplete(url, parametersText: text), "\(name) is complete", file: file, line: line)
            XCTAssertNoThrow(try PNGFile.read(url), file: file, line: line)
        }
        let (records, bad) = try Manifest.read(out.appendingPathComponent("manifest.jsonl"))
        XCTAssertEqual(bad, [], "only records", file: file, line: line)
        if recordsMatch { XCTAssertEqual(records.map(\.file).sorted(), pngs(out), "one record per image", file: file, line: line) }
        XCTAssertEqual(listing(out).filter { $0.hasPrefix(".") && !(allowLockFile && $0 == ".darkroom.lock") }, [], "no temporary or lock file", file: file, line: line)
    }

    /// Runs the jobs again without faults: everything is made, nothing made twice.
    func assertRerunFinishes(_ out: URL, _ js: [BatchJob], alreadyMade: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        let s = try BatchRunner(pipeline: Self.pipeline, options: BatchOptions(output: out)).run(js)
        XCTAssertEqual([s.made, s.skipped, s.failed], [js.count - alreadyMade, alreadyMade, 0], file: file, line: line)
        XCTAssertNil(s.stoppedBy, file: file, line: line)
        XCTAssertEqual(pngs(out).count, js.count, file: file, line: line)
        try assertSound(out, file: file, line: line)
    }

    // MARK: - Faults

    func testDiskFullMidBatchStopsWithNothingLost() throws {
        let out = tmp.appendingPathComponent("out")
        let js = jobs(5)
        let runner = try BatchRunner(pipeline: Self.pipeline, options: BatchOptions(output: out))
        // The third write fills the disk: half a PNG reaches the temporary file, then ENOSPC.
        var writes = 0
        runner.writePNG = { image, text, url in
            writes += 1
            if writes == 3 {
                try Data(repeating: 0x89, count: 100).write(to: url)
                throw DarkroomError.io(path: url.path, reason: "write failed: No space left on device")
            }
            try PNGFile.write(image, text: text, to: url)
        }
        var failures: [String] = []
        let s = try runner.run(js) { if case .failed(_, let m) = $0 { failures.append(m) } }
        guard case .io(_, let reason)? = s.stoppedBy else { return XCTFail("stopped by an IO error: \(String(describing: s.stoppedBy))") }
        XCTAssertTrue(reason.contains("No space left"), reason)
        XCTAssertEqual([s.made, s.failed, s.remaining], [2, 0, 3], "the batch stops at the first write error, leaving that image for the rerun")
        XCTAssertEqual(s.stoppedAt, "faults.jsonl:3")
        XCTAssertEqual(failures, [], "a stop is one message, not a failed image")
        XCTAssertEqual(pngs(out).count, 2)
        try assertSound(out)
        try assertRerunFinishes(out, js, alreadyMade: 2)
    }

    func testManifestOnAFullDeviceStopsAndTheRerunRecordsTheImage() throws {
        guard FileManager.default.fileExists(atPath: "/dev/full") else { throw XCTSkip("no /dev/full") }
        // Writing to the device directly: ENOSPC, reported with the path.
        do {
            let w = try ManifestWriter(url: URL(fileURLWithPath: "/dev/full"))
            let record = ManifestRecord(file: "a.png", index: 0, source: nil, request: GenerationRequest(prompt: "x"), width: 8, height: 8,
                                        model: "m", modelPath: "/m", modelHash: "h", seconds: 1, batchSize: 1, shard: "1/1")
            XCTAssertThrowsError(try w.append(record)) { e in
                guard case DarkroomError.io(let path, let reason) = e else { return XCTFail("\(e)") }
                XCTAssertEqual(path, "/dev/full")
                XCTAssertTrue(reason.contains("No space left"), reason)
            }
        }
        // A batch whose manifest is on a full device: the first image is complete but cannot
        // be recorded; the batch stops there. Reading such a manifest never hangs.
        let out = tmp.appendingPathComponent("out")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        let manifest = out.appendingPathComponent("manifest.jsonl")
        try FileManager.default.createSymbolicLink(atPath: manifest.path, withDestinationPath: "/dev/full")
        XCTAssertThrowsError(try Manifest.read(manifest))
        let js = jobs(3)
        let s = try BatchRunner(pipeline: Self.pipeline, options: BatchOptions(output: out)).run(js)
        guard case .io(_, let reason)? = s.stoppedBy else { return XCTFail("\(String(describing: s.stoppedBy))") }
        XCTAssertTrue(reason.contains("manifest") && reason.contains("No space left"), reason)
        XCTAssertEqual(s.made, 0)
        XCTAssertEqual(pngs(out).count, 1, "the image itself was written completely")
        // Space again: the rerun records the image it finds and makes the other two.
        try FileManager.default.removeItem(at: manifest)
        let s2 = try BatchRunner(pipeline: Self.pipeline, options: BatchOptions(output: out)).run(js)
        XCTAssertEqual([s2.made, s2.skipped], [2, 1])
        try assertSound(out)
        XCTAssertEqual(try Manifest.read(manifest).records.filter { $0.seconds == nil }.count, 1, "the image found complete gets its record")
    }

    func testOutputFolderRemovedMidBatchStops() throws {
        let out = tmp.appendingPathComponent("out")
        let js = jobs(4)
        let runner = try BatchRunner(pipeline: Self.pipeline, options: BatchOptions(output: out))
        let s = try runner.run(js) { e in
            if case .finished = e { try? FileManager.default.removeItem(at: out) }
        }
        guard case .io(let path, let reason)? = s.stoppedBy else { return XCTFail("\(String(describing: s.stoppedBy))") }
        XCTAssertEqual(path, out.path)
        XCTAssertTrue(reason.contains("removed"), reason)
        XCTAssertEqual(s.made, 1)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path), "the folder is not made again behind the user's back")
        try assertRerunFinishes(out, js, alreadyMade: 0)
    }

    func testOutputFolderMadeUnwritableMidBatchStops() throws {
        let out = tmp.appendingPathComponent("out")
        let js = jobs(4)
        let runner = try BatchRunner(pipeline: Self.pipeline, options: BatchOptions(output: out))
        var madeUnwritable = false
        if geteuid() == 0 {
            // Root ignores permissions: refuse writes the way the kernel would for anyone else.
            runner.writePNG = { image, text, url in
                if madeUnwritable { throw DarkroomError.io(path: url.path, reason: "cannot create the file: Permission denied") }
                try PNGFile.write(image, text: text, to: url)
            }
        }
        let s = try runner.run(js) { e in
            if case .finished = e, !madeUnwritable { madeUnwritable = true; chmod(out.path, 0o555) }
        }
        chmod(out.path, 0o755)
        guard case .io(_, let reason)? = s.stoppedBy else { return XCTFail("\(String(describing: s.stoppedBy))") }
        XCTAssertTrue(reason.contains("Permission denied"), reason)
        XCTAssertEqual([s.made, s.failed, s.remaining], [1, 0, 3])
        // Without root, the lock file could not be removed from the read-only folder (it holds no lock).
        try assertSound(out, allowLockFile: geteuid() != 0)
        try assertRerunFinishes(out, js, alreadyMade: 1)
    }

    func testSecondWriterIsRefusedNamingTheHolder() throws {
        let out = tmp.appendingPathComponent("out")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        let lock = try FolderLock(folder: out)
        XCTAssertEqual(listing(out), [".darkroom.lock"])
        XCTAssertEqual(try String(contentsOf: lock.url, encoding: .utf8), "\(getpid()) \(BatchRunner.hostTag)\n")
        // flock locks belong to the open file: a second open in this process is refused too.
        XCTAssertThrowsError(try FolderLock(folder: out)) { e in
            guard case DarkroomError.io(let path, let reason) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(path, out.path)
            XCTAssertTrue(reason.contains("another darkroom process pid \(getpid()) is writing this batch"), reason)
        }
        XCTAssertThrowsError(try BatchRunner(pipeline: Self.pipeline, options: BatchOptions(output: out)).run(jobs(1)))
        XCTAssertEqual(pngs(out), [], "the refused run wrote nothing")
        // Other shards have their own lock.
        let shard = try FolderLock(folder: out, shard: try Shard(parsing: "2/3"))
        XCTAssertEqual(shard.url.lastPathComponent, ".darkroom.2-of-3.lock")
        shard.release()
        lock.release()
        XCTAssertEqual(listing(out), [], "the lock file goes with the lock")
        // A lock file left by a killed process holds no lock.
        try "99999999 elsewhere\n".write(to: out.appendingPathComponent(".darkroom.lock"), atomically: false, encoding: .utf8)
        XCTAssertNoThrow(try FolderLock(folder: out).release())
    }

    // MARK: - Configs

    /// Each change to a real config must be refused with an error naming the file and the key.
    func testConfigsWithWrongTypesAndAbsurdSizesAreRefusedByKey() throws {
        let folder = TestPaths.model("tiny-sd1")
        func check(_ file: String, _ cases: [(String, Any)], decode: (ConfigFile, Data) throws -> Void, line: UInt = #line) throws {
            let base = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent(file))) as? [String: Any])
            for (key, value) in cases {
                var json = base
                json[key] = value
                let data = try JSONSerialization.data(withJSONObject: json)
                let c = try ConfigFile(path: file, data: data)
                XCTAssertThrowsError(try decode(c, data), "\(file) \(key) = \(value)", line: line) { e in
                    switch e as? DarkroomError {
                    case .invalidConfig(let p, let k, _)?, .unsupported(let p, let k, _)?:
                        XCTAssertEqual(p, file, line: line)
                        XCTAssertTrue(k.hasPrefix(key), "\(key) = \(value): error names '\(k)'", line: line)
                    default: XCTFail("\(key) = \(value): \(e)", line: line)
                    }
                }
            }
        }
        try check("unet/config.json", [("block_out_channels", "wide"), ("block_out_channels", [1e12, 32, 48]), ("block_out_channels", [24, 32]),
                                       ("layers_per_block", -1), ("layers_per_block", 1e9), ("attention_head_dim", [1, 2]),
                                       ("cross_attention_dim", 1.5), ("sample_size", 1e300), ("norm_num_groups", 0), ("in_channels", true),
                                       ("down_block_types", "CrossAttnDownBlock2D"), ("class_embed_type", "timestep")],
                  decode: { c, _ in _ = try UNetConfig(c) })
        try check("vae/config.json", [("block_out_channels", [Int]()), ("latent_channels", 1e6), ("scaling_factor", "big"),
                                      ("layers_per_block", 1000), ("norm_num_groups", 7), ("up_block_types", ["Nope"])],
                  decode: { c, _ in _ = try VAEConfig(c) })
        try check("text_encoder/config.json", [("hidden_size", 1e9), ("num_attention_heads", 0), ("vocab_size", "many"),
                                               ("hidden_act", "relu"), ("max_position_embeddings", -77)],
                  decode: { c, _ in _ = try CLIPTextConfig(c) })
        try check("scheduler/scheduler_config.json", [("num_train_timesteps", 1e12), ("num_train_timesteps", 0), ("steps_offset", 4611686018427387904),
                                                      ("beta_start", "x"), ("beta_schedule", "cosine"), ("original_inference_steps", -5)],
                  decode: { _, data in _ = try SchedulerConfig.decode(data, path: "scheduler/scheduler_config.json") })
    }

    // MARK: - Memory

    func testReleasedUNetIsRebuiltFromItsFiles() throws {
        let folder = tmp.appendingPathComponent("model")
        try FileManager.default.copyItem(at: TestPaths.model("tiny-sd1"), to: folder)
        let pipeline = try StableDiffusionPipeline(folder: folder)
        let r = GenerationRequest(prompt: "a red heart", steps: 3, guidanceScale: 5, seed: 7)
        let kept = try pipeline.generate(batch: [r])[0]
        let released = try pipeline.generate(batch: [r], releasingWeights: true)[0]
        XCTAssertEqual(released.pixels.scalars, kept.pixels.scalars, "each release happens after its component's last use")
        XCTAssertEqual(try pipeline.generate(batch: [r])[0].pixels.scalars, kept.pixels.scalars, "the rebuilt modules are the same")

        // Released, the text encoder and the UNet are read from disk again, with the same checks as at load.
        for component in ["text_encoder/model", "unet/diffusion_pytorch_model"] {
            _ = try pipeline.generate(batch: [r], releasingWeights: true)
            let file = folder.appendingPathComponent(component + ".safetensors")
            let good = try Data(contentsOf: file)
            try FileManager.default.removeItem(at: file)
            try Data([1, 2, 3]).write(to: file)
            XCTAssertThrowsError(try pipeline.generate(batch: [r])) {
                XCTAssertTrue("\($0)".contains(file.path), "\($0)")
            }
            try FileManager.default.removeItem(at: file)
            try good.write(to: file)
        }
        XCTAssertEqual(try pipeline.generate(batch: [r])[0].pixels.scalars, kept.pixels.scalars)
    }

    func testMemoryEstimateFollowsSizeBatchAndPrecision() throws {
        let p = try ModelMemoryProfile(model: TestPaths.model("tiny-sd1"))
        XCTAssertEqual(p.defaultSize, Self.pipeline.model.defaultSize)
        XCTAssertEqual(p.vaeScaleFactor, 8)
        let small = p.estimate(width: 64, height: 64), big = p.estimate(width: 512, height: 512)
        XCTAssertEqual(small.weights, big.weights)
        XCTAssertEqual(small.peakPhase, "loading", "a tiny image needs less than widening the largest tensor")
        XCTAssertEqual(big.peakPhase, "VAE decoder", "at full resolution the decoder's planes dominate")
        let huge = p.estimate(width: 1024, height: 1024)
        XCTAssertEqual(Double(huge.activations) / Double(big.activations), 4, accuracy: 0.2, "activations grow with the pixels")
        // (For this tiny UNet the VAE decoder dominates until the batch is large.)
        XCTAssertGreaterThan(p.estimate(width: 256, height: 256, batch: 64).activations, p.estimate(width: 256, height: 256).activations)
        XCTAssertGreaterThanOrEqual(p.estimate(width: 256, height: 256, guidance: true).total, p.estimate(width: 256, height: 256, guidance: false).total)
        XCTAssertEqual(p.estimate(width: 64, height: 64, imageToImage: true).weights, small.weights + p.encoderWeightBytes)

        // Weights: float32 files take their size; float16 matrices stay float16.
        func stored(_ model: String) throws -> Int {
            var n = 0
            for c in ["text_encoder", "unet", "vae"] {
                let w = try Weights.load(componentFolder: TestPaths.model(model).appendingPathComponent(c), stem: c == "text_encoder" ? "model" : "diffusion_pytorch_model")
                for f in w.files { for e in f.entries.values where e.dtype != .i64 { n += e.end - e.begin } }
            }
            return n
        }
        XCTAssertEqual(p.weightBytes + p.encoderWeightBytes, try stored("tiny-sd1"), "tiny-sd1 is float32")
        let fp16 = try ModelMemoryProfile(model: TestPaths.model("tiny-sd2"))
        let s2 = try stored("tiny-sd2")
        XCTAssertGreaterThan(fp16.weightBytes + fp16.encoderWeightBytes, s2, "norms, biases and embeddings are widened")
        XCTAssertLessThan(fp16.weightBytes + fp16.encoderWeightBytes, 2 * s2, "matrices are not")

        // A single-file checkpoint gives the same profile as its folder.
        let ckpt = try ModelMemoryProfile(model: TestPaths.fixtures.appendingPathComponent("singlefile/tiny-sd1.safetensors"),
                                          checkpointOptions: CheckpointOptions(configFolder: TestPaths.model("tiny-sd1")))
        XCTAssertEqual(ckpt.estimate(width: 128, height: 96).activations, p.estimate(width: 128, height: 96).activations)
        // Its text encoder is F16 (matrices halve), its UNet BF16 and VAE F32 (widened to F32 like the folder's).
        XCTAssertLessThan(ckpt.weightBytes, p.weightBytes)
        XCTAssertGreaterThan(ckpt.weightBytes, p.weightBytes * 3 / 4)

        // The text encoder's and the UNet's shares, freed by a run's only batch before the UNet and
        // before the decode: a tiny model's decode peak then sits on the VAE's weights only.
        func bytes(_ component: String, _ stem: String) throws -> Int {
            let w = try Weights.load(componentFolder: TestPaths.model("tiny-sd1").appendingPathComponent(component), stem: stem)
            return w.files.reduce(0) { $0 + $1.entries.values.filter { $0.dtype != .i64 }.reduce(0) { $0 + $1.end - $1.begin } }
        }
        XCTAssertEqual(p.unetWeightBytes, try bytes("unet", "diffusion_pytorch_model"), "tiny-sd1 is float32")
        XCTAssertEqual(p.textWeightBytes, try bytes("text_encoder", "model"))
        let released = p.estimate(width: 512, height: 512, releasingWeights: true)
        XCTAssertEqual(released.peakPhase, "VAE decoder")
        XCTAssertEqual(big.total - released.total, p.unetWeightBytes + p.textWeightBytes)
        XCTAssertEqual(p.estimate(width: 512, height: 512, imageToImage: true, releasingWeights: true).total,
                       p.estimate(width: 512, height: 512, imageToImage: true).total, "image-to-image keeps its modules")
        XCTAssertEqual(ckpt.unetWeightBytes, p.unetWeightBytes, "the checkpoint's UNet is BF16, widened to F32 like the folder's")
        XCTAssertLessThan(ckpt.textWeightBytes, p.textWeightBytes, "its text encoder is F16")

        XCTAssertThrowsError(try ModelMemoryProfile(model: tmp.appendingPathComponent("none"))) {
            XCTAssertEqual($0 as? DarkroomError, .fileNotFound(path: self.tmp.appendingPathComponent("none").path))
        }
    }

    func testLargestFittingSizeKeepsTheAspectRatio() throws {
        let p = try ModelMemoryProfile(model: TestPaths.model("tiny-sd1"))
        let limit = p.estimate(width: 256, height: 256).total
        let fit = try XCTUnwrap(p.largestFitting(width: 512, height: 512, limit: limit))
        XCTAssertEqual([fit.width, fit.height], [256, 256])
        let wide = try XCTUnwrap(p.largestFitting(width: 1024, height: 512, limit: limit))
        XCTAssertEqual(Double(wide.width), Double(2 * wide.height), accuracy: 16, "2:1, the short side rounded down to a multiple of 8")
        XCTAssertLessThanOrEqual(p.estimate(width: wide.width, height: wide.height).total, limit)
        XCTAssertGreaterThan(p.estimate(width: wide.width + 16, height: wide.height + 8).total, limit, "the largest, not just one that fits")
        XCTAssertNil(p.largestFitting(width: 512, height: 512, limit: p.weightBytes), "nothing fits beside the weights alone")
    }

    func testSystemMemorySources() throws {
        for (text, bytes) in [("4G", 4 << 30), ("512M", 512 << 20), ("1.5GiB", 3 << 29), ("123456", 123456), ("2t", 2 << 40), ("64kb", 64 << 10)] {
            XCTAssertEqual(SystemMemory.parseSize(text), bytes, text)
        }
        for bad in ["", "G", "-1G", "4X", "nan", "1e30", "0"] { XCTAssertNil(SystemMemory.parseSize(bad), bad) }
        XCTAssertEqual(try SystemMemory.current(environment: ["DARKROOM_MEMORY_LIMIT": "3G"]), SystemMemory(bytes: 3 << 30, source: "DARKROOM_MEMORY_LIMIT"))
        XCTAssertThrowsError(try SystemMemory.current(environment: ["DARKROOM_MEMORY_LIMIT": "lots"]))

        // A fake /proc and /sys: cgroup v2 with a limit on a parent, below MemAvailable.
        let root = tmp.appendingPathComponent("root")
        func put(_ path: String, _ text: String) throws {
            let url = root.appendingPathComponent(path)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try text.write(to: url, atomically: true, encoding: .utf8)
        }
        try put("proc/meminfo", "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n")
        XCTAssertEqual(try SystemMemory.current(environment: [:], root: root.path + "/"), SystemMemory(bytes: 20000000 * 1024, source: "MemAvailable"))
        try put("proc/self/cgroup", "0::/job/task\n")
        try put("sys/fs/cgroup/job/task/memory.max", "max\n")
        try put("sys/fs/cgroup/job/memory.max", "4294967296\n")
        XCTAssertEqual(try SystemMemory.current(environment: [:], root: root.path + "/"), SystemMemory(bytes: 4 << 30, source: "cgroup memory limit"))
        // cgroup v1, and v1's "no limit".
        try put("proc/self/cgroup", "12:cpu,cpuacct:/x\n7:memory:/box\n")
        try put("sys/fs/cgroup/memory/box/memory.limit_in_bytes", "1073741824\n")
        XCTAssertEqual(try SystemMemory.current(environment: [:], root: root.path + "/")?.bytes, 1 << 30)
        try put("sys/fs/cgroup/memory/box/memory.limit_in_bytes", "9223372036854771712\n")
        XCTAssertEqual(try SystemMemory.current(environment: [:], root: root.path + "/")?.source, "MemAvailable")
        // This machine: something positive.
        XCTAssertGreaterThan(try XCTUnwrap(try SystemMemory.current(environment: [:])).bytes, 0)
    }
}
