import Foundation

/// `scheduler/scheduler_config.json`, read the way diffusers' `Scheduler.from_config` reads it: each
/// sampler takes the keys its diffusers class knows and ignores the rest (`_diffusers_version`,
/// PNDM's `skip_prk_steps` for DDIM, ...). The stored defaults are DDIMScheduler's; the other
/// samplers apply their own defaults to keys the file does not give (see `given`). Options Darkroom
/// does not implement are rejected with `DarkroomError.unsupported` naming the file and the key:
/// here for values no sampler knows, in the sampler's initializer for values only it would use.
public struct SchedulerConfig: Sendable, Equatable, Decodable {
    public enum BetaSchedule: String, Sendable {
        case linear
        case scaledLinear = "scaled_linear"
        case squaredcosCapV2 = "squaredcos_cap_v2"
    }

    public enum PredictionType: String, Sendable {
        case epsilon
        case vPrediction = "v_prediction"
        case sample
    }

    public enum TimestepSpacing: String, Sendable {
        case leading, trailing, linspace
    }

    /// `_class_name`: informational (SD folders ship a PNDMScheduler config; DDIM reads it anyway).
    public var className: String?
    public var numTrainTimesteps: Int = 1000 { didSet { given.insert(Key.numTrainTimesteps.rawValue) } }
    public var betaStart: Double = 0.0001 { didSet { given.insert(Key.betaStart.rawValue) } }
    public var betaEnd: Double = 0.02 { didSet { given.insert(Key.betaEnd.rawValue) } }
    public var betaSchedule: BetaSchedule = .linear { didSet { given.insert(Key.betaSchedule.rawValue) } }
    public var clipSample: Bool = true { didSet { given.insert(Key.clipSample.rawValue) } }
    public var clipSampleRange: Double = 1.0 { didSet { given.insert(Key.clipSampleRange.rawValue) } }
    public var setAlphaToOne: Bool = true { didSet { given.insert(Key.setAlphaToOne.rawValue) } }
    public var stepsOffset: Int = 0 { didSet { given.insert(Key.stepsOffset.rawValue) } }
    public var predictionType: PredictionType = .epsilon { didSet { given.insert(Key.predictionType.rawValue) } }
    public var timestepSpacing: TimestepSpacing = .leading { didSet { given.insert(Key.timestepSpacing.rawValue) } }
    public var rescaleBetasZeroSnr: Bool = false { didSet { given.insert(Key.rescaleBetasZeroSnr.rawValue) } }

    // Keys of the other schedulers (PNDM, Euler, DPM-Solver, LCM), with diffusers' defaults. DDIM
    // ignores them, as `DDIMScheduler.from_config` does.

    /// PNDM: start with plain PLMS steps instead of the 12 Runge-Kutta warm-up evaluations.
    public var skipPrkSteps: Bool = false { didSet { given.insert(Key.skipPrkSteps.rawValue) } }
    /// Euler, DPM-Solver: Karras et al. (2022) noise levels instead of the training schedule's.
    public var useKarrasSigmas: Bool = false { didSet { given.insert(Key.useKarrasSigmas.rawValue) } }
    /// Euler (Karras sigmas): overrides of the schedule's smallest / largest sigma.
    public var sigmaMin: Double? { didSet { given.insert(Key.sigmaMin.rawValue) } }
    public var sigmaMax: Double? { didSet { given.insert(Key.sigmaMax.rawValue) } }
    /// Euler, DPM-Solver: the sigma after the last step, 0 or the training schedule's smallest.
    public var finalSigmasType: FinalSigmasType = .zero { didSet { given.insert(Key.finalSigmasType.rawValue) } }
    /// Euler: `discrete` (timesteps of the training schedule) or `continuous` (EDM-style, unsupported).
    public var timestepType: String = "discrete" { didSet { given.insert(Key.timestepType.rawValue) } }
    /// Euler: how sigmas between training timesteps are found (only `linear` is implemented).
    public var interpolationType: String = "linear" { didSet { given.insert(Key.interpolationType.rawValue) } }
    /// DPM-Solver: multistep order, algorithm and second-order formula.
    public var solverOrder: Int = 2 { didSet { given.insert(Key.solverOrder.rawValue) } }
    public var algorithmType: String = "dpmsolver++" { didSet { given.insert(Key.algorithmType.rawValue) } }
    public var solverType: String = "midpoint" { didSet { given.insert(Key.solverType.rawValue) } }
    /// DPM-Solver: first-order final steps for short schedules (< 15 steps), and always at the end.
    public var lowerOrderFinal: Bool = true { didSet { given.insert(Key.lowerOrderFinal.rawValue) } }
    public var eulerAtFinal: Bool = false { didSet { given.insert(Key.eulerAtFinal.rawValue) } }
    /// DPM-Solver: timesteps whose log-SNR λ is below this are cut from the schedule.
    public var lambdaMinClipped: Double = -.infinity { didSet { given.insert(Key.lambdaMinClipped.rawValue) } }
    /// DPM-Solver: `learned`/`learned_range` (models that predict a variance) are not supported.
    public var varianceType: String? { didSet { given.insert(Key.varianceType.rawValue) } }
    /// LCM: the distillation schedule's length and the boundary-condition time scale.
    public var originalInferenceSteps: Int = 50 { didSet { given.insert(Key.originalInferenceSteps.rawValue) } }
    public var timestepScaling: Double = 10.0 { didSet { given.insert(Key.timestepScaling.rawValue) } }
    /// Euler, DPM-Solver: other noise-level recipes; Darkroom rejects them when a sampler would use them.
    public var useExponentialSigmas: Bool = false { didSet { given.insert(Key.useExponentialSigmas.rawValue) } }
    public var useBetaSigmas: Bool = false { didSet { given.insert(Key.useBetaSigmas.rawValue) } }
    public var useLuLambdas: Bool = false { didSet { given.insert(Key.useLuLambdas.rawValue) } }
    public var useFlowSigmas: Bool = false { didSet { given.insert(Key.useFlowSigmas.rawValue) } }

