import Foundation

/// The tokenizer of a single-file checkpoint, which carries none: the CLIP vocabulary shipped
/// with Darkroom (`Models/clip-tokenizer/{vocab.json,merges.txt}`) with the special-token
/// configuration of the real SD 1.x or SD 2.x `tokenizer/` folder. The two differ only in the
/// pad token: `<|endoftext|>` (49407) for SD 1.x, `!` (id 0) for SD 2.x, which also makes every
/// `!` in a prompt its own token, as transformers does with that folder.
enum CheckpointTokenizer {
    static let vocabularyFolderName = "clip-tokenizer"

    /// Finds `Models/clip-tokenizer`: `$DARKROOM_TOKENIZER`, then upwards from the executable,
    /// then the source checkout this library was built from, then the working directory.
    static func locateVocabulary() throws -> URL {
        let fm = FileManager.default
        func ok(_ u: URL) -> Bool {
            fm.fileExists(atPath: u.appendingPathComponent("vocab.json").path)
                && fm.fileExists(atPath: u.appendingPathComponent("merges.txt").path)
        }
        var candidates: [URL] = []
        if let env = ProcessInfo.processInfo.environment["DARKROOM_TOKENIZER"], !env.isEmpty {
            candidates.append(URL(fileURLWithPath: env))
        }
        var dir = URL(fileURLWithPath: CommandLine.arguments.first ?? ".").resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<6 {
            candidates.append(dir.appendingPathComponent("Models").appendingPathComponent(vocabularyFolderName))
            dir = dir.deletingLastPathComponent()
        }
        // Sources/Darkroom/Weights/CheckpointTokenizer.swift -> repository root.
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        candidates.append(repo.appendingPathComponent("Models").appendingPathComponent(vocabularyFolderName))
        candidates.append(URL(fileURLWithPath: fm.currentDirectoryPath).appendingPathComponent("Models").appendingPathComponent(vocabularyFolderName))
        if let found = candidates.first(where: ok) { return found }
        throw DarkroomError.fileNotFound(path: "Models/\(vocabularyFolderName) (the CLIP vocabulary for single-file checkpoints; searched "
            + candidates.map(\.path).joined(separator: ", ") + "; set DARKROOM_TOKENIZER or pass a tokenizer folder)")
    }

    /// An added-token entry as the real SD folders spell it.
    private static func token(_ content: String, typed: Bool) -> String {
        (typed ? "{\"__type\": \"AddedToken\", " : "{")
            + "\"content\": \"\(content)\", \"lstrip\": false, \"normalized\": true, \"rstrip\": false, \"single_word\": false}"
    }

    /// `tokenizer_config.json` of stable-diffusion-v1-5 and stable-diffusion-2-1 (identical:
    /// SD 2's `!` pad comes from its special_tokens_map.json, which transformers reads last).
    static var tokenizerConfig: String {
        """
        {"add_prefix_space": false, "bos_token": \(token("<|startoftext|>", typed: true)), "do_lower_case": true,
         "eos_token": \(token("<|endoftext|>", typed: true)), "errors": "replace", "model_max_length": 77,
         "name_or_path": "openai/clip-vit-large-patch14", "pad_token": "<|endoftext|>",
         "special_tokens_map_file": "./special_tokens_map.json", "tokenizer_class": "CLIPTokenizer",
         "unk_token": \(token("<|endoftext|>", typed: true))}
        """
    }

    static func specialTokensMap(_ family: CheckpointFamily) -> String {
        let pad = family == .sd2 ? "!" : "<|endoftext|>"
        return """
        {"bos_token": \(token("<|startoftext|>", typed: false)), "eos_token": \(token("<|endoftext|>", typed: false)),
         "pad_token": "\(pad)", "unk_token": \(token("<|endoftext|>", typed: false))}
        """
    }

    /// The SD 1.x or SD 2.x tokenizer over the vocabulary in `vocabulary`: assembled in a
    /// temporary folder (links to the vocabulary + the two config files), loaded, removed.
    static func load(family: CheckpointFamily, vocabulary: URL) throws -> CLIPTokenizer {
        let fm = FileManager.default
        let tmp = fm.temporaryDirectory.appendingPathComponent("darkroom-tokenizer-\(UUID().uuidString)")
        do {
            try fm.createDirectory(at: tmp, withIntermediateDirectories: true)
        } catch {
            throw DarkroomError.io(path: tmp.path, reason: "cannot create a temporary tokenizer folder: \(error.localizedDescription)")
        }
        defer { try? fm.removeItem(at: tmp) }
        do {
            for name in ["vocab.json", "merges.txt"] {
                try fm.createSymbolicLink(at: tmp.appendingPathComponent(name),
                                          withDestinationURL: vocabulary.appendingPathComponent(name).absoluteURL.standardizedFileURL)
            }
            try Data(tokenizerConfig.utf8).write(to: tmp.appendingPathComponent("tokenizer_config.json"))
            try Data(specialTokensMap(family).utf8).write(to: tmp.appendingPathComponent("special_tokens_map.json"))
        } catch {
            throw DarkroomError.io(path: tmp.path, reason: "cannot write the temporary tokenizer folder: \(error.localizedDescription)")
        }
        return try CLIPTokenizer(directory: tmp)
    }
}
