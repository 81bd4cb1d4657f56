import Foundation

/// diffusers' `PNDMScheduler` (0.42): pseudo linear multistep (A1111's "PLMS"), optionally started
/// with Runge-Kutta steps.
///
/// `skip_prk_steps` decides the warm-up. Stable Diffusion's own scheduler configs set it to true:
/// the schedule is the n timesteps plus one repeat (n + 1 model evaluations, the second a Heun-like
/// correction of the first step). When the folder's config does not give it (a DDIM or Euler config,
/// as many converted folders ship), diffusers uses PNDM's default, false: 12 Runge-Kutta evaluations
/// over the last 4 timesteps, then n − 3 PLMS steps (n + 9 evaluations; needs n >= 4). Darkroom
/// follows diffusers in both cases. All arithmetic is float32 as in diffusers (`x ** 0.5` is
/// `torchSqrt`; Python constants such as 1/6 are rounded to float32 by torch).
public struct PNDMScheduler: Sendable {
    public let config: SchedulerConfig
    public let alphasCumprod: [Float]
    public let finalAlphaCumprod: Float
    /// Model evaluation timesteps: the Runge-Kutta ones (if any), then the PLMS ones.
    public private(set) var integerTimesteps: [Int] = []
    public private(set) var prkCount = 0
    public private(set) var numInferenceSteps = 0

    // diffusers' mutable state, reset by `setTimesteps`.
    private var counter = 0
    private var ets: [Tensor] = []
    private var curModelOutput: Tensor?
    private var curSample: Tensor?

    public var timesteps: [Float] { integerTimesteps.map(Float.init) }
    public var initNoiseSigma: Float { 1 }

    public init(config: SchedulerConfig) throws {
        let c = config.withDefaults {
            $0.setAlphaToOne = false
            $0.timestepSpacing = .leading
        }
        if c.predictionType == .sample { throw c.unsupported("prediction_type", "sample (PNDM)") }
        self.config = c
        // PNDM has no zero-terminal-SNR option: diffusers ignores rescale_betas_zero_snr here.
        var plain = c
        plain.rescaleBetasZeroSnr = false
        alphasCumprod = DDIMScheduler(config: plain).alphasCumprod
        finalAlphaCumprod = c.setAlphaToOne ? 1 : alphasCumprod[0]
    }

    public mutating func setTimesteps(_ steps: Int) throws {
        try SigmaSchedule.checkSteps(steps, config)
        let tTrain = config.numTrainTimesteps
        // Ascending base schedule; DDIM's helper gives it descending.
        var base = Array(DDIMScheduler.diffusersTimesteps(steps: steps, config: config).reversed())
        if base.count > steps { base.removeFirst(base.count - steps) }  // numpy's extra trailing -1
        var prk: [Int] = []
        var plms: [Int]
        if config.skipPrkSteps {
            plms = Array(base.dropLast()) + Array(base.dropLast().suffix(1)) + Array(base.suffix(1))
            plms.reverse()
        } else {
            guard steps >= 4 else {
                throw DarkroomError.invalidArgument(
                    "PNDM with Runge-Kutta warm-up (skip_prk_steps is not true in \(config.source.path)) needs at least 4 steps, got \(steps)")
            }
            let half = tTrain / steps / 2
            var pairs: [Int] = []
            for t in base.suffix(4) { pairs += [t, t + half] }
            var doubled: [Int] = []
            for t in pairs.dropLast() { doubled += [t, t] }
            prk = Array(doubled.dropFirst().dropLast().reversed())
            plms = Array(base.dropLast(3).reversed())
        }
        integerTimesteps = prk + plms
        prkCount = prk.count
        numInferenceSteps = steps
        counter = 0
        ets = []
        curModelOutput = nil
        curSample = nil
        // Every alphas_cumprod index the loop will use must exist (diffusers would fail or wrap).
        for (k, t) in integerTimesteps.enumerated() {
            let (a, _) = alphaIndices(counter: k, timestep: t)
            guard t >= 0, t < tTrain, a >= 0, a < tTrain else {
                throw DarkroomError.invalidArgument(
                    "PNDM with \(steps) steps and timestep_spacing \(config.timestepSpacing.rawValue) uses timestep "
                        + "\(max(t, a)), outside 0..<\(tTrain)")
            }
        }
    }

    /// (t, t_prev) whose ᾱ the update at evaluation `counter` of timestep `timestep` uses.
    private func alphaIndices(counter k: Int, timestep t: Int) -> (Int, Int) {
        let tTrain = config.numTrainTimesteps, n = numInferenceSteps
        if k < prkCount {
            let diff = k % 2 == 1 ? 0 : tTrain / n / 2
            return (integerTimesteps[k / 4 * 4], t - diff)
        }
        if k == 1 { return (t + tTrain / n, t) }  // only reached without Runge-Kutta steps
        return (t, t - tTrain / n)
    }