    /// The keys the file gave (or code set): a scheduler applies its own default for the others,
    /// as diffusers' `from_config` does (Euler's `timestep_spacing` defaults to `linspace`,
    /// PNDM's `set_alpha_to_one` to false, LCM's betas to SD's `scaled_linear` range, ...).
    public private(set) var given: Set<String> = []
    /// The file the config came from, for error messages (ignored by `==`).
    public var source = SourcePath()

    public enum FinalSigmasType: String, Sendable {
        case zero
        case sigmaMin = "sigma_min"
    }

    /// A file path that does not take part in equality.
    public struct SourcePath: Sendable, Equatable {
        public var path: String = "scheduler_config.json"
        public init(_ path: String = "scheduler_config.json") { self.path = path }
        public static func == (_: SourcePath, _: SourcePath) -> Bool { true }
    }

    /// Whether `key` (a diffusers config key) was given.
    public func has(_ key: String) -> Bool { given.contains(key) }

    /// diffusers' defaults for every key.
    public init() {}

    /// `userInfo` key under which `load(from:)` passes the file path to `init(from:)` for errors.
    public static let pathKey = CodingUserInfoKey(rawValue: "darkroom.configPath")!

    enum Key: String, CodingKey {
        case className = "_class_name"
        case numTrainTimesteps = "num_train_timesteps"
        case betaStart = "beta_start"
        case betaEnd = "beta_end"
        case betaSchedule = "beta_schedule"
        case trainedBetas = "trained_betas"
        case clipSample = "clip_sample"
        case clipSampleRange = "clip_sample_range"
        case setAlphaToOne = "set_alpha_to_one"
        case stepsOffset = "steps_offset"
        case predictionType = "prediction_type"
        case thresholding
        case timestepSpacing = "timestep_spacing"
        case rescaleBetasZeroSnr = "rescale_betas_zero_snr"
        case skipPrkSteps = "skip_prk_steps"
        case useKarrasSigmas = "use_karras_sigmas"
        case sigmaMin = "sigma_min"
        case sigmaMax = "sigma_max"
        case finalSigmasType = "final_sigmas_type"
        case timestepType = "timestep_type"
        case interpolationType = "interpolation_type"
        case solverOrder = "solver_order"
        case algorithmType = "algorithm_type"
        case solverType = "solver_type"
        case lowerOrderFinal = "lower_order_final"
        case eulerAtFinal = "euler_at_final"
        case lambdaMinClipped = "lambda_min_clipped"
        case varianceType = "variance_type"
        case originalInferenceSteps = "original_inference_steps"
        case timestepScaling = "timestep_scaling"
        case useExponentialSigmas = "use_exponential_sigmas"
        case useBetaSigmas = "use_beta_sigmas"
        case useLuLambdas = "use_lu_lambdas"
        case useFlowSigmas = "use_flow_sigmas"
    }

