import Foundation
import XCTest
@testable import Darkroom

/// Single-file checkpoints in the original LDM layout (Tests/DarkroomTests/Fixtures/singlefile,
/// written by Tools/fixtures_singlefile.py, which converts Models/tiny-sd1 and tiny-sd2 and
/// checks with diffusers' `from_single_file(file, config=folder)` that each file rebuilds every
/// module bit-for-bit and renders the folder's images).
final class SingleFileTests: XCTestCase {
    static let spec: ConfigFile? = try? ConfigFile.load(TestPaths.fixtures.appendingPathComponent("singlefile/singlefile.json"))

    func model(_ name: String) throws -> JSONValue {
        guard case .object? = Self.spec?.value("models"), let m = Self.spec?.value("models")?[name] else {
            throw XCTSkip("Fixtures/singlefile/singlefile.json lacks \(name)")
        }
        return m
    }

    func checkpointURL(_ m: JSONValue) -> URL {
        guard case .string(let f)? = m["checkpoint"] else { return TestPaths.fixtures }
        return TestPaths.fixtures.appendingPathComponent(f)
    }

    /// The overrides the tiny models need (their head and group counts are not SD's), as the
    /// fixture script recorded them from the folders' configs. The prediction type is not
    /// among them: it is inferred.
    func options(_ m: JSONValue) throws -> CheckpointOptions {
        guard let o = m["overrides"] else { throw XCTSkip("no overrides") }
        var opts = CheckpointOptions()
        func int(_ v: JSONValue?) -> Int? { if case .number(let d)? = v { return Int(d) }; return nil }
        if case .array(let h)? = o["unet_attention_heads"] { opts.unetAttentionHeads = h.compactMap { int($0) } }
        opts.textAttentionHeads = int(o["text_attention_heads"])
        opts.unetNormGroups = int(o["unet_norm_groups"])
        opts.vaeNormGroups = int(o["vae_norm_groups"])
        opts.imageSize = int(o["image_size"])
        if case .number(let s)? = o["vae_scaling_factor"] { opts.vaeScalingFactor = Float(s) }
        if case .object(let members)? = o["scheduler"] {
            let json = "{" + members.map { "\"\($0.key)\": \($0.value.compactText)" }.joined(separator: ", ") + "}"
            opts.scheduler = try SchedulerConfig.decode(Data(json.utf8), path: "singlefile.json")
        }
        return opts
    }

    func requests(_ m: JSONValue) throws -> [(String, GenerationRequest)] {
        guard case .object(let cases)? = m["cases"] else { throw XCTSkip("no cases") }
        return try cases.map { name, c in
            guard case .string(let prompt)? = c["prompt"], case .string(let negative)? = c["negative_prompt"],
                  case .number(let seed)? = c["seed"], case .number(let steps)? = c["steps"],
                  case .number(let scale)? = c["guidance_scale"], case .number(let width)? = c["width"],
                  case .number(let height)? = c["height"], case .number(let eta)? = c["eta"]
            else { throw DarkroomError.invalidArgument("\(name): incomplete case") }
            return (name, GenerationRequest(prompt: prompt, negativePrompt: negative, steps: Int(steps), guidanceScale: Float(scale),
                                            width: Int(width), height: Int(height), seed: UInt64(seed), eta: Float(eta)))
        }.sorted { $0.0 < $1.0 }
    }

    func expected(_ m: JSONValue) throws -> SafetensorsFile {
        guard case .string(let f)? = m["expected"] else { throw XCTSkip("no expected outputs") }
        return try SafetensorsFile(url: TestPaths.fixtures.appendingPathComponent(f))
    }

