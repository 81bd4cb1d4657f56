import Foundation

/// diffusers' `DDIMScheduler` (0.42), reproduced operation by operation in float32 so that a run
/// matches diffusers bit for bit on the same model outputs.
///
/// Where diffusers computes what (this is why the code is written the way it is):
/// - betas: `torch.linspace(..., dtype=float32)` (start + step*i for the first half, end - step*(n-1-i)
///   for the second, each a fused multiply-add in torch's kernel), squared for `scaled_linear`;
///   `squaredcos_cap_v2` in Python float64, then rounded to float32.
/// - `alphas_cumprod = torch.cumprod(1 - betas)`: torch's CPU cumprod accumulates float32 inputs in
///   float64 and rounds each partial product to float32 (a float32 running product differs).
/// - `step`: `alpha_prod_t` and friends are 0-d float32 tensors, so every scalar is float32;
///   `x ** 0.5` is torch's `sqrt` (MKL's, see `torchSqrt`), `x ** 2` is `x * x`; each op rounds once.
/// - `prev_timestep = t - T // n` for every spacing, as diffusers does (issue #12633: with
///   `linspace` or `trailing` spacing this is not the next timestep of the schedule; kept for parity).
public struct DDIMScheduler: Sendable {
    public let config: SchedulerConfig
    public let betas: [Float]
    public let alphasCumprod: [Float]
    /// `alpha_prod_t_prev` for the last step: 1, or `alphas_cumprod[0]` when `set_alpha_to_one` is false.
    public let finalAlphaCumprod: Float
    /// The schedule set by `setTimesteps`, as diffusers' integer `timesteps`.
    public private(set) var integerTimesteps: [Int] = []
    public private(set) var numInferenceSteps: Int?
    /// η used when stepping through the `Sampler` interface.
    public var eta: Float = 0

    public var initNoiseSigma: Float { 1 }

    public init(config: SchedulerConfig) {
        self.config = config
        let t = config.numTrainTimesteps
        var b: [Float]
        switch config.betaSchedule {
        case .linear:
            b = DDIMScheduler.torchLinspace(Float(config.betaStart), Float(config.betaEnd), t)
        case .scaledLinear:
            b = DDIMScheduler.torchLinspace(Float(pow(config.betaStart, 0.5)), Float(pow(config.betaEnd, 0.5)), t)
            b = b.map { $0 * $0 }
        case .squaredcosCapV2:
            b = DDIMScheduler.cosineBetas(t)
        }
        if config.rescaleBetasZeroSnr { b = DDIMScheduler.rescaleZeroTerminalSNR(b) }
        betas = b
        alphasCumprod = DDIMScheduler.cumprod(b.map { 1 - $0 })
        finalAlphaCumprod = config.setAlphaToOne ? 1 : alphasCumprod[0]
    }

    /// diffusers' `set_timesteps`. Throws for `steps` outside 1...num_train_timesteps and for
    /// schedules that would index outside `alphas_cumprod` (e.g. `leading` with `steps_offset` 1 and
    /// steps == T gives timestep T, where diffusers fails with an IndexError, issue #10003).
    public mutating func setTimesteps(_ steps: Int) throws {
        let tTrain = config.numTrainTimesteps
        guard steps >= 1 else { throw DarkroomError.invalidArgument("number of steps must be at least 1, got \(steps)") }
        guard steps <= tTrain else {
            throw DarkroomError.invalidArgument(
                "number of steps (\(steps)) cannot be larger than num_train_timesteps (\(tTrain))")
        }
        var ts = DDIMScheduler.diffusersTimesteps(steps: steps, config: config)
        if config.timestepSpacing == .trailing && ts.count > steps {
            // numpy's float arange sometimes yields one element more than `steps` (e.g. T=1000,
            // steps=61); that extra timestep is always -1, which diffusers would run as a real step
            // with alphas_cumprod[-1] (Python wraps to the last entry). Darkroom runs `steps` steps.
            ts.removeLast(ts.count - steps)
        }
        if let bad = ts.first(where: { $0 < 0 || $0 >= tTrain }) {
            throw DarkroomError.invalidArgument(
                "\(steps) steps with timestep_spacing \(config.timestepSpacing.rawValue) and steps_offset "
                    + "\(config.stepsOffset) give timestep \(bad), outside 0..<\(tTrain)")
        }
        integerTimesteps = ts
        numInferenceSteps = steps
    }

    /// The timesteps diffusers' `set_timesteps` produces (numpy float64 semantics), unfiltered.
    static func diffusersTimesteps(steps n: Int, config: SchedulerConfig) -> [Int] {
        let tTrain = config.numTrainTimesteps
        switch config.timestepSpacing {
        case .leading:
            let ratio = tTrain / n
            return (0..<n).reversed().map { $0 * ratio + config.stepsOffset }
        case .linspace:
            // np.linspace(0, T-1, n): i * step + 0 with the last value set to the end point exactly.
            let end = Double(tTrain - 1)
            var v = [Double](repeating: 0, count: n)
            if n > 1 {
                let step = end / Double(n - 1)
                for i in 0..<n { v[i] = Double(i) * step + 0 }
                v[n - 1] = end
            }
            return v.reversed().map { Int($0.rounded(.toNearestOrEven)) }
        case .trailing:
            // np.arange(T, 0, -T/n): length ceil((0 - T) / -ratio); element 1 is T - ratio and element
            // i >= 2 is T + i * ((T - ratio) - T), as numpy's fill computes it.
            let start = Double(tTrain)
            let stepValue = -(start / Double(n))
            let length = Int(((0 - start) / stepValue).rounded(.up))
            var v = [Double](repeating: 0, count: max(length, 0))
            if length > 0 { v[0] = start }
            if length > 1 {
                v[1] = start + stepValue
                let delta = v[1] - start
                if length > 2 { for i in 2..<length { v[i] = start + Double(i) * delta } }
            }
            return v.map { Int($0.rounded(.toNearestOrEven)) - 1 }
        }
    }

