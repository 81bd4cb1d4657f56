import Foundation

/// Reading back what made an image: the request stored in a PNG's `parameters` text.
public struct ImageRecipe: Sendable, Equatable {
    public var request: GenerationRequest
    /// The model name written in the image (nil when absent).
    public var model: String?
    /// Parameters in the text that Darkroom does not use (e.g. A1111's "Clip skip"), as
    /// "Key: value"; an image that depends on them will not come out the same.
    public var ignored: [String]

    /// Keys that carry no rendering setting.
    static let informational: Set<String> = ["Model hash", "Version", "Darkroom"]

    /// Maps parameters to a request. Throws `DarkroomError.invalidArgument` for a sampler
    /// Darkroom does not have or an unreadable η.
    public init(parameters p: GenerationParameters) throws {
        guard let sampler = SamplerKind(name: p.sampler) else {
            throw DarkroomError.invalidArgument("sampler '\(p.sampler)' is not available; the samplers are \(SamplerKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        var eta: Float = 0
        if let e = p[extra: "Eta"] {
            guard let v = Float(e), v.isFinite else { throw DarkroomError.invalidArgument("Eta '\(e)' is not a number") }
            eta = v
        }
        request = GenerationRequest(prompt: p.prompt, negativePrompt: p.negativePrompt, steps: p.steps,
                                    guidanceScale: Float(p.cfgScale), width: p.width, height: p.height,
                                    seed: p.seed, eta: eta, sampler: sampler)
        model = p.model
        ignored = p.extra.filter { $0.key != "Eta" && !Self.informational.contains($0.key) }.map { "\($0.key): \($0.value)" }
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
