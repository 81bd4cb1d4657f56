import Foundation

/// Pieces shared by the samplers that work in noise levels σ = sqrt((1 − ᾱ) / ᾱ) (Euler, Euler
/// ancestral, DPM-Solver), computed with the precision diffusers uses for each: the training
/// schedule in float32 torch arithmetic, the inference schedule in numpy float64, rounded to float32
/// at the end.
enum SigmaSchedule {
    /// `alphas_cumprod` as DDIM builds it; with zero-terminal-SNR rescaling, Euler and DPM-Solver
    /// then set the last entry to 2^-24 so that the first σ is finite (about 4096).
    static func alphasCumprod(_ c: SchedulerConfig, zeroSNRTail: Bool) -> [Float] {
        var a = DDIMScheduler(config: c).alphasCumprod
        if c.rescaleBetasZeroSnr && zeroSNRTail { a[a.count - 1] = 0x1p-24 }
        return a
    }

    /// `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5` on the float32 tensor.
    static func trainingSigmas(_ alphasCumprod: [Float]) -> [Float] {
        alphasCumprod.map { torchSqrt((1 - $0) / $0) }
    }

    /// The float32 inference timesteps of Euler-type samplers (`np.float32` arrays): `linspace`
    /// keeps fractions, `leading` and `trailing` are whole numbers. numpy's `trailing` arange can
    /// yield one extra timestep (-1) for some step counts; Darkroom keeps the first `n`, as DDIM does.
    static func floatTimesteps(_ c: SchedulerConfig, steps n: Int) -> [Float] {
        let tTrain = c.numTrainTimesteps
        switch c.timestepSpacing {
        case .linspace:
            return numpyLinspace(0, Double(tTrain - 1), n).map { Float($0) }.reversed()
        case .leading:
            let ratio = tTrain / n
            return (0..<n).reversed().map { Float($0 * ratio) + Float(c.stepsOffset) }
        case .trailing:
            let ts = numpyDescendingArangeRounded(from: Double(tTrain), step: Double(tTrain) / Double(n))
            return ts.prefix(n).map { Float($0) - 1 }
        }
    }

    /// Karras et al. (2022) noise levels: `(max^(1/ρ) + ramp · (min^(1/ρ) − max^(1/ρ)))^ρ`, ρ = 7,
    /// in float64 as diffusers' `_convert_to_karras`.
    static func karras(sigmaMin: Double, sigmaMax: Double, count n: Int) -> [Double] {
        let rho = 7.0
        let minInv = pow(sigmaMin, 1 / rho), maxInv = pow(sigmaMax, 1 / rho)
        return numpyLinspace(0, 1, n).map { pow(maxInv + $0 * (minInv - maxInv), rho) }
    }

    /// `np.log` of the float32 training sigmas (a float32 array: numpy's own SIMD float32 log).
    static func logSigmas(_ sigmas: [Float]) -> [Float] { sigmas.map(numpyLogFloat) }

    /// diffusers' `_sigma_to_t`: the (fractional) training timestep whose σ is `sigma`, by linear
    /// interpolation in log σ. `low − high` is a float32 difference, as numpy computes it.
    static func sigmaToT(_ sigma: Double, logSigmas: [Float]) -> Double {
        let logSigma = Foundation.log(max(sigma, 1e-10))
        // Index of the last log σ_i <= log σ (argmax of the cumulative count; 0 when there is none).
        var low = 0
        for (i, l) in logSigmas.enumerated() where logSigma - Double(l) >= 0 { low = i }
        low = min(low, logSigmas.count - 2)
        let high = low + 1
        let lo = logSigmas[low], hi = logSigmas[high]
        var w = (Double(lo) - logSigma) / Double(lo - hi)
        w = min(max(w, 0), 1)
        return (1 - w) * Double(low) + w * Double(high)
    }

    /// Checks the noise-level options an Euler-type sampler would use.
    static func rejectUnsupportedSigmas(_ c: SchedulerConfig) throws {
        if c.useExponentialSigmas { throw c.unsupported("use_exponential_sigmas", "true") }
        if c.useBetaSigmas { throw c.unsupported("use_beta_sigmas", "true") }
        let count = [c.useKarrasSigmas, c.useExponentialSigmas, c.useBetaSigmas].filter { $0 }.count
        if count > 1 { throw c.unsupported("use_karras_sigmas", "together with another sigma schedule") }
    }

    /// Throws unless 1 <= steps <= num_train_timesteps.
    static func checkSteps(_ steps: Int, _ c: SchedulerConfig) throws {
        guard steps >= 1 else { throw DarkroomError.invalidArgument("number of steps must be at least 1, got \(steps)") }
        guard steps <= c.numTrainTimesteps else {
            throw DarkroomError.invalidArgument(
                "number of steps (\(steps)) cannot be larger than num_train_timesteps (\(c.numTrainTimesteps))")
        }
    }
}

extension Tensor {
    /// A new tensor of the same shape with `f` applied to each element.
    func mapped(_ f: (Float) -> Float) -> Tensor {
        let out = Tensor(shape: shape)
        for i in 0..<count { out.data[i] = f(data[i]) }
        return out
    }
}
