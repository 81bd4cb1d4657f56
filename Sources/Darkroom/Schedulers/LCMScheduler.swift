import Foundation

/// diffusers' `LCMScheduler` (0.42), for latent consistency models (LCM-distilled UNets, usually
/// 2-8 steps).
///
/// Timesteps are a subset of the distillation schedule (`original_inference_steps`, 50 by
/// default: 999, 979, ..., 19), independent of `timestep_spacing`. Each step predicts the clean
/// latents through the consistency boundary condition and, except after the last step, noises them
/// again to the next timestep with `randn(sample.shape)` from the pipeline's generator.
///
/// What a pipeline must do for LCM-distilled models (diffusers' StableDiffusionPipeline): when the
/// UNet config has `time_cond_proj_dim`, classifier-free guidance is off (one UNet batch, no
/// negative prompt) and the guidance scale w enters the UNet instead as
/// `LCMScheduler.guidanceScaleEmbedding(w - 1, dimension: time_cond_proj_dim)`, passed as the
/// UNet's `condition` at every step. Other UNets with this scheduler use ordinary guidance.
public struct LCMScheduler: Sendable {
    public let config: SchedulerConfig
    public let alphasCumprod: [Float]
    public let finalAlphaCumprod: Float
    public private(set) var integerTimesteps: [Int] = []

    public var timesteps: [Float] { integerTimesteps.map(Float.init) }
    public var initNoiseSigma: Float { 1 }

    public init(config: SchedulerConfig) throws {
        let c = config.withDefaults {
            $0.betaStart = 0.00085
            $0.betaEnd = 0.012
            $0.betaSchedule = .scaledLinear
            $0.clipSample = false
        }
        guard c.originalInferenceSteps >= 1 else {
            throw DarkroomError.invalidConfig(path: c.source.path, key: "original_inference_steps",
                                              reason: "must be at least 1, got \(c.originalInferenceSteps)")
        }
        self.config = c
        alphasCumprod = DDIMScheduler(config: c).alphasCumprod
        finalAlphaCumprod = c.setAlphaToOne ? 1 : alphasCumprod[0]
    }

    /// diffusers' `set_timesteps(steps)` (strength 1).
    public mutating func setTimesteps(_ steps: Int) throws {
        try SigmaSchedule.checkSteps(steps, config)
        let tTrain = config.numTrainTimesteps
        let original = config.originalInferenceSteps
        guard original <= tTrain else {
            throw DarkroomError.invalidConfig(path: config.source.path, key: "original_inference_steps",
                                              reason: "\(original) is larger than num_train_timesteps \(tTrain)")
        }
        guard steps <= original else {
            throw DarkroomError.invalidArgument(
                "LCM cannot run more steps (\(steps)) than original_inference_steps (\(original))")
        }
        let k = tTrain / original
        let origin = (1...original).map { $0 * k - 1 }.reversed().map { $0 }
        let picks = numpyLinspace(0, Double(origin.count), steps, endpoint: false).map { Int($0.rounded(.down)) }
        integerTimesteps = picks.map { origin[$0] }
    }

    public func scaleModelInput(_ sample: Tensor, stepIndex: Int) -> Tensor { sample }

    /// The boundary-condition scalings (c_skip, c_out) at timestep `t` with σ_data = 0.5, in
    /// float32 as torch evaluates them on the int64 timestep tensor.
    static func boundaryScalings(_ t: Int, timestepScaling: Double) -> (skip: Float, out: Float) {
        let scaled = Float(t) * Float(timestepScaling)
        let d = scaled * scaled + 0.25
        return ((1 / d) * 0.25, scaled / torchSqrt(d))
    }

    public func step(modelOutput: Tensor, stepIndex i: Int, sample: Tensor, generator: inout TorchGenerator) -> Tensor {
        precondition(modelOutput.shape == sample.shape, "model output \(modelOutput.shape) vs sample \(sample.shape)")
        let t = integerTimesteps[i]
        let last = i == integerTimesteps.count - 1
        let prevT = last ? t : integerTimesteps[i + 1]
        let a = alphasCumprod[t]
        let aPrev = prevT >= 0 ? alphasCumprod[prevT] : finalAlphaCumprod
        let b: Float = 1 - a, bPrev: Float = 1 - aPrev
        let (cSkip, cOut) = Self.boundaryScalings(t, timestepScaling: config.timestepScaling)
        let sa = torchSqrt(a), sb = torchSqrt(b)
        let range = Float(config.clipSampleRange)
        let out = Tensor(shape: sample.shape)
        let x = sample.data, m = modelOutput.data, o = out.data
        for j in 0..<sample.count {
            var original: Float
            switch config.predictionType {
            case .epsilon: original = (x[j] - sb * m[j]) / sa
            case .sample: original = m[j]
            case .vPrediction: original = sa * x[j] - sb * m[j]
            }
            if config.clipSample, !original.isNaN { original = Swift.min(Swift.max(original, -range), range) }
            o[j] = cOut * original + cSkip * x[j]
        }
        guard !last else { return out }
        let noise = generator.randn(count: sample.count)
        let sap = torchSqrt(aPrev), sbp = torchSqrt(bPrev)
        for j in 0..<sample.count { o[j] = sap * o[j] + sbp * noise[j] }
        return out
    }

    /// diffusers' `get_guidance_scale_embedding(w, embedding_dim)` for one guidance value: the
    /// vector [sin(1000 w f_k), cos(1000 w f_k)] with f_k = exp(−k ln(10000) / (half − 1)),
    /// k < half = dimension / 2, zero-padded to odd dimensions; shape [1, dimension]. Pass w − 1
    /// for a guidance scale w, as StableDiffusionPipeline does. Exponentials and ln(10000) are
    /// torch's (MKL) float32 ones; sin/cos are correctly rounded (torch's are within 1 ulp).
    public static func guidanceScaleEmbedding(_ w: Float, dimension: Int) -> Tensor {
        precondition(dimension >= 1, "embedding dimension must be positive")
        let half = dimension / 2
        let out = Tensor.zeros([1, dimension])
        guard half > 0 else { return out }
        let scaled = w * 1000
        // half == 1 divides by zero in torch too (the single frequency becomes exp(-0 * inf) = NaN).
        let rate = torchLog(10000) / Float(half - 1)
        for k in 0..<half {
            let arg = scaled * torchExp(Float(k) * -rate)
            out.data[k] = Float(Foundation.sin(Double(arg)))
            out.data[half + k] = Float(Foundation.cos(Double(arg)))
        }
        return out
    }
}

extension LCMScheduler: Sampler {}
