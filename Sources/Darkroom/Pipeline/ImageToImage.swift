import Foundation

/// What an image-to-image run will do, resolved from a request before any model work.
public struct ImageToImagePlan: Sendable, Equatable {
    /// Output (and encoder input) size in pixels.
    public var width: Int
    public var height: Int
    /// Whether the init image is resized (Pillow-exact Lanczos) to width x height first.
    public var resizesImage: Bool
    /// diffusers' `init_timestep = min(int(steps · strength), steps)`: the steps actually run.
    public var stepsRun: Int
    /// diffusers' `t_start = steps − init_timestep`: index of the first step run in the schedule.
    public var startStep: Int
}

/// Samplers whose schedule can start part-way, as diffusers' img2img does with
/// `scheduler.set_begin_index(t_start)` followed by `scheduler.add_noise(...)` at that step.
protocol PartialDenoising {
    /// diffusers' `add_noise(original, noise, timesteps[stepIndex])` once the begin index is set.
    func addNoise(original: Tensor, noise: Tensor, stepIndex: Int) -> Tensor
}

extension DDIMScheduler: PartialDenoising {
    /// √ᾱ_t · x + √(1 − ᾱ_t) · ε at the step's integer timestep.
    func addNoise(original: Tensor, noise: Tensor, stepIndex: Int) -> Tensor {
        addNoise(original: original, noise: noise, timestep: integerTimesteps[stepIndex])
    }
}

extension EulerDiscreteScheduler: PartialDenoising {
    /// x + ε · σ_i (the σ of the begin index, not of the timestep's training σ).
    func addNoise(original: Tensor, noise: Tensor, stepIndex: Int) -> Tensor {
        sigmaNoised(original, noise, sigmas[stepIndex])
    }
}

extension EulerAncestralDiscreteScheduler: PartialDenoising {
    func addNoise(original: Tensor, noise: Tensor, stepIndex: Int) -> Tensor {
        sigmaNoised(original, noise, sigmas[stepIndex])
    }
}

extension DPMSolverMultistepScheduler: PartialDenoising {
    /// α_t · x + σ_t · ε with α_t = 1 / √(σ² + 1), σ_t = σ · α_t (float32, as diffusers).
    func addNoise(original: Tensor, noise: Tensor, stepIndex: Int) -> Tensor {
        let sigma = sigmas[stepIndex]
        let alpha = 1 / torchSqrt(sigma * sigma + 1)
        let sigmaT = sigma * alpha
        precondition(original.shape == noise.shape, "original \(original.shape) vs noise \(noise.shape)")
        let out = Tensor(shape: original.shape)
        for i in 0..<out.count {
            let a = alpha * original.data[i], b = sigmaT * noise.data[i]
            out.data[i] = a + b
        }
        return out
    }
}

/// `original + noise * sigma` with torch's two roundings.
private func sigmaNoised(_ original: Tensor, _ noise: Tensor, _ sigma: Float) -> Tensor {
    precondition(original.shape == noise.shape, "original \(original.shape) vs noise \(noise.shape)")
    let out = Tensor(shape: original.shape)
    for i in 0..<out.count {
        let scaled = noise.data[i] * sigma
        out.data[i] = original.data[i] + scaled
    }
    return out
}

/// Image-to-image as diffusers' `StableDiffusionImg2ImgPipeline` (0.42): the init image is encoded
/// with the VAE encoder, a posterior sample (the seeded generator's first draw) is scaled, noised
/// with the generator's second draw to the level of step `t_start`, and the usual denoising loop
/// runs the remaining `int(steps · strength)` steps.
///
/// Sizes: by default the output has the init image's size rounded down to a multiple of the VAE
/// factor (8), as diffusers; the request's width/height, when given, choose another size. When the
/// image's size differs from the output size it is resized with Pillow's Lanczos filter, byte for
/// byte as diffusers' `VaeImageProcessor` does (aspect ratio not kept: A1111's "just resize").
///
/// Samplers: DDIM, Euler, Euler a, DPM++ 2M (Karras). PLMS (diffusers' PNDM keeps a step counter
/// that img2img's slicing does not reset consistently) and LCM (diffusers has a separate LCM
/// img2img pipeline with its own strength schedule) are rejected.
extension StableDiffusionPipeline {
    /// The model's VAE encoder (`StableDiffusionModel.vaeEncoder()`: loaded on first use from
    /// the folder's `vae/` or the checkpoint's `first_stage_model.encoder`, then kept).
    public func loadVAEEncoder() throws -> VAEEncoder { try model.vaeEncoder() }

