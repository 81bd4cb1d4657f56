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
          darkroom render "a castle" --preview 5 --output castle.png  (castle.preview.png every 5 steps)
          darkroom render "a castle" --model sd15.safetensors       (a single-file checkpoint)

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

    @Option(name: .customLong("init-image"), help: ArgumentHelp("img2img: start from this PNG instead of pure noise (samplers ddim, euler, euler_a, dpmpp_2m, dpmpp_2m_karras). Without --width/--height the output takes its size rounded down to a multiple of 8.", valueName: "image.png"))
    var initImage: String?

    @Option(name: .long, help: "img2img: how much of the init image is repainted, in (0, 1]; 1 ignores it (default 0.75).")
    var strength: Float?

    @Option(name: .long, help: ArgumentHelp("Write a preview of each image every N steps next to it, as NAME.preview.png (replaced atomically each time; removed once the image is written unless --keep-preview). Decoded from the sampler's estimate of the final image with --preview-decoder, else the model folder's vae_tiny/ (a diffusers AutoencoderTiny), else the full VAE.", valueName: "N"))
    var preview: Int?

    @Option(name: .customLong("preview-decoder"), help: ArgumentHelp("The TAESD decoder for --preview: a diffusers AutoencoderTiny folder (e.g. Models/tiny-taesd) or an original taesd_decoder.safetensors.", valueName: "path"))
    var previewDecoder: String?

    @Flag(name: .customLong("keep-preview"), help: "Keep each image's last preview (NAME.preview.png) instead of removing it.")
    var keepPreview = false

    func validate() throws {
        if prompt == nil && from == nil { throw ValidationError("give a prompt, or --from IMAGE.png") }
        if let preview, preview < 1 { throw ValidationError("--preview must be at least 1 (a preview every N steps)") }
        if preview == nil && (previewDecoder != nil || keepPreview) { throw ValidationError("--preview-decoder and --keep-preview need --preview N") }
        if let strength, !(strength > 0 && strength <= 1) { throw ValidationError("--strength must be in (0, 1]") }
        if strength != nil && initImage == nil { throw ValidationError("--strength needs --init-image") }
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

        // Memory, before any weight is loaded.
        if let check = MemoryCheck(runOptions) {
            let p = check.profile, g = generation, r = recipe?.request
            let d = ModelDefaults(folder: ModelLocator.resolve(runOptions.model), defaultSize: p.defaultSize)
            var w = g.width ?? r?.width, h = g.height ?? r?.height
            if let initImage, w == nil || h == nil, let info = try? PNGFile.info(URL(fileURLWithPath: initImage)) {
                let f = p.vaeScaleFactor
                w = w ?? max(f, info.width / f * f)
                h = h ?? max(f, info.height / f * f)
            }
            let scale = g.guidanceScale ?? r?.guidanceScale ?? d.guidanceScale
            try check.check(width: w ?? d.width, height: h ?? d.height,
                            batch: initImage == nil ? min(runOptions.batchSize, g.count ?? 1) : 1,
                            guidance: scale > 1 && p.unet.timeCondProjDim == nil, imageToImage: initImage != nil,
                            singleBatch: initImage == nil && (g.count ?? 1) <= runOptions.batchSize,
                            ignore: runOptions.ignoreMemoryCheck)
        }

        let pipeline = try loadPipeline(runOptions)
        if let recipe, let name = recipe.model, name != pipeline.model.name {
            printWarning("\(from!) was made with model '\(name)'; rendering with '\(pipeline.model.name)' (\(pipeline.model.folder.path))")
        }
        let defaults = ModelDefaults(model: pipeline.model)
        let r = recipe?.request
        let g = generation
        let count = g.count ?? 1

        // img2img: the init image, and the VAE encoder loaded once for every image.
        var img2img: (image: RGBImage, encoder: VAEEncoder)?
        if let initImage {
            do {
                let image = try PNGFile.read(URL(fileURLWithPath: initImage)).image
                img2img = (image, try pipeline.loadVAEEncoder())
            } catch let e as DarkroomError {
                printError(e.description)
                if case .fileNotFound = e { throw ExitCode(Exit.noInput) }
                throw ExitCode(Exit.badData)
            }
        }
        let baseSeed = g.seed ?? r?.seed ?? UInt64.random(in: 0...UInt64(UInt32.max))
        let base = GenerationRequest(
            prompt: prompt ?? r?.prompt ?? "", negativePrompt: g.negativePrompt ?? r?.negativePrompt ?? "",
            steps: g.steps ?? r?.steps ?? defaults.steps, guidanceScale: g.guidanceScale ?? r?.guidanceScale ?? defaults.guidanceScale,
            width: g.width ?? r?.width ?? (img2img == nil ? defaults.width : nil),
            height: g.height ?? r?.height ?? (img2img == nil ? defaults.height : nil), seed: baseSeed,
            eta: g.eta ?? r?.eta ?? 0, sampler: try parseSampler(g.sampler) ?? r?.sampler ?? defaults.sampler,
            clipSkip: g.clipSkip ?? r?.clipSkip ?? 1, promptMode: g.promptMode ?? r?.promptMode ?? .auto,
            guidanceRescale: g.guidanceRescale ?? r?.guidanceRescale ?? 0)
        do {
            if let i = img2img {
                _ = try pipeline.plan(base, initImage: i.image, strength: strength ?? 0.75)
            } else {
                _ = try pipeline.validate(base)
            }
        } catch let e as DarkroomError {
            printError(e.description)
            throw ExitCode(Exit.usage)
        }

        let display = ProgressDisplay(mode: runOptions.progressMode)
        var previewer: Previewer?
        if let preview {
            do {
                let decoder = try Previewer.decoder(explicit: previewDecoder, model: pipeline.model)
                previewer = Previewer(every: preview, decoder: decoder, keep: keepPreview, pipeline: pipeline, display: display)
            } catch let e as DarkroomError {
                printError(e.description)
                if case .fileNotFound = e { throw ExitCode(Exit.noInput) }
                throw ExitCode(Exit.badData)
            }
            if runOptions.progressMode == .bar { printNote("a preview every \(preview) step\(preview == 1 ? "" : "s") in NAME.preview.png, decoded with \(previewer!.decoderDescription)") }
        }

        let target = OutputTarget(path: output, count: count)
        do { try target.prepare() } catch let e as DarkroomError {
            printError(e.description)
            throw ExitCode(Exit.failure)
        }
        let jobs = BatchJob.series(base, count: count)
        display.plan(total: count, toMake: count, skipped: 0, invalid: 0)
        var written = 0
        var start = 0
        while start < jobs.count {
            // img2img runs one image at a time.
            let group = Array(jobs[start..<min(jobs.count, start + (img2img == nil ? runOptions.batchSize : 1))])
            start += group.count
            let indices = group.map(\.index)
            let label = group.count == 1 ? (count > 1 ? "image \(indices[0] + 1)/\(count)" : "") : "images \(indices[0] + 1)-\(indices.last! + 1)/\(count)"
            display.started(indices: indices, label: label)
            do {
                if interruptRequested != 0 { throw DarkroomError.cancelled }
                let onProgress: (GenerationProgress) -> Bool = { p in
                    display.step(indices: indices, p)
                    return interruptRequested == 0
                }
                let urls = target.urls(for: group)
                let onStep = previewer.map { p in { (s: DenoisingStep) in p.step(s, outputs: urls) } }
                let results = try img2img.map { i in
                    [try pipeline.generate(group[0].request, initImage: i.image, strength: strength ?? 0.75, encoder: i.encoder,
                                           progress: onProgress, onStep: onStep)]
                } ?? pipeline.generate(batch: group.map(\.request), progress: onProgress, onStep: onStep,
                                       releasingWeights: start >= jobs.count)  // the last group
                for (job, (result, url)) in zip(group, zip(results, urls)) {
                    try PNGFile.write(result.image, text: [("parameters", result.parameters.a1111Text)], to: url)
                    previewer?.finished(url)
                    written += 1
                    display.finished(index: job.index, path: url.path, seed: job.request.seed, seconds: result.seconds)
                }
            } catch DarkroomError.cancelled {
                previewer?.discard()
                display.clear()
                display.event("summary", [("made", .int(Int64(written))), ("interrupted", .bool(true))])
                printError("interrupted; \(written) of \(count) image\(count == 1 ? "" : "s") written")
                throw ExitCode(Exit.interrupted)
            } catch let e as DarkroomError {
                previewer?.discard()
                display.clear()
                printError(e.description)
                throw ExitCode(Exit.failure)
            }
        }
        display.clear()
    }
}
