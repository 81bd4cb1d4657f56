import ArgumentParser
import Darkroom
import Foundation

struct Batch: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Render every prompt of a file into a folder; rerun to resume.",
        discussion: """
        The prompts file is plain text (one prompt per line) or JSON Lines, one object per line \
        with any of the keys \(PromptFile.keys.joined(separator: ", ")), e.g.
          {"prompt": "a red heart", "negative_prompt": "blurry", "seed": 42}
        Blank lines and lines starting with '#' are skipped. The options below are the defaults \
        that the lines override. A line without a seed uses --seed, or else its first job index \
        (so seeds are fixed and a rerun makes the same images). Image i of a line uses seed + i.

        Jobs are numbered in file order (each line's count in a row); the number, seed and prompt \
        name each file: \(FileNamePattern.defaultPattern) by default (see --name-pattern). A line \
        that cannot be used is reported with its file and line number, keeps its numbers, and \
        does not stop the others.

        Rerunning the same command skips the images that are complete and makes the rest. PNGs \
        appear only complete (written to a hidden temporary name, then linked into place), and \
        never replace a different image. Ctrl-C or SIGTERM stops at the next step (a second \
        Ctrl-C at once). Each image gets a record in OUTPUT/manifest.jsonl (one JSON object per \
        line: all parameters, model, model hash, file, seconds).

        Several machines: give each --shard K/N (K = 1...N) with the same file and folder; machine \
        K makes the jobs whose number modulo N is K-1 and writes its own manifest-K-of-N.jsonl. \
        Together the shards make exactly the images of one unsharded run.

        Examples:
          darkroom batch --prompts prompts.txt --output out/ --steps 30 --count 4
          darkroom batch --prompts prompts.jsonl --output /shared/run1 --shard 3/8
          darkroom batch -p prompts.jsonl -o out/ --progress jsonl 2> events.jsonl

        \(Exit.help)
        """
    )

    @Option(name: [.customLong("prompts"), .customShort("p")], help: ArgumentHelp("The prompts file (plain text or JSON Lines); '-' reads standard input.", valueName: "file"))
    var prompts: String

    @Option(name: [.long, .customShort("o")], help: "The output folder (created if needed).")
    var output: String

    @Option(name: .long, help: "Prompts file format: auto (JSON Lines for .jsonl/.ndjson or when the first line starts with '{'), text or jsonl.")
    var format: PromptFile.Format = .auto

    @Option(name: .customLong("name-pattern"), help: ArgumentHelp(
        "File names: placeholders \((FileNamePattern.numberFields + FileNamePattern.textFields).map { "{\($0)}" }.joined(separator: " ")); {x:N} pads a number to N digits or cuts a text to N bytes; '/' makes subfolders.",
        valueName: "pattern"))
    var namePattern: String = FileNamePattern.defaultPattern

    @Option(name: .long, help: ArgumentHelp("Make only share K of N (1-based) of the jobs, for running one batch on N machines.", valueName: "K/N"))
    var shard: String?

    @Flag(name: .customLong("dry-run"), help: "List what would be made and skipped, then stop.")
    var dryRun = false

    @OptionGroup var generation: GenerationOptions
    @OptionGroup var runOptions: RunOptions

    func validate() throws {
        if let shard { do { _ = try Shard(parsing: shard) } catch let e as DarkroomError { throw ValidationError(e.description) } }
        do { _ = try FileNamePattern(namePattern) } catch let e as DarkroomError { throw ValidationError(e.description) }
    }

    func run() throws {
        runOptions.apply()
        installInterruptHandlers()
        let shard = try shard.map { try Shard(parsing: $0) } ?? .all
        let pattern = try FileNamePattern(namePattern)
        let display = ProgressDisplay(mode: runOptions.progressMode)

        // The prompts file first: a missing file should not wait for a model to load.
        let file: PromptFile
        do {
            if prompts == "-" {
                file = PromptFile(data: FileHandle.standardInput.readDataToEndOfFile(), path: "<stdin>", format: format)
            } else {
                file = try PromptFile.load(URL(fileURLWithPath: prompts), format: format, displayPath: prompts)
            }
        } catch let e as DarkroomError {
            printError(e.description)
            throw ExitCode(Exit.noInput)
        }
        let g = generation
        func batchDefaults(_ md: ModelDefaults) throws -> BatchDefaults {
            BatchDefaults(
                negativePrompt: g.negativePrompt ?? "", seed: g.seed, steps: g.steps ?? md.steps,
                guidanceScale: g.guidanceScale ?? md.guidanceScale, width: g.width ?? md.width, height: g.height ?? md.height,
                count: g.count ?? 1, sampler: try parseSampler(g.sampler) ?? md.sampler, eta: g.eta ?? 0,
                clipSkip: g.clipSkip ?? 1, promptMode: g.promptMode ?? .auto, guidanceRescale: g.guidanceRescale ?? 0)
        }
        // Memory, before any weight is loaded: the largest image of this shard decides.
        if let check = MemoryCheck(runOptions) {
            let p = check.profile
            let md = ModelDefaults(folder: ModelLocator.resolve(runOptions.model), defaultSize: p.defaultSize)
            let mine = file.jobs(defaults: try batchDefaults(md)).jobs.filter { shard.contains(jobIndex: $0.index) }
            let f = p.vaeScaleFactor
            var largest: (w: Int, h: Int, img2img: Bool, guidance: Bool)?
            for job in mine {
                var w = job.request.width ?? md.width, h = job.request.height ?? md.height
                if let start = job.initImage, job.request.width == nil || job.request.height == nil,
                   let info = try? PNGFile.info(start.url) {
                    w = job.request.width ?? max(f, info.width / f * f)
                    h = job.request.height ?? max(f, info.height / f * f)
                }
                let guidance = job.request.guidanceScale > 1 && p.unet.timeCondProjDim == nil
                if largest == nil || w * h > largest!.w * largest!.h || (w * h == largest!.w * largest!.h && guidance && !largest!.guidance) {
                    largest = (w, h, job.initImage != nil, guidance)
                }
            }
            if let l = largest {
                try check.check(width: l.w, height: l.h, batch: l.img2img ? 1 : min(runOptions.batchSize, mine.count),
                                guidance: l.guidance, imageToImage: mine.contains { $0.initImage != nil },
                                singleBatch: mine.count <= runOptions.batchSize && !mine.contains { $0.initImage != nil },
                                ignore: runOptions.ignoreMemoryCheck)
            }
        }
        let pipeline = try loadPipeline(runOptions)
        let md = ModelDefaults(model: pipeline.model)
        let (jobs, allProblems) = file.jobs(defaults: try batchDefaults(md))
        // Each shard reports the bad lines whose images would have been its own.
        let problems = allProblems.filter { p in p.indices.map { $0.contains { shard.contains(jobIndex: $0) } } ?? true }
        for p in problems { display.problem(source: p.source.description, message: p.message) }
        if jobs.isEmpty {
            printError(allProblems.isEmpty ? "\(file.path): no prompts (only blank and comment lines)" : "\(file.path): no usable lines")
            throw ExitCode(Exit.badData)
        }

        let outURL = URL(fileURLWithPath: output)
        let runner: BatchRunner
        do {
            runner = try BatchRunner(pipeline: pipeline, options: BatchOptions(output: outURL, namePattern: pattern, shard: shard, batchSize: runOptions.batchSize))
        } catch let e as DarkroomError {
            printError(e.description)
            throw ExitCode(Exit.model)
        }

        if dryRun {
            let plan = runner.plan(jobs)
            for (job, f) in plan.done { print("skip  \(f)  (\(job.source.map { "\($0)" } ?? ""))") }
            for (job, f) in plan.toMake { print("make  \(f)  (\(job.source.map { "\($0)" } ?? ""))") }
            for (job, m) in plan.invalid { printError("\(job.source.map { "\($0)" } ?? "job \(job.index)"): \(m)") }
            printNote("\(plan.total) images in shard \(shard): \(plan.toMake.count) to make, \(plan.done.count) already made, \(plan.invalid.count + problems.count) invalid")
            if !plan.invalid.isEmpty || !problems.isEmpty { throw ExitCode(Exit.badData) }
            return
        }

        let invalidLines = Box(Set<String>())
        let plannedNames = Box([Int: String]())
        let summary: BatchSummary
        do {
            summary = try runner.run(jobs) { event in
                if interruptRequested != 0 { runner.cancel() }
                switch event {
                case .planned(let plan):
                    display.plan(total: plan.total, toMake: plan.toMake.count, skipped: plan.done.count, invalid: plan.invalid.count)
                    plannedNames.value = Dictionary(plan.toMake.map { ($0.job.index, $0.file) }, uniquingKeysWith: { a, _ in a })
                    invalidLines.value = Set(plan.invalid.map { $0.job.source?.description ?? "job \($0.job.index)" })
                    for (job, f) in plan.done { display.skipped(index: job.index, file: outURL.appendingPathComponent(f).path) }
                    if !plan.done.isEmpty && display.mode == .bar {
                        printNote("\(plan.done.count) of \(plan.total) images already in \(outURL.path); making the other \(plan.toMake.count)")
                    }
                case .started(let js):
                    let first = plannedNames.value[js[0].index] ?? "image \(js[0].index)"
                    let names = js.count == 1 ? first : "\(first) +\(js.count - 1)"
                    display.started(indices: js.map(\.index), label: names)
                case .step(let js, let p):
                    display.step(indices: js.map(\.index), p)
                case .finished(let job, let f, let seconds):
                    display.finished(index: job.index, path: outURL.appendingPathComponent(f).path, seed: job.request.seed, seconds: seconds)
                case .failed(let job, let message):
                    display.failure(source: job.source?.description ?? "job \(job.index)", message: message, index: job.index)
                }
            }
        } catch let e as DarkroomError {
            display.clear()
            printError(e.description)
            throw ExitCode(Exit.failure)
        }

        let badLines = problems.count + invalidLines.value.count
        var text = "\(summary.made) made, \(summary.skipped) skipped, \(summary.failed) failed"
        if badLines > 0 { text += ", \(badLines) bad line\(badLines == 1 ? "" : "s")" }
        text += " in \(formatDuration(summary.seconds))"
        if summary.made > 0 { text += String(format: " (%.1f images/min)", display.rate) }
        display.summary([
            ("made", .int(Int64(summary.made))), ("skipped", .int(Int64(summary.skipped))), ("failed", .int(Int64(summary.failed))),
            ("invalid", .int(Int64(badLines))), ("remaining", .int(Int64(summary.remaining))),
            ("seconds", .double((summary.seconds * 1000).rounded() / 1000)), ("interrupted", .bool(summary.cancelled)),
        ], text: text)

        if summary.cancelled {
            printError("interrupted: \(summary.made + summary.skipped) of \(summary.total) images are done; to make the other \(summary.remaining), run the same command again:\n  \(shellCommand(CommandLine.arguments))")
            throw ExitCode(Exit.interrupted)
        }
        if let stop = summary.stoppedBy {
            printError("stopped at \(summary.stoppedAt ?? "an image"): \(stop.description); \(summary.made + summary.skipped) of \(summary.total) images are done, \(summary.remaining) not made. Fix it and run the same command again.")
            throw ExitCode(Exit.failure)
        }
        if summary.failed > 0 { throw ExitCode(Exit.failure) }
        if badLines > 0 {
            if display.mode != .jsonl {
                printError("\(badLines) line\(badLines == 1 ? "" : "s") of \(file.path) could not be used (see above); the other images were made")
            }
            throw ExitCode(Exit.badData)
        }
    }
}

extension PromptFile.Format: ExpressibleByArgument {}

/// Mutable state shared with an escaping callback on the same thread.
final class Box<T>: @unchecked Sendable {
    var value: T
    init(_ value: T) { self.value = value }
}
