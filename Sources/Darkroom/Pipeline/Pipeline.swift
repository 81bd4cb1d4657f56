import Foundation

/// What to generate. Defaults follow diffusers' StableDiffusionPipeline.
public struct GenerationRequest: Sendable, Equatable {
    public var prompt: String
    /// The unconditional branch of classifier-free guidance ("" = the encoding of the empty prompt).
    public var negativePrompt: String = ""
    public var steps: Int = 50
    public var guidanceScale: Float = 7.5
    /// Pixels; nil means the model's default size.
    public var width: Int? = nil
    public var height: Int? = nil
    public var seed: UInt64 = 0
    /// DDIM η: 0 is deterministic DDIM, 1 is DDPM-like; > 0 draws noise from the seeded generator.
    public var eta: Float = 0
    public var sampler: SamplerKind = .ddim

    public init(prompt: String, negativePrompt: String = "", steps: Int = 50, guidanceScale: Float = 7.5,
                width: Int? = nil, height: Int? = nil, seed: UInt64 = 0, eta: Float = 0, sampler: SamplerKind = .ddim) {
        self.prompt = prompt
        self.negativePrompt = negativePrompt
        self.steps = steps
        self.guidanceScale = guidanceScale
        self.width = width
        self.height = height
        self.seed = seed
        self.eta = eta
        self.sampler = sampler
    }
}

/// Reported before each denoising step and once when decoding starts.
public struct GenerationProgress: Sendable {
    public enum Phase: Sendable { case encoding, denoising, decoding }
    public var phase: Phase
    /// Steps finished so far (0 ... totalSteps).
    public var step: Int
    public var totalSteps: Int
    public var elapsed: TimeInterval
}

/// The result of one generation.
public struct GeneratedImage: Sendable {
    /// The decoded image [1, 3, H, W] in [0, 1] (diffusers' output_type="np", channels first).
    public let pixels: Tensor
    public let image: RGBImage
    public let parameters: GenerationParameters
    public let seconds: TimeInterval
}

/// Text-to-image with DDIM and classifier-free guidance, as diffusers' StableDiffusionPipeline.
public struct StableDiffusionPipeline: Sendable {
    public let model: StableDiffusionModel

    public init(model: StableDiffusionModel) { self.model = model }

    public init(folder: URL) throws { model = try StableDiffusionModel(folder: folder) }

    /// Checks a request against the model and returns the resolved (width, height).
    public func validate(_ r: GenerationRequest) throws -> (width: Int, height: Int) {
        let f = model.vaeScaleFactor
        let width = r.width ?? model.defaultSize, height = r.height ?? model.defaultSize
        for (name, v) in [("width", width), ("height", height)] {
            guard v >= f, v % f == 0 else {
                throw DarkroomError.invalidArgument("\(name) \(v) must be a positive multiple of \(f) for this model")
            }
            guard v <= 8192 else { throw DarkroomError.invalidArgument("\(name) \(v) exceeds the 8192-pixel limit") }
        }
        guard r.steps >= 1, r.steps <= model.schedulerConfig.numTrainTimesteps else {
            throw DarkroomError.invalidArgument("steps \(r.steps) must be between 1 and \(model.schedulerConfig.numTrainTimesteps)")
        }
        guard r.guidanceScale.isFinite, r.guidanceScale >= 0, r.guidanceScale <= 100 else {
            throw DarkroomError.invalidArgument("guidance scale \(r.guidanceScale) must be between 0 and 100")
        }
        guard r.eta.isFinite, r.eta >= 0, r.eta <= 1 else { throw DarkroomError.invalidArgument("eta \(r.eta) must be between 0 and 1") }
        return (width, height)
    }

    /// Whether classifier-free guidance runs (diffusers: scale > 1 and no LCM guidance embedding).
    public func usesGuidance(_ scale: Float) -> Bool { scale > 1 && model.unet.config.timeCondProjDim == nil }

    /// Text embeddings [2, tokens, hidden] for [negative, prompt], or [1, ...] without guidance.
    public func encode(prompt: String, negativePrompt: String, guidance: Bool) throws -> Tensor {
        var ids = [model.tokenizer.encode(prompt)]
        if guidance { ids.insert(model.tokenizer.encode(negativePrompt), at: 0) }
        return try model.textEncoder(ids)
    }

    /// The initial latents for a seed, as diffusers draws them: torch.randn([1, C, h, w]) from
    /// torch.Generator().manual_seed(seed).
    public func initialLatents(seed: UInt64, width: Int, height: Int) -> (Tensor, TorchGenerator) {
        var g = TorchGenerator(seed: seed)
        let f = model.vaeScaleFactor
        let latents = g.randn(shape: [1, model.unet.config.inChannels, height / f, width / f])
        return (latents, g)
    }