    public init(from decoder: Decoder) throws {
        let path = decoder.userInfo[SchedulerConfig.pathKey] as? String ?? "scheduler_config.json"
        source = SourcePath(path)
        let c = try decoder.container(keyedBy: Key.self)
        var seen: Set<String> = []
        // Property observers do not run inside an initializer: record each key read by hand.
        func read<T: Decodable>(_ type: T.Type, _ key: Key) throws -> T? {
            guard let v = try c.decodeIfPresent(type, forKey: key) else { return nil }
            seen.insert(key.rawValue)
            return v
        }
        func choice<E: RawRepresentable>(_ type: E.Type, _ key: Key) throws -> E? where E.RawValue == String {
            guard let v = try read(String.self, key) else { return nil }
            guard let e = E(rawValue: v) else { throw DarkroomError.unsupported(path: path, key: key.rawValue, value: v) }
            return e
        }
        className = try c.decodeIfPresent(String.self, forKey: .className)
        if let v = try read(Int.self, .numTrainTimesteps) { numTrainTimesteps = v }
        if let v = try read(Double.self, .betaStart) { betaStart = v }
        if let v = try read(Double.self, .betaEnd) { betaEnd = v }
        if let v = try choice(BetaSchedule.self, .betaSchedule) { betaSchedule = v }
        // `null` is what diffusers writes when the betas come from beta_start/beta_end.
        if c.contains(.trainedBetas), try !c.decodeNil(forKey: .trainedBetas) {
            throw DarkroomError.unsupported(path: path, key: Key.trainedBetas.rawValue, value: "a list of betas")
        }
        if let v = try read(Bool.self, .clipSample) { clipSample = v }
        if let v = try read(Double.self, .clipSampleRange) { clipSampleRange = v }
        if let v = try read(Bool.self, .setAlphaToOne) { setAlphaToOne = v }
        if let v = try read(Int.self, .stepsOffset) { stepsOffset = v }
        if let v = try choice(PredictionType.self, .predictionType) { predictionType = v }
        if try c.decodeIfPresent(Bool.self, forKey: .thresholding) == true {
            throw DarkroomError.unsupported(path: path, key: Key.thresholding.rawValue, value: "true")
        }
        if let v = try choice(TimestepSpacing.self, .timestepSpacing) { timestepSpacing = v }
        if let v = try read(Bool.self, .rescaleBetasZeroSnr) { rescaleBetasZeroSnr = v }

        if let v = try read(Bool.self, .skipPrkSteps) { skipPrkSteps = v }
        if let v = try read(Bool.self, .useKarrasSigmas) { useKarrasSigmas = v }
        if let v = try read(Double.self, .sigmaMin) { sigmaMin = v }
        if let v = try read(Double.self, .sigmaMax) { sigmaMax = v }
        if let v = try choice(FinalSigmasType.self, .finalSigmasType) { finalSigmasType = v }
        if let v = try read(String.self, .timestepType) { timestepType = v }
        if let v = try read(String.self, .interpolationType) { interpolationType = v }
        if let v = try read(Int.self, .solverOrder) { solverOrder = v }
        if let v = try read(String.self, .algorithmType) { algorithmType = v }
        if let v = try read(String.self, .solverType) { solverType = v }
        if let v = try read(Bool.self, .lowerOrderFinal) { lowerOrderFinal = v }
        if let v = try read(Bool.self, .eulerAtFinal) { eulerAtFinal = v }
        if let v = try read(Double.self, .lambdaMinClipped) { lambdaMinClipped = v }
        if let v = try read(String.self, .varianceType) { varianceType = v }
        if let v = try read(Int.self, .originalInferenceSteps) { originalInferenceSteps = v }
        if let v = try read(Double.self, .timestepScaling) { timestepScaling = v }
        if let v = try read(Bool.self, .useExponentialSigmas) { useExponentialSigmas = v }
        if let v = try read(Bool.self, .useBetaSigmas) { useBetaSigmas = v }
        if let v = try read(Bool.self, .useLuLambdas) { useLuLambdas = v }
        if let v = try read(Bool.self, .useFlowSigmas) { useFlowSigmas = v }
        given = seen
        guard numTrainTimesteps >= 1 else {
            throw DarkroomError.invalidConfig(path: path, key: Key.numTrainTimesteps.rawValue,
                                              reason: "must be at least 1, got \(numTrainTimesteps)")
        }
        // Absurd sizes would allocate schedules of that length or overflow timestep arithmetic.
        for (key, v, range) in [(Key.numTrainTimesteps, numTrainTimesteps, 1...Self.maxTrainTimesteps),
                                (.stepsOffset, stepsOffset, 0...Self.maxTrainTimesteps),
                                (.originalInferenceSteps, originalInferenceSteps, 1...Self.maxTrainTimesteps)] where !range.contains(v) {
            throw DarkroomError.invalidConfig(path: path, key: key.rawValue, reason: "\(v) is outside \(range.lowerBound)...\(range.upperBound)")
        }
    }

