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
    /// Clip skip as AUTOMATIC1111 counts it: 1 = the text encoder's last layer (no skip), 2 = the
    /// penultimate layer (diffusers' `clip_skip=1`), ...
    public var clipSkip: Int = 1
    /// How the prompts become conditioning. `.auto` (the default) runs diffusers' exact path for
    /// plain prompts of up to 75 tokens and A1111's weighting, BREAK and 75-token chunks otherwise.
    public var promptMode: PromptMode = .auto
    /// diffusers' `guidance_rescale` φ (Lin et al. 2023, "Common Diffusion Noise Schedules and
    /// Sample Steps are Flawed", §3.4): the guided prediction is pulled towards the standard
    /// deviation of the text prediction, φ in [0, 1]; 0 is off. Only with guidance.
    public var guidanceRescale: Float = 0

    public init(prompt: String, negativePrompt: String = "", steps: Int = 50, guidanceScale: Float = 7.5,
                width: Int? = nil, height: Int? = nil, seed: UInt64 = 0, eta: Float = 0, sampler: SamplerKind = .ddim,
                clipSkip: Int = 1, promptMode: PromptMode = .auto, guidanceRescale: Float = 0) {
        self.prompt = prompt
        self.negativePrompt = negativePrompt
        self.steps = steps
        self.guidanceScale = guidanceScale
        self.width = width
        self.height = height
        self.seed = seed
        self.eta = eta
        self.sampler = sampler
        self.clipSkip = clipSkip
        self.promptMode = promptMode
        self.guidanceRescale = guidanceRescale
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

/// What a step callback sees after each denoising step, for every image of the run.
public struct DenoisingStep: Sendable {
    /// Index of the step in the sampler's whole schedule (img2img starts part-way).
    public var step: Int
    /// Steps finished in this run (1 ... totalSteps).
    public var stepsDone: Int
    public var totalSteps: Int
    /// The timestep the UNet was just evaluated at.
    public var timestep: Float
    /// The latents after the step, one [1, C, h, w] per image (what diffusers'
    /// `callback_on_step_end` receives).
    public var latents: [Tensor]
    /// Each image's estimate of the clean latents at this step (x̂₀ from the guided model output
    /// and ᾱ at the timestep), [1, C, h, w]: what A1111 previews. Early latents are mostly noise;
    /// x̂₀ already shows the picture. An estimate for previews, not a parity quantity.
    public var denoised: [Tensor]
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
    /// Turns prompts into conditioning (A1111 syntax, chunks, clip skip) with the model's
    /// tokenizer and text encoder.
    public let promptEncoder: PromptEncoder

    public init(model: StableDiffusionModel) {
        self.model = model
        promptEncoder = PromptEncoder(tokenizer: model.tokenizer, textEncoderSource: { [model] in try model.textEncoder() })
    }

    public init(folder: URL) throws { self.init(model: try StableDiffusionModel(folder: folder)) }

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
        guard r.guidanceRescale.isFinite, r.guidanceRescale >= 0, r.guidanceRescale <= 1 else {
            throw DarkroomError.invalidArgument("guidance rescale \(r.guidanceRescale) must be between 0 and 1")
        }
        let layers = model.textEncoderConfig.numHiddenLayers
        guard r.clipSkip >= 1, r.clipSkip <= layers else {
            throw DarkroomError.invalidArgument("clip skip \(r.clipSkip) must be between 1 (no skip) and \(layers), the text encoder's layer count")
        }
        // Prompt syntax errors (a weight Python's float() rejects) surface here, before any work.
        _ = try conditioningLength(r)
        return (width, height)
    }

    /// Whether classifier-free guidance runs (diffusers: scale > 1 and no LCM guidance embedding).
    public func usesGuidance(_ scale: Float) -> Bool { scale > 1 && model.unetConfig.timeCondProjDim == nil }

    /// Text embeddings [2, tokens, hidden] for [negative, prompt], or [1, ...] without guidance,
    /// with the request defaults (clip skip 1, prompt mode auto).
    public func encode(prompt: String, negativePrompt: String, guidance: Bool) throws -> Tensor {
        try encode(requests: [GenerationRequest(prompt: prompt, negativePrompt: negativePrompt)], guidance: guidance)
    }

    /// Text embeddings for several images in diffusers' batch order: [negative × B, prompt × B]
    /// ([2B, tokens, hidden]) with guidance, [prompt × B] without (request defaults otherwise).
    public func encode(prompts: [String], negativePrompts: [String], guidance: Bool) throws -> Tensor {
        precondition(prompts.count == negativePrompts.count, "one negative prompt per prompt")
        return try encode(requests: zip(prompts, negativePrompts).map { GenerationRequest(prompt: $0, negativePrompt: $1) }, guidance: guidance)
    }

    /// The conditioning of each request (its prompt mode and clip skip) in diffusers' batch
    /// order: [negative × B, prompt × B] with guidance, [prompt × B] without. In A1111 mode the
    /// shorter of prompt and negative prompt is padded with empty chunks to the other's length;
    /// all requests must end up with the same length (see `canBatch`).
    public func encode(requests: [GenerationRequest], guidance: Bool) throws -> Tensor {
        precondition(!requests.isEmpty, "encode(requests:) needs at least one request")
        var positives: [Tensor] = [], negatives: [Tensor] = []
        for r in requests {
            if guidance {
                let (p, n) = try promptEncoder.encode(prompt: r.prompt, negativePrompt: r.negativePrompt, clipSkip: r.clipSkip, mode: r.promptMode)
                positives.append(p)
                negatives.append(n)
            } else {
                positives.append(try promptEncoder.encode(r.prompt, clipSkip: r.clipSkip, mode: r.promptMode))
            }
        }
        let all = negatives + positives
        guard all.allSatisfy({ $0.shape == all[0].shape }) else {
            throw DarkroomError.invalidArgument("images in one batch need prompts of the same number of 75-token chunks")
        }
        return all.count == 1 ? all[0] : Tensor.concat(all)
    }

    /// Tokens of conditioning the request's prompts give (77 per chunk), without running the
    /// text encoder; throws for prompt syntax that A1111 rejects.
    public func conditioningLength(_ r: GenerationRequest) throws -> Int {
        try promptEncoder.conditioningLength(prompt: r.prompt, negativePrompt: usesGuidance(r.guidanceScale) ? r.negativePrompt : nil,
                                             mode: r.promptMode)
    }

    /// The initial latents for a seed, as diffusers draws them: torch.randn([1, C, h, w]) from
    /// torch.Generator().manual_seed(seed).
    public func initialLatents(seed: UInt64, width: Int, height: Int) -> (Tensor, TorchGenerator) {
        var g = TorchGenerator(seed: seed)
        let f = model.vaeScaleFactor
        let latents = g.randn(shape: [1, model.unetConfig.inChannels, height / f, width / f])
        return (latents, g)
    }

    /// Runs the sampler loop from `latents`. `progress` is called before each step and may return
    /// false to cancel (throws `DarkroomError.cancelled`); `onStep` gets the step index and the
    /// latents after it.
    public func denoise(latents start: Tensor, embeddings: Tensor, request r: GenerationRequest, generator: inout TorchGenerator,
                        progress: ((GenerationProgress) -> Bool)? = nil,
                        onStep: ((Int, Tensor) -> Void)? = nil) throws -> Tensor {
        var generators = [generator]
        defer { generator = generators[0] }
        let out = try denoise(latents: [start], embeddings: embeddings, requests: [r], generators: &generators,
                              progress: progress, onStep: onStep.map { f in { s in f(s.step, s.latents[0]) } })
        return out[0]
    }

    /// Whether two requests can share UNet evaluations: same size, step count, sampler,
    /// guidance on/off (so the same timesteps and batch layout) and conditioning length (the
    /// number of 75-token chunks). Prompts, seeds, guidance scales, guidance rescale, clip skip
    /// and η may differ.
    public func canBatch(_ a: GenerationRequest, _ b: GenerationRequest) -> Bool {
        guard (a.width ?? model.defaultSize) == (b.width ?? model.defaultSize)
            && (a.height ?? model.defaultSize) == (b.height ?? model.defaultSize)
            && a.steps == b.steps && a.sampler == b.sampler && usesGuidance(a.guidanceScale) == usesGuidance(b.guidanceScale)
        else { return false }
        guard let la = try? conditioningLength(a), let lb = try? conditioningLength(b) else { return false }
        return la == lb
    }

    /// The sampler loop for B images at once: the UNet sees [latents × B] (twice with guidance,
    /// against `embeddings` in the order `encode(requests:guidance:)` returns).
    /// Each image keeps its own sampler, guidance scale, guidance rescale, η and generator, so
    /// every image is the one a single run with its request gives (the batched UNet rows are
    /// computed independently). `latents` are [1, C, h, w] each; `requests` must be pairwise
    /// `canBatch`. `onStep` sees every image after each step (see `DenoisingStep`).
    public func denoise(latents starts: [Tensor], embeddings: Tensor, requests: [GenerationRequest], generators: inout [TorchGenerator],
                        progress: ((GenerationProgress) -> Bool)? = nil,
                        onStep: ((DenoisingStep) -> Void)? = nil) throws -> [Tensor] {
        let b = requests.count
        precondition(b > 0 && starts.count == b && generators.count == b, "one latent and one generator per request")
        for r in requests.dropFirst() where !canBatch(requests[0], r) {
            throw DarkroomError.invalidArgument("images in one batch need the same size, steps, sampler, guidance on/off and prompt length")
        }
        var samplers = try requests.map { try $0.sampler.make(config: model.schedulerConfig, steps: $0.steps, eta: $0.eta) }
        guard samplers.allSatisfy({ $0.timesteps == samplers[0].timesteps }) else {
            throw DarkroomError.invalidArgument("images in one batch must share their timesteps")
        }
        let latents = starts.enumerated().map { j, start -> Tensor in
            let sigma = samplers[j].initNoiseSigma
            guard sigma != 1 else { return start }
            let l = start.copy()
            for i in 0..<l.count { l.data[i] *= sigma }
            return l
        }
        return try samplingLoop(latents: latents, embeddings: embeddings, requests: requests, samplers: &samplers, startStep: 0,
                                generators: &generators, progress: progress, onStep: onStep)
    }

    /// The loop both text-to-image and image-to-image run, from step `startStep` of the
    /// samplers' schedule: UNet on [latents × B] (twice with guidance), classifier-free guidance
    /// `uncond + s · (text − uncond)` per image, guidance rescale when asked, sampler step.
    func samplingLoop(latents start: [Tensor], embeddings: Tensor, requests: [GenerationRequest], samplers: inout [any Sampler],
                      startStep: Int, generators: inout [TorchGenerator],
                      progress: ((GenerationProgress) -> Bool)?, onStep: ((DenoisingStep) -> Void)?) throws -> [Tensor] {
        let b = requests.count
        let steps = samplers[0].timesteps
        let total = steps.count - startStep
        let guidance = usesGuidance(requests[0].guidanceScale)
        // Guidance-distilled UNets (time_cond_proj_dim, LCM) take each image's w − 1 as an
        // embedding instead of classifier-free guidance.
        let condition = model.unetConfig.timeCondProjDim.map { d in
            Tensor.concat(requests.map { LCMScheduler.guidanceScaleEmbedding($0.guidanceScale - 1, dimension: d) })
        }
        let estimator = onStep.map { _ in DenoisedEstimator(config: model.schedulerConfig) }
        let unet = try model.unet()
        let began = Date()
        var latents = start
        // Freed activations serve the next step too (see reusingActivations).
        try unet.reusingActivations {
            for i in startStep..<steps.count {
                if let progress, !progress(GenerationProgress(phase: .denoising, step: i - startStep, totalSteps: total,
                                                              elapsed: Date().timeIntervalSince(began))) {
                    throw DarkroomError.cancelled
                }
                let scaledEach = (0..<b).map { samplers[$0].scaleModelInput(latents[$0], stepIndex: i) }
                let scaled = b == 1 ? scaledEach[0] : Tensor.concat(scaledEach)
                let input = guidance ? Tensor.concat([scaled, scaled]) : scaled
                let out = unet(input, timestep: steps[i], context: embeddings, condition: condition)
                let per = out.count / (guidance ? 2 * b : b)
                var denoised: [Tensor] = []
                for j in 0..<b {
                    let noise = Tensor(shape: latents[j].shape)
                    if guidance {
                        // uncond + s · (text − uncond); rows [0, B) are unconditional, [B, 2B) text.
                        let u = out.data + j * per, c = out.data + (b + j) * per
                        let s = requests[j].guidanceScale
                        for k in 0..<per { noise.data[k] = u[k] + s * (c[k] - u[k]) }
                        if requests[j].guidanceRescale > 0 {
                            Self.rescaleGuidance(noise.data, text: c, count: per, phi: requests[j].guidanceRescale)
                        }
                    } else {
                        noise.data.update(from: out.data + j * per, count: per)
                    }
                    if let estimator { denoised.append(estimator.denoised(sample: scaledEach[j], modelOutput: noise, timestep: steps[i])) }
                    latents[j] = samplers[j].step(modelOutput: noise, stepIndex: i, sample: latents[j], generator: &generators[j])
                }
                onStep?(DenoisingStep(step: i, stepsDone: i - startStep + 1, totalSteps: total, timestep: steps[i],
                                      latents: latents, denoised: denoised))
            }
        }
        _ = progress?(GenerationProgress(phase: .decoding, step: total, totalSteps: total, elapsed: Date().timeIntervalSince(began)))
        return latents
    }

    /// diffusers' `rescale_noise_cfg` on one image, in place: with σ the (Bessel-corrected)
    /// standard deviation over all of the image's elements, cfg ← φ · cfg · σ(text)/σ(cfg) +
    /// (1 − φ) · cfg. The standard deviations are accumulated in Double as torch's CPU kernel
    /// does, then rounded to Float like the tensors holding them.
    static func rescaleGuidance(_ cfg: UnsafeMutablePointer<Float>, text: UnsafePointer<Float>, count n: Int, phi: Float) {
        func std(_ p: UnsafePointer<Float>) -> Float {
            var sum = 0.0
            for k in 0..<n { sum += Double(p[k]) }
            let mean = sum / Double(n)
            var sq = 0.0
            for k in 0..<n {
                let d = Double(p[k]) - mean
                sq += d * d
            }
            return Float((sq / Double(n - 1)).squareRoot())
        }
        let ratio = std(text) / std(UnsafePointer(cfg))
        // φ and 1 − φ are Python floats in diffusers, rounded to float32 by the tensor ops; the
        // Float's shortest decimal text is the value a user typed.
        let phiD = Double(phi.description) ?? Double(phi)
        let a = Float(phiD), keep = Float(1 - phiD)
        for k in 0..<n {
            let rescaled = cfg[k] * ratio
            let x = a * rescaled, y = keep * cfg[k]
            cfg[k] = x + y
        }
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

    /// The metadata a generated image carries (A1111 layout; η, clip skip, guidance rescale and
    /// prompt mode only when they are not the defaults, so older images keep their text).
    public func parameters(for r: GenerationRequest) -> GenerationParameters {
        GenerationParameters(
            prompt: r.prompt, negativePrompt: r.negativePrompt, steps: r.steps, sampler: r.sampler.a1111Name,
            cfgScale: Double(r.guidanceScale), seed: r.seed, width: r.width ?? model.defaultSize,
            height: r.height ?? model.defaultSize, model: model.name, extra: Self.extraParameters(r))
    }

    /// The optional `Key: value` pairs of a request: "Eta", A1111's "Clip skip", "Guidance
    /// rescale" (A1111 has no key; the name spells out diffusers' `guidance_rescale`) and
    /// "Prompt mode" (only `diffusers`: `auto` and `a1111` render the same).
    static func extraParameters(_ r: GenerationRequest) -> [GenerationParameters.Field] {
        var extra: [GenerationParameters.Field] = []
        if r.eta != 0 { extra.append(.init("Eta", formatNumber(r.eta))) }
        if r.clipSkip != 1 { extra.append(.init("Clip skip", String(r.clipSkip))) }
        if r.guidanceRescale != 0 { extra.append(.init("Guidance rescale", formatNumber(r.guidanceRescale))) }
        if r.promptMode == .diffusers { extra.append(.init("Prompt mode", r.promptMode.rawValue)) }
        return extra
    }

    /// Prompt to image. `onStep` sees the latents and the estimated clean image after every
    /// step (e.g. to decode previews).
    public func generate(_ r: GenerationRequest, progress: ((GenerationProgress) -> Bool)? = nil,
                         onStep: ((DenoisingStep) -> Void)? = nil) throws -> GeneratedImage {
        try generate(batch: [r], progress: progress, onStep: onStep)[0]
    }

    /// Several images with one UNet evaluation per step for all of them (see
    /// `denoise(latents:embeddings:requests:generators:)`): each image equals what
    /// `generate(_:)` makes from its request alone. The requests must be pairwise `canBatch`;
    /// `seconds` of each result is the batch's time divided by its size. `releasingWeights` frees
    /// the text encoder once the prompts are encoded and the UNet before the VAE decode
    /// (`StableDiffusionModel.releaseTextEncoder()`, `releaseUNet()`): for a run's last images it
    /// keeps the peak memory down to the UNet's phase without the text encoder and the decoder's
    /// without the UNet; a later run builds them again from their files.
    public func generate(batch requests: [GenerationRequest], progress: ((GenerationProgress) -> Bool)? = nil,
                         onStep: ((DenoisingStep) -> Void)? = nil, releasingWeights: Bool = false) throws -> [GeneratedImage] {
        precondition(!requests.isEmpty, "generate(batch:) needs at least one request")
        let began = Date()
        var sizes: [(width: Int, height: Int)] = []
        for r in requests { sizes.append(try validate(r)) }
        for r in requests.dropFirst() where !canBatch(requests[0], r) {
            throw DarkroomError.invalidArgument("images in one batch need the same size, steps, sampler, guidance on/off and prompt length")
        }
        let steps = requests[0].steps
        if let progress, !progress(GenerationProgress(phase: .encoding, step: 0, totalSteps: steps, elapsed: 0)) {
            throw DarkroomError.cancelled
        }
        let guidance = usesGuidance(requests[0].guidanceScale)
        let embeddings = try encode(requests: requests, guidance: guidance)
        if releasingWeights { model.releaseTextEncoder() }
        var latents: [Tensor] = []
        var generators: [TorchGenerator] = []
        for (r, size) in zip(requests, sizes) {
            let (l, g) = initialLatents(seed: r.seed, width: size.width, height: size.height)
            latents.append(l)
            generators.append(g)
        }
        latents = try denoise(latents: latents, embeddings: embeddings, requests: requests, generators: &generators,
                              progress: progress, onStep: onStep)
        // The VAE decodes one image at a time: batching it saves little and multiplies its
        // (large) activation memory. The UNet's scratch buffers are released first, so they
        // do not sit under the decoder's peak, and the decoder's after each image.
        if releasingWeights { model.releaseUNet() }
        releaseScratchMemory()
        let decoded = latents.map { l -> Tensor in
            defer { releaseScratchMemory() }
            return decode(l)
        }
        let seconds = Date().timeIntervalSince(began) / Double(requests.count)
        return zip(requests, decoded).map { r, d in
            GeneratedImage(pixels: Self.unitPixels(d), image: RGBImage(decoded: d), parameters: parameters(for: r), seconds: seconds)
        }
    }
}

/// x̂₀ from a model output for previews: the sample on the DDPM scale (the UNet's scaled input)
/// and ᾱ at the (possibly fractional) timestep, by the model's prediction type.
struct DenoisedEstimator {
    let alphasCumprod: [Float]
    let prediction: SchedulerConfig.PredictionType

    init(config: SchedulerConfig) {
        alphasCumprod = DDIMScheduler(config: config).alphasCumprod
        prediction = config.predictionType
    }

    func denoised(sample x: Tensor, modelOutput e: Tensor, timestep t: Float) -> Tensor {
        let last = alphasCumprod.count - 1
        let tc = min(max(Double(t), 0), Double(last))
        let lo = Int(tc.rounded(.down)), hi = min(lo + 1, last)
        let w = tc - Double(lo)
        let abar = max(Double(alphasCumprod[lo]) * (1 - w) + Double(alphasCumprod[hi]) * w, 1e-6)
        let sa = Float(abar.squareRoot()), sb = Float((1 - abar).squareRoot())
        let out = Tensor(shape: x.shape)
        for k in 0..<x.count {
            switch prediction {
            case .epsilon: out.data[k] = (x.data[k] - sb * e.data[k]) / sa
            case .vPrediction: out.data[k] = sa * x.data[k] - sb * e.data[k]
            case .sample: out.data[k] = e.data[k]
            }
        }
        return out
    }
}

/// Shortest decimal text of a float ("7.5", "7", "0.3").
func formatNumber(_ x: Float) -> String {
    if x == x.rounded(), abs(x) < 1e9 { return String(Int(x)) }
    return "\(x)"
}
