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

/// The samplers Darkroom offers, by the names users know from AUTOMATIC1111 and diffusers. Each
/// is built from the model folder's scheduler config as diffusers' `Scheduler.from_config` does.
public enum SamplerKind: String, CaseIterable, Sendable {
    case ddim
    case euler
    case eulerA = "euler_a"
    case dpmpp2m = "dpmpp_2m"
    case dpmpp2mKarras = "dpmpp_2m_karras"
    case pndm
    case lcm

    /// The name written into PNG metadata (A1111's spelling).
    public var a1111Name: String {
        switch self {
        case .ddim: return "DDIM"
        case .euler: return "Euler"
        case .eulerA: return "Euler a"
        case .dpmpp2m: return "DPM++ 2M"
        case .dpmpp2mKarras: return "DPM++ 2M Karras"
        case .pndm: return "PLMS"
        case .lcm: return "LCM"
        }
    }

    /// The diffusers scheduler class (and overrides) this sampler reproduces, for help texts.
    public var diffusersName: String {
        switch self {
        case .ddim: return "DDIMScheduler"
        case .euler: return "EulerDiscreteScheduler"
        case .eulerA: return "EulerAncestralDiscreteScheduler"
        case .dpmpp2m: return "DPMSolverMultistepScheduler (dpmsolver++, order 2)"
        case .dpmpp2mKarras: return "DPMSolverMultistepScheduler (dpmsolver++, order 2, Karras sigmas)"
        case .pndm: return "PNDMScheduler"
        case .lcm: return "LCMScheduler"
        }
    }

    /// Parses a CLI/A1111 name ("ddim", "DDIM", "euler_a", "Euler a", "dpmpp_2m_karras",
    /// "DPM++ 2M Karras", "plms", ...).
    public init?(name: String) {
        let key = name.lowercased().replacingOccurrences(of: " ", with: "_").replacingOccurrences(of: "+", with: "p")
            .replacingOccurrences(of: "-", with: "_")
        if let k = SamplerKind(rawValue: key) { self = k; return }
        if let k = SamplerKind.allCases.first(where: { $0.a1111Name.lowercased() == name.lowercased() }) { self = k; return }
        return nil
    }

    /// A sampler set up for `steps` steps. `eta` is DDIM's η (other samplers ignore it). Throws
    /// `DarkroomError.unsupported` for config options the sampler does not implement and
    /// `invalidArgument` for step counts it cannot run.
    public func make(config: SchedulerConfig, steps: Int, eta: Float) throws -> any Sampler {
        switch self {
        case .ddim:
            var s = DDIMScheduler(config: config)
            try s.setTimesteps(steps)
            s.eta = eta
            return s
        case .euler:
            var s = try EulerDiscreteScheduler(config: config)
            try s.setTimesteps(steps)
            return s
        case .eulerA:
            var s = try EulerAncestralDiscreteScheduler(config: config)
            try s.setTimesteps(steps)
            return s
        case .dpmpp2m, .dpmpp2mKarras:
            // As `DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++",
            // solver_order=2, use_karras_sigmas=...)`: the name fixes these three.
            var c = config
            c.algorithmType = "dpmsolver++"
            c.solverOrder = 2
            c.useKarrasSigmas = self == .dpmpp2mKarras
            var s = try DPMSolverMultistepScheduler(config: c)
            try s.setTimesteps(steps)
            return s
        case .pndm:
            var s = try PNDMScheduler(config: config)
            try s.setTimesteps(steps)
            return s
        case .lcm:
            var s = try LCMScheduler(config: config)
            try s.setTimesteps(steps)
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