    /// Checks an image-to-image request and resolves its sizes and schedule.
    public func plan(_ r: GenerationRequest, initImage: RGBImage, strength: Float) throws -> ImageToImagePlan {
        try plan(r, initImageWidth: initImage.width, initImageHeight: initImage.height, strength: strength)
    }

    /// `plan(_:initImage:strength:)` from the init image's size alone (e.g. a PNG header), so a
    /// batch can name and check its images before reading any pixels.
    public func plan(_ r: GenerationRequest, initImageWidth iw: Int, initImageHeight ih: Int, strength: Float) throws -> ImageToImagePlan {
        guard strength.isFinite, strength > 0, strength <= 1 else {
            throw DarkroomError.invalidArgument("strength \(strength) must be greater than 0 and at most 1")
        }
        guard iw > 0, ih > 0 else {
            throw DarkroomError.invalidArgument("the init image is empty (\(iw)x\(ih))")
        }
        guard iw <= 8192, ih <= 8192 else {
            throw DarkroomError.invalidArgument("the init image is \(iw)x\(ih); at most 8192 pixels a side are accepted")
        }
        let f = model.vaeScaleFactor
        var sized = r
        // diffusers: the image's size rounded down to a multiple of the VAE factor.
        sized.width = r.width ?? iw - iw % f
        sized.height = r.height ?? ih - ih % f
        if (r.width == nil && sized.width! < f) || (r.height == nil && sized.height! < f) {
            throw DarkroomError.invalidArgument(
                "the init image is \(iw)x\(ih); img2img needs at least \(f)x\(f) pixels (or an explicit width and height)")
        }
        let (width, height) = try validate(sized)
        guard SamplerKind.imageToImageKinds.contains(r.sampler) else {
            throw DarkroomError.invalidArgument(
                "sampler \(r.sampler.rawValue) does not support img2img; use one of "
                    + SamplerKind.imageToImageKinds.map(\.rawValue).joined(separator: ", "))
        }
        // diffusers computes int(steps * strength) in Python floats; the Float's shortest decimal
        // text is what a user typed, so 10 × 0.7 gives 7 there and here (Float 0.7 · 10 < 7).
        let s = Double(strength.description) ?? Double(strength)
        let initSteps = min(Int(Double(r.steps) * s), r.steps)
        guard initSteps >= 1 else {
            throw DarkroomError.invalidArgument(
                "strength \(strength) with \(r.steps) steps runs no denoising step (int(steps × strength) = 0); raise the strength or the steps")
        }
        return ImageToImagePlan(width: width, height: height,
                                resizesImage: width != iw || height != ih,
                                stepsRun: initSteps, startStep: r.steps - initSteps)
    }

    /// diffusers' `VaeImageProcessor.preprocess` for one RGB image: resize when needed (Pillow
    /// Lanczos), bytes / 255 in float32, then 2x − 1. Returns [1, 3, height, width] in [-1, 1].
    public static func preprocess(_ image: RGBImage, width: Int, height: Int) -> Tensor {
        let img = image.width == width && image.height == height ? image : image.resizedLanczos(width: width, height: height)
        let plane = width * height
        let t = Tensor(shape: [1, 3, height, width])
        img.pixels.withUnsafeBufferPointer { px in
            for i in 0..<plane {
                for c in 0..<3 {
                    let unit = Float(px[i * 3 + c]) / 255
                    t.data[c * plane + i] = 2 * unit - 1
                }
            }
        }
        return t
    }

    /// The starting latents of an image-to-image run: the encoded image (first draw from the
    /// seed's generator) noised to step `plan.startStep` (second draw). Returns the sampler, set
    /// up for the whole schedule, and the generator for the steps' own noise.
    public func imageToImageStart(_ r: GenerationRequest, image: Tensor, plan p: ImageToImagePlan, encoder: VAEEncoder)
        throws -> (latents: Tensor, sampler: any Sampler, generator: TorchGenerator) {
        let sampler = try r.sampler.make(config: model.schedulerConfig, steps: r.steps, eta: r.eta)
        guard let noising = sampler as? any PartialDenoising else {
            throw DarkroomError.invalidArgument("sampler \(r.sampler.rawValue) does not support img2img")
        }
        guard p.startStep < sampler.timesteps.count else {
            throw DarkroomError.invalidArgument("the schedule has \(sampler.timesteps.count) steps; img2img would start at step \(p.startStep)")
        }
        var generator = TorchGenerator(seed: r.seed)
        let imageLatents = encoder.latents(for: image, generator: &generator)
        let noise = generator.randn(shape: imageLatents.shape)
        let latents = noising.addNoise(original: imageLatents, noise: noise, stepIndex: p.startStep)
        return (latents, sampler, generator)
    }

