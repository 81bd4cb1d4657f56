import Foundation
import XCTest
@testable import Darkroom

/// The batch library: prompt files, names, shards, manifest, fingerprint, batched denoising and
/// the runner (resume, cancel, no overwrites). Images come from Models/tiny-sd1 at 64x64.
final class BatchTests: XCTestCase {
    var tmp: URL!

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("darkroom-batch-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: tmp)
    }

    static let pipeline: StableDiffusionPipeline = try! StableDiffusionPipeline(folder: TestPaths.model("tiny-sd1"))

    // MARK: - SHA-256 and the model fingerprint

    func testSHA256KnownAnswers() {
        // FIPS 180-4 examples and Python's hashlib.sha256(b"a" * 1_000_000).
        XCTAssertEqual(SHA256.hash([UInt8]()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(SHA256.hash(Array("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(SHA256.hash(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        XCTAssertEqual(SHA256.hash([UInt8](repeating: 0x61, count: 1_000_000)),
                       "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        // Split updates give the same digest as one.
        let data = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 37) }
        var h = SHA256()
        h.update(data[0..<1]); h.update(data[1..<63]); h.update(data[63..<64]); h.update(data[64..<500]); h.update(data[500...])
        XCTAssertEqual(SHA256.hex(h.finalize()), SHA256.hash(data))
    }

    func testModelFingerprintSeesWeightChanges() throws {
        let model = tmp.appendingPathComponent("m")
        try FileManager.default.copyItem(at: TestPaths.model("tiny-sd1"), to: model)
        let a = try ModelFingerprint.compute(folder: model)
        XCTAssertTrue(a.hasPrefix("sha256s:"))
        XCTAssertEqual(a.count, 8 + 64)
        XCTAssertEqual(a, try ModelFingerprint.compute(folder: TestPaths.model("tiny-sd1")), "same files, same hash (the folder name is not hashed)")
        // A "fine-tune": every weight of the UNet nudged, sizes and header unchanged.
        let file = model.appendingPathComponent("unet/diffusion_pytorch_model.safetensors")
        let st = try SafetensorsFile(url: file)
        let items = try st.names.map { n -> SafetensorsWriter.Item in
            let t = try st.tensor(n)
            for i in 0..<t.count { t.data[i] = t.data[i] * 1.001 + 1e-4 }
            return SafetensorsWriter.Item(name: n, tensor: t)
        }
        try SafetensorsWriter.write(items, to: file)
        XCTAssertNotEqual(a, try ModelFingerprint.compute(folder: model))
    }

    func testSingleFileCheckpoints() throws {
        let file = TestPaths.fixtures.appendingPathComponent("singlefile/tiny-sd1.safetensors")
        let options = CheckpointOptions(configFolder: TestPaths.model("tiny-sd1"))
        let summary = try ModelSummary(checkpoint: file, options: options)
        let folder = try ModelSummary(folder: TestPaths.model("tiny-sd1"))
        let st = try SafetensorsFile(url: file)
        XCTAssertEqual(summary.components.map(\.name), ["tokenizer", "text_encoder", "unet", "vae", "scheduler"])
        XCTAssertEqual(summary.components.first { $0.name == "unet" }?.parameters, folder.components.first { $0.name == "unet" }?.parameters,
                       "the converted UNet has the folder's parameters")
        let networks = st.entries.filter { k, _ in ["cond_stage_model.", "model.diffusion_model.", "first_stage_model."].contains { k.hasPrefix($0) } }
        XCTAssertEqual(summary.totalParameters, networks.values.reduce(0) { $0 + $1.count })
        XCTAssertEqual(summary.defaultSize, folder.defaultSize)

        // A batch with the checkpoint records the file's fingerprint.
        let hash = try ModelFingerprint.compute(folder: file)
        XCTAssertNotEqual(hash, try ModelFingerprint.compute(folder: TestPaths.model("tiny-sd1")))
        let pipeline = StableDiffusionPipeline(model: try StableDiffusionModel(checkpoint: file, options: options))
        let out = tmp.appendingPathComponent("out")
        let s = try BatchRunner(pipeline: pipeline, options: BatchOptions(output: out)).run(jobs(1))
        XCTAssertEqual(s.made, 1)
        XCTAssertEqual(try Manifest.read(out.appendingPathComponent("manifest.jsonl")).records.first?.modelHash, hash)
    }

    // MARK: - Prompt files

    func testPlainTextPromptFile() {
        let text = "\u{FEFF}a red heart\r\n\n  # a comment\n   blue circle  \n#x\n{not json in text mode}\n"
        let f = PromptFile(data: Data(text.utf8), path: "p.txt")
        XCTAssertEqual(f.format, .text)
        XCTAssertEqual(f.entries.map(\.prompt), ["a red heart", "blue circle", "{not json in text mode}"])
        XCTAssertEqual(f.entries.map(\.source.line), [1, 4, 6])
        XCTAssertTrue(f.problems.isEmpty)
        let (jobs, _) = f.jobs(defaults: BatchDefaults(negativePrompt: "ugly", steps: 3, width: 64, height: 64, count: 2))
        XCTAssertEqual(jobs.map(\.index), Array(0..<6))
        XCTAssertEqual(jobs.map(\.request.seed), [0, 1, 2, 3, 4, 5], "without --seed a line starts at its first job index")
        XCTAssertEqual(jobs.map(\.imageInLine), [0, 1, 0, 1, 0, 1])
        XCTAssertTrue(jobs.allSatisfy { $0.request.negativePrompt == "ugly" && $0.request.steps == 3 })
        let (seeded, _) = f.jobs(defaults: BatchDefaults(seed: 100, count: 2))
        XCTAssertEqual(seeded.map(\.request.seed), [100, 101, 100, 101, 100, 101], "--seed: every line starts at it")
    }

    func testJSONLinesOverrideDefaultsAndReportBadLines() {
        let lines = [
            #"{"prompt": "a", "negative_prompt": "n", "seed": 7, "steps": 4, "guidance_scale": 3.5, "width": 128, "height": 72, "count": 2, "sampler": "DDIM", "eta": 0.25}"#,
            #"{"prompt": "b", "steps": 0}"#,                       // out of range, count unknown → reserves 1
            #"{"prompt": "c", "cfg_scale": 3, "count": 3}"#,          // unknown key, count known → reserves 3
            #"{"prompt": "d" "seed": 1}"#,                          // bad JSON
            #"["list"]"#,
            "plain words",
            #"{"prompt": "e", "seed": 18446744073709551615}"#,
            #"{"prompt": "f", "seed": "18446744073709551614", "count": 2}"#,
            #"{"prompt": "g", "seed": -1}"#,
            #"{"prompt": "h", "sampler": "nope"}"#,
            #"{"prompt": "i", "width": 100}"#,
            #"{"negative_prompt": "no prompt"}"#,
            #"{"prompt": "j", "prompt": "k"}"#,
            #"{"prompt": "l", "eta": null, "seed": 5.5}"#,
            #"{"prompt": "m"}"#,
        ]
        var data = Data(lines.joined(separator: "\n").utf8)
        data += Data("\n{\"prompt\": \"bad \\u0000\"}\n".utf8)
        data += Data([0x7B, 0x22, 0x70, 0x22, 0x3A, 0x22, 0xFF, 0x22, 0x7D, 0x0A])  // {"p":"\xFF"}
        let f = PromptFile(data: data, path: "p.jsonl")
        XCTAssertEqual(f.format, .jsonl)
        let byLine = Dictionary(uniqueKeysWithValues: f.problems.map { ($0.source.line, $0.message) })
        XCTAssertEqual(Set(byLine.keys), [2, 3, 4, 5, 6, 9, 10, 11, 12, 13, 14, 16, 17], "\(byLine)")
        XCTAssertTrue(byLine[2]!.contains("'steps'"))
        XCTAssertTrue(byLine[3]!.contains("'cfg_scale'") && byLine[3]!.contains("guidance_scale"))
        XCTAssertTrue(byLine[4]!.contains("invalid JSON"))
        XCTAssertTrue(byLine[6]!.contains("JSON Lines"))
        XCTAssertTrue(byLine[9]!.contains("'seed'"))
        XCTAssertTrue(byLine[10]!.contains("sampler") && byLine[10]!.contains("ddim"))
        XCTAssertTrue(byLine[11]!.contains("'width'"))
        XCTAssertTrue(byLine[12]!.contains("no 'prompt'"))
        XCTAssertTrue(byLine[13]!.contains("duplicate"))
        XCTAssertTrue(byLine[14]!.contains("'seed'"))
        XCTAssertTrue(byLine[16]!.contains("NUL"))
        XCTAssertTrue(byLine[17]!.contains("UTF-8"))
        XCTAssertEqual(f.problems.first { $0.source.line == 3 }?.description.hasPrefix("p.jsonl:3: "), true)

        let (jobs, problems) = f.jobs(defaults: BatchDefaults(steps: 2, width: 64, height: 64))
        let a = jobs.filter { $0.request.prompt == "a" }
        XCTAssertEqual(a.count, 2)
        XCTAssertEqual(a[1].request, GenerationRequest(prompt: "a", negativePrompt: "n", steps: 4, guidanceScale: 3.5, width: 128, height: 72,
                                                       seed: 8, eta: 0.25, sampler: .ddim))
        // Indices: a=0,1; b reserves 2; c reserves 3,4,5; d 6; list 7; plain 8; e 9; f 10,11; ...
        XCTAssertEqual(problems.first { $0.source.line == 3 }?.indices, 3..<6)
        XCTAssertEqual(jobs.first { $0.request.prompt == "e" }?.index, 9)
        XCTAssertEqual(jobs.first { $0.request.prompt == "e" }?.request.seed, UInt64.max)
        XCTAssertEqual(jobs.filter { $0.request.prompt == "f" }.map(\.request.seed), [UInt64.max - 1, UInt64.max])
        XCTAssertEqual(jobs.first { $0.request.prompt == "m" }?.index, 18)
        XCTAssertEqual(jobs.first { $0.request.prompt == "m" }?.request.seed, 18, "default seed = own index")
    }

    func testFormatDetection() {
        XCTAssertEqual(PromptFile(data: Data("{\"prompt\": \"x\"}".utf8), path: "p").format, .jsonl)
        XCTAssertEqual(PromptFile(data: Data("# c\n{\"prompt\": \"x\"}".utf8), path: "prompts").format, .jsonl)
        XCTAssertEqual(PromptFile(data: Data("{\"prompt\": \"x\"}".utf8), path: "p.txt").format, .text)
        XCTAssertEqual(PromptFile(data: Data("x".utf8), path: "p.ndjson").format, .jsonl)
        XCTAssertEqual(PromptFile(data: Data("x".utf8), path: "p").format, .text)
        XCTAssertEqual(PromptFile(data: Data("x".utf8), path: "p.jsonl", format: .text).format, .text)
    }

    // MARK: - Names

    func job(_ prompt: String, index: Int = 42, seed: UInt64 = 1234567, line: Int = 3) -> (BatchJob, GenerationParameters) {
        let r = GenerationRequest(prompt: prompt, negativePrompt: "neg", steps: 2, guidanceScale: 7.5, width: 64, height: 64, seed: seed)
        let j = BatchJob(index: index, request: r, source: .init(path: "p.txt", line: line), imageInLine: 1)
        return (j, Self.pipeline.parameters(for: r))
    }

    func testDefaultNameAndPlaceholders() throws {
        let (j, p) = job("A Red Heart!")
        XCTAssertEqual(try FileNamePattern().relativePath(for: j, parameters: p), "00042-1234567-a-red-heart.png")
        let all = try FileNamePattern("{line:3}_{image}_{index}_{seed}_{steps}_{cfg}_{width}x{height}_{sampler}_{negative}_{model}_{prompt:5}_{hash}")
        XCTAssertEqual(all.relativePath(for: j, parameters: p),
                       "003_1_42_1234567_2_7.5_64x64_ddim_neg_tiny-sd1_a-red_" + String(SHA256.hash(Array(p.a1111Text.utf8)).prefix(10)) + ".png")
        XCTAssertEqual(try FileNamePattern("{sampler}/{{x}}{index:02}.PNG").relativePath(for: j, parameters: p), "ddim/{x}42.PNG")
        for bad in ["{nope}", "{index", "index}", "/abs/{index}", "../{index}", "a/../{index}", "a//{index}", ".hidden{index}", "{index:0}", "{prompt:x}", "a\u{7}b"] {
            XCTAssertThrowsError(try FileNamePattern(bad), bad)
        }
        XCTAssertEqual(FileNamePattern.alternative("a/b.png", number: 2), "a/b-2.png")
    }

    func testNamesAreSafeForAnyPrompt() throws {
        let long = String(repeating: "abcdefghij ", count: 100)
        let prompts = [
            "../../etc/passwd", "/etc/shadow", "..", ".", "", "   ", "a/b\\c:d*e?f\"g<h>i|j", "\u{0}\u{1}\u{7F}x",
            "日本語のプロンプト、赤いハート", "ÉCOLE Straße İstanbul", "e\u{301}te\u{301}",  // NFD → NFC
            "नमस्ते दुनिया", "مرحبا بالعالم", "a\u{202E}gnp.exe", "zero\u{200B}width\u{200D}joiner", "❤️🔥👩‍👩‍👧",
            long, String(repeating: "語", count: 1000), String(repeating: "a", count: 1000),
        ]
        var names = Set<String>()
        for (i, prompt) in prompts.enumerated() {
            let (j, p) = job(prompt, index: i)
            for pattern in [FileNamePattern.defaultPattern, "{prompt:240}", "{prompt:200}-{negative:200}/{prompt:240}"] {
                let rel = try FileNamePattern(pattern).relativePath(for: j, parameters: p)
                let comps = rel.split(separator: "/", omittingEmptySubsequences: false)
                XCTAssertEqual(comps.count, pattern.contains("/") ? 2 : 1, "no '/' from the prompt: \(rel)")
                for c in comps {
                    XCTAssertLessThanOrEqual(c.utf8.count, 255, rel)
                    XCTAssertFalse(c.hasPrefix(".") || c.hasPrefix("-") || c.isEmpty, rel)
                    XCTAssertFalse(c.unicodeScalars.contains { $0.properties.generalCategory == .format || $0.properties.generalCategory == .control || $0 == "\\" || $0 == ":" }, rel)
                }
                XCTAssertTrue(rel.hasSuffix(".png"))
                // The file system accepts it, inside the folder.
                let url = tmp.appendingPathComponent(rel)
                try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
                XCTAssertTrue(FileManager.default.createFile(atPath: url.path, contents: Data()), rel)
                XCTAssertTrue(url.standardizedFileURL.path.hasPrefix(tmp.standardizedFileURL.path + "/"))
                if pattern == FileNamePattern.defaultPattern { names.insert(rel) }
            }
        }
        XCTAssertEqual(names.count, prompts.count, "the index keeps names distinct")
        XCTAssertEqual(FileNamePattern.slug("../../etc/passwd"), "etc-passwd")
        XCTAssertEqual(FileNamePattern.slug("e\u{301}te\u{301}"), "\u{E9}t\u{E9}")
        XCTAssertEqual(FileNamePattern.slug("ÉCOLE Straße"), "école-straße")
        XCTAssertEqual(FileNamePattern.slug("नमस्ते"), "नमस्ते", "combining vowel signs stay with their letters")
        XCTAssertEqual(FileNamePattern.slug("a\u{202E}b\u{200D}c"), "a-b-c")
        XCTAssertEqual(FileNamePattern.slug("❤️"), "image")
        XCTAssertEqual(FileNamePattern.slug(String(repeating: "語", count: 100)).utf8.count, 60, "cut on a character boundary")
    }

    // MARK: - Shards

    func testShardsPartitionTheJobs() throws {
        for n in 1...7 {
            let shards = try (1...n).map { try Shard($0, of: n) }
            for i in 0..<100 { XCTAssertEqual(shards.filter { $0.contains(jobIndex: i) }.count, 1) }
        }
        XCTAssertEqual(try Shard(parsing: "3/8"), try Shard(3, of: 8))
        XCTAssertEqual(try Shard(parsing: "3/8").manifestName, "manifest-3-of-8.jsonl")
        XCTAssertEqual(Shard.all.manifestName, "manifest.jsonl")
        for bad in ["0/4", "5/4", "1/0", "x/2", "2", "1/2/3", "-1/2"] { XCTAssertThrowsError(try Shard(parsing: bad), bad) }
    }

    // MARK: - Manifest

    func record(_ i: Int, prompt: String = "p") -> ManifestRecord {
        ManifestRecord(file: "\(i).png", index: i, source: "p.txt:\(i + 1)",
                       request: GenerationRequest(prompt: prompt, seed: UInt64.max - UInt64(i)), width: 64, height: 64,
                       model: "m", modelPath: "/m", modelHash: "sha256s:00", seconds: 1.25, batchSize: 1, shard: "1/1")
    }

    func testManifestAppendsRepairAndTornLines() throws {
        let url = tmp.appendingPathComponent("manifest.jsonl")
        do {
            let w = try ManifestWriter(url: url)
            try w.append(record(0, prompt: "quote \" newline \n tab \t unicode ❤ \u{2028}"))
            try w.append(record(1))
            // A second writer on the same manifest is refused while the first holds it.
            XCTAssertThrowsError(try ManifestWriter(url: url)) { e in
                XCTAssertTrue("\(e)".contains("another darkroom process"), "\(e)")
            }
        }
        var (records, bad) = try Manifest.read(url)
        XCTAssertEqual(records.count, 2)
        XCTAssertEqual(bad, [])
        XCTAssertEqual(records[0].prompt, "quote \" newline \n tab \t unicode ❤ \u{2028}")
        XCTAssertEqual(records[0].seed, UInt64.max, "seeds above 2^53 survive")
        XCTAssertEqual(records[1].seconds, 1.25)
        XCTAssertEqual(records[1], record(1).with(created: records[1].created))
        // Every line is one JSON object for any JSON reader.
        let text = try String(contentsOf: url, encoding: .utf8)
        for line in text.split(separator: "\n") {
            XCTAssertNotNil(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], String(line))
        }

        // A writer killed mid-line leaves a torn tail: readers skip it, the next writer cuts it.
        let h = try FileHandle(forWritingTo: url)
        h.seekToEndOfFile()
        h.write(Data(#"{"file":"2.png","index":2,"pro"#.utf8))
        try h.close()
        (records, bad) = try Manifest.read(url)
        XCTAssertEqual(records.count, 2)
        XCTAssertEqual(bad, [])
        do {
            let w = try ManifestWriter(url: url)
            try w.append(record(3))
        }
        (records, bad) = try Manifest.read(url)
        XCTAssertEqual(records.map(\.index), [0, 1, 3])
        XCTAssertEqual(bad, [])
        XCTAssertTrue(try String(contentsOf: url, encoding: .utf8).hasSuffix("}\n"))
    }

    // MARK: - Batched denoising

    func testBatchedImagesEqualSingleImages() throws {
        let pipeline = Self.pipeline
        let requests = [
            GenerationRequest(prompt: "a red heart", negativePrompt: "blurry", steps: 3, guidanceScale: 7.5, width: 64, height: 64, seed: 1),
            GenerationRequest(prompt: "a blue circle", negativePrompt: "", steps: 3, guidanceScale: 3, width: 64, height: 64, seed: 2, eta: 0.5),
            GenerationRequest(prompt: "green", negativePrompt: "dark", steps: 3, guidanceScale: 5, width: 64, height: 64, seed: 3),
        ]
        let singles = try requests.map { try pipeline.generate($0) }
        let batched = try pipeline.generate(batch: requests)
        XCTAssertEqual(batched.count, 3)
        var exact = true
        for (s, b) in zip(singles, batched) {
            XCTAssertEqual(s.parameters, b.parameters)
            assertClose(b.pixels, s.pixels, atol: 1e-5, "batched vs single \(s.parameters.seed)")
            exact = exact && s.image == b.image
        }
        print("batched images byte-identical to single ones: \(exact)")
        // The images differ from each other (each has its own noise and prompt).
        XCTAssertNotEqual(singles[0].image, singles[1].image)

        // Without guidance (scale 1) the UNet batch is [B] instead of [2B].
        let plain = requests.map { r -> GenerationRequest in var r = r; r.guidanceScale = 1; return r }
        let ps = try plain.map { try pipeline.generate($0) }
        let pb = try pipeline.generate(batch: plain)
        for (s, b) in zip(ps, pb) { assertClose(b.pixels, s.pixels, atol: 1e-5, "unguided batched vs single") }

        // Every sampler keeps its state per image (Euler a and DDIM η draw noise from each
        // image's own generator; multistep samplers keep their own history).
        var ran: [SamplerKind] = []
        for kind in SamplerKind.allCases where kind != .ddim {
            guard (try? kind.make(config: pipeline.model.schedulerConfig, steps: 4, eta: 0)) != nil else { continue }
            ran.append(kind)
            let rs = requests.prefix(2).map { r -> GenerationRequest in var r = r; r.sampler = kind; r.steps = 4; return r }
            let s = try rs.map { try pipeline.generate($0) }
            let b = try pipeline.generate(batch: Array(rs))
            for (x, y) in zip(s, b) { assertClose(y.pixels, x.pixels, atol: 1e-5, "\(kind) batched vs single") }
        }
        print("samplers checked batched: \(ran.map(\.rawValue))")
        XCTAssertGreaterThanOrEqual(ran.count, 6, "euler, euler_a, dpmpp_2m(_karras), pndm and lcm run on tiny-sd1's config")

        // Requests that cannot share timesteps are refused.
        var other = requests[1]
        other.steps = 4
        XCTAssertThrowsError(try pipeline.generate(batch: [requests[0], other]))
        XCTAssertFalse(pipeline.canBatch(requests[0], other))
        XCTAssertFalse(pipeline.canBatch(requests[0], plain[0]))
    }

    // MARK: - Recipes

    func testRecipeRoundTrip() throws {
        let r = GenerationRequest(prompt: "a castle, on a hill: at night", negativePrompt: "blurry\nlow quality", steps: 7, guidanceScale: 7.3,
                                  width: 64, height: 72, seed: UInt64.max, eta: 0.3, sampler: .ddim)
        let text = Self.pipeline.parameters(for: r).a1111Text
        let recipe = try ImageRecipe(parameters: GenerationParameters(parsing: text))
        XCTAssertEqual(recipe.request, r)
        XCTAssertEqual(recipe.model, "tiny-sd1")
        XCTAssertEqual(recipe.ignored, [])
        var p = try GenerationParameters(parsing: text)
        p[extra: "Hires upscale"] = "2"
        XCTAssertEqual(try ImageRecipe(parameters: p).ignored, ["Hires upscale: 2"])
        // Clip skip, guidance rescale and prompt mode are settings: written only when not the
        // default, and read back.
        var tuned = r
        tuned.clipSkip = 2
        tuned.guidanceRescale = 0.7
        tuned.promptMode = .diffusers
        let tunedText = Self.pipeline.parameters(for: tuned).a1111Text
        XCTAssertTrue(tunedText.hasSuffix("Eta: 0.3, Clip skip: 2, Guidance rescale: 0.7, Prompt mode: diffusers"), tunedText)
        let back = try ImageRecipe(parameters: GenerationParameters(parsing: tunedText))
        XCTAssertEqual(back.request, tuned)
        XCTAssertEqual(back.ignored, [])
        p[extra: "Clip skip"] = "two"
        XCTAssertThrowsError(try ImageRecipe(parameters: p))
        p[extra: "Clip skip"] = "2"
        p.sampler = "Euler a2"
        XCTAssertThrowsError(try ImageRecipe(parameters: p))
    }

    // MARK: - Runner

    func jobs(_ n: Int, steps: Int = 1) -> [BatchJob] {
        let text = (0..<n).map { "{\"prompt\": \"prompt number \($0)\", \"negative_prompt\": \"neg \($0)\", \"seed\": \(1000 + $0 * 7)}" }.joined(separator: "\n")
        return PromptFile(data: Data(text.utf8), path: "jobs.jsonl").jobs(defaults: BatchDefaults(steps: steps, width: 64, height: 64)).jobs
    }

    func pngs(_ dir: URL) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []).filter { $0.hasSuffix(".png") && !$0.hasPrefix(".") }.sorted()
    }

    func testRunnerResumesAfterCancelAndNeverOverwrites() throws {
        let out = tmp.appendingPathComponent("out")
        let js = jobs(5)
        // Another image already holds the first job's name.
        let runner = try BatchRunner(pipeline: Self.pipeline, options: BatchOptions(output: out))
        let firstName = runner.plan(js).toMake[0].file
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        let stranger = RGBImage(width: 8, height: 8, pixels: [UInt8](repeating: 7, count: 192))
        try PNGFile.write(stranger, text: [("parameters", "something else\nSteps: 1, Sampler: DDIM, CFG scale: 1, Seed: 1, Size: 8x8")],
                          to: out.appendingPathComponent(firstName))

        // Cancel after two images.
        var finished: [String] = []
        var steps = 0
        let s1 = try runner.run(js) { e in
            switch e {
            case .finished(_, let f, _):
                finished.append(f)
                if finished.count == 2 { runner.cancel() }
            case .step: steps += 1
            default: break
            }
        }
        XCTAssertTrue(s1.cancelled)
        XCTAssertEqual(s1.made, 2)
        XCTAssertEqual(s1.remaining, 3)
        XCTAssertGreaterThan(steps, 0)
        XCTAssertEqual(finished[0], firstName.replacingOccurrences(of: ".png", with: "-2.png"), "the stranger keeps its name")
        XCTAssertEqual(try PNGFile.read(out.appendingPathComponent(firstName)).image, stranger)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out.path).filter { $0.hasPrefix(".") }, [], "no temporary files")

        // Rerun: the two are skipped, three made; a third run does nothing.
        let runner2 = try BatchRunner(pipeline: Self.pipeline, options: BatchOptions(output: out))
        let plan = runner2.plan(js)
        XCTAssertEqual(plan.done.count, 2)
        XCTAssertEqual(plan.toMake.count, 3)
        let s2 = try runner2.run(js)
        XCTAssertEqual([s2.made, s2.skipped, s2.failed], [3, 2, 0])
        let s3 = try BatchRunner(pipeline: Self.pipeline, options: BatchOptions(output: out)).run(js)
        XCTAssertEqual([s3.made, s3.skipped], [0, 5])
        XCTAssertEqual(pngs(out).count, 6)
        let (records, bad) = try Manifest.read(out.appendingPathComponent("manifest.jsonl"))
        XCTAssertEqual(bad, [])
        XCTAssertEqual(records.map(\.index).sorted(), [0, 1, 2, 3, 4])
        XCTAssertEqual(records.first { $0.index == 0 }?.file, finished[0])
        XCTAssertEqual(records.first { $0.index == 3 }?.negativePrompt, "neg 3")
        XCTAssertEqual(records.first { $0.index == 3 }?.seed, 1021)
        XCTAssertEqual(records[0].modelHash, runner.modelHash)

        // A lost record (killed between rename and append) is restored on the next run.
        let manifest = out.appendingPathComponent("manifest.jsonl")
        let lines = try String(contentsOf: manifest, encoding: .utf8).split(separator: "\n")
        try (lines.dropLast().joined(separator: "\n") + "\n").write(to: manifest, atomically: true, encoding: .utf8)
        _ = try BatchRunner(pipeline: Self.pipeline, options: BatchOptions(output: out)).run(js)
        let restored = try Manifest.read(manifest).records
        XCTAssertEqual(restored.map(\.index).sorted(), [0, 1, 2, 3, 4])
        XCTAssertNil(restored.last?.seconds, "a restored record has no time")
    }

