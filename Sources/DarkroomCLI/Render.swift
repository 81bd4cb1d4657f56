import ArgumentParser
import Darkroom
import Foundation

struct Render: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Render images from a prompt.",
        discussion: """
        Examples:
          darkroom render "a red heart"
          darkroom render "a castle on a hill" --negative-prompt "blurry" --steps 30 --seed 42 --output castle.png
          darkroom render "a red heart" --count 4 --output out/      (out/00000-42-a-red-heart.png, ...)

        Image i of a run uses seed + i, so any image can be made again alone. The parameters are \
        stored in each PNG (a tEXt 'parameters' chunk in AUTOMATIC1111's layout).
        """
    )

    @Argument(help: "What the image should show.")
    var prompt: String

    @Option(name: [.customLong("negative-prompt"), .customShort("n")], help: "What the image should not show (the unconditional branch of guidance).")
    var negativePrompt: String = ""

    @Option(name: .long, help: "Denoising steps (default: the model's recommended value).")
    var steps: Int?

    @Option(name: [.customLong("guidance-scale"), .customLong("cfg-scale")], help: "Classifier-free guidance scale; 1 or less disables guidance.")
    var guidanceScale: Float?

    @Option(name: .long, help: "Seed of the initial noise (same meaning as torch.manual_seed in diffusers). Default: random.")
    var seed: UInt64?

    @Option(name: .long, help: "Image width in pixels, a multiple of 8 (default: the model's size).")
    var width: Int?

    @Option(name: .long, help: "Image height in pixels, a multiple of 8 (default: the model's size).")
    var height: Int?

    @Option(name: .long, help: "Number of images; image i uses seed + i.")
    var count: Int = 1

    @Option(name: .long, help: "DDIM eta: 0 is deterministic; larger values add seeded noise at each step.")
    var eta: Float = 0

    @Option(name: [.long, .customShort("m")], help: "Model folder (diffusers layout). Default: the model shipped in Models/, or $DARKROOM_MODEL.")
    var model: String?

    @Option(name: [.long, .customShort("o")], help: "Output: a .png file, or a folder (created if needed). Default: the current folder.")
    var output: String?

    @Option(name: .long, help: "Worker threads (default: all cores).")
    var threads: Int?

    @Flag(name: [.long, .customShort("q")], help: "No progress output.")
    var quiet = false

    func validate() throws {
        guard count >= 1, count <= 10000 else { throw ValidationError("--count must be between 1 and 10000") }
        if let steps, steps < 1 || steps > 1000 { throw ValidationError("--steps must be between 1 and 1000") }
        if let width, width < 8 || width > 8192 || width % 8 != 0 { throw ValidationError("--width must be a multiple of 8 between 8 and 8192") }
        if let height, height < 8 || height > 8192 || height % 8 != 0 { throw ValidationError("--height must be a multiple of 8 between 8 and 8192") }
        if let guidanceScale, !(0...100).contains(guidanceScale) { throw ValidationError("--guidance-scale must be between 0 and 100") }
        guard (0...1).contains(eta) else { throw ValidationError("--eta must be between 0 and 1") }
        if let threads, threads < 1 || threads > 1024 { throw ValidationError("--threads must be at least 1") }
    }

    func run() throws {
        if let threads { Threads.count = threads }
        installInterruptHandlers()
        let folder = ModelLocator.resolve(model)
        let pipeline: StableDiffusionPipeline
        do {
            pipeline = try StableDiffusionPipeline(folder: folder)
        } catch let e as DarkroomError {
            printError(e.description)
            throw ExitCode(Exit.model)
        }
        for w in pipeline.model.warnings { printWarning(w) }
        let defaults = ModelDefaults(model: pipeline.model)
        let baseSeed = seed ?? UInt64.random(in: 0...UInt64(UInt32.max))
        let target = OutputTarget(path: output, count: count)
        do {
            try target.prepare()
        } catch let e as DarkroomError {
            printError(e.description)
            throw ExitCode(Exit.failure)
        }
        let bar = ProgressBar(enabled: !quiet)
        for i in 0..<count {
            let (s, overflow) = baseSeed.addingReportingOverflow(UInt64(i))
            let request = GenerationRequest(
                prompt: prompt, negativePrompt: negativePrompt, steps: steps ?? defaults.steps,
                guidanceScale: guidanceScale ?? defaults.guidanceScale, width: width ?? defaults.width,
                height: height ?? defaults.height, seed: overflow ? s : s, eta: eta)
            do {
                let result = try pipeline.generate(request) { p in
                    bar.update(image: i, of: count, progress: p)
                    return interruptRequested == 0
                }
                let url = target.url(index: i, seed: request.seed, prompt: prompt)
                try PNGFile.write(result.image, text: [("parameters", result.parameters.a1111Text)], to: url)
                bar.finish(line: "\(url.path)  (seed \(request.seed), \(String(format: "%.1f", result.seconds)) s)")
            } catch DarkroomError.cancelled {
                bar.clear()
                printError("interrupted; \(i) of \(count) image\(count == 1 ? "" : "s") written")
                throw ExitCode(Exit.interrupted)
            } catch let e as DarkroomError {
                bar.clear()
                printError(e.description)
                throw ExitCode(Exit.failure)
            }
        }
    }
}

/// Defaults tuned per model: the model card's values when the folder has a `darkroom.json`,
/// otherwise diffusers' (50 steps, guidance 7.5, the UNet's trained size).
struct ModelDefaults {
    var steps = 50
    var guidanceScale: Float = 7.5
    var width: Int
    var height: Int

    init(model: StableDiffusionModel) {
        width = model.defaultSize
        height = model.defaultSize
        let url = model.folder.appendingPathComponent("darkroom.json")
        if let c = try? ConfigFile.load(url) {
            if let v = try? c.int("steps", range: 1...1000) { steps = v }
            if let v = try? c.double("guidance_scale") { guidanceScale = Float(v) }
            if let v = try? c.int("width", range: 8...8192) { width = v }
            if let v = try? c.int("height", range: 8...8192) { height = v }
        }
    }
}
