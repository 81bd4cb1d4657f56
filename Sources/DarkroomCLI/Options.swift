import ArgumentParser
import Darkroom
import Foundation

/// Generation settings shared by `render` and `batch` (in `batch` they are the defaults that
/// the lines of the prompts file override).
struct GenerationOptions: ParsableArguments {
    @Option(name: [.customLong("negative-prompt"), .customShort("n")], help: "What the image should not show (the unconditional branch of guidance).")
    var negativePrompt: String?

    @Option(name: .long, help: "Denoising steps (default: the model's recommended value).")
    var steps: Int?

    @Option(name: [.customLong("guidance-scale"), .customLong("cfg-scale")], help: "Classifier-free guidance scale; 1 or less disables guidance.")
    var guidanceScale: Float?

    @Option(name: .long, help: "Seed of the initial noise (as torch.manual_seed in diffusers); image i of a prompt uses seed + i.")
    var seed: UInt64?

    @Option(name: .long, help: "Image width in pixels, a multiple of 8 (default: the model's size).")
    var width: Int?

    @Option(name: .long, help: "Image height in pixels, a multiple of 8 (default: the model's size).")
    var height: Int?

    @Option(name: .long, help: "Images per prompt; image i uses seed + i. (default: 1)")
    var count: Int?

    @Option(name: .long, help: "DDIM eta: 0 is deterministic; larger values add seeded noise at each step. (default: 0)")
    var eta: Float?

    @Option(name: .long, help: ArgumentHelp("Sampler: \(samplerNames). (default: ddim)", valueName: "name"))
    var sampler: String?

    @Option(name: .customLong("clip-skip"), help: ArgumentHelp("Clip skip as in AUTOMATIC1111 and stable-diffusion.cpp: 1 = none (the text encoder's last layer), 2 = the penultimate layer (diffusers' clip_skip=1), ... (default: 1)", valueName: "N"))
    var clipSkip: Int?

    @Option(name: .customLong("prompt-mode"), help: ArgumentHelp("How prompts are read: auto (A1111 syntax: (word:1.3), (word), [word], \\( escapes, BREAK, prompts over 75 tokens in 75-token chunks; plain prompts that fit run diffusers' exact path), a1111 (the same, always A1111's path) or diffusers (text as is, truncated to 77 tokens, no weights). (default: auto)", valueName: "mode"))
    var promptMode: PromptMode?

    @Option(name: .customLong("guidance-rescale"), help: ArgumentHelp("Guidance rescale φ in [0, 1] (diffusers' guidance_rescale): pulls the guided prediction towards the text prediction's standard deviation, against over-exposure with high guidance or zero-terminal-SNR models; 0 is off. (default: 0)", valueName: "φ"))
    var guidanceRescale: Float?

    func validate() throws {
        if let count, count < 1 || count > PromptFile.maxCount { throw ValidationError("--count must be between 1 and \(PromptFile.maxCount)") }
        if let steps, steps < 1 || steps > 1000 { throw ValidationError("--steps must be between 1 and 1000") }
        if let width, width < 8 || width > 8192 || width % 8 != 0 { throw ValidationError("--width must be a multiple of 8 between 8 and 8192") }
        if let height, height < 8 || height > 8192 || height % 8 != 0 { throw ValidationError("--height must be a multiple of 8 between 8 and 8192") }
        if let guidanceScale, !(0...100).contains(guidanceScale) { throw ValidationError("--guidance-scale must be between 0 and 100") }
        if let eta, !(0...1).contains(eta) { throw ValidationError("--eta must be between 0 and 1") }
        if let clipSkip, clipSkip < 1 || clipSkip > 64 { throw ValidationError("--clip-skip must be at least 1 (1 = no skip, as in AUTOMATIC1111)") }
        if let guidanceRescale, !(0...1).contains(guidanceRescale) { throw ValidationError("--guidance-rescale must be between 0 and 1") }
        _ = try parseSampler(sampler)
    }
}

/// How the work runs: model, threads, UNet batch size, progress output.
struct RunOptions: ParsableArguments {
    @Option(name: [.long, .customShort("m")], help: "Model folder (diffusers layout) or single-file SD 1.x/2.x .safetensors checkpoint (LDM layout; .ckpt pickles are refused). Default: $DARKROOM_MODEL, or the model shipped in Models/.")
    var model: String?