    /// Renders every case and compares the image (within 1e-3 on [0, 1]) and the text
    /// embeddings (within 1e-4) with diffusers' outputs.
    func assertRendersLikeDiffusers(_ pipeline: StableDiffusionPipeline, _ m: JSONValue, _ what: String, onlyFirst: Bool = false) throws {
        let golden = try expected(m)
        var cases = try requests(m)
        XCTAssertFalse(cases.isEmpty)
        if onlyFirst { cases = Array(cases.prefix(1)) }
        for (name, r) in cases {
            let embeds = try pipeline.encode(prompt: r.prompt, negativePrompt: r.negativePrompt, guidance: pipeline.usesGuidance(r.guidanceScale))
            assertClose(embeds, try golden.tensor("\(name).prompt_embeds"), atol: 1e-4, "\(what) \(name) prompt_embeds")
            let result = try pipeline.generate(r)
            let ref = try golden.tensor("\(name).image")  // [1, H, W, 3]
            let (h, w) = (r.height!, r.width!)
            XCTAssertEqual(result.pixels.shape, [1, 3, h, w])
            XCTAssertEqual(ref.shape, [1, h, w, 3])
            guard ref.shape == [1, h, w, 3], result.pixels.shape == [1, 3, h, w] else { continue }
            var maxDiff: Float = 0, spread: Float = 0
            for y in 0..<h { for x in 0..<w { for ch in 0..<3 {
                let e = ref[(y * w + x) * 3 + ch]
                maxDiff = max(maxDiff, abs(result.pixels[(ch * h + y) * w + x] - e))
                spread = max(spread, abs(e - 0.5))
            } } }
            XCTAssertLessThanOrEqual(maxDiff, 1e-3, "\(what) \(name): image max-abs diff \(maxDiff)")
            XCTAssertGreaterThan(spread, 0.1, "\(what) \(name): reference image is flat")
        }
    }

    // MARK: - Rendering

    func testTinySD1CheckpointRendersLikeDiffusers() throws {
        try checkTinyCheckpoint("tiny-sd1", family: .sd1, pad: 49407)
    }

    func testTinySD2CheckpointRendersLikeDiffusers() throws {
        try checkTinyCheckpoint("tiny-sd2", family: .sd2, pad: 0)
    }

    func checkTinyCheckpoint(_ name: String, family: CheckpointFamily, pad: Int) throws {
        let m = try model(name)
        let url = checkpointURL(m)
        let model = try StableDiffusionModel(checkpoint: url, options: try options(m))
        XCTAssertEqual(model.checkpoint?.family, family)
        XCTAssertEqual(model.checkpoint?.predictionOverridden, false)
        if case .string(let p)? = m["prediction_type"] {
            XCTAssertEqual(model.schedulerConfig.predictionType.rawValue, p, "\(name): inferred prediction type")
        } else {
            XCTFail("no prediction_type in the fixture")
        }
        XCTAssertEqual(model.name, name)
        XCTAssertEqual(model.folder, url)
        XCTAssertEqual(model.warnings, [], "\(name): every checkpoint weight is used or knowingly skipped")
        XCTAssertEqual(model.defaultSize, 128)

        // The inferred configs are the folder's.
        let folder = TestPaths.model(name)
        try assertSameArchitecture(model, folder: folder, name)

        // The tokenizer: Darkroom's vocabulary with the SD 1 / SD 2 pad token, as the folder's.
        let folderTokenizer = try CLIPTokenizer(directory: folder.appendingPathComponent("tokenizer"))
        XCTAssertEqual(model.tokenizer.padTokenID, pad)
        for text in ["hello!!! world", "a photo of a <|startoftext|> cat", ""] {
            XCTAssertEqual(model.tokenizer.encode(text), folderTokenizer.encode(text), "\(name) tokenizer on \(text.debugDescription)")
        }

        try assertRendersLikeDiffusers(StableDiffusionPipeline(model: model), m, name)
    }

