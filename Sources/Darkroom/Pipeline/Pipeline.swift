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

/// Text-to-image with a sampler (DDIM, ...) and classifier-free guidance, as diffusers' StableDiffusionPipeline.
/// Several images can share the UNet evaluations (`generate(batch:)`).
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
        try encode(prompts: [prompt], negativePrompts: [negativePrompt], guidance: guidance)
    }

    /// Text embeddings for several images in diffusers' batch order: [negative × B, prompt × B]
    /// ([2B, tokens, hidden]) with guidance, [prompt × B] without. One text-encoder pass.
    public func encode(prompts: [String], negativePrompts: [String], guidance: Bool) throws -> Tensor {
        precondition(prompts.count == negativePrompts.count, "one negative prompt per prompt")
        var ids = prompts.map { model.tokenizer.encode($0) }
        if guidance { ids = negativePrompts.map { model.tokenizer.encode($0) } + ids }
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

    /// Runs the sampler loop from `latents`. `progress` is called before each step and may return
    /// false to cancel (throws `DarkroomError.cancelled`).
    public func denoise(latents start: Tensor, embeddings: Tensor, request r: GenerationRequest, generator: inout TorchGenerator,
                        progress: ((GenerationProgress) -> Bool)? = nil,
                        onStep: ((Int, Tensor) -> Void)? = nil) throws -> Tensor {
        var generators = [generator]
        defer { generator = generators[0] }
        let out = try denoise(latents: [start], embeddings: embeddings, requests: [r], generators: &generators,
                              progress: progress, onStep: onStep.map { f in { i, l in f(i, l[0]) } })
        return out[0]
    }

    /// Whether two requests can share UNet evaluations: same size, step count, sampler and
    /// guidance on/off (so the same timesteps and batch layout). Prompts, seeds, guidance scales
    /// and η may differ.
    public func canBatch(_ a: GenerationRequest, _ b: GenerationRequest) -> Bool {
        (a.width ?? model.defaultSize) == (b.width ?? model.defaultSize)
            && (a.height ?? model.defaultSize) == (b.height ?? model.defaultSize)
            && a.steps == b.steps && a.sampler == b.sampler && usesGuidance(a.guidanceScale) == usesGuidance(b.guidanceScale)
    }

    /// The sampler loop for B images at once: the UNet sees [latents × B] (twice with guidance,
    /// against `embeddings` in the order `encode(prompts:negativePrompts:guidance:)` returns).
    /// Each image keeps its own sampler, guidance scale, η and generator, so every image is the
    /// one a single run with its request gives (the batched UNet rows are computed independently).
    /// `latents` are [1, C, h, w] each; `requests` must be pairwise `canBatch`.
    public func denoise(latents starts: [Tensor], embeddings: Tensor, requests: [GenerationRequest], generators: inout [TorchGenerator],
                        progress: ((GenerationProgress) -> Bool)? = nil,
                        onStep: ((Int, [Tensor]) -> Void)? = nil) throws -> [Tensor] {
        let b = requests.count
        precondition(b > 0 && starts.count == b && generators.count == b, "one latent and one generator per request")
        for r in requests.dropFirst() where !canBatch(requests[0], r) {
            throw DarkroomError.invalidArgument("images in one batch need the same size, steps, sampler and guidance on/off")
        }
        var samplers = try requests.map { try $0.sampler.make(config: model.schedulerConfig, steps: $0.steps, eta: $0.eta) }
        let steps = samplers[0].timesteps
        guard samplers.allSatisfy({ $0.timesteps == steps }) else {
            throw DarkroomError.invalidArgument("images in one batch must share their timesteps")
        }
        let guidance = usesGuidance(requests[0].guidanceScale)
        // Guidance-distilled UNets (time_cond_proj_dim, LCM) take each image's w − 1 as an
        // embedding instead of classifier-free guidance.
        let condition = model.unet.config.timeCondProjDim.map { d in
            Tensor.concat(requests.map { LCMScheduler.guidanceScaleEmbedding($0.guidanceScale - 1, dimension: d) })
        }
        let began = Date()
        var latents = starts.enumerated().map { j, start -> Tensor in
            let sigma = samplers[j].initNoiseSigma
            guard sigma != 1 else { return start }
            let l = start.copy()
            for i in 0..<l.count { l.data[i] *= sigma }
            return l
        }
        for (i, t) in steps.enumerated() {
            if let progress, !progress(GenerationProgress(phase: .denoising, step: i, totalSteps: steps.count, elapsed: Date().timeIntervalSince(began))) {
                throw DarkroomError.cancelled
            }
            let scaled = b == 1 ? samplers[0].scaleModelInput(latents[0], stepIndex: i)
                : Tensor.concat((0..<b).map { samplers[$0].scaleModelInput(latents[$0], stepIndex: i) })
            let input = guidance ? Tensor.concat([scaled, scaled]) : scaled
            let out = model.unet(input, timestep: t, context: embeddings, condition: condition)
            let per = out.count / (guidance ? 2 * b : b)
            for j in 0..<b {
                let noise = Tensor(shape: latents[j].shape)
                if guidance {
                    // uncond + s · (text − uncond); rows [0, B) are unconditional, [B, 2B) text.
                    let u = out.data + j * per, c = out.data + (b + j) * per
                    let s = requests[j].guidanceScale
                    for k in 0..<per { noise.data[k] = u[k] + s * (c[k] - u[k]) }
                } else {
                    noise.data.update(from: out.data + j * per, count: per)
                }
                latents[j] = samplers[j].step(modelOutput: noise, stepIndex: i, sample: latents[j], generator: &generators[j])
            }
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

    /// The metadata a generated image carries (A1111 layout; η only when non-zero).
    public func parameters(for r: GenerationRequest) -> GenerationParameters {
        GenerationParameters(
            prompt: r.prompt, negativePrompt: r.negativePrompt, steps: r.steps, sampler: r.sampler.a1111Name,
            cfgScale: Double(r.guidanceScale), seed: r.seed, width: r.width ?? model.defaultSize,
            height: r.height ?? model.defaultSize, model: model.name,
            extra: r.eta != 0 ? [.init("Eta", formatNumber(r.eta))] : [])
    }

    /// Prompt to image.
    public func generate(_ r: GenerationRequest, progress: ((GenerationProgress) -> Bool)? = nil) throws -> GeneratedImage {
        try generate(batch: [r], progress: progress)[0]
    }

    /// Several images with one UNet evaluation per step for all of them (see
    /// `denoise(latents:embeddings:requests:generators:)`): each image equals what
    /// `generate(_:)` makes from its request alone. The requests must be pairwise `canBatch`;
    /// `seconds` of each result is the batch's time divided by its size.
    public func generate(batch requests: [GenerationRequest], progress: ((GenerationProgress) -> Bool)? = nil) throws -> [GeneratedImage] {
        precondition(!requests.isEmpty, "generate(batch:) needs at least one request")
        let began = Date()
        var sizes: [(width: Int, height: Int)] = []
        for r in requests { sizes.append(try validate(r)) }
        for r in requests.dropFirst() where !canBatch(requests[0], r) {
            throw DarkroomError.invalidArgument("images in one batch need the same size, steps, sampler and guidance on/off")
        }
        let steps = requests[0].steps
        if let progress, !progress(GenerationProgress(phase: .encoding, step: 0, totalSteps: steps, elapsed: 0)) {
            throw DarkroomError.cancelled
        }
        let guidance = usesGuidance(requests[0].guidanceScale)
        let embeddings = try encode(prompts: requests.map(\.prompt), negativePrompts: requests.map(\.negativePrompt), guidance: guidance)
        var latents: [Tensor] = []
        var generators: [TorchGenerator] = []
        for (r, size) in zip(requests, sizes) {
            let (l, g) = initialLatents(seed: r.seed, width: size.width, height: size.height)
            latents.append(l)
            generators.append(g)
        }
        latents = try denoise(latents: latents, embeddings: embeddings, requests: requests, generators: &generators, progress: progress)
        // The VAE decodes one image at a time: batching it saves little and multiplies its
        // (large) activation memory.
        let decoded = latents.map { decode($0) }
        let seconds = Date().timeIntervalSince(began) / Double(requests.count)
        return zip(requests, decoded).map { r, d in
            GeneratedImage(pixels: Self.unitPixels(d), image: RGBImage(decoded: d), parameters: parameters(for: r), seconds: seconds)
        }
    }
}

/// Shortest decimal text of a float ("7.5", "7", "0.3").
func formatNumber(_ x: Float) -> String {
    if x == x.rounded(), abs(x) < 1e9 { return String(Int(x)) }
    return "\(x)"
}