    @Option(name: .long, help: ArgumentHelp("Single-file checkpoints: what the UNet predicts, epsilon or v_prediction (default: inferred; SD 2.x files count as v_prediction, so SD 2.x base (512) checkpoints need epsilon).", valueName: "type"))
    var prediction: SchedulerConfig.PredictionType?

    @Option(name: .long, help: ArgumentHelp("Single-file checkpoints: a diffusers model folder whose unet/, vae/, text_encoder/, scheduler/ (and tokenizer/) configs describe the checkpoint, instead of inferring them (diffusers' from_single_file(config=)).", valueName: "folder"))
    var config: String?

    @Option(name: .long, help: ArgumentHelp("Single-file checkpoints: a tokenizer folder (vocab.json + merges.txt, or tokenizer.json) instead of the CLIP vocabulary shipped in Models/clip-tokenizer.", valueName: "folder"))
    var tokenizer: String?

    /// The checkpoint options given on the command line (nil when none was).
    var checkpointOptions: CheckpointOptions? {
        guard prediction != nil || config != nil || tokenizer != nil else { return nil }
        return CheckpointOptions(predictionType: prediction, configFolder: config.map { URL(fileURLWithPath: $0) },
                                 tokenizerFolder: tokenizer.map { URL(fileURLWithPath: $0) })
    }

    @Option(name: .long, help: "Worker threads (default: all cores).")
    var threads: Int?

    @Option(name: .customLong("batch-size"), help: "Images that go through the UNet together (same size, steps, sampler and prompt length in 75-token chunks); the images are the same as one at a time. On a CPU this was not measurably faster (see the README).")
    var batchSize: Int = 1

    @Option(name: .long, help: "Progress on stderr: bar (two bars on a terminal, a line per image otherwise), jsonl (one JSON object per event, for scripts) or quiet.")
    var progress: ProgressMode?

    @Flag(name: [.long, .customShort("q")], help: "Same as --progress quiet.")
    var quiet = false

    var progressMode: ProgressMode { quiet ? .quiet : progress ?? .bar }

    @Flag(name: .customLong("ignore-memory-check"), help: "Render even when the memory estimate (weights + the largest working set for the size and batch) exceeds the memory available (cgroup limit or MemAvailable; $DARKROOM_MEMORY_LIMIT overrides it, e.g. 4G). Without it such a run is refused before loading, naming the largest size that fits (exit code 1).")
    var ignoreMemoryCheck = false

    func validate() throws {
        if let threads, threads < 1 || threads > 1024 { throw ValidationError("--threads must be between 1 and 1024") }
        guard batchSize >= 1, batchSize <= 64 else { throw ValidationError("--batch-size must be between 1 and 64") }
    }

    func apply() {
        if let threads { Threads.count = threads }
    }
}

extension PromptMode: ExpressibleByArgument {}

extension SchedulerConfig.PredictionType: ExpressibleByArgument {
    public static var allValueStrings: [String] { ["epsilon", "v_prediction"] }
}

enum ProgressMode: String, ExpressibleByArgument, CaseIterable {
    case quiet, bar, jsonl
}

/// Defaults tuned per model: the model card's values when the folder has a `darkroom.json`,
/// otherwise diffusers' (50 steps, guidance 7.5, the UNet's trained size).
struct ModelDefaults {
    var steps = 50
    var guidanceScale: Float = 7.5
    var width: Int
    var height: Int
    var sampler = SamplerKind.ddim

    init(folder: URL, defaultSize: Int) {
        width = defaultSize
        height = defaultSize
        let url = folder.appendingPathComponent("darkroom.json")
        if let c = try? ConfigFile.load(url) {
            if let v = try? c.int("steps", range: 1...1000) { steps = v }
            if let v = try? c.double("guidance_scale") { guidanceScale = Float(v) }
            if let v = try? c.int("width", range: 8...8192) { width = v }
            if let v = try? c.int("height", range: 8...8192) { height = v }
            if let v = try? c.string("sampler", default: "ddim"), let k = SamplerKind(name: v) { sampler = k }
        }
    }

    init(model: StableDiffusionModel) { self.init(folder: model.folder, defaultSize: model.defaultSize) }
}
