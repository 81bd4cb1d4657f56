import Foundation

/// diffusers' `EulerAncestralDiscreteScheduler` (0.42; A1111's "Euler a"): an Euler step down to
/// σ_down followed by fresh noise of size σ_up, drawn with `randn(sample.shape)` from the pipeline's
/// generator after the initial latents (diffusers' `randn_tensor`), every step including the last.
/// The schedule is computed as in `EulerDiscreteScheduler` (no Karras option in this class).
public struct EulerAncestralDiscreteScheduler: Sendable {
    public let config: SchedulerConfig
    public let alphasCumprod: [Float]
    public let trainingSigmas: [Float]
    public private(set) var timesteps: [Float] = []
    /// σ per step plus a final 0.
    public private(set) var sigmas: [Float] = []

    public init(config: SchedulerConfig) throws {
        let c = config.withDefaults { $0.timestepSpacing = .linspace }
        // diffusers raises NotImplementedError for sample prediction in `step`.
        if c.predictionType == .sample { throw c.unsupported("prediction_type", "sample (Euler ancestral)") }
        self.config = c
        alphasCumprod = SigmaSchedule.alphasCumprod(c, zeroSNRTail: true)
        trainingSigmas = SigmaSchedule.trainingSigmas(alphasCumprod)
    }

    public mutating func setTimesteps(_ steps: Int) throws {
        try SigmaSchedule.checkSteps(steps, config)
        timesteps = SigmaSchedule.floatTimesteps(config, steps: steps)
        let train = trainingSigmas.map(Double.init)
        sigmas = timesteps.map { Float(numpyInterp(Double($0), train)) } + [0]
    }

    public var initNoiseSigma: Float {
        let maxSigma = sigmas.max() ?? trainingSigmas.max() ?? 1
        return config.timestepSpacing == .leading ? torchSqrt(maxSigma * maxSigma + 1) : maxSigma
    }

    public func scaleModelInput(_ sample: Tensor, stepIndex: Int) -> Tensor {
        let sigma = sigmas[stepIndex]
        let d = torchSqrt(sigma * sigma + 1)
        return sample.mapped { $0 / d }
    }

    /// One ancestral step; draws `sample.count` normals from `generator`.
    public func step(modelOutput: Tensor, stepIndex i: Int, sample: Tensor, generator: inout TorchGenerator) -> Tensor {
        precondition(modelOutput.shape == sample.shape, "model output \(modelOutput.shape) vs sample \(sample.shape)")
        let sigma = sigmas[i], sigmaTo = sigmas[i + 1]
        let from2 = sigma * sigma, to2 = sigmaTo * sigmaTo
        let sigmaUp = torchSqrt(to2 * (from2 - to2) / from2)
        let sigmaDown = torchSqrt(to2 - sigmaUp * sigmaUp)
        let dt = sigmaDown - sigma
        let s2p1 = from2 + 1
        let cOut = -sigma / torchSqrt(s2p1)
        let out = Tensor(shape: sample.shape)
        let x = sample.data, m = modelOutput.data, o = out.data
        for j in 0..<sample.count {
            let original = config.predictionType == .vPrediction ? m[j] * cOut + x[j] / s2p1 : x[j] - sigma * m[j]
            let derivative = (x[j] - original) / sigma
            o[j] = x[j] + derivative * dt
        }
        let noise = generator.randn(count: sample.count)
        for j in 0..<sample.count { o[j] = o[j] + noise[j] * sigmaUp }
        return out
    }
}

/// `step(modelOutput:stepIndex:sample:generator:)` above is the `Sampler` requirement.
extension EulerAncestralDiscreteScheduler: Sampler {}
