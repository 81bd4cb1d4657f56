import Foundation

/// `scheduler/scheduler_config.json`, read the way `DDIMScheduler.from_config` reads it: keys that
/// DDIM's constructor does not take (PNDM's `skip_prk_steps`, `_diffusers_version`, ...) are
/// ignored, missing keys get DDIM's defaults, and options Darkroom does not implement are rejected
/// with `DarkroomError.unsupported` naming the file and the key.
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
    public var numTrainTimesteps: Int = 1000
    public var betaStart: Double = 0.0001
    public var betaEnd: Double = 0.02
    public var betaSchedule: BetaSchedule = .linear
    public var clipSample: Bool = true
    public var clipSampleRange: Double = 1.0
    public var setAlphaToOne: Bool = true
    public var stepsOffset: Int = 0
    public var predictionType: PredictionType = .epsilon
    public var timestepSpacing: TimestepSpacing = .leading
    public var rescaleBetasZeroSnr: Bool = false

    /// diffusers' defaults for every key.
    public init() {}

    /// `userInfo` key under which `load(from:)` passes the file path to `init(from:)` for errors.
    public static let pathKey = CodingUserInfoKey(rawValue: "darkroom.configPath")!

    private enum Key: String, CodingKey {
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
    }

    public init(from decoder: Decoder) throws {
        let path = decoder.userInfo[SchedulerConfig.pathKey] as? String ?? "scheduler_config.json"
        let c = try decoder.container(keyedBy: Key.self)
        className = try c.decodeIfPresent(String.self, forKey: .className)
        if let v = try c.decodeIfPresent(Int.self, forKey: .numTrainTimesteps) { numTrainTimesteps = v }
        if let v = try c.decodeIfPresent(Double.self, forKey: .betaStart) { betaStart = v }
        if let v = try c.decodeIfPresent(Double.self, forKey: .betaEnd) { betaEnd = v }
        if let v = try c.decodeIfPresent(String.self, forKey: .betaSchedule) {
            guard let s = BetaSchedule(rawValue: v) else {
                throw DarkroomError.unsupported(path: path, key: Key.betaSchedule.rawValue, value: v)
            }
            betaSchedule = s
        }
        // `null` is what diffusers writes when the betas come from beta_start/beta_end.
        if c.contains(.trainedBetas), try !c.decodeNil(forKey: .trainedBetas) {
            throw DarkroomError.unsupported(path: path, key: Key.trainedBetas.rawValue, value: "a list of betas")
        }
        if let v = try c.decodeIfPresent(Bool.self, forKey: .clipSample) { clipSample = v }
        if let v = try c.decodeIfPresent(Double.self, forKey: .clipSampleRange) { clipSampleRange = v }
        if let v = try c.decodeIfPresent(Bool.self, forKey: .setAlphaToOne) { setAlphaToOne = v }
        if let v = try c.decodeIfPresent(Int.self, forKey: .stepsOffset) { stepsOffset = v }
        if let v = try c.decodeIfPresent(String.self, forKey: .predictionType) {
            guard let p = PredictionType(rawValue: v) else {
                throw DarkroomError.unsupported(path: path, key: Key.predictionType.rawValue, value: v)
            }
            predictionType = p
        }
        if try c.decodeIfPresent(Bool.self, forKey: .thresholding) == true {
            throw DarkroomError.unsupported(path: path, key: Key.thresholding.rawValue, value: "true")
        }
        if let v = try c.decodeIfPresent(String.self, forKey: .timestepSpacing) {
            guard let s = TimestepSpacing(rawValue: v) else {
                throw DarkroomError.unsupported(path: path, key: Key.timestepSpacing.rawValue, value: v)
            }
            timestepSpacing = s
        }
        if let v = try c.decodeIfPresent(Bool.self, forKey: .rescaleBetasZeroSnr) { rescaleBetasZeroSnr = v }
        guard numTrainTimesteps >= 1 else {
            throw DarkroomError.invalidConfig(path: path, key: Key.numTrainTimesteps.rawValue,
                                              reason: "must be at least 1, got \(numTrainTimesteps)")
        }
    }

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
