import ArgumentParser
import Darkroom
import Foundation

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the generation parameters stored in PNG files.",
        discussion: """
        Reads the 'parameters' text chunk that Darkroom, AUTOMATIC1111, stable-diffusion.cpp and \
        others write. `darkroom render --from IMAGE.png` renders the same image again.

        \(Exit.help)
        """
    )

    @Argument(help: "PNG files.")
    var images: [String]

    @Flag(name: .long, help: "One JSON object per image (JSON Lines) instead of text.")
    var json = false

    func validate() throws {
        if images.isEmpty { throw ValidationError("give at least one PNG file") }
    }

    func run() throws {
        var status: Int32 = 0
        for (n, path) in images.enumerated() {
            let url = URL(fileURLWithPath: path)
            let info: PNGInfo
            do { info = try PNGFile.info(url) } catch let e as DarkroomError {
                printError(e.description)
                if case .fileNotFound = e { status = max(status, Exit.noInput) } else { status = max(status, Exit.badData) }
                continue
            }
            guard let text = info.text["parameters"] else {
                printError("\(path): no generation parameters (no 'parameters' text chunk)")
                status = max(status, Exit.badData)
                continue
            }
            let p: GenerationParameters
            do { p = try GenerationParameters(parsing: text) } catch let e as DarkroomError {
                printError("\(path): \(e.description)")
                status = max(status, Exit.badData)
                continue
            }
            let recipe = try? ImageRecipe(parameters: p)
            if json {
                var fields: [(String, JSONText)] = [
                    ("file", .string(path)), ("image_width", .int(Int64(info.width))), ("image_height", .int(Int64(info.height))),
                    ("prompt", .string(p.prompt)), ("negative_prompt", .string(p.negativePrompt)), ("steps", .int(Int64(p.steps))),
                    ("sampler", .string(recipe?.request.sampler.rawValue ?? p.sampler)), ("guidance_scale", .double(p.cfgScale)),
                    ("seed", .uint(p.seed)), ("width", .int(Int64(p.width))), ("height", .int(Int64(p.height))),
                    ("eta", .float(recipe?.request.eta ?? 0)), ("clip_skip", .int(Int64(recipe?.request.clipSkip ?? 1))),
                    ("guidance_rescale", .float(recipe?.request.guidanceRescale ?? 0)),
                    ("prompt_mode", .string(recipe?.request.promptMode.rawValue ?? PromptMode.auto.rawValue)),
                    ("model", p.model.map { .string($0) } ?? .null),
                ]
                fields.append(("extra", .object(p.extra.map { ($0.key, .string($0.value)) })))
                fields.append(("parameters", .string(text)))
                print(JSONText.object(fields).serialized)
                continue
            }
            if n > 0 { print("") }
            var lines = ["\(path)  (\(info.width)x\(info.height) PNG)"]
            func add(_ k: String, _ v: String) { lines.append("  " + k.padding(toLength: 16, withPad: " ", startingAt: 0) + v) }
            add("prompt", p.prompt)
            add("negative prompt", p.negativePrompt)
            add("steps", String(p.steps))
            add("sampler", p.sampler)
            add("guidance scale", p.cfgScale == p.cfgScale.rounded() && abs(p.cfgScale) < 1e9 ? String(Int(p.cfgScale)) : "\(p.cfgScale)")
            add("seed", String(p.seed))
            add("size", "\(p.width)x\(p.height)")
            if let m = p.model { add("model", m) }
            for f in p.extra { add(f.key.lowercased(), f.value) }
            if let recipe {
                lines.append("reproduce: darkroom render --from \(shellCommand([path]))")
                if !recipe.ignored.isEmpty { lines.append("  (Darkroom does not use: \(recipe.ignored.joined(separator: "; ")))") }
            } else {
                lines.append("  (sampler '\(p.sampler)' is not available in Darkroom; the samplers are \(samplerNames))")
            }
            print(lines.joined(separator: "\n"))
        }
        if status != 0 { throw ExitCode(status) }
    }
}
