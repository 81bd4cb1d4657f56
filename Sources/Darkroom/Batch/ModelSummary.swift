import Foundation

/// What a model folder holds, read from its configs and safetensors headers only (no weights are
/// loaded, so it is quick for any model size). Backs `darkroom info`.
public struct ModelSummary: Sendable {
    public struct Component: Sendable {
        /// Folder name: tokenizer, text_encoder, unet, vae, scheduler.
        public var name: String
        /// The diffusers/transformers class from model_index.json.
        public var className: String
        public var parameters: Int
        /// Parameters per stored dtype ("F32", "F16", ...).
        public var dtypes: [String: Int]
        /// Bytes of the weight files.
        public var bytes: Int
        public var files: [String]
        /// Architecture facts, in display order.
        public var details: [(String, String)]
    }

    public var folder: URL
    public var name: String
    public var pipelineClass: String
    public var components: [Component]
    /// The size the UNet was trained at, in pixels.
    public var defaultSize: Int
    public var vaeScaleFactor: Int
    /// The scheduler config's values, in display order.
    public var scheduler: [(String, String)]

    public init(folder: URL) throws {
        self.folder = folder
        name = folder.standardizedFileURL.lastPathComponent
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder.path, isDirectory: &isDir) else { throw DarkroomError.fileNotFound(path: folder.path) }
        guard isDir.boolValue else { throw DarkroomError.invalidFile(path: folder.path, reason: "not a model folder (expected a diffusers folder with model_index.json)") }
        let index = try ConfigFile.load(folder.appendingPathComponent("model_index.json"))
        pipelineClass = try index.string("_class_name", default: "StableDiffusionPipeline")
        func className(_ key: String, _ fallback: String) -> String {
            if case .array(let a)? = index.value(key), a.count == 2, case .string(let c) = a[1] { return c }
            return fallback
        }
        func sub(_ p: String) -> URL { folder.appendingPathComponent(p) }
        func weights(_ component: String, stem: String, count: (String) -> Bool = { _ in true }) throws -> (Int, [String: Int], Int, [String], Int) {
            let w = try Weights.load(componentFolder: sub(component), stem: stem)
            var total = 0, counted = 0, bytes = 0
            var dtypes: [String: Int] = [:]
            for f in w.files {
                bytes += (try? FileManager.default.attributesOfItem(atPath: f.path)[.size] as? Int) ?? 0
                for (k, e) in f.entries {
                    total += e.count
                    dtypes[e.dtype.rawValue, default: 0] += e.count
                    if count(k) { counted += e.count }
                }
            }
            return (total, dtypes, bytes, w.files.map { URL(fileURLWithPath: $0.path).lastPathComponent }, counted)
        }
        func list(_ xs: [Int]) -> String { xs.map(String.init).joined(separator: ", ") }