    func assertSameArchitecture(_ model: StableDiffusionModel, folder: URL, _ name: String) throws {
        let u = model.unetConfig, fu = try UNetConfig.load(folder.appendingPathComponent("unet/config.json"))
        XCTAssertEqual(u.blockOutChannels, fu.blockOutChannels, name)
        XCTAssertEqual(u.layersPerBlock, fu.layersPerBlock, name)
        XCTAssertEqual(u.downBlockTypes, fu.downBlockTypes, name)
        XCTAssertEqual(u.upBlockTypes, fu.upBlockTypes, name)
        XCTAssertEqual(u.crossAttentionDim, fu.crossAttentionDim, name)
        XCTAssertEqual(u.numAttentionHeads, fu.numAttentionHeads, name)
        XCTAssertEqual(u.transformerLayersPerBlock, fu.transformerLayersPerBlock, name)
        XCTAssertEqual(u.useLinearProjection, fu.useLinearProjection, name)
        XCTAssertEqual(u.upcastAttention, fu.upcastAttention, name)
        XCTAssertEqual(u.normNumGroups, fu.normNumGroups, name)
        XCTAssertEqual(u.inChannels, fu.inChannels, name)
        XCTAssertEqual(u.outChannels, fu.outChannels, name)
        XCTAssertEqual(u.timeEmbeddingDim, fu.timeEmbeddingDim, name)
        XCTAssertEqual(u.sampleSize, fu.sampleSize, name)
        let v = model.vaeConfig, fv = try VAEConfig.load(folder.appendingPathComponent("vae/config.json"))
        XCTAssertEqual(v.blockOutChannels, fv.blockOutChannels, name)
        XCTAssertEqual(v.layersPerBlock, fv.layersPerBlock, name)
        XCTAssertEqual(v.latentChannels, fv.latentChannels, name)
        XCTAssertEqual(v.inChannels, fv.inChannels, name)
        XCTAssertEqual(v.outChannels, fv.outChannels, name)
        XCTAssertEqual(v.normNumGroups, fv.normNumGroups, name)
        XCTAssertEqual(v.scalingFactor, fv.scalingFactor, name)
        XCTAssertEqual(v.usePostQuantConv, fv.usePostQuantConv, name)
        XCTAssertEqual(v.midBlockAddAttention, fv.midBlockAddAttention, name)
        let t = model.textEncoderConfig, ft = try CLIPTextConfig(ConfigFile.load(folder.appendingPathComponent("text_encoder/config.json")))
        XCTAssertEqual(t.vocabSize, ft.vocabSize, name)
        XCTAssertEqual(t.hiddenSize, ft.hiddenSize, name)
        XCTAssertEqual(t.intermediateSize, ft.intermediateSize, name)
        XCTAssertEqual(t.numHiddenLayers, ft.numHiddenLayers, "\(name): text layers (SD 2 drops the last block)")
        XCTAssertEqual(t.numAttentionHeads, ft.numAttentionHeads, name)
        XCTAssertEqual(t.maxPositionEmbeddings, ft.maxPositionEmbeddings, name)
        XCTAssertEqual(t.hiddenAct, ft.hiddenAct, name)
        var s = try SchedulerConfig.load(from: folder.appendingPathComponent("scheduler/scheduler_config.json"))
        var mine = model.schedulerConfig
        (s.className, mine.className) = (nil, nil)
        XCTAssertEqual(mine, s, name)
    }

    /// diffusers' `from_single_file(file, config=folder)`: configs and tokenizer from a folder.
    func testConfigFolderAsDiffusersDoes() throws {
        for name in ["tiny-sd1", "tiny-sd2"] {
            let m = try model(name)
            let model = try StableDiffusionModel(checkpoint: checkpointURL(m), options: CheckpointOptions(configFolder: TestPaths.model(name)))
            XCTAssertEqual(model.warnings, [], name)
            try assertSameArchitecture(model, folder: TestPaths.model(name), name)
            try assertRendersLikeDiffusers(StableDiffusionPipeline(model: model), m, "\(name) (config folder)", onlyFirst: true)
        }
    }

    /// The prediction type override wins over inference; the default size follows it for SD 2.
    func testPredictionOverride() throws {
        let m = try model("tiny-sd2")
        var o = try options(m)
        o.predictionType = .epsilon
        o.imageSize = nil
        let model = try StableDiffusionModel(checkpoint: checkpointURL(m), options: o)
        XCTAssertEqual(model.schedulerConfig.predictionType, .epsilon)
        XCTAssertEqual(model.checkpoint?.predictionOverridden, true)
        XCTAssertEqual(model.defaultSize, 512, "SD 2 epsilon (base) models default to 512")
        o.predictionType = nil
        let inferred = try StableDiffusionModel(checkpoint: checkpointURL(m), options: o)
        XCTAssertEqual(inferred.schedulerConfig.predictionType, .vPrediction)
        XCTAssertEqual(inferred.defaultSize, 768, "SD 2 v-prediction models default to 768")
    }