    func testRunnerBatchSizeAndShardsGiveTheSameImages() throws {
        let js = jobs(5)
        let one = tmp.appendingPathComponent("one"), batched = tmp.appendingPathComponent("batched"), shards = tmp.appendingPathComponent("shards")
        _ = try BatchRunner(pipeline: Self.pipeline, options: BatchOptions(output: one)).run(js)
        var groups: [[Int]] = []
        _ = try BatchRunner(pipeline: Self.pipeline, options: BatchOptions(output: batched, batchSize: 2)).run(js) { e in
            if case .started(let g) = e { groups.append(g.map(\.index)) }
        }
        XCTAssertEqual(groups, [[0, 1], [2, 3], [4]])
        for k in 1...3 {
            _ = try BatchRunner(pipeline: Self.pipeline, options: BatchOptions(output: shards, shard: try Shard(k, of: 3))).run(js)
        }
        XCTAssertEqual(pngs(one).count, 5)
        XCTAssertEqual(pngs(one), pngs(batched))
        XCTAssertEqual(pngs(one), pngs(shards))
        XCTAssertEqual(Manifest.files(in: shards).map(\.lastPathComponent), ["manifest-1-of-3.jsonl", "manifest-2-of-3.jsonl", "manifest-3-of-3.jsonl"])
        var maxLevels = 0
        for name in pngs(one) {
            let a = try PNGFile.read(one.appendingPathComponent(name)), b = try PNGFile.read(batched.appendingPathComponent(name))
            let c = try PNGFile.read(shards.appendingPathComponent(name))
            XCTAssertEqual(a.image, c.image, "shards: \(name)")
            XCTAssertEqual(a.text, b.text)
            for (x, y) in zip(a.image.pixels, b.image.pixels) { maxLevels = max(maxLevels, abs(Int(x) - Int(y))) }
        }
        // Batched floats agree within 1e-5 (testBatchedImagesEqualSingleImages); after rounding
        // to bytes that is at most one level where a value sits on a rounding edge.
        XCTAssertLessThanOrEqual(maxLevels, 1)
    }

    func testRunnerReportsJobsTheModelCannotRender() throws {
        var js = jobs(2)
        js[1].request.steps = 5000  // more than the scheduler's 1000 training steps
        var failures: [String] = []
        let s = try BatchRunner(pipeline: Self.pipeline, options: BatchOptions(output: tmp)).run(js) { e in
            if case .failed(let j, let m) = e { failures.append("\(j.source!): \(m)") }
        }
        XCTAssertEqual([s.made, s.invalid], [1, 1])
        XCTAssertEqual(failures.count, 1)
        XCTAssertTrue(failures[0].hasPrefix("jobs.jsonl:2: steps 5000"), failures[0])
    }
}

extension ManifestRecord {
    func with(created: String) -> ManifestRecord {
        var r = self
        r.created = created
        return r
    }
}
