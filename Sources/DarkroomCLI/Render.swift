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
          darkroom render --from castle.png --output again.png      (the same image, bit for bit)
          darkroom render --from castle.png --seed 43               (the same settings, another seed)

        Image i of a run uses seed + i, so any image can be made again alone. The parameters are \
        stored in each PNG (a tEXt 'parameters' chunk in AUTOMATIC1111's layout); `darkroom \
        inspect` prints them and --from reads them back, options given explicitly winning.

        \(Exit.help)
        """
    )

    @Argument(help: "What the image should show (optional with --from).")
    var prompt: String?

    @Option(name: .long, help: ArgumentHelp("Take every setting from the parameters stored in this PNG (as `darkroom inspect` shows them); options given here override them.", valueName: "image.png"))
    var from: String?

    @OptionGroup var generation: GenerationOptions
    @OptionGroup var runOptions: RunOptions

    @Option(name: [.long, .customShort("o")], help: "Output: a .png file, or a folder (created if needed). Default: the current folder.")
    var output: String?

    func validate() throws {
        if prompt == nil && from == nil { throw ValidationError("give a prompt, or --from IMAGE.png") }
    }

    func run() throws {
        runOptions.apply()
        installInterruptHandlers()

        // Settings from a PNG, when asked; explicit options override them.
        var recipe: ImageRecipe?
        if let from {
            do {
                recipe = try ImageRecipe(png: URL(fileURLWithPath: from))
            } catch let e as DarkroomError {
                printError(e.description)
                if case .fileNotFound = e { throw ExitCode(Exit.noInput) }
                if case .io = e { throw ExitCode(Exit.noInput) }
                throw ExitCode(Exit.badData)
            }
            for i in recipe!.ignored { printWarning("\(from): '\(i)' is not a Darkroom setting and is ignored; the image may differ") }
        }

        let pipeline = try loadPipeline(runOptions.model)
        if let recipe, let name = recipe.model, name != pipeline.model.name {
            printWarning("\(from!) was made with model '\(name)'; rendering with '\(pipeline.model.name)' (\(pipeline.model.folder.path))")
        }
        let defaults = ModelDefaults(model: pipeline.model)
        let r = recipe?.request
        let g = generation
        let count = g.count ?? 1
        let baseSeed = g.seed ?? r?.seed ?? UInt64.random(in: 0...UInt64(UInt32.max))
        let base = GenerationRequest(
            prompt: prompt ?? r?.prompt ?? "", negativePrompt: g.negativePrompt ?? r?.negativePrompt ?? "",
            steps: g.steps ?? r?.steps ?? defaults.steps, guidanceScale: g.guidanceScale ?? r?.guidanceScale ?? defaults.guidanceScale,
            width: g.width ?? r?.width ?? defaults.width, height: g.height ?? r?.height ?? defaults.height, seed: baseSeed,
            eta: g.eta ?? r?.eta ?? 0, sampler: try parseSampler(g.sampler) ?? r?.sampler ?? defaults.sampler)
        do { _ = try pipeline.validate(base) } catch let e as DarkroomError {
            printError(e.description)
            throw ExitCode(Exit.usage)
        }

        let target = OutputTarget(path: output, count: count)
        do { try target.prepare() } catch let e as DarkroomError {
            printError(e.description)
            throw ExitCode(Exit.failure)
        }
        let display = ProgressDisplay(mode: runOptions.progressMode)
        let jobs = BatchJob.series(base, count: count)
        display.plan(total: count, toMake: count, skipped: 0, invalid: 0)
        var written = 0
        var start = 0
        while start < jobs.count {
            let group = Array(jobs[start..<min(jobs.count, start + runOptions.batchSize)])
            start += group.count
            let indices = group.map(\.index)
            let label = group.count == 1 ? (count > 1 ? "image \(indices[0] + 1)/\(count)" : "") : "images \(indices[0] + 1)-\(indices.last! + 1)/\(count)"
            display.started(indices: indices, label: label)
            do {
                if interruptRequested != 0 { throw DarkroomError.cancelled }
                let results = try pipeline.generate(batch: group.map(\.request)) { p in
                    display.step(indices: indices, p)
                    return interruptRequested == 0
                }
                for (job, result) in zip(group, results) {
                    let url = target.url(index: job.index, seed: job.request.seed, prompt: job.request.prompt)
                    try PNGFile.write(result.image, text: [("parameters", result.parameters.a1111Text)], to: url)
                    written += 1
                    display.finished(index: job.index, path: url.path, seed: job.request.seed, seconds: result.seconds)
                }
            } catch DarkroomError.cancelled {
                display.clear()
                display.event("summary", [("made", .int(Int64(written))), ("interrupted", .bool(true))])
                printError("interrupted; \(written) of \(count) image\(count == 1 ? "" : "s") written")
                throw ExitCode(Exit.interrupted)
            } catch let e as DarkroomError {
                display.clear()
                printError(e.description)
                throw ExitCode(Exit.failure)
            }
        }
        display.clear()
    }
}