        var comps: [Component] = []
        let tokenizer = try CLIPTokenizer(directory: sub("tokenizer"))
        let tokFiles = ((try? FileManager.default.contentsOfDirectory(atPath: sub("tokenizer").path)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
        comps.append(Component(name: "tokenizer", className: className("tokenizer", "CLIPTokenizer"), parameters: 0, dtypes: [:], bytes: 0,
                               files: tokFiles,
                               details: [("max length", "\(tokenizer.maxLength) tokens"),
                                         ("special tokens", "bos \(tokenizer.bosTokenID), eos \(tokenizer.eosTokenID), pad \(tokenizer.padTokenID)")]))

        let teFile = try ConfigFile.load(sub("text_encoder/config.json"))
        let te = try CLIPTextConfig(teFile)
        let act = (try? teFile.string("hidden_act", default: "quick_gelu")) ?? "\(te.hiddenAct)"
        let (teN, teD, teB, teF, _) = try weights("text_encoder", stem: "model")
        comps.append(Component(name: "text_encoder", className: className("text_encoder", "CLIPTextModel"), parameters: teN, dtypes: teD, bytes: teB, files: teF,
                               details: [("layers", "\(te.numHiddenLayers)"), ("width", "\(te.hiddenSize)"), ("heads", "\(te.numAttentionHeads)"),
                                         ("MLP width", "\(te.intermediateSize)"), ("activation", act),
                                         ("positions", "\(te.maxPositionEmbeddings)"), ("vocabulary", "\(te.vocabSize)")]))

        let u = try UNetConfig.load(sub("unet/config.json"))
        let (uN, uD, uB, uF, _) = try weights("unet", stem: "diffusion_pytorch_model")
        comps.append(Component(name: "unet", className: className("unet", "UNet2DConditionModel"), parameters: uN, dtypes: uD, bytes: uB, files: uF,
                               details: [("channels", list(u.blockOutChannels)), ("down blocks", u.downBlockTypes.joined(separator: ", ")),
                                         ("up blocks", u.upBlockTypes.joined(separator: ", ")), ("layers per block", list(u.layersPerBlock)),
                                         ("attention heads", list(u.numAttentionHeads)), ("cross-attention width", list(u.crossAttentionDim)),
                                         ("transformer layers", list(u.transformerLayersPerBlock)),
                                         ("projection", u.useLinearProjection ? "linear" : "1x1 conv"),
                                         ("latent channels", "\(u.inChannels) in, \(u.outChannels) out"),
                                         ("sample size", u.sampleSize.map { "\($0) latent pixels" } ?? "not set")]))

        let v = try VAEConfig.load(sub("vae/config.json"))
        let (vN, vD, vB, vF, vDec) = try weights("vae", stem: "diffusion_pytorch_model") { $0.hasPrefix("decoder.") || $0.hasPrefix("post_quant_conv.") }
        comps.append(Component(name: "vae", className: className("vae", "AutoencoderKL"), parameters: vN, dtypes: vD, bytes: vB, files: vF,
                               details: [("decoder parameters", ModelSummary.count(vDec)), ("channels", list(v.blockOutChannels)),
                                         ("layers per block", "\(v.layersPerBlock)"), ("latent channels", "\(v.latentChannels)"),
                                         ("scale factor", "\(v.downscaleFactor)"), ("scaling factor", "\(v.scalingFactor)")]))

        let sched = try ConfigFile.load(sub("scheduler/scheduler_config.json"))
        var s: [(String, String)] = []
        for key in ["_class_name", "num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type",
                    "timestep_spacing", "steps_offset", "set_alpha_to_one", "clip_sample", "rescale_betas_zero_snr"] {
            guard let value = sched.members[key] else { continue }
            s.append((key == "_class_name" ? "class" : key, Self.text(value)))
        }
        scheduler = s
        comps.append(Component(name: "scheduler", className: className("scheduler", s.first?.1 ?? "?"), parameters: 0, dtypes: [:], bytes: 0,
                               files: ["scheduler_config.json"], details: s))
        components = comps
        vaeScaleFactor = v.downscaleFactor
        defaultSize = (u.sampleSize ?? 64) * v.downscaleFactor
    }

    /// Parameters of the networks (text encoder, UNet, VAE).
    public var totalParameters: Int { components.reduce(0) { $0 + $1.parameters } }

    /// "123", "12.3 K", "859.5 M", "1.07 B".
    public static func count(_ n: Int) -> String {
        let d = Double(n)
        if n >= 1_000_000_000 { return String(format: "%.2f B", d / 1e9) }
        if n >= 1_000_000 { return String(format: "%.1f M", d / 1e6) }
        if n >= 1_000 { return String(format: "%.1f K", d / 1e3) }
        return "\(n)"
    }

    /// "1.2 GB", "340.5 MB", "12.0 KB".
    public static func bytes(_ n: Int) -> String {
        let d = Double(n)
        if n >= 1 << 30 { return String(format: "%.2f GB", d / Double(1 << 30)) }
        if n >= 1 << 20 { return String(format: "%.1f MB", d / Double(1 << 20)) }
        return String(format: "%.1f KB", d / 1024)
    }

    static func text(_ v: JSONValue) -> String {
        switch v {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .number(let d): return d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : "\(d)"
        case .string(let s): return s
        case .array(let a): return "[" + a.map(text).joined(separator: ", ") + "]"
        case .object: return "{...}"
        }
    }
}
