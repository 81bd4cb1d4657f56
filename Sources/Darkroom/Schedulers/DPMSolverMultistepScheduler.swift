import Foundation

/// diffusers' `DPMSolverMultistepScheduler` (0.42) with `algorithm_type` "dpmsolver++" (A1111's
/// "DPM++ 2M" at `solver_order` 2, "DPM++ 2M Karras" with `use_karras_sigmas`).
///
/// Where diffusers computes what: integer timesteps and σ interpolation in numpy float64 (Karras
/// σ too); each update in 0-d float32 tensors, where `torch.log`, `torch.exp` and `** 0.5` are
/// MKL's (`torchLog`, `torchExp`, `torchSqrt`) and `1 / x` is `reciprocal(x)`.
public struct DPMSolverMultistepScheduler: Sendable {
    public let config: SchedulerConfig
    public let alphasCumprod: [Float]
    public let trainingSigmas: [Float]
    /// Integer timesteps of the schedule, in evaluation order.
    public private(set) var integerTimesteps: [Int] = []
    /// σ per step plus the final σ.
    public private(set) var sigmas: [Float] = []
    /// The last `solver_order` converted model outputs (x₀ predictions), oldest first.
    private var modelOutputs: [Tensor?] = []
    private var lowerOrderNums = 0

    public var timesteps: [Float] { integerTimesteps.map(Float.init) }
    public var initNoiseSigma: Float { 1 }

    public init(config: SchedulerConfig) throws {
        let c = config.withDefaults { $0.timestepSpacing = .linspace }
        try SigmaSchedule.rejectUnsupportedSigmas(c)
        if c.useLuLambdas { throw c.unsupported("use_lu_lambdas", "true") }
        if c.useFlowSigmas { throw c.unsupported("use_flow_sigmas", "true") }
        // diffusers maps the DEIS name onto DPM-Solver++.
        guard c.algorithmType == "dpmsolver++" || c.algorithmType == "deis" else {
            throw c.unsupported("algorithm_type", c.algorithmType)
        }
        guard ["midpoint", "heun", "logrho", "bh1", "bh2"].contains(c.solverType) else {
            throw c.unsupported("solver_type", c.solverType)
        }
        guard (1...3).contains(c.solverOrder) else { throw c.unsupported("solver_order", String(c.solverOrder)) }
        if let v = c.varianceType, v == "learned" || v == "learned_range" { throw c.unsupported("variance_type", v) }
        self.config = c
        alphasCumprod = SigmaSchedule.alphasCumprod(c, zeroSNRTail: true)
        trainingSigmas = SigmaSchedule.trainingSigmas(alphasCumprod)
    }

    /// Whether the config's solver type is Heun's (diffusers maps logrho/bh1/bh2 to midpoint).
    private var heun: Bool { config.solverType == "heun" }

    public mutating func setTimesteps(_ steps: Int) throws {
        try SigmaSchedule.checkSteps(steps, config)
        let tTrain = config.numTrainTimesteps
        // Timesteps whose λ = log α − log σ lies below lambda_min_clipped are cut (none by default).
        let lambdas = alphasCumprod.map { torchLog(torchSqrt($0)) - torchLog(torchSqrt(1 - $0)) }
        let bound = Float(config.lambdaMinClipped)
        let clipped = Array(lambdas.reversed()).firstIndex(where: { $0 >= bound }) ?? lambdas.count
        let lastTimestep = tTrain - clipped
        var ts: [Int]
        switch config.timestepSpacing {
        case .linspace:
            ts = Array(numpyLinspace(0, Double(lastTimestep - 1), steps + 1).map { Int($0.rounded(.toNearestOrEven)) }
                .reversed().dropLast())
        case .leading:
            let ratio = lastTimestep / (steps + 1)
            ts = (0...steps).reversed().dropLast().map { $0 * ratio + config.stepsOffset }
        case .trailing:
            let v = numpyDescendingArangeRounded(from: Double(lastTimestep), step: Double(tTrain) / Double(steps))
            ts = v.prefix(steps).map { Int($0) - 1 }
        }
        var s: [Double]
        if config.useKarrasSigmas {
            let train = trainingSigmas
            s = SigmaSchedule.karras(sigmaMin: config.sigmaMin ?? Double(train[0]),
                                     sigmaMax: config.sigmaMax ?? Double(train[train.count - 1]), count: steps)
            let logs = SigmaSchedule.logSigmas(train)
            // Rounded for every beta schedule but the cosine one, whose fractions int64 truncates.
            let round = config.betaSchedule != .squaredcosCapV2
            ts = s.map {
                let t = SigmaSchedule.sigmaToT($0, logSigmas: logs)
                return Int(round ? t.rounded(.toNearestOrEven) : t)
            }
        } else {
            let train = trainingSigmas.map(Double.init)
            s = ts.map { numpyInterp(Double($0), train) }
        }
        let last: Float
        switch config.finalSigmasType {
        case .zero: last = 0
        case .sigmaMin: last = torchSqrt((1 - alphasCumprod[0]) / alphasCumprod[0])
        }
        integerTimesteps = ts
        sigmas = s.map { Float($0) } + [last]
        modelOutputs = Array(repeating: nil, count: config.solverOrder)
        lowerOrderNums = 0
    }

    public func scaleModelInput(_ sample: Tensor, stepIndex: Int) -> Tensor { sample }

    /// (α_t, σ_t) of a noise level σ: α = 1 / sqrt(σ² + 1), σ_t = σ α.
    private static func alphaSigma(_ sigma: Float) -> (alpha: Float, sigma: Float) {
        let alpha = 1 / torchSqrt(sigma * sigma + 1)
        return (alpha, sigma * alpha)
    }

