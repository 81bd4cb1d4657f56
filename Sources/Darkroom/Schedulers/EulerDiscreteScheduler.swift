import Foundation

/// diffusers' `EulerDiscreteScheduler` (0.42; A1111's "Euler"), deterministic (`s_churn` 0).
///
/// Where diffusers computes what:
/// - training σ: `((1 - ᾱ) / ᾱ) ** 0.5` on float32 tensors (`torchSqrt`);
/// - inference timesteps: numpy float32 (`linspace` is the default spacing when the config does
///   not name one, so SD 1.x folders get fractional timesteps such as 946.0909);
/// - inference σ: `np.interp` of the float32 training σ in float64, then float32;
/// - `init_noise_sigma`, `scale_model_input` and `step` in float32 0-d tensor arithmetic.
public struct EulerDiscreteScheduler: Sendable {
    /// The config with Euler's defaults for keys the file did not give.
    public let config: SchedulerConfig
    public let alphasCumprod: [Float]
    /// Float32 training σ for timesteps 0..<T.
    public let trainingSigmas: [Float]
    public private(set) var timesteps: [Float] = []
    /// σ for each step plus the final σ (0 by default): `timesteps.count + 1` entries.
    public private(set) var sigmas: [Float] = []

    public init(config: SchedulerConfig) throws {
        let c = config.withDefaults { $0.timestepSpacing = .linspace }
        try SigmaSchedule.rejectUnsupportedSigmas(c)
        if c.interpolationType != "linear" { throw c.unsupported("interpolation_type", c.interpolationType) }
        switch c.timestepType {
        case "discrete": break
        case "continuous":
            // diffusers switches to EDM-style timesteps only for v-prediction.
            if c.predictionType == .vPrediction { throw c.unsupported("timestep_type", "continuous") }
        default: throw c.unsupported("timestep_type", c.timestepType)
        }
        self.config = c
        alphasCumprod = SigmaSchedule.alphasCumprod(c, zeroSNRTail: true)
        trainingSigmas = SigmaSchedule.trainingSigmas(alphasCumprod)
    }

    /// diffusers' `set_timesteps(steps)`.
    public mutating func setTimesteps(_ steps: Int) throws {
        try SigmaSchedule.checkSteps(steps, config)
        var ts = SigmaSchedule.floatTimesteps(config, steps: steps)
        let train = trainingSigmas.map(Double.init)
        var s = ts.map { numpyInterp(Double($0), train) }
        if config.useKarrasSigmas {
            s = SigmaSchedule.karras(sigmaMin: config.sigmaMin ?? s[s.count - 1], sigmaMax: config.sigmaMax ?? s[0],
                                     count: steps)
            let logs = SigmaSchedule.logSigmas(trainingSigmas)
            ts = s.map { Float(SigmaSchedule.sigmaToT($0, logSigmas: logs)) }
        }
        let last: Float
        switch config.finalSigmasType {
        case .zero: last = 0
        case .sigmaMin: last = torchSqrt((1 - alphasCumprod[0]) / alphasCumprod[0])
        }
        timesteps = ts
        sigmas = s.map { Float($0) } + [last]
    }

    /// `init_noise_sigma`: σ_max for `linspace`/`trailing` spacing, sqrt(σ_max² + 1) for `leading`.
    public var initNoiseSigma: Float {
        let maxSigma = sigmas.max() ?? trainingSigmas.max() ?? 1
        return config.timestepSpacing == .leading ? torchSqrt(maxSigma * maxSigma + 1) : maxSigma
    }

    /// `sample / (σ² + 1) ** 0.5`.
    public func scaleModelInput(_ sample: Tensor, stepIndex: Int) -> Tensor {
        let sigma = sigmas[stepIndex]
        let d = torchSqrt(sigma * sigma + 1)
        return sample.mapped { $0 / d }
    }

    /// One Euler step from σ_i to σ_{i+1}.
    public func step(modelOutput: Tensor, stepIndex i: Int, sample: Tensor) -> Tensor {
        precondition(modelOutput.shape == sample.shape, "model output \(modelOutput.shape) vs sample \(sample.shape)")
        let sigma = sigmas[i]
        let sigmaHat = sigma * 1  // gamma = 0
        let dt = sigmas[i + 1] - sigmaHat
        let out = Tensor(shape: sample.shape)
        let x = sample.data, m = modelOutput.data, o = out.data
        // v-prediction: c_out = -σ / (σ² + 1) ** 0.5, c_skip = 1 / (σ² + 1).
        let s2p1 = sigma * sigma + 1
        let cOut = -sigma / torchSqrt(s2p1)
        for j in 0..<sample.count {
            let original: Float
            switch config.predictionType {
            case .epsilon: original = x[j] - sigmaHat * m[j]
            case .sample: original = m[j]
            case .vPrediction: original = m[j] * cOut + x[j] / s2p1
            }
            let derivative = (x[j] - original) / sigmaHat
            o[j] = x[j] + derivative * dt
        }
        return out
    }
}

extension EulerDiscreteScheduler: Sampler {
    public mutating func step(modelOutput: Tensor, stepIndex: Int, sample: Tensor, generator: inout TorchGenerator) -> Tensor {
        step(modelOutput: modelOutput, stepIndex: stepIndex, sample: sample)
    }
}
