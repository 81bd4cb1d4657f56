import Foundation

/// A Stable Diffusion model loaded from a diffusers folder (`model_index.json`, `tokenizer/`,
/// `text_encoder/`, `unet/`, `vae/`, `scheduler/`; every size comes from the configs) or from a
/// single-file SD 1.x/2.x checkpoint in the original LDM layout (sizes inferred from the tensors,
/// see `init(checkpoint:options:)`).
public final class StableDiffusionModel: Sendable {
    /// The model folder, or the checkpoint file.
    public let folder: URL
    /// A short name for metadata (the folder name, or the file name without extension).
    public let name: String
    public let tokenizer: CLIPTokenizer
    public let textEncoderConfig: CLIPTextConfig
    public let unetConfig: UNetConfig
    public let vaeConfig: VAEConfig
    public let vaeDecoder: VAEDecoder
    public let schedulerConfig: SchedulerConfig
    /// What was inferred about a single-file checkpoint; nil for a diffusers folder.
    public let checkpoint: CheckpointInfo?
    /// Non-fatal findings while loading (e.g. weights no module used), for the CLI to print.
    public let warnings: [String]
    /// Reads the VAE's weights again for the encoder, which only image-to-image needs.
    private let vaeWeightsSource: @Sendable () throws -> Weights
    private let encoderCache = LazyValue<VAEEncoder>()
    /// Reads the UNet's weights again after `releaseUNet()`.
    private let unetWeightsSource: @Sendable () throws -> Weights
    private let unetCache = LazyValue<UNet2DConditionModel>()
    /// Reads the text encoder's weights again after `releaseTextEncoder()`.
    private let textWeightsSource: @Sendable () throws -> Weights
    private let textEncoderCache = LazyValue<CLIPTextModel>()

    static let pipelineClasses = [
        "StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipelineLegacy",
        "LatentConsistencyModelPipeline", "DarkroomPipeline",
    ]

    /// Everything read from disk, before the modules are built.
    private struct Parts {
        var url: URL
        var name: String
        var tokenizer: CLIPTokenizer
        var tokenizerPath: String
        var textConfig: CLIPTextConfig
        var textWeights: Weights
        var unetConfig: UNetConfig
        var unetConfigPath: String
        var unetWeights: Weights
        var vaeConfig: VAEConfig
        var vaeWeights: Weights
        var schedulerConfig: SchedulerConfig
        var checkpoint: CheckpointInfo?
        var warnings: [String] = []
        var vaeWeightsSource: @Sendable () throws -> Weights
        var unetWeightsSource: @Sendable () throws -> Weights
        var textWeightsSource: @Sendable () throws -> Weights
    }

