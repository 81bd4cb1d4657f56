import ArgumentParser
import Darkroom
import Foundation

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Describe a model: components, parameter counts, dtypes, sizes, scheduler and render defaults.",
        discussion: """
        Reads the configs and the safetensors headers only (no weights are loaded). The hash is \
        the fingerprint batch manifests record (\(ModelFingerprint.method): SHA-256 over the \
        configs, tokenizer files, weight headers and samples of the weights).

        \(Exit.help)
        """
    )

    @Argument(help: "Model folder (diffusers layout). Default: --model, $DARKROOM_MODEL, or the model shipped in Models/.")
    var modelFolder: String?

    @Option(name: [.long, .customShort("m")], help: "Model folder (same as the argument).")
    var model: String?

    @Flag(name: .long, help: "Print one JSON object instead of text.")
    var json = false

    @Option(name: .long, help: ArgumentHelp("Estimate the peak memory of a render of this size (and batch size, default 1; with guidance) and compare it with the memory available, as render and batch do before loading.", valueName: "WxH[xB]"))
    var memory: String?

    func validate() throws {
        if let memory, Self.parseMemorySize(memory) == nil { throw ValidationError("--memory takes WIDTHxHEIGHT or WIDTHxHEIGHTxBATCH, e.g. 512x512 or 512x768x2") }
    }

    static func parseMemorySize(_ s: String) -> (w: Int, h: Int, b: Int)? {
        let parts = s.lowercased().split(separator: "x").map { Int($0) }
        guard parts.count == 2 || parts.count == 3, parts.allSatisfy({ $0 != nil && $0! >= 1 && $0! <= 65536 }) else { return nil }
        return (parts[0]!, parts[1]!, parts.count == 3 ? parts[2]! : 1)
    }

    /// `--memory`: the estimate's parts and the limit, one line each.
    func memoryReport(_ folder: URL, _ size: (w: Int, h: Int, b: Int)) throws {
        let p: ModelMemoryProfile
        let limit: SystemMemory?
        do {
            p = try ModelMemoryProfile(model: folder)
            limit = try SystemMemory.current()
        } catch let e as DarkroomError {
            printError(e.description)
            throw ExitCode(Exit.model)
        }
        // One batch of `b` images, as `render --count b --batch-size b` makes it (the UNet is freed before decoding).
        let e = p.estimate(width: size.w, height: size.h, batch: size.b, guidance: p.unet.timeCondProjDim == nil, releasingWeights: true)
        let f = SystemMemory.format
        print("memory for \(size.w)x\(size.h), batch \(size.b): about \(f(e.total)) (\(e.total) bytes) = weights \(f(e.weights)) + \(e.peakPhase) \(f(e.activations)) + base \(f(e.base))")
        if let limit {
            print("available: \(f(limit.bytes)) (\(limit.source)): \(e.total <= limit.bytes ? "fits" : "does not fit")")
            if e.total > limit.bytes, let fit = p.largestFitting(width: size.w, height: size.h, batch: size.b, releasingWeights: true, limit: limit.bytes) {
                print("largest size that fits: \(fit.width)x\(fit.height)")
            }
        }
    }

    func run() throws {
        let folder = ModelLocator.resolve(modelFolder ?? model)
        if let memory, let size = Self.parseMemorySize(memory) { return try memoryReport(folder, size) }
        let summary: ModelSummary
        let hash: String
        do {
            summary = try ModelSummary(folder: folder)
            hash = try ModelFingerprint.compute(folder: folder)
        } catch let e as DarkroomError {
            printError(e.description)
            throw ExitCode(Exit.model)
        }
        let d = ModelDefaults(folder: folder, defaultSize: summary.defaultSize)
        let fromCard = FileManager.default.fileExists(atPath: folder.appendingPathComponent("darkroom.json").path)

        if json {
            func obj(_ c: ModelSummary.Component) -> JSONText {
                .object([
                    ("name", .string(c.name)), ("class", .string(c.className)), ("parameters", .int(Int64(c.parameters))),
                    ("dtypes", .object(c.dtypes.sorted { $0.key < $1.key }.map { ($0.key, .int(Int64($0.value))) })),
                    ("bytes", .int(Int64(c.bytes))), ("files", .array(c.files.map { .string($0) })),
                    ("details", .object(c.details.map { ($0.0, .string($0.1)) })),
                ])
            }
            let out = JSONText.object([
                ("name", .string(summary.name)), ("path", .string(folder.standardizedFileURL.path)),
                ("pipeline", .string(summary.pipelineClass)), ("hash", .string(hash)), ("hash_method", .string(ModelFingerprint.method)),
                ("parameters", .int(Int64(summary.totalParameters))),
                ("default_size", .array([.int(Int64(summary.defaultSize)), .int(Int64(summary.defaultSize))])),
                ("vae_scale_factor", .int(Int64(summary.vaeScaleFactor))),
                ("components", .array(summary.components.map(obj))),
                ("render_defaults", .object([
                    ("steps", .int(Int64(d.steps))), ("guidance_scale", .float(d.guidanceScale)), ("width", .int(Int64(d.width))),
                    ("height", .int(Int64(d.height))), ("sampler", .string(d.sampler.rawValue)), ("eta", .int(0)),
                    ("source", .string(fromCard ? "darkroom.json" : "diffusers defaults")),
                ])),
                ("samplers", .array(SamplerKind.allCases.map { .string($0.rawValue) })),
            ])
            print(out.serialized)
            return
        }

        var lines: [String] = []
        lines.append("\(summary.name)  (\(folder.standardizedFileURL.path))")
        lines.append("  pipeline      \(summary.pipelineClass), \(ModelSummary.count(summary.totalParameters)) parameters")
        lines.append("  hash          \(hash)")
        lines.append("  default size  \(summary.defaultSize)x\(summary.defaultSize) (latents 1/\(summary.vaeScaleFactor) of that)")
        lines.append("")
        for c in summary.components {
            var head = "\(c.name): \(c.className)"
            if c.parameters > 0 {
                let dtypes = c.dtypes.sorted { $0.value > $1.value }.map { $0.key }.joined(separator: "+")
                head += ", \(ModelSummary.count(c.parameters)) parameters, \(dtypes), \(ModelSummary.bytes(c.bytes))"
            }
            lines.append(head)
            let rows = [("files", c.files.joined(separator: ", "))] + c.details.filter { !(c.name == "scheduler" && $0.0 == "class") }
            let width = rows.map(\.0.count).max() ?? 0
            for (k, v) in rows { lines.append("  " + k.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + v) }
        }
        lines.append("")
        lines.append("render defaults (\(fromCard ? "from darkroom.json" : "diffusers' defaults")): steps \(d.steps), guidance scale \(formatNumberCLI(d.guidanceScale)), \(d.width)x\(d.height), sampler \(d.sampler.rawValue), eta 0")
        lines.append("samplers: \(samplerNames)")
        print(lines.joined(separator: "\n"))
    }
}

/// "7.5", "7".
func formatNumberCLI(_ x: Float) -> String {
    x == x.rounded() && abs(x) < 1e9 ? String(Int(x)) : "\(x)"
}
