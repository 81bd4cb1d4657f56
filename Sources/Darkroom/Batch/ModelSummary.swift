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

    /// Reads a diffusers folder (configs and headers only), or a single-file checkpoint (loaded,
    /// since its architecture is inferred from the tensors).
    public init(folder: URL) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder.path, isDirectory: &isDir) else { throw DarkroomError.fileNotFound(path: folder.path) }
        if isDir.boolValue { try self.init(diffusersFolder: folder) } else { try self.init(checkpoint: folder) }
    }

    init(diffusersFolder folder: URL) throws {
        self.folder = folder
        name = folder.standardizedFileURL.lastPathComponent
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

        var comps: [Component] = []
        let tokenizer = try CLIPTokenizer(directory: sub("tokenizer"))
        let tokFiles = ((try? FileManager.default.contentsOfDirectory(atPath: sub("tokenizer").path)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
        comps.append(Component(name: "tokenizer", className: className("tokenizer", "CLIPTokenizer"), parameters: 0, dtypes: [:], bytes: 0,
                               files: tokFiles, details: Self.tokenizerDetails(tokenizer)))

        let teFile = try ConfigFile.load(sub("text_encoder/config.json"))
        let te = try CLIPTextConfig(teFile)
        let act = (try? teFile.string("hidden_act", default: "quick_gelu")) ?? "\(te.hiddenAct)"
        let (teN, teD, teB, teF, _) = try weights("text_encoder", stem: "model")
        comps.append(Component(name: "text_encoder", className: className("text_encoder", "CLIPTextModel"), parameters: teN, dtypes: teD, bytes: teB,
                               files: teF, details: Self.textDetails(te, activation: act)))

        let u = try UNetConfig.load(sub("unet/config.json"))
        let (uN, uD, uB, uF, _) = try weights("unet", stem: "diffusion_pytorch_model")
        comps.append(Component(name: "unet", className: className("unet", "UNet2DConditionModel"), parameters: uN, dtypes: uD, bytes: uB,
                               files: uF, details: Self.unetDetails(u)))

        let v = try VAEConfig.load(sub("vae/config.json"))
        let (vN, vD, vB, vF, vDec) = try weights("vae", stem: "diffusion_pytorch_model") { $0.hasPrefix("decoder.") || $0.hasPrefix("post_quant_conv.") }
        comps.append(Component(name: "vae", className: className("vae", "AutoencoderKL"), parameters: vN, dtypes: vD, bytes: vB,
                               files: vF, details: Self.vaeDetails(v, decoderParameters: vDec)))

        let sched = try ConfigFile.load(sub("scheduler/scheduler_config.json"))
        var sd: [(String, String)] = []
        for key in ["_class_name", "num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type",
                    "timestep_spacing", "steps_offset", "set_alpha_to_one", "clip_sample", "rescale_betas_zero_snr"] {
            guard let value = sched.members[key] else { continue }
            sd.append((key == "_class_name" ? "class" : key, Self.text(value)))
        }
        scheduler = sd
        comps.append(Component(name: "scheduler", className: className("scheduler", sd.first?.1 ?? "?"), parameters: 0, dtypes: [:], bytes: 0,
                               files: ["scheduler_config.json"], details: sd))
        components = comps
        vaeScaleFactor = v.downscaleFactor
        defaultSize = (u.sampleSize ?? 64) * v.downscaleFactor
    }

    /// A single-file LDM checkpoint: components by key prefix, configs as inferred on loading
    /// (or as `options` give them).
    public init(checkpoint url: URL, options: CheckpointOptions = CheckpointOptions()) throws {
        let model = try StableDiffusionModel(checkpoint: url, options: options)
        let file = try SafetensorsFile(url: url)
        folder = url
        name = model.name
        pipelineClass = "single-file checkpoint" + (model.checkpoint.map { " (\($0.family.rawValue))" } ?? "")
        let bytes = (try? FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int) ?? 0
        func part(_ prefixes: [String], decoder: [String] = []) -> (Int, [String: Int], Int) {
            var n = 0, dec = 0
            var dtypes: [String: Int] = [:]
            for (k, e) in file.entries where prefixes.contains(where: { k.hasPrefix($0) }) {
                n += e.count
                dtypes[e.dtype.rawValue, default: 0] += e.count
                if decoder.contains(where: { k.hasPrefix($0) }) { dec += e.count }
            }
            return (n, dtypes, dec)
        }
        let total = file.entries.values.reduce(0) { $0 + $1.count * $1.dtype.byteSize }
        func share(_ n: (Int, [String: Int], Int)) -> Int {
            let b = n.1.reduce(0) { acc, kv in acc + kv.value * (SafetensorsDType(rawValue: kv.key)?.byteSize ?? 4) }
            return total > 0 ? Int(Double(bytes) * Double(b) / Double(total)) : 0
        }
        let fileName = url.lastPathComponent
        let te = part(["cond_stage_model."]), un = part(["model.diffusion_model."])
        let va = part(["first_stage_model."], decoder: ["first_stage_model.decoder.", "first_stage_model.post_quant_conv."])
        let sc = model.schedulerConfig
        let sd: [(String, String)] = [
            ("class", sc.className ?? "DDIMScheduler"), ("num_train_timesteps", "\(sc.numTrainTimesteps)"),
            ("beta_schedule", sc.betaSchedule.rawValue), ("beta_start", "\(sc.betaStart)"), ("beta_end", "\(sc.betaEnd)"),
            ("prediction_type", sc.predictionType.rawValue + (model.checkpoint?.predictionOverridden == true ? " (given)" : " (inferred)")),
            ("timestep_spacing", sc.timestepSpacing.rawValue), ("steps_offset", "\(sc.stepsOffset)"),
            ("set_alpha_to_one", "\(sc.setAlphaToOne)"), ("clip_sample", "\(sc.clipSample)"),
        ]
        scheduler = sd
        components = [
            Component(name: "tokenizer", className: "CLIPTokenizer", parameters: 0, dtypes: [:], bytes: 0, files: ["(shipped with Darkroom)"],
                      details: Self.tokenizerDetails(model.tokenizer)),
            Component(name: "text_encoder", className: "CLIPTextModel", parameters: te.0, dtypes: te.1, bytes: share(te), files: [fileName],
                      details: Self.textDetails(model.textEncoderConfig, activation: "\(model.textEncoderConfig.hiddenAct)")),
            Component(name: "unet", className: "UNet2DConditionModel", parameters: un.0, dtypes: un.1, bytes: share(un), files: [fileName],
                      details: Self.unetDetails(model.unetConfig)),
            Component(name: "vae", className: "AutoencoderKL", parameters: va.0, dtypes: va.1, bytes: share(va), files: [fileName],
                      details: Self.vaeDetails(model.vaeConfig, decoderParameters: va.2)),
            Component(name: "scheduler", className: sc.className ?? "DDIMScheduler", parameters: 0, dtypes: [:], bytes: 0,
                      files: ["(inferred)"], details: sd),
        ]
        vaeScaleFactor = model.vaeScaleFactor
        defaultSize = model.defaultSize
    }

    static func list(_ xs: [Int]) -> String { xs.map(String.init).joined(separator: ", ") }

    static func tokenizerDetails(_ t: CLIPTokenizer) -> [(String, String)] {
        [("max length", "\(t.maxLength) tokens"), ("special tokens", "bos \(t.bosTokenID), eos \(t.eosTokenID), pad \(t.padTokenID)")]
    }

    static func textDetails(_ te: CLIPTextConfig, activation: String) -> [(String, String)] {
        [("layers", "\(te.numHiddenLayers)"), ("width", "\(te.hiddenSize)"), ("heads", "\(te.numAttentionHeads)"),
         ("MLP width", "\(te.intermediateSize)"), ("activation", activation),
         ("positions", "\(te.maxPositionEmbeddings)"), ("vocabulary", "\(te.vocabSize)")]
    }

    static func unetDetails(_ u: UNetConfig) -> [(String, String)] {
        [("channels", list(u.blockOutChannels)), ("down blocks", u.downBlockTypes.joined(separator: ", ")),
         ("up blocks", u.upBlockTypes.joined(separator: ", ")), ("layers per block", list(u.layersPerBlock)),
         ("attention heads", list(u.numAttentionHeads)), ("cross-attention width", list(u.crossAttentionDim)),
         ("transformer layers", list(u.transformerLayersPerBlock)),
         ("projection", u.useLinearProjection ? "linear" : "1x1 conv"),
         ("latent channels", "\(u.inChannels) in, \(u.outChannels) out"),
         ("sample size", u.sampleSize.map { "\($0) latent pixels" } ?? "not set")]
    }

    static func vaeDetails(_ v: VAEConfig, decoderParameters: Int) -> [(String, String)] {
        [("decoder parameters", ModelSummary.count(decoderParameters)), ("channels", list(v.blockOutChannels)),
         ("layers per block", "\(v.layersPerBlock)"), ("latent channels", "\(v.latentChannels)"),
         ("scale factor", "\(v.downscaleFactor)"), ("scaling factor", "\(v.scalingFactor)")]
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
