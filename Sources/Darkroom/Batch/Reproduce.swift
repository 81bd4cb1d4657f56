import Foundation

/// Reading back what made an image: the request stored in a PNG's `parameters` text.
public struct ImageRecipe: Sendable, Equatable {
    public var request: GenerationRequest
    /// The model name written in the image (nil when absent).
    public var model: String?
    /// Parameters in the text that Darkroom does not use (e.g. A1111's "Hires upscale"), as
    /// "Key: value"; an image that depends on them will not come out the same.
    public var ignored: [String]

    /// Keys that carry no rendering setting.
    static let informational: Set<String> = ["Model hash", "Version", "Darkroom"]

    /// Keys that become request settings: "Eta", A1111's "Clip skip", "Guidance rescale" and
    /// "Prompt mode" (written by `StableDiffusionPipeline.parameters(for:)`).
    static let settings: Set<String> = ["Eta", "Clip skip", "Guidance rescale", "Prompt mode"]

    /// Maps parameters to a request. Throws `DarkroomError.invalidArgument` for a sampler
    /// Darkroom does not have or an unreadable η, clip skip, guidance rescale or prompt mode.
    public init(parameters p: GenerationParameters) throws {
        guard let sampler = SamplerKind(name: p.sampler) else {
            throw DarkroomError.invalidArgument("sampler '\(p.sampler)' is not available; the samplers are \(SamplerKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        var eta: Float = 0
        if let e = p[extra: "Eta"] {
            guard let v = Float(e), v.isFinite else { throw DarkroomError.invalidArgument("Eta '\(e)' is not a number") }
            eta = v
        }
        var clipSkip = 1
        if let c = p[extra: "Clip skip"] {
            guard let v = Int(c.trimmingCharacters(in: .whitespaces)), v >= 1 else {
                throw DarkroomError.invalidArgument("Clip skip '\(c)' is not a whole number of at least 1")
            }
            clipSkip = v
        }
        var rescale: Float = 0
        if let g = p[extra: "Guidance rescale"] {
            guard let v = Float(g), v.isFinite else { throw DarkroomError.invalidArgument("Guidance rescale '\(g)' is not a number") }
            rescale = v
        }
        var mode = PromptMode.auto
        if let m = p[extra: "Prompt mode"] {
            guard let v = PromptMode(rawValue: m.lowercased()) else {
                throw DarkroomError.invalidArgument("Prompt mode '\(m)' is not one of \(PromptMode.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            mode = v
        }
        request = GenerationRequest(prompt: p.prompt, negativePrompt: p.negativePrompt, steps: p.steps,
                                    guidanceScale: Float(p.cfgScale), width: p.width, height: p.height,
                                    seed: p.seed, eta: eta, sampler: sampler, clipSkip: clipSkip, promptMode: mode,
                                    guidanceRescale: rescale)
        model = p.model
        ignored = p.extra.filter { !Self.settings.contains($0.key) && !Self.informational.contains($0.key) }.map { "\($0.key): \($0.value)" }
    }

    /// Reads the recipe of a PNG. Throws `fileNotFound`/`invalidFile` for a missing or broken
    /// file, and `invalidFile` when it has no generation parameters.
    public init(png url: URL) throws {
        let info = try PNGFile.info(url)
        guard let text = info.text["parameters"] else {
            throw DarkroomError.invalidFile(path: url.path, reason: "no generation parameters (no 'parameters' text chunk)")
        }
        let p: GenerationParameters
        do { p = try GenerationParameters(parsing: text) } catch let e as DarkroomError {
            throw DarkroomError.invalidFile(path: url.path, reason: e.description)
        }
        do { try self.init(parameters: p) } catch let e as DarkroomError {
            throw DarkroomError.invalidFile(path: url.path, reason: e.description)
        }
    }
}