    /// The denoising loop from step `startStep` of `sampler`'s schedule (diffusers' img2img loop
    /// after `set_begin_index`). `progress` counts the steps run (0 ... steps − startStep) and may
    /// return false to cancel; `onStep` gets the absolute step index and the new latents.
    public func denoise(latents start: Tensor, embeddings: Tensor, request r: GenerationRequest, sampler s: any Sampler,
                        startStep: Int, generator: inout TorchGenerator,
                        progress: ((GenerationProgress) -> Bool)? = nil,
                        onStep: ((Int, Tensor) -> Void)? = nil) throws -> Tensor {
        try denoise(latents: start, embeddings: embeddings, request: r, sampler: s, startStep: startStep, generator: &generator,
                    progress: progress, observe: onStep.map { f in { step in f(step.step, step.latents[0]) } })
    }

    /// `denoise(latents:embeddings:request:sampler:startStep:generator:progress:onStep:)` with
    /// the full step report (latents and the estimated clean image).
    public func denoise(latents start: Tensor, embeddings: Tensor, request r: GenerationRequest, sampler s: any Sampler,
                        startStep: Int, generator: inout TorchGenerator,
                        progress: ((GenerationProgress) -> Bool)? = nil,
                        observe: ((DenoisingStep) -> Void)?) throws -> Tensor {
        var samplers = [s]
        var generators = [generator]
        defer { generator = generators[0] }
        return try samplingLoop(latents: [start], embeddings: embeddings, requests: [r], samplers: &samplers, startStep: startStep,
                                generators: &generators, progress: progress, onStep: observe)[0]
    }

    /// Image to image with the model's VAE encoder (loaded on first use, then kept).
    public func generate(_ r: GenerationRequest, initImage: RGBImage, strength: Float,
                         progress: ((GenerationProgress) -> Bool)? = nil,
                         onStep: ((DenoisingStep) -> Void)? = nil) throws -> GeneratedImage {
        // Validate before loading anything.
        _ = try plan(r, initImage: initImage, strength: strength)
        return try generate(r, initImage: initImage, strength: strength, encoder: loadVAEEncoder(), progress: progress, onStep: onStep)
    }

    /// Image to image with a given VAE encoder. `strength` in (0, 1]: 1 ignores the image's
    /// content (pure noise at the first step), small values keep it. Guidance rescale, clip skip
    /// and the prompt mode apply as in text-to-image (diffusers' img2img pipeline has no
    /// guidance rescale; Darkroom applies the same formula).
    public func generate(_ r: GenerationRequest, initImage: RGBImage, strength: Float, encoder: VAEEncoder,
                         progress: ((GenerationProgress) -> Bool)? = nil,
                         onStep: ((DenoisingStep) -> Void)? = nil) throws -> GeneratedImage {
        let began = Date()
        let p = try plan(r, initImage: initImage, strength: strength)
        if let progress, !progress(GenerationProgress(phase: .encoding, step: 0, totalSteps: p.stepsRun, elapsed: 0)) {
            throw DarkroomError.cancelled
        }
        let embeddings = try encode(requests: [r], guidance: usesGuidance(r.guidanceScale))
        let image = Self.preprocess(initImage, width: p.width, height: p.height)
        var (latents, sampler, generator) = try imageToImageStart(r, image: image, plan: p, encoder: encoder)
        latents = try denoise(latents: latents, embeddings: embeddings, request: r, sampler: sampler, startStep: p.startStep,
                              generator: &generator, progress: progress, observe: onStep)
        let decoded = decode(latents)
        return GeneratedImage(pixels: Self.unitPixels(decoded), image: RGBImage(decoded: decoded),
                              parameters: parameters(for: r, plan: p, strength: strength), seconds: Date().timeIntervalSince(began))
    }

    /// The metadata of an image-to-image result: the plan's size and A1111's "Denoising strength".
    public func parameters(for r: GenerationRequest, plan p: ImageToImagePlan, strength: Float) -> GenerationParameters {
        GenerationParameters(
            prompt: r.prompt, negativePrompt: r.negativePrompt, steps: r.steps, sampler: r.sampler.a1111Name,
            cfgScale: Double(r.guidanceScale), seed: r.seed, width: p.width, height: p.height, model: model.name,
            extra: [.init("Denoising strength", strength.description)] + Self.extraParameters(r))
    }
}

extension SamplerKind {
    /// The samplers image-to-image supports (those with a partial-schedule start).
    public static let imageToImageKinds: [SamplerKind] = [.ddim, .euler, .eulerA, .dpmpp2m, .dpmpp2mKarras]
}
