// libFuzzer entry points for Darkroom's parsers of untrusted input. One binary; the target is
// chosen by $DARKROOM_FUZZ_TARGET (see Fuzz/run.sh). Each target must never trap: any input
// either parses or throws a DarkroomError.
import Foundation

/// Bytes as a whole safetensors file: header validation and tensor reads.
func fuzzSafetensors(_ data: Data) {
    let url = FuzzScratch.file
    guard (try? data.write(to: url)) != nil else { return }
    guard let f = try? SafetensorsFile(url: url) else { return }
    for name in f.names.prefix(16) { _ = try? f.tensor(name) }
}
/// Bytes as every config.json Darkroom reads.
func fuzzConfig(_ data: Data) {
    guard let c = try? ConfigFile(path: "fuzz/config.json", data: data) else { return }
    _ = try? UNetConfig(c)
    _ = try? VAEConfig(c)
    _ = try? CLIPTextConfig(c)
    _ = try? SchedulerConfig.decode(data, path: "fuzz/scheduler_config.json")
}
/// Bytes as prompt text through the CLIP tokenizer and the A1111 prompt parser.
nonisolated(unsafe) let tokenizer: CLIPTokenizer? = {
    let dir = URL(fileURLWithPath: ProcessInfo.processInfo.environment["DARKROOM_FUZZ_TOKENIZER"] ?? "Models/tiny-sd1/tokenizer")
    return try? CLIPTokenizer(directory: dir)
}()
func fuzzTokenizer(_ data: Data) {
    let text = String(decoding: data, as: UTF8.self)
    _ = tokenizer?.encode(text)
    _ = try? PromptParser.parse(text)
}
/// Bytes as a PNG file through libpng (the C shim catches libpng's longjmp errors).
func fuzzPNG(_ data: Data) {
    let url = FuzzScratch.file
    guard (try? data.write(to: url)) != nil else { return }
    _ = try? PNGFile.read(url, maxPixels: 1 << 20)
}
/// Bytes as a batch prompts file (plain text or JSON Lines, detected as `darkroom batch` does),
/// turned into jobs; and each line as a manifest record (a rerun reads the folder's manifests).
func fuzzPrompts(_ data: Data) {
    let file = PromptFile(data: data, path: "fuzz.jsonl")
    _ = file.jobs(defaults: BatchDefaults(steps: 20, width: 512, height: 512))
    if let text = String(data: data, encoding: .utf8) {
        for line in text.split(separator: "\n").prefix(64) { _ = ManifestRecord(line: String(line)) }
    }
}
/// Bytes as the A1111 `parameters` text of a PNG (`inspect`, `render --from`).
func fuzzParameters(_ data: Data) {
    let text = String(decoding: data, as: UTF8.self)
    if let p = try? GenerationParameters(parsing: text) { _ = try? ImageRecipe(parameters: p) }
}
/// Bytes through the strict JSON parser (prompt files, headers, configs all use it).
func fuzzJSON(_ data: Data) {
    _ = try? JSONParser.parse(data)
}

enum FuzzScratch {
    static let file = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("darkroom-fuzz-\(getpid()).bin")
}

let fuzzTarget: (Data) -> Void = {
    switch ProcessInfo.processInfo.environment["DARKROOM_FUZZ_TARGET"] ?? "" {
    case "safetensors": return fuzzSafetensors
    case "config": return fuzzConfig
    case "tokenizer": return fuzzTokenizer
    case "png": return fuzzPNG
    case "json": return fuzzJSON
    case "prompts": return fuzzPrompts
    case "parameters": return fuzzParameters
    default:
        FileHandle.standardError.write(Data("set DARKROOM_FUZZ_TARGET to safetensors, config, tokenizer, png, json, prompts or parameters\n".utf8))
        exit(2)
    }
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func LLVMFuzzerTestOneInput(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    fuzzTarget(Data(bytes: bytes, count: count))
    return 0
}