    // MARK: - Inference on full-size SD 1.5 and SD 2.1 layouts

    /// Writes a safetensors header from the fixtures as a sparse file (the data section is a
    /// hole): enough to infer the architecture and map keys of a full-size checkpoint.
    func sparseCheckpoint(_ header: String) throws -> URL {
        let json = try Data(contentsOf: TestPaths.fixtures.appendingPathComponent(header))
        var bytes = [UInt8](json)
        while bytes.last == 0x0A { bytes.removeLast() }
        while bytes.count % 8 != 0 { bytes.append(0x20) }
        guard case .object(let members) = try JSONParser.parse(bytes: bytes) else { throw DarkroomError.invalidArgument("header") }
        var dataSize = 0
        for (_, v) in members { if case .array(let o)? = v["data_offsets"], case .number(let end) = o[1] { dataSize = max(dataSize, Int(end)) } }
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("darkroom-\(UUID().uuidString)-\(URL(fileURLWithPath: header).deletingPathExtension().lastPathComponent).safetensors")
        var file = Data()
        withUnsafeBytes(of: UInt64(bytes.count).littleEndian) { file.append(contentsOf: $0) }
        file.append(contentsOf: bytes)
        try file.write(to: url)
        let handle = try FileHandle(forWritingTo: url)
        try handle.truncate(atOffset: UInt64(file.count + dataSize))
        try handle.close()
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    func testInfersFullSizeSD15AndSD21() throws {
        guard case .object(let headers)? = Self.spec?.value("headers") else { throw XCTSkip("no headers in singlefile.json") }
        XCTAssertEqual(headers.count, 2)
        for (name, h) in headers {
            guard case .string(let file)? = h["file"], case .string(let family)? = h["family"],
                  case .string(let prediction)? = h["prediction_type"], case .number(let imageSize)? = h["image_size"],
                  let unet = h["unet"], let text = h["text_encoder"], let vae = h["vae"], let counts = h["diffusers_tensors"]
            else { XCTFail("\(name): incomplete"); continue }
            let ckpt = try LDMCheckpoint(url: sparseCheckpoint(file))
            XCTAssertEqual(ckpt.family, family == "sd2" ? .sd2 : .sd1, name)
            let arch = try CheckpointArchitecture(ckpt, options: CheckpointOptions())
            func ints(_ v: JSONValue?) -> [Int] {
                switch v {
                case .array(let a)?: return a.compactMap { if case .number(let d) = $0 { return Int(d) }; return nil }
                case .number(let d)?: return [Int(d)]
                default: return []
                }
            }
            func strings(_ v: JSONValue?) -> [String] {
                if case .array(let a)? = v { return a.compactMap { if case .string(let s) = $0 { return s }; return nil } }
                return []
            }
            let u = arch.unet
            XCTAssertEqual(u.blockOutChannels, ints(unet["block_out_channels"]), name)
            XCTAssertEqual(u.layersPerBlock, Array(repeating: ints(unet["layers_per_block"])[0], count: 4), name)
            XCTAssertEqual(u.downBlockTypes, strings(unet["down_block_types"]), name)
            XCTAssertEqual(u.upBlockTypes, strings(unet["up_block_types"]), name)
            XCTAssertEqual(u.crossAttentionDim, Array(repeating: ints(unet["cross_attention_dim"])[0], count: 4), name)
            let heads = ints(unet["attention_head_dim"])
            XCTAssertEqual(u.numAttentionHeads, heads.count == 1 ? Array(repeating: heads[0], count: 4) : heads, "\(name) heads")
            XCTAssertEqual(u.useLinearProjection, unet["use_linear_projection"] == .bool(true), name)
            XCTAssertEqual(u.upcastAttention, unet["upcast_attention"] == .bool(true), name)
            XCTAssertEqual(u.sampleSize, ints(unet["sample_size"]).first, name)
            XCTAssertEqual(u.normNumGroups, 32)
            XCTAssertEqual(u.timeEmbeddingDim, 1280)
            XCTAssertEqual(arch.vae.blockOutChannels, ints(vae["block_out_channels"]), name)
            XCTAssertEqual(arch.vae.layersPerBlock, ints(vae["layers_per_block"]).first, name)
            XCTAssertEqual(arch.vae.latentChannels, 4)
            XCTAssertEqual(arch.vae.scalingFactor, 0.18215)
            XCTAssertEqual(arch.vae.sampleSize, Int(imageSize), name)
            let t = arch.text
            XCTAssertEqual(t.hiddenSize, ints(text["hidden_size"]).first, name)
            XCTAssertEqual(t.intermediateSize, ints(text["intermediate_size"]).first, name)
            XCTAssertEqual(t.numHiddenLayers, ints(text["num_hidden_layers"]).first, "\(name) text layers")
            XCTAssertEqual(t.numAttentionHeads, ints(text["num_attention_heads"]).first, name)
            XCTAssertEqual(t.vocabSize, 49408)
            XCTAssertEqual(t.maxPositionEmbeddings, 77)
            XCTAssertEqual(t.hiddenAct, family == "sd2" ? .gelu : .quickGelu, name)
            XCTAssertEqual(arch.scheduler.predictionType.rawValue, prediction, name)
            var sd = CheckpointArchitecture.stableDiffusionScheduler
            sd.predictionType = arch.scheduler.predictionType
            XCTAssertEqual(arch.scheduler, sd, name)

            // Every key maps; the mapping yields as many tensors as diffusers' modules have.
            let unetMap = ckpt.unetViews(layersPerBlock: arch.unetLayersPerBlock)
            let vaeMap = ckpt.vaeViews()
            let textMap = ckpt.textEncoderViews()
            XCTAssertEqual(unetMap.unmapped, [], name)
            XCTAssertEqual(vaeMap.unmapped, [], name)
            XCTAssertEqual(textMap.unmapped, [], name)
            XCTAssertEqual(unetMap.views.count, ints(counts["unet"]).first, "\(name) UNet tensors")
            XCTAssertEqual(vaeMap.views.count, ints(counts["vae"]).first, "\(name) VAE tensors")
            XCTAssertEqual(textMap.views.keys.filter { !$0.hasSuffix("position_ids") }.count, ints(counts["text_encoder"]).first, "\(name) text encoder tensors")
            XCTAssertEqual(ckpt.otherKeys().unexpected, [], name)
            if family == "sd2" {
                // 24 OpenCLIP blocks, the last skipped, plus the projection and logit scale.
                XCTAssertEqual(ckpt.openCLIPBlocks, 24)
                XCTAssertEqual(textMap.skipped.count, 12 + 2, name)
                let q = textMap.views["text_model.encoder.layers.22.self_attn.v_proj.weight"]
                XCTAssertEqual(q, WeightView(key: "cond_stage_model.model.transformer.resblocks.22.attn.in_proj_weight", shape: [1024, 1024], offset: 2 * 1024 * 1024))
                XCTAssertNil(textMap.views["text_model.encoder.layers.23.self_attn.q_proj.weight"])
            }
        }
    }

    // MARK: - Views over every dtype

    /// Row slices and reshapes read the right elements from F32, F16 and BF16 data.
    func testWeightViewsOverDTypes() throws {
        let values = Tensor(shape: [6, 2], values: (0..<12).map { Float($0) * 0.5 - 2 })  // exact in BF16
        for dtype in [SafetensorsDType.f32, .f16, .bf16] {
            let url = FileManager.default.temporaryDirectory.appendingPathComponent("darkroom-views-\(UUID().uuidString).safetensors")
            defer { try? FileManager.default.removeItem(at: url) }
            try SafetensorsWriter.write([.init(name: "pad", tensor: Tensor(shape: [3], values: [1, 2, 3]), dtype: dtype),
                                         .init(name: "fused", tensor: values, dtype: dtype)], to: url)
            let file = try SafetensorsFile(url: url)
            let w = try Weights(file: file, views: [
                "a.weight": WeightView(key: "fused", shape: [2, 2], offset: 0),
                "b.weight": WeightView(key: "fused", shape: [2, 2], offset: 4),
                "c.weight": WeightView(key: "fused", shape: [2, 2, 1, 1], offset: 8),
                "p": WeightView(key: "pad", shape: [3]),
            ], label: "test")
            XCTAssertEqual(try w.tensor("b.weight", shape: [2, 2]).scalars, [0, 0.5, 1, 1.5], "\(dtype)")
            XCTAssertEqual(try w.tensor("c.weight", shape: [2, 2]).scalars, [2, 2.5, 3, 3.5], "\(dtype): a 1x1 conv read as Linear")
            XCTAssertEqual(w.entry("c.weight")?.shape, [2, 2, 1, 1])
            XCTAssertEqual(w.entry("b.weight")?.dtype, dtype)
            XCTAssertThrowsError(try w.tensor("a.weight", shape: [4])) { e in
                XCTAssertTrue("\(e)".contains("'fused'") && "\(e)".contains("a.weight"), "\(e)")
            }
            XCTAssertEqual(w.unusedKeys, ["a.weight", "p"])
            XCTAssertThrowsError(try Weights(file: file, views: ["x": WeightView(key: "fused", shape: [2, 2], offset: 10)], label: "test")) { e in
                XCTAssertTrue("\(e)".contains("too small"), "\(e)")
            }
            XCTAssertThrowsError(try Weights(file: file, views: ["x": WeightView(key: "nope", shape: [1])], label: "test"))
        }
    }

    // MARK: - Bad files

    func tempFile(_ name: String, _ data: Data) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("darkroom-bad-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent(name)
        try data.write(to: url)
        return url
    }

    func assertLoadError(_ url: URL, options: CheckpointOptions? = nil, contains parts: [String], file: StaticString = #filePath, line: UInt = #line) {
        // Both entry points: the CLI's (folder:, given a file) and the explicit one.
        var loads: [() throws -> Void] = [{ _ = try StableDiffusionModel(folder: url) }, { _ = try StableDiffusionModel(checkpoint: url) }]
        if let options { loads = [{ _ = try StableDiffusionModel(checkpoint: url, options: options) }] }
        for load in loads {
            XCTAssertThrowsError(try load(), file: file, line: line) { error in
                guard let e = error as? DarkroomError else { return XCTFail("not a DarkroomError: \(error)", file: file, line: line) }
                let text = e.description
                XCTAssertTrue(text.hasPrefix(url.path), "error does not start with the file: \(text)", file: file, line: line)
                for p in parts { XCTAssertTrue(text.contains(p), "'\(p)' not in: \(text)", file: file, line: line) }
            }
        }
    }

    /// A copy of the tiny SD 1 checkpoint without some of its tensors.
    func checkpointWithout(_ drop: (String) -> Bool) throws -> Data {
        let m = try model("tiny-sd1")
        let src = try SafetensorsFile(url: checkpointURL(m))
        let items: [SafetensorsWriter.Item] = src.names.filter { !drop($0) }.map { name in
            let e = src.entries[name]!
            return SafetensorsWriter.Item(name: name, shape: e.shape, dtype: e.dtype, bytes: [UInt8](src.rawBytes(name)!))
        }
        return SafetensorsWriter.data(items)
    }

    func testCheckpointWithoutUNetIsRefused() throws {
        let url = try tempFile("no-unet.safetensors", checkpointWithout { $0.hasPrefix("model.diffusion_model.") })
        assertLoadError(url, contains: ["not a Stable Diffusion 1.x/2.x single-file checkpoint", "no weights for the UNet (model.diffusion_model.*)"])
    }

    func testCheckpointWithoutTextEncoderAndVAEIsRefused() throws {
        let url = try tempFile("unet-only.safetensors", checkpointWithout { !$0.hasPrefix("model.diffusion_model.") })
        assertLoadError(url, contains: ["the VAE (first_stage_model.decoder.*)", "the text encoder"])
    }

    func testTruncatedCheckpointIsRefused() throws {
        let data = try Data(contentsOf: checkpointURL(try model("tiny-sd1")))
        let url = try tempFile("truncated.safetensors", data.prefix(data.count / 2))
        assertLoadError(url, contains: ["truncated"])
    }

    func testMissingTensorIsNamed() throws {
        // One the architecture is inferred from, and one only a module needs.
        let o = try options(try model("tiny-sd1"))
        var url = try tempFile("missing-out.safetensors", checkpointWithout { $0 == "model.diffusion_model.out.2.weight" })
        assertLoadError(url, options: o, contains: ["model.diffusion_model.out.2.weight", "missing"])
        url = try tempFile("missing-conv1.safetensors", checkpointWithout { $0 == "model.diffusion_model.input_blocks.1.0.in_layers.2.weight" })
        assertLoadError(url, options: o, contains: ["down_blocks.0.resnets.0.conv1.weight", "no tensor of this checkpoint maps to it"])
    }

    func testOtherFilesAreRefusedClearly() throws {
        let sdxl = SafetensorsWriter.data([.init(name: "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
                                                 tensor: Tensor(shape: [2, 2], values: [1, 2, 3, 4]))])
        assertLoadError(try tempFile("sdxl.safetensors", sdxl), contains: ["SDXL"])
        let component = SafetensorsWriter.data([.init(name: "down_blocks.0.resnets.0.conv1.weight", tensor: Tensor(shape: [1], values: [1]))])
        assertLoadError(try tempFile("diffusion_pytorch_model.safetensors", component), contains: ["diffusers folder"])
        assertLoadError(try tempFile("model.ckpt", Data([0x80, 0x02])), contains: ["pickle"])
        assertLoadError(try tempFile("garbage.safetensors", Data(repeating: 0xFF, count: 64)), contains: ["header"])
    }

    /// Without overrides the tiny models' sizes cannot be inferred: the error says what to give.
    func testUninferableSizesAskForOverrides() throws {
        let url = checkpointURL(try model("tiny-sd1"))
        assertLoadError(url, contains: ["cannot be split into 32 groups", "explicitly"])
    }

    // MARK: - A real SD 1.5-architecture checkpoint (opt-in)

    /// DARKROOM_SD15_CHECKPOINT=/tmp/sd15.safetensors DARKROOM_SD15_FOLDER=/work/bench-models/sd15:
    /// the checkpoint made by `Tools/fixtures_singlefile.py --convert` loads with nothing given
    /// and computes what the folder computes.
    func testRealSD15CheckpointMatchesFolder() throws {
        let env = ProcessInfo.processInfo.environment
        guard let ckpt = env["DARKROOM_SD15_CHECKPOINT"], let folder = env["DARKROOM_SD15_FOLDER"] else {
            throw XCTSkip("set DARKROOM_SD15_CHECKPOINT and DARKROOM_SD15_FOLDER")
        }
        let single = try StableDiffusionModel(folder: URL(fileURLWithPath: ckpt))
        XCTAssertEqual(single.warnings, [])
        XCTAssertEqual(single.defaultSize, 512)
        XCTAssertEqual(single.checkpoint?.family, .sd1)
        let reference = try StableDiffusionModel(folder: URL(fileURLWithPath: folder))
        try assertSameArchitecture(single, folder: URL(fileURLWithPath: folder), "sd15")
        let r = GenerationRequest(prompt: "a red heart", steps: 2, width: 64, height: 64, seed: 3)
        let a = try StableDiffusionPipeline(model: single).generate(r)
        let b = try StableDiffusionPipeline(model: reference).generate(r)
        XCTAssertEqual(a.pixels.scalars, b.pixels.scalars, "same weights, same arithmetic: identical images")
    }
}
