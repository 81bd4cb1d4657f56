import Foundation

/// A Stable Diffusion model loaded from a diffusers folder: `model_index.json`, `tokenizer/`,
/// `text_encoder/`, `unet/`, `vae/`, `scheduler/`. Every size comes from the configs.
public final class StableDiffusionModel: Sendable {
    public let folder: URL
    /// A short name for metadata (the folder name).
    public let name: String
    public let tokenizer: CLIPTokenizer
    public let textEncoder: CLIPTextModel
    public let unet: UNet2DConditionModel
    public let vaeConfig: VAEConfig
    public let vaeDecoder: VAEDecoder
    public let schedulerConfig: SchedulerConfig
    /// Non-fatal findings while loading (e.g. weights no module used), for the CLI to print.
    public let warnings: [String]

    static let pipelineClasses = [
        "StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipelineLegacy",
        "LatentConsistencyModelPipeline", "DarkroomPipeline",
    ]

    public init(folder: URL) throws {
        self.folder = folder
        name = folder.standardizedFileURL.lastPathComponent
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: folder.path, isDirectory: &isDir) else { throw DarkroomError.fileNotFound(path: folder.path) }
        guard isDir.boolValue else {
            throw DarkroomError.invalidFile(path: folder.path, reason: "not a model folder (expected a diffusers folder with model_index.json)")
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

        tokenizer = try CLIPTokenizer(directory: sub("tokenizer"))
        let teConfig = try CLIPTextConfig(ConfigFile.load(sub("text_encoder/config.json")))
        let teWeights = try Weights.load(componentFolder: sub("text_encoder"), stem: "model")
        textEncoder = try CLIPTextModel(config: teConfig, weights: teWeights)

        let unetConfig = try UNetConfig.load(sub("unet/config.json"))
        let unetWeights = try Weights.load(componentFolder: sub("unet"), stem: "diffusion_pytorch_model")
        unet = try UNet2DConditionModel(config: unetConfig, weights: unetWeights)

        vaeConfig = try VAEConfig.load(sub("vae/config.json"))
        let vaeWeights = try Weights.load(componentFolder: sub("vae"), stem: "diffusion_pytorch_model")
        vaeDecoder = try VAEDecoder(config: vaeConfig, weights: vaeWeights)

        schedulerConfig = try SchedulerConfig.load(from: sub("scheduler/scheduler_config.json"))

        // Cross-component consistency: these would otherwise fail deep inside a matmul.
        let unetPath = sub("unet/config.json").path
        for (i, d) in unetConfig.crossAttentionDim.enumerated() where d != teConfig.hiddenSize {
            throw DarkroomError.invalidConfig(path: unetPath, key: "cross_attention_dim",
                                              reason: "block \(i) expects \(d)-wide text embeddings but the text encoder produces \(teConfig.hiddenSize)")
        }
        guard unetConfig.inChannels == vaeConfig.latentChannels, unetConfig.outChannels == vaeConfig.latentChannels else {
            throw DarkroomError.invalidConfig(path: unetPath, key: "in_channels",
                                              reason: "UNet has \(unetConfig.inChannels) in / \(unetConfig.outChannels) out channels but the VAE has \(vaeConfig.latentChannels) latent channels")
        }
        if tokenizer.maxLength > teConfig.maxPositionEmbeddings {
            throw DarkroomError.invalidConfig(path: sub("tokenizer").path, key: "model_max_length",
                                              reason: "\(tokenizer.maxLength) exceeds the text encoder's \(teConfig.maxPositionEmbeddings) positions")
        }

        var warnings: [String] = []
        for (label, w) in [("text_encoder", teWeights), ("unet", unetWeights), ("vae", vaeWeights)] {
            let unused = w.unusedKeys
            if !unused.isEmpty {
                let shown = unused.prefix(5).joined(separator: ", ")
                warnings.append("\(label): \(unused.count) weight\(unused.count == 1 ? "" : "s") not used by the model (\(shown)\(unused.count > 5 ? ", ..." : ""))")
            }
        }
        self.warnings = warnings
    }

    /// Pixels per latent cell (8 for SD).
    public var vaeScaleFactor: Int { vaeConfig.downscaleFactor }

    /// The size the UNet was trained at (sample_size × VAE factor), or 512.
    public var defaultSize: Int { (unet.config.sampleSize ?? 64) * vaeScaleFactor }
}