    private static func lambda(_ a: (alpha: Float, sigma: Float)) -> Float { torchLog(a.alpha) - torchLog(a.sigma) }

    /// diffusers' `convert_model_output`: the x₀ prediction.
    private func dataPrediction(_ modelOutput: Tensor, sample: Tensor, stepIndex i: Int) -> Tensor {
        let (alpha, sigma) = Self.alphaSigma(sigmas[i])
        let x = sample.data, m = modelOutput.data
        let out = Tensor(shape: sample.shape)
        for j in 0..<sample.count {
            switch config.predictionType {
            case .epsilon: out.data[j] = (x[j] - sigma * m[j]) / alpha
            case .sample: out.data[j] = m[j]
            case .vPrediction: out.data[j] = alpha * x[j] - sigma * m[j]
            }
        }
        return out
    }

    /// One multistep update; the model outputs of earlier steps are kept in the scheduler.
    public mutating func step(modelOutput: Tensor, stepIndex i: Int, sample: Tensor) -> Tensor {
        precondition(modelOutput.shape == sample.shape, "model output \(modelOutput.shape) vs sample \(sample.shape)")
        let n = integerTimesteps.count
        let order = config.solverOrder
        let lowerFinal = i == n - 1
            && (config.eulerAtFinal || (config.lowerOrderFinal && n < 15) || config.finalSigmasType == .zero)
        let lowerSecond = i == n - 2 && config.lowerOrderFinal && n < 15
        let x0 = dataPrediction(modelOutput, sample: sample, stepIndex: i)
        modelOutputs.removeFirst()
        modelOutputs.append(x0)
        let out: Tensor
        if order == 1 || lowerOrderNums < 1 || lowerFinal {
            out = firstOrder(x0, sample: sample, i)
        } else if order == 2 || lowerOrderNums < 2 || lowerSecond {
            out = secondOrder(sample: sample, i)
        } else {
            out = thirdOrder(sample: sample, i)
        }
        if lowerOrderNums < order { lowerOrderNums += 1 }
        return out
    }

    private func firstOrder(_ m: Tensor, sample: Tensor, _ i: Int) -> Tensor {
        let t = Self.alphaSigma(sigmas[i + 1]), s = Self.alphaSigma(sigmas[i])
        let h = Self.lambda(t) - Self.lambda(s)
        let a = t.sigma / s.sigma
        let b = t.alpha * (torchExp(-h) - 1)
        let out = Tensor(shape: sample.shape)
        for j in 0..<sample.count { out.data[j] = a * sample.data[j] - b * m.data[j] }
        return out
    }

    private func secondOrder(sample: Tensor, _ i: Int) -> Tensor {
        let t = Self.alphaSigma(sigmas[i + 1]), s0 = Self.alphaSigma(sigmas[i]), s1 = Self.alphaSigma(sigmas[i - 1])
        let lt = Self.lambda(t), l0 = Self.lambda(s0), l1 = Self.lambda(s1)
        let m0 = modelOutputs[modelOutputs.count - 1]!.data, m1 = modelOutputs[modelOutputs.count - 2]!.data
        let h = lt - l0, h0 = l0 - l1
        let r0 = h0 / h
        let c1 = 1 / r0
        let e = torchExp(-h) - 1
        let a = t.sigma / s0.sigma
        let b = t.alpha * e
        let b1 = heun ? t.alpha * (e / h + 1) : 0.5 * b
        let out = Tensor(shape: sample.shape)
        for j in 0..<sample.count {
            let d1 = c1 * (m0[j] - m1[j])
            let base = a * sample.data[j] - b * m0[j]
            out.data[j] = heun ? base + b1 * d1 : base - b1 * d1
        }
        return out
    }

    private func thirdOrder(sample: Tensor, _ i: Int) -> Tensor {
        let t = Self.alphaSigma(sigmas[i + 1]), s0 = Self.alphaSigma(sigmas[i])
        let s1 = Self.alphaSigma(sigmas[i - 1]), s2 = Self.alphaSigma(sigmas[i - 2])
        let lt = Self.lambda(t), l0 = Self.lambda(s0), l1 = Self.lambda(s1), l2 = Self.lambda(s2)
        let k = modelOutputs.count
        let m0 = modelOutputs[k - 1]!.data, m1 = modelOutputs[k - 2]!.data, m2 = modelOutputs[k - 3]!.data
        let h = lt - l0, h0 = l0 - l1, h1 = l1 - l2
        let r0 = h0 / h, r1 = h1 / h
        let c10 = 1 / r0, c11 = 1 / r1
        let rs = r0 + r1
        let cD1 = r0 / rs, cD2 = 1 / rs
        let e = torchExp(-h) - 1
        let a = t.sigma / s0.sigma
        let b = t.alpha * e
        let b1 = t.alpha * (e / h + 1)
        let b2 = t.alpha * ((e + h) / (h * h) - 0.5)
        let out = Tensor(shape: sample.shape)
        for j in 0..<sample.count {
            let d10 = c10 * (m0[j] - m1[j]), d11 = c11 * (m1[j] - m2[j])
            let d1 = d10 + cD1 * (d10 - d11)
            let d2 = cD2 * (d10 - d11)
            out.data[j] = a * sample.data[j] - b * m0[j] + b1 * d1 - b2 * d2
        }
        return out
    }
}

extension DPMSolverMultistepScheduler: Sampler {
    public mutating func step(modelOutput: Tensor, stepIndex: Int, sample: Tensor, generator: inout TorchGenerator) -> Tensor {
        step(modelOutput: modelOutput, stepIndex: stepIndex, sample: sample)
    }
}