    /// Loads a diffusers folder. A path to a file is loaded as a single-file checkpoint with
    /// everything inferred (`init(checkpoint:)`), so `--model x.safetensors` works wherever a
    /// folder does.
    public convenience init(folder: URL) throws {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: folder.path, isDirectory: &isDir) else { throw DarkroomError.fileNotFound(path: folder.path) }
        guard isDir.boolValue else {
            try self.init(checkpoint: folder)
            return
        }
        let index = try ConfigFile.load(folder.appendingPathComponent("model_index.json"))
        let cls = try index.string("_class_name", default: "StableDiffusionPipeline")
        guard Self.pipelineClasses.contains(cls) else {
            throw DarkroomError.unsupported(path: index.path, key: "_class_name", value: "\"\(cls)\"")
        }
        for component in ["tokenizer", "text_encoder", "unet", "vae", "scheduler"] {
            guard index.value(component) != nil else {
                throw DarkroomError.invalidConfig(path: index.path, key: component, reason: "missing: a Stable Diffusion pipeline needs it")
            }
        }
        func sub(_ p: String) -> URL { folder.appendingPathComponent(p) }
        try self.init(Parts(
            url: folder, name: folder.standardizedFileURL.lastPathComponent,
            tokenizer: try CLIPTokenizer(directory: sub("tokenizer")), tokenizerPath: sub("tokenizer").path,
            textConfig: try CLIPTextConfig(ConfigFile.load(sub("text_encoder/config.json"))),
            textWeights: try Weights.load(componentFolder: sub("text_encoder"), stem: "model"),
            unetConfig: try UNetConfig.load(sub("unet/config.json")), unetConfigPath: sub("unet/config.json").path,
            unetWeights: try Weights.load(componentFolder: sub("unet"), stem: "diffusion_pytorch_model"),
            vaeConfig: try VAEConfig.load(sub("vae/config.json")),
            vaeWeights: try Weights.load(componentFolder: sub("vae"), stem: "diffusion_pytorch_model"),
            schedulerConfig: try SchedulerConfig.load(from: sub("scheduler/scheduler_config.json")),
            checkpoint: nil,
            vaeWeightsSource: { [vae = sub("vae")] in try Weights.load(componentFolder: vae, stem: "diffusion_pytorch_model") },
            unetWeightsSource: { [unet = sub("unet")] in try Weights.load(componentFolder: unet, stem: "diffusion_pytorch_model") },
            textWeightsSource: { [text = sub("text_encoder")] in try Weights.load(componentFolder: text, stem: "model") }))
        releaseScratchMemory()   // the widened copies made while packing the weights
    }

    /// Loads a single `.safetensors` checkpoint in the original LDM key layout of SD 1.x/2.x
    /// (`model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.*`; F16, BF16 or
    /// F32). The architecture is inferred from the tensor shapes as diffusers' `from_single_file`
    /// does (SD 1.x or 2.x by the text encoder, channels, blocks and depths from the shapes,
    /// SD's head counts, v-prediction for SD 2.x); `options` overrides any of it. The tokenizer
    /// is Darkroom's CLIP vocabulary with the SD 1.x or 2.x pad token.
    public convenience init(checkpoint url: URL, options: CheckpointOptions = CheckpointOptions()) throws {
        let ext = url.pathExtension.lowercased()
        if ["ckpt", "pt", "pth", "bin"].contains(ext) {
            throw DarkroomError.invalidFile(path: url.path, reason: "PyTorch pickle checkpoints are not loaded (they can run code); convert it to .safetensors")
        }
        let ckpt = try LDMCheckpoint(url: url)
        let arch = try CheckpointArchitecture(ckpt, options: options)
        var warnings: [String] = []
        func weights(_ component: String, _ mapped: (views: [String: WeightView], unmapped: [String])) throws -> Weights {
            if !mapped.unmapped.isEmpty {
                let shown = mapped.unmapped.sorted().prefix(5).joined(separator: ", ")
                warnings.append("\(component): \(mapped.unmapped.count) checkpoint key\(mapped.unmapped.count == 1 ? "" : "s") with no diffusers counterpart (\(shown)\(mapped.unmapped.count > 5 ? ", ..." : ""))")
            }
            return try Weights(file: ckpt.file, views: mapped.views, label: component)
        }
        let unetViews = ckpt.unetViews(layersPerBlock: arch.unetLayersPerBlock)
        let unetWeights = try weights("unet", unetViews)
        let vaeViews = ckpt.vaeViews()
        let vaeWeights = try weights("vae", vaeViews)
        let text = ckpt.textEncoderViews()
        let textWeights = try weights("text_encoder", (text.views, text.unmapped))
        let others = ckpt.otherKeys()
        if !others.unexpected.isEmpty {
            let shown = others.unexpected.prefix(5).joined(separator: ", ")
            warnings.append("\(others.unexpected.count) tensor\(others.unexpected.count == 1 ? "" : "s") outside the UNet, VAE and text encoder not used (\(shown)\(others.unexpected.count > 5 ? ", ..." : ""))")
        }

        let tokenizer: CLIPTokenizer
        let tokenizerPath: String
        if let t = options.tokenizerFolder ?? options.configFolder?.appendingPathComponent("tokenizer") {
            tokenizer = try CLIPTokenizer(directory: t)
            tokenizerPath = t.path
        } else {
            let vocabulary = try CheckpointTokenizer.locateVocabulary()
            tokenizer = try CheckpointTokenizer.load(family: ckpt.family, vocabulary: vocabulary)
            tokenizerPath = vocabulary.path
        }
        var dtypes: [String: Int] = [:]
        for e in ckpt.file.entries.values { dtypes[e.dtype.rawValue, default: 0] += 1 }
        let info = CheckpointInfo(path: url.path, family: ckpt.family, predictionType: arch.scheduler.predictionType,
                                  predictionOverridden: arch.predictionOverridden, dtypes: dtypes)
        try self.init(Parts(
            url: url, name: url.deletingPathExtension().lastPathComponent,
            tokenizer: tokenizer, tokenizerPath: tokenizerPath,
            textConfig: arch.text, textWeights: textWeights,
            unetConfig: arch.unet, unetConfigPath: url.path, unetWeights: unetWeights,
            vaeConfig: arch.vae, vaeWeights: vaeWeights,
            schedulerConfig: arch.scheduler, checkpoint: info, warnings: warnings,
            vaeWeightsSource: { [file = ckpt.file, views = vaeViews.views] in try Weights(file: file, views: views, label: "vae") },
            unetWeightsSource: { [file = ckpt.file, views = unetViews.views] in try Weights(file: file, views: views, label: "unet") },
            textWeightsSource: { [file = ckpt.file, views = text.views] in try Weights(file: file, views: views, label: "text_encoder") }))
        releaseScratchMemory()   // the widened copies made while packing the weights
    }

    private init(_ p: Parts) throws {
        folder = p.url
        name = p.name
        tokenizer = p.tokenizer
        textEncoderConfig = p.textConfig
        _ = try textEncoderCache.get { try CLIPTextModel(config: p.textConfig, weights: p.textWeights) }
        unetConfig = p.unetConfig
        _ = try unetCache.get { try UNet2DConditionModel(config: p.unetConfig, weights: p.unetWeights) }
        vaeConfig = p.vaeConfig
        vaeDecoder = try VAEDecoder(config: p.vaeConfig, weights: p.vaeWeights)
        schedulerConfig = p.schedulerConfig
        checkpoint = p.checkpoint
        vaeWeightsSource = p.vaeWeightsSource
        unetWeightsSource = p.unetWeightsSource
        textWeightsSource = p.textWeightsSource

        // Cross-component consistency: these would otherwise fail deep inside a matmul.
        let teConfig = p.textConfig, unetConfig = p.unetConfig
        for (i, d) in unetConfig.crossAttentionDim.enumerated() where d != teConfig.hiddenSize {
            throw DarkroomError.invalidConfig(path: p.unetConfigPath, key: "cross_attention_dim",
                                              reason: "block \(i) expects \(d)-wide text embeddings but the text encoder produces \(teConfig.hiddenSize)")
        }
        guard unetConfig.inChannels == vaeConfig.latentChannels, unetConfig.outChannels == vaeConfig.latentChannels else {
            throw DarkroomError.invalidConfig(path: p.unetConfigPath, key: "in_channels",
                                              reason: "UNet has \(unetConfig.inChannels) in / \(unetConfig.outChannels) out channels but the VAE has \(vaeConfig.latentChannels) latent channels")
        }
        if tokenizer.maxLength > teConfig.maxPositionEmbeddings {
            throw DarkroomError.invalidConfig(path: p.tokenizerPath, key: "model_max_length",
                                              reason: "\(tokenizer.maxLength) exceeds the text encoder's \(teConfig.maxPositionEmbeddings) positions")
        }

        var warnings = p.warnings
        for (label, w) in [("text_encoder", p.textWeights), ("unet", p.unetWeights), ("vae", p.vaeWeights)] {
            let unused = w.unusedKeys
            if !unused.isEmpty {
                let shown = unused.prefix(5).joined(separator: ", ")
                warnings.append("\(label): \(unused.count) weight\(unused.count == 1 ? "" : "s") not used by the model (\(shown)\(unused.count > 5 ? ", ..." : ""))")
            }
        }
        self.warnings = warnings
    }

    /// The VAE encoder (image → latents, for image-to-image), built from the same VAE weights as
    /// the decoder on first use and kept: text-to-image never pays for it. Thread-safe.
    public func vaeEncoder() throws -> VAEEncoder {
        try encoderCache.get { try VAEEncoder(config: vaeConfig, weights: vaeWeightsSource()) }
    }

    /// The text encoder: built at load and kept, so this only fails after
    /// `releaseTextEncoder()`, when it is built again from its weights (read and checked again,
    /// as at load). Thread-safe.
    public func textEncoder() throws -> CLIPTextModel {
        try textEncoderCache.get { try CLIPTextModel(config: textEncoderConfig, weights: textWeightsSource()) }
    }

    /// Frees the text encoder's weights (about 0.3 GB for SD 1.5) until the next `textEncoder()`:
    /// the pipeline does this after encoding a run's last prompts when asked.
    public func releaseTextEncoder() { textEncoderCache.clear() }

    /// The UNet: built at load and kept, so this only fails after `releaseUNet()`, when it is
    /// built again from its weights files (read and checked again, as at load). Thread-safe.
    public func unet() throws -> UNet2DConditionModel {
        try unetCache.get { try UNet2DConditionModel(config: unetConfig, weights: unetWeightsSource()) }
    }

    /// Frees the UNet's weights (1.6 GB for SD 1.5 in Float16) until the next `unet()`. The
    /// pipeline does this before the VAE decode of a run's last images when asked, so the UNet's
    /// weights and the decoder's full-resolution activations, the two big items, never add up.
    public func releaseUNet() { unetCache.clear() }

    /// Pixels per latent cell (8 for SD).
    public var vaeScaleFactor: Int { vaeConfig.downscaleFactor }

    /// The size the UNet was trained at (sample_size × VAE factor), or 512.
    public var defaultSize: Int { (unetConfig.sampleSize ?? 64) * vaeScaleFactor }
}

/// A value computed once on first use, safe to share between threads (a failed attempt is not
/// kept, so a later call retries).
final class LazyValue<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T?

    func get(_ make: () throws -> T) throws -> T {
        lock.lock()
        defer { lock.unlock() }
        if let value { return value }
        let v = try make()
        value = v
        return v
    }

    /// Drops the value; the next `get` computes it again.
    func clear() {
        lock.lock()
        value = nil
        lock.unlock()
    }
}
