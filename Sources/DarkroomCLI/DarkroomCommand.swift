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
        folder layout (model_index.json, text_encoder/, tokenizer/, unet/, vae/, scheduler/). \
        Without --model, the model shipped in Models/ is used.

        Exit codes: 0 success; 1 failure while generating or writing; 3 model folder missing or \
        invalid; 64 bad command line; 130 interrupted (Ctrl-C).
        """,
        subcommands: [Render.self],
        defaultSubcommand: nil
    )
}

/// Exit codes documented in --help.
enum Exit {
    static let failure: Int32 = 1
    static let usage: Int32 = 64
    static let model: Int32 = 3
    static let interrupted: Int32 = 130
}

/// Prints one line to stderr.
func printError(_ message: String) {
    FileHandle.standardError.write(Data("darkroom: error: \(message)\n".utf8))
}

func printWarning(_ message: String) {
    FileHandle.standardError.write(Data("darkroom: warning: \(message)\n".utf8))
}

/// Set by SIGINT/SIGTERM; the progress callback reads it and cancels at the next step.
nonisolated(unsafe) var interruptRequested: sig_atomic_t = 0

func installInterruptHandlers() {
    let handler: @convention(c) (Int32) -> Void = { _ in interruptRequested = 1 }
    signal(SIGINT, handler)
    signal(SIGTERM, handler)
}