    public func scaleModelInput(_ sample: Tensor, stepIndex: Int) -> Tensor { sample }

    public mutating func step(modelOutput: Tensor, stepIndex k: Int, sample: Tensor) -> Tensor {
        precondition(modelOutput.shape == sample.shape, "model output \(modelOutput.shape) vs sample \(sample.shape)")
        precondition(k == counter, "PNDM steps must run in order (step \(k), expected \(counter))")
        let t = integerTimesteps[k]
        let (at, aPrev) = alphaIndices(counter: k, timestep: t)
        let result: Tensor
        if k < prkCount {
            result = prkStep(modelOutput, sample: sample, t: at, prev: aPrev)
        } else {
            result = plmsStep(modelOutput, sample: sample, t: at, prev: aPrev)
        }
        counter += 1
        return result
    }

    private mutating func prkStep(_ m: Tensor, sample: Tensor, t: Int, prev: Int) -> Tensor {
        let sixth = Float(1.0 / 6.0), third = Float(1.0 / 3.0)
        var output = m
        switch counter % 4 {
        case 0:
            curModelOutput = accumulate(curModelOutput, m, sixth)
            ets.append(m)
            curSample = sample
        case 1, 2:
            curModelOutput = accumulate(curModelOutput, m, third)
        default:
            output = accumulate(curModelOutput, m, sixth)
            curModelOutput = nil
        }
        return previousSample(curSample ?? sample, t: t, prev: prev, modelOutput: output)
    }

    /// `acc + c * m` (acc absent = diffusers' integer 0).
    private func accumulate(_ acc: Tensor?, _ m: Tensor, _ c: Float) -> Tensor {
        let out = Tensor(shape: m.shape)
        for j in 0..<m.count {
            let term = c * m.data[j]
            out.data[j] = acc.map { $0.data[j] + term } ?? term
        }
        return out
    }

    private mutating func plmsStep(_ m: Tensor, sample: Tensor, t: Int, prev: Int) -> Tensor {
        if counter != 1 {
            ets = Array(ets.suffix(3))
            ets.append(m)
        }
        var x = sample
        let e = ets.map(\.data)
        let n = ets.count
        let combined = Tensor(shape: m.shape)
        let o = combined.data
        if n == 1 && counter == 0 {
            for j in 0..<m.count { o[j] = m.data[j] }
            curSample = sample
        } else if n == 1 && counter == 1 {
            for j in 0..<m.count { o[j] = (m.data[j] + e[0][j]) / 2 }
            x = curSample!
            curSample = nil
        } else if n == 2 {
            for j in 0..<m.count { o[j] = (3 * e[1][j] - e[0][j]) / 2 }
        } else if n == 3 {
            for j in 0..<m.count { o[j] = (23 * e[2][j] - 16 * e[1][j] + 5 * e[0][j]) / 12 }
        } else {
            let c = Float(1.0 / 24.0)
            for j in 0..<m.count { o[j] = c * (55 * e[3][j] - 59 * e[2][j] + 37 * e[1][j] - 9 * e[0][j]) }
        }
        return previousSample(x, t: t, prev: prev, modelOutput: combined)
    }

    /// diffusers' `_get_prev_sample` (PNDM paper, eq. 9).
    private func previousSample(_ sample: Tensor, t: Int, prev: Int, modelOutput: Tensor) -> Tensor {
        let a = alphasCumprod[t]
        let aPrev = prev >= 0 ? alphasCumprod[prev] : finalAlphaCumprod
        let b: Float = 1 - a
        let bPrev: Float = 1 - aPrev
        let sqrtA = torchSqrt(a), sqrtB = torchSqrt(b)
        let sampleCoeff = torchSqrt(aPrev / a)
        let denom = a * torchSqrt(bPrev) + torchSqrt(a * b * aPrev)
        let diff = aPrev - a
        let out = Tensor(shape: sample.shape)
        let x = sample.data, m = modelOutput.data
        let v = config.predictionType == .vPrediction
        for j in 0..<sample.count {
            let eps = v ? sqrtA * m[j] + sqrtB * x[j] : m[j]
            out.data[j] = sampleCoeff * x[j] - diff * eps / denom
        }
        return out
    }
}

extension PNDMScheduler: Sampler {
    public mutating func step(modelOutput: Tensor, stepIndex: Int, sample: Tensor, generator: inout TorchGenerator) -> Tensor {
        step(modelOutput: modelOutput, stepIndex: stepIndex, sample: sample)
    }
}
