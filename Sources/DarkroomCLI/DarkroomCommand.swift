import ArgumentParser
import Darkroom
import Foundation

@main
struct DarkroomCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "darkroom",
        abstract: "Text-to-image with Stable Diffusion models, on the CPU.",
        discussion: """
        Renders images from text prompts with a Stable Diffusion 1.x/2.x model in the diffusers \
        folder layout (model_index.json, text_encoder/, tokenizer/, unet/, vae/, scheduler/) or a \
        single-file .safetensors checkpoint. Without --model, $DARKROOM_MODEL or the model \
        shipped in Models/ is used.

        \(Exit.help)
        """,
        subcommands: [Render.self, Batch.self, Info.self, Inspect.self],
        defaultSubcommand: nil
    )
}

/// Exit codes, documented in --help and the README.
enum Exit {
    static let failure: Int32 = 1
    static let model: Int32 = 3
    static let usage: Int32 = 64
    static let badData: Int32 = 65
    static let noInput: Int32 = 66
    static let interrupted: Int32 = 130

    static let help = """
    Exit codes: 0 success; 1 an image could not be generated or written (the other images were \
    made), or not enough memory for the requested size (refused before loading; the message \
    names the largest size that fits; --ignore-memory-check runs anyway); 3 model folder missing or invalid; 64 bad command line; 65 bad input data: lines of \
    the prompts file that cannot be used (the other lines were rendered), or an image without \
    generation parameters; 66 prompts file or image missing or unreadable; 130 interrupted \
    (Ctrl-C or SIGTERM; rerun the same command to finish).
    """
}

/// Prints one line to stderr.
func printError(_ message: String) {
    FileHandle.standardError.write(Data("darkroom: error: \(message)\n".utf8))
}

func printWarning(_ message: String) {
    FileHandle.standardError.write(Data("darkroom: warning: \(message)\n".utf8))
}

func printNote(_ message: String) {
    FileHandle.standardError.write(Data("darkroom: \(message)\n".utf8))
}

/// Set by SIGINT/SIGTERM; progress callbacks read it and stop at the next step.
nonisolated(unsafe) var interruptRequested: sig_atomic_t = 0

/// The first Ctrl-C (or SIGTERM) asks for a clean stop at the next step; a second one exits at
/// once (finished images are safe either way: PNGs are renamed into place complete).
func installInterruptHandlers() {
    let handler: @convention(c) (Int32) -> Void = { _ in
        if interruptRequested != 0 { _exit(130) }
        interruptRequested = 1
    }
    signal(SIGINT, handler)
    signal(SIGTERM, handler)
}

/// Loads a model folder or single-file checkpoint, mapping failures to exit code 3 with one
/// error line. Checkpoint options (--prediction, --config, --tokenizer) only apply to a file.
func loadPipeline(_ options: RunOptions) throws -> StableDiffusionPipeline {
    limitHeapRetention()
    let folder = ModelLocator.resolve(options.model)
    do {
        let pipeline: StableDiffusionPipeline
        if let c = options.checkpointOptions {
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: folder.path, isDirectory: &isDir), isDir.boolValue {
                printError("--prediction, --config and --tokenizer apply to single-file checkpoints; \(folder.path) is a model folder (its own configs are used)")
                throw ExitCode(Exit.usage)
            }
            if !FileManager.default.fileExists(atPath: folder.path) { throw DarkroomError.fileNotFound(path: folder.path) }
            pipeline = StableDiffusionPipeline(model: try StableDiffusionModel(checkpoint: folder, options: c))
        } else {
            pipeline = try StableDiffusionPipeline(folder: folder)
        }
        for w in pipeline.model.warnings { printWarning(w) }
        return pipeline
    } catch let e as DarkroomError {
        printError(e.description)
        // Sizes that are not SD's cannot always be inferred from a checkpoint's tensors.
        // (Not when the file itself is broken: truncated, a lying header.)
        if folder.pathExtension.lowercased() == "safetensors", options.config == nil, (try? SafetensorsFile(url: folder)) != nil {
            switch e {
            case .fileNotFound, .io: break
            default: printNote("a checkpoint that is not a standard SD 1.x/2.x size may need --config FOLDER (a diffusers folder with its configs)")
            }
        }
        throw ExitCode(Exit.model)
    }
}

/// A shell-quoted command line (for "run this again to resume").
func shellCommand(_ args: [String]) -> String {
    args.map { a -> String in
        let safe = a.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || "-_./=:,@%+".unicodeScalars.contains($0) }
        return safe && !a.isEmpty ? a : "'" + a.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }.joined(separator: " ")
}

/// The sampler list for --help (it grows as samplers are added).
var samplerNames: String { SamplerKind.allCases.map(\.rawValue).joined(separator: ", ") }

func parseSampler(_ name: String?) throws -> SamplerKind? {
    guard let name else { return nil }
    guard let k = SamplerKind(name: name) else { throw ValidationError("unknown sampler '\(name)'; the samplers are \(samplerNames)") }
    return k
}