    /// The largest `num_train_timesteps` (and `steps_offset`, `original_inference_steps`)
    /// accepted; Stable Diffusion uses 1000.
    public static let maxTrainTimesteps = 1 << 20

    /// Reads a scheduler config file; errors name the file and, where one is at fault, the key.
    public static func load(from url: URL) throws -> SchedulerConfig {
        let path = url.path
        guard FileManager.default.fileExists(atPath: path) else { throw DarkroomError.fileNotFound(path: path) }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw DarkroomError.io(path: path, reason: error.localizedDescription)
        }
        return try decode(data, path: path)
    }

    /// Decodes config JSON; `path` is only used in error messages.
    public static func decode(_ data: Data, path: String) throws -> SchedulerConfig {
        let decoder = JSONDecoder()
        decoder.userInfo[pathKey] = path
        do {
            return try decoder.decode(SchedulerConfig.self, from: data)
        } catch let e as DarkroomError {
            throw e
        } catch let DecodingError.typeMismatch(_, ctx), let DecodingError.valueNotFound(_, ctx) {
            let key = ctx.codingPath.last?.stringValue ?? "?"
            throw DarkroomError.invalidConfig(path: path, key: key, reason: ctx.debugDescription)
        } catch let DecodingError.dataCorrupted(ctx) {
            throw DarkroomError.invalidFile(path: path, reason: "not valid JSON: \(ctx.debugDescription)")
        } catch {
            throw DarkroomError.invalidFile(path: path, reason: "\(error)")
        }
    }
}

extension SchedulerConfig {
    /// This config as a scheduler with other defaults reads it: every key the file did not give
    /// takes its value from `defaults` (diffusers' `from_config` fills missing keys from the
    /// target class's `__init__` defaults).
    func withDefaults(_ defaults: (inout SchedulerConfig) -> Void) -> SchedulerConfig {
        var d = SchedulerConfig()
        defaults(&d)
        var out = self
        func take<V>(_ kp: WritableKeyPath<SchedulerConfig, V>, _ key: Key) {
            if !has(key.rawValue) { out[keyPath: kp] = d[keyPath: kp] }
        }
        take(\.numTrainTimesteps, .numTrainTimesteps)
        take(\.betaStart, .betaStart)
        take(\.betaEnd, .betaEnd)
        take(\.betaSchedule, .betaSchedule)
        take(\.clipSample, .clipSample)
        take(\.clipSampleRange, .clipSampleRange)
        take(\.setAlphaToOne, .setAlphaToOne)
        take(\.stepsOffset, .stepsOffset)
        take(\.predictionType, .predictionType)
        take(\.timestepSpacing, .timestepSpacing)
        take(\.rescaleBetasZeroSnr, .rescaleBetasZeroSnr)
        take(\.skipPrkSteps, .skipPrkSteps)
        take(\.useKarrasSigmas, .useKarrasSigmas)
        take(\.sigmaMin, .sigmaMin)
        take(\.sigmaMax, .sigmaMax)
        take(\.finalSigmasType, .finalSigmasType)
        take(\.timestepType, .timestepType)
        take(\.interpolationType, .interpolationType)
        take(\.solverOrder, .solverOrder)
        take(\.algorithmType, .algorithmType)
        take(\.solverType, .solverType)
        take(\.lowerOrderFinal, .lowerOrderFinal)
        take(\.eulerAtFinal, .eulerAtFinal)
        take(\.lambdaMinClipped, .lambdaMinClipped)
        take(\.varianceType, .varianceType)
        take(\.originalInferenceSteps, .originalInferenceSteps)
        take(\.timestepScaling, .timestepScaling)
        take(\.useExponentialSigmas, .useExponentialSigmas)
        take(\.useBetaSigmas, .useBetaSigmas)
        take(\.useLuLambdas, .useLuLambdas)
        take(\.useFlowSigmas, .useFlowSigmas)
        return out
    }

    /// `DarkroomError.unsupported` for `key` of this config's file.
    func unsupported(_ key: String, _ value: String) -> DarkroomError {
        .unsupported(path: source.path, key: key, value: value)
    }
}
