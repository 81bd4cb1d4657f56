import Foundation

/// A denoising schedule the pipeline drives: the timesteps to evaluate the UNet at, the scaling
/// of its input, and the update from a model output to the next latents. Every sampler takes the
/// model folder's `scheduler_config.json` (betas, prediction type, spacing) like diffusers'
/// `Scheduler.from_config`.
public protocol Sampler: Sendable {
    /// UNet timesteps in evaluation order (fractional for some samplers).
    var timesteps: [Float] { get }
    /// Standard deviation of the initial noise (1 for DDIM; σ_max-based for Euler-type samplers).
    var initNoiseSigma: Float { get }
    /// diffusers' `scale_model_input` for step `index`.
    func scaleModelInput(_ sample: Tensor, stepIndex: Int) -> Tensor
    /// One update: the latents after step `index` given the (guided) model output.
    mutating func step(modelOutput: Tensor, stepIndex: Int, sample: Tensor, generator: inout TorchGenerator) -> Tensor
}

/// The samplers Darkroom offers, by the names users know from AUTOMATIC1111 and diffusers.
public enum SamplerKind: String, CaseIterable, Sendable {
    case ddim

    /// The name written into PNG metadata (A1111's spelling).
    public var a1111Name: String {
        switch self {
        case .ddim: return "DDIM"
        }
    }

    /// Parses a CLI/A1111 name ("ddim", "DDIM", ...).
    public init?(name: String) {
        let key = name.lowercased().replacingOccurrences(of: " ", with: "_").replacingOccurrences(of: "+", with: "p")
        if let k = SamplerKind(rawValue: key) { self = k; return }
        if let k = SamplerKind.allCases.first(where: { $0.a1111Name.lowercased() == name.lowercased() }) { self = k; return }
        return nil
    }

    /// A sampler set up for `steps` steps.
    public func make(config: SchedulerConfig, steps: Int, eta: Float) throws -> any Sampler {
        switch self {
        case .ddim:
            var s = DDIMScheduler(config: config)
            try s.setTimesteps(steps)
            s.eta = eta
            return s
        }
    }
}

extension DDIMScheduler: Sampler {
    public var timesteps: [Float] { integerTimesteps.map(Float.init) }

    public func scaleModelInput(_ sample: Tensor, stepIndex: Int) -> Tensor { sample }

    public mutating func step(modelOutput: Tensor, stepIndex: Int, sample: Tensor, generator: inout TorchGenerator) -> Tensor {
        step(modelOutput: modelOutput, timestep: integerTimesteps[stepIndex], sample: sample, eta: eta, generator: &generator)
    }
}