    /// One step of diffusers' `DDIMScheduler.step` (use_clipped_model_output=False). With eta > 0,
    /// the variance noise is `randn(sample.shape)` drawn from `generator`, as diffusers' `randn_tensor`.
    public func step(modelOutput: Tensor, timestep: Int, sample: Tensor, eta: Float,
                     generator: inout TorchGenerator) -> Tensor {
        guard let n = numInferenceSteps else { preconditionFailure("call setTimesteps before step") }
        precondition(modelOutput.shape == sample.shape, "model output \(modelOutput.shape) vs sample \(sample.shape)")
        let tTrain = config.numTrainTimesteps
        precondition(timestep >= 0 && timestep < tTrain, "timestep \(timestep) outside 0..<\(tTrain)")
        let prev = timestep - tTrain / n

        let alphaProd = alphasCumprod[timestep]
        let alphaProdPrev = prev >= 0 ? alphasCumprod[prev] : finalAlphaCumprod
        let betaProd: Float = 1 - alphaProd
        let sqrtAlpha = torchSqrt(alphaProd)
        let sqrtBeta = torchSqrt(betaProd)

        // _get_variance, all in 0-d float32 tensors.
        let betaProdPrev: Float = 1 - alphaProdPrev
        let variance = (betaProdPrev / betaProd) * (1 - alphaProd / alphaProdPrev)
        let stdDev = eta * torchSqrt(variance)
        let directionCoef = torchSqrt((1 - alphaProdPrev) - stdDev * stdDev)
        let sqrtAlphaPrev = torchSqrt(alphaProdPrev)

        let clip = config.clipSample
        let range = Float(config.clipSampleRange)
        let kind = config.predictionType
        let count = sample.count
        let out = Tensor(shape: sample.shape)
        let x = sample.data, m = modelOutput.data, o = out.data
        for i in 0..<count {
            var original: Float
            let epsilon: Float
            switch kind {
            case .epsilon:
                original = (x[i] - sqrtBeta * m[i]) / sqrtAlpha
                epsilon = m[i]
            case .sample:
                original = m[i]
                epsilon = (x[i] - sqrtAlpha * original) / sqrtBeta  // from the unclipped prediction
            case .vPrediction:
                original = sqrtAlpha * x[i] - sqrtBeta * m[i]
                epsilon = sqrtAlpha * m[i] + sqrtBeta * x[i]
            }
            // torch.clamp; NaN stays NaN.
            if clip, !original.isNaN { original = Swift.min(Swift.max(original, -range), range) }
            let direction = directionCoef * epsilon
            o[i] = sqrtAlphaPrev * original + direction
        }
        if eta > 0 {
            let noise = generator.randn(count: count)
            for i in 0..<count { o[i] = o[i] + stdDev * noise[i] }
        }
        return out
    }

    /// diffusers' `add_noise` for one timestep: sqrt(a_t) * original + sqrt(1 - a_t) * noise.
    public func addNoise(original: Tensor, noise: Tensor, timestep: Int) -> Tensor {
        precondition(original.shape == noise.shape, "original \(original.shape) vs noise \(noise.shape)")
        precondition(timestep >= 0 && timestep < config.numTrainTimesteps, "timestep \(timestep) out of range")
        let a = alphasCumprod[timestep]
        let sa = torchSqrt(a)
        let sb = torchSqrt(1 - a)
        let out = Tensor(shape: original.shape)
        for i in 0..<original.count { out.data[i] = sa * original.data[i] + sb * noise.data[i] }
        return out
    }

    // MARK: - torch float32 reproductions

    /// `torch.linspace(start, end, n, dtype=torch.float32)` on the CPU.
    static func torchLinspace(_ start: Float, _ end: Float, _ n: Int) -> [Float] {
        if n == 1 { return [start] }
        let step = (end - start) / Float(n - 1)
        let half = n / 2
        return (0..<n).map { i in
            i < half ? start.addingProduct(step, Float(i)) : end.addingProduct(-step, Float(n - 1 - i))
        }
    }

    /// `torch.cumprod` of a float32 vector on the CPU: float64 accumulator, float32 outputs.
    static func cumprod(_ x: [Float]) -> [Float] {
        var acc = 1.0
        return x.map { v in
            acc *= Double(v)
            return Float(acc)
        }
    }

    /// diffusers' `betas_for_alpha_bar` with the cosine transform, max_beta 0.999 (Python floats).
    static func cosineBetas(_ n: Int) -> [Float] {
        func alphaBar(_ t: Double) -> Double {
            let c = cos((t + 0.008) / 1.008 * Double.pi / 2)
            return c * c
        }
        return (0..<n).map { i in
            let t1 = Double(i) / Double(n)
            let t2 = Double(i + 1) / Double(n)
            return Float(Swift.min(1 - alphaBar(t2) / alphaBar(t1), 0.999))
        }
    }

    /// diffusers' `rescale_zero_terminal_snr`, in float32 tensor arithmetic.
    static func rescaleZeroTerminalSNR(_ betas: [Float]) -> [Float] {
        var root = cumprod(betas.map { 1 - $0 }).map(torchSqrt)
        let first = root[0], last = root[root.count - 1]
        let scale = first / (first - last)
        for i in root.indices { root[i] = (root[i] - last) * scale }
        let bar = root.map { $0 * $0 }
        var alphas = [Float](repeating: 0, count: bar.count)
        alphas[0] = bar[0]
        for i in 1..<bar.count { alphas[i] = bar[i] / bar[i - 1] }
        return alphas.map { 1 - $0 }
    }
}