    /// Runs the DDIM loop from `latents`. `progress` is called before each step and may return
    /// false to cancel (throws `DarkroomError.cancelled`).
    public func denoise(latents start: Tensor, embeddings: Tensor, request r: GenerationRequest, generator: inout TorchGenerator,
                        progress: ((GenerationProgress) -> Bool)? = nil,
                        onStep: ((Int, Tensor) -> Void)? = nil) throws -> Tensor {
        var sampler = try r.sampler.make(config: model.schedulerConfig, steps: r.steps, eta: r.eta)
        let guidance = usesGuidance(r.guidanceScale)
        let began = Date()
        var latents = start
        if sampler.initNoiseSigma != 1 {
            latents = start.copy()
            for i in 0..<latents.count { latents.data[i] *= sampler.initNoiseSigma }
        }
        let steps = sampler.timesteps
        for (i, t) in steps.enumerated() {
            if let progress, !progress(GenerationProgress(phase: .denoising, step: i, totalSteps: steps.count, elapsed: Date().timeIntervalSince(began))) {
                throw DarkroomError.cancelled
            }
            let scaled = sampler.scaleModelInput(latents, stepIndex: i)
            let input = guidance ? Tensor.concat([scaled, scaled]) : scaled
            let out = model.unet(input, timestep: t, context: embeddings)
            let noise: Tensor
            if guidance {
                // uncond + s · (text − uncond), over the two halves of the batch.
                let half = out.count / 2
                noise = Tensor(shape: latents.shape)
                let s = r.guidanceScale
                for j in 0..<half {
                    let u = out.data[j], c = out.data[half + j]
                    noise.data[j] = u + s * (c - u)
                }
            } else {
                noise = out
            }
            latents = sampler.step(modelOutput: noise, stepIndex: i, sample: latents, generator: &generator)
            onStep?(i, latents)
        }
        _ = progress?(GenerationProgress(phase: .decoding, step: steps.count, totalSteps: steps.count, elapsed: Date().timeIntervalSince(began)))
        return latents
    }

    /// Decodes latents with the VAE: [N, 3, H, W], about [-1, 1].
    public func decode(_ latents: Tensor) -> Tensor {
        let c = model.vaeConfig
        let z = latents.copy()
        for i in 0..<z.count { z.data[i] = z.data[i] / c.scalingFactor + c.shiftFactor }
        return model.vaeDecoder(z)
    }

    /// diffusers' postprocessing to [0, 1]: (x / 2 + 0.5).clamp(0, 1).
    public static func unitPixels(_ decoded: Tensor) -> Tensor {
        let x = Tensor(shape: decoded.shape)
        for i in 0..<x.count { x.data[i] = min(max(decoded.data[i] * 0.5 + 0.5, 0), 1) }
        return x
    }

    /// Prompt to image.
    public func generate(_ r: GenerationRequest, progress: ((GenerationProgress) -> Bool)? = nil) throws -> GeneratedImage {
        let began = Date()
        let (width, height) = try validate(r)
        if let progress, !progress(GenerationProgress(phase: .encoding, step: 0, totalSteps: r.steps, elapsed: 0)) {
            throw DarkroomError.cancelled
        }
        let embeddings = try encode(prompt: r.prompt, negativePrompt: r.negativePrompt, guidance: usesGuidance(r.guidanceScale))
        var (latents, generator) = initialLatents(seed: r.seed, width: width, height: height)
        latents = try denoise(latents: latents, embeddings: embeddings, request: r, generator: &generator, progress: progress)
        let decoded = decode(latents)
        let params = GenerationParameters(
            prompt: r.prompt, negativePrompt: r.negativePrompt, steps: r.steps, sampler: r.sampler.a1111Name,
            cfgScale: Double(r.guidanceScale), seed: r.seed, width: width, height: height, model: model.name,
            extra: r.eta != 0 ? [.init("Eta", formatNumber(r.eta))] : [])
        return GeneratedImage(pixels: Self.unitPixels(decoded), image: RGBImage(decoded: decoded), parameters: params,
                              seconds: Date().timeIntervalSince(began))
    }
}

/// Shortest decimal text of a float ("7.5", "7", "0.3").
func formatNumber(_ x: Float) -> String {
    if x == x.rounded(), abs(x) < 1e9 { return String(Int(x)) }
    return "\(x)"
}
