import Foundation

/// A token matched literally in the text before BPE (`tokenizers`' AddedToken). For CLIP these
/// are the special tokens; which ones, and whether they match the raw or the normalized text,
/// is decided by the config files exactly as transformers 5 decides it (see `resolveAddedTokens`).
struct CLIPAddedToken: Sendable, Equatable {
    var content: String
    var singleWord = false
    var lstrip = false
    var rstrip = false
    /// true: matched in the normalized (NFC + lowercased) text; false: in the raw text.
    var normalized: Bool
    var special: Bool

    /// `AddedToken(**fields)`: a missing `normalized` defaults to `not special`.
    init(content: String, normalized: Bool, special: Bool) {
        self.content = content
        self.normalized = normalized
        self.special = special
    }

    init(fields: TokenizerJSONObject, path: String, key: String, forceSpecial: Bool = false) throws {
        guard let content = fields["content"]?.string else {
            throw DarkroomError.invalidConfig(path: path, key: key, reason: "an added token needs a string \"content\"")
        }
        func flag(_ name: String) throws -> Bool? {
            guard let v = fields[name], !v.isNull else { return nil }
            guard let b = v.bool else {
                throw DarkroomError.invalidConfig(path: path, key: "\(key).\(name)", reason: "expected a boolean, found \(v.kind)")
            }
            return b
        }
        let special = forceSpecial ? true : (try flag("special") ?? false)
        self.init(content: content, normalized: try flag("normalized") ?? !special, special: special)
        singleWord = try flag("single_word") ?? false
        lstrip = try flag("lstrip") ?? false
        rstrip = try flag("rstrip") ?? false
    }
}

/// What the files of a tokenizer folder say, before building the BPE tables.
struct CLIPTokenizerFiles {
    var vocab: [String: Int]
    var merges: [(String, String)]
    /// Where vocab and merges came from, for error messages.
    var vocabPath: String
    var mergesPath: String
    var bos: CLIPAddedToken
    var eos: CLIPAddedToken
    var unk: CLIPAddedToken
    var pad: CLIPAddedToken
    /// Added tokens in the order `tokenizers` receives them; a repeated content keeps the flags
    /// of its last occurrence (what `tokenizers` 0.23 does).
    var addedTokens: [CLIPAddedToken]
    var maxLength: Int

    /// The special-token attributes in transformers' order; this order decides which flags win
    /// when two attributes share a content (SD1's eos `<|endoftext|>` vs its pad string).
    static let specialAttributes = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"]

    static func load(directory: URL) throws -> CLIPTokenizerFiles {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: directory.path, isDirectory: &isDir) else {
            throw DarkroomError.fileNotFound(path: directory.path)
        }
        guard isDir.boolValue else {
            throw DarkroomError.invalidFile(path: directory.path, reason: "expected a tokenizer folder, found a file")
        }
        func file(_ name: String) -> URL? {
            let url = directory.appendingPathComponent(name)
            return fm.fileExists(atPath: url.path) ? url : nil
        }
        let tokenizerJSONURL = file("tokenizer.json")
        let vocabURL = file("vocab.json")
        let mergesURL = file("merges.txt")

        // tokenizer_config.json: the base of the keyword arguments.
        var config = TokenizerJSONObject()
        if let url = file("tokenizer_config.json") {
            guard let obj = try readJSON(url).object else {
                throw DarkroomError.invalidFile(path: url.path, reason: "expected a JSON object")
            }
            config = obj
        }
        let configPath = directory.appendingPathComponent("tokenizer_config.json").path

        // Vocabulary and merges: transformers 5 prefers tokenizer.json when it exists.
        var vocab: [String: Int]
        var merges: [(String, String)]
        var vocabPath: String, mergesPath: String
        var tokenizerJSON: TokenizerJSONObject?
        if let url = tokenizerJSONURL {
            let root = try readJSON(url)
            guard let obj = root.object else {
                throw DarkroomError.invalidFile(path: url.path, reason: "expected a JSON object")
            }
            tokenizerJSON = obj
            (vocab, merges) = try bpeModel(from: obj, path: url.path)
            vocabPath = url.path
            mergesPath = url.path
        } else if let vURL = vocabURL, let mURL = mergesURL {
            vocab = try TokenizerJSONParser.parseVocab(try readData(vURL), path: vURL.path)
            merges = try readMerges(mURL)
            vocabPath = vURL.path
            mergesPath = mURL.path
        } else {
            let missing = vocabURL == nil ? "vocab.json" : "merges.txt"
            throw DarkroomError.fileNotFound(path: directory.appendingPathComponent(missing).path
                + " (a CLIP tokenizer folder needs vocab.json + merges.txt, or tokenizer.json)")
        }

        // Special tokens, then the added-token list, following
        // PreTrainedTokenizerBase._from_pretrained and TokenizersBackend.__init__.
        var specials: [String: CLIPAddedToken] = [:]
        for attr in specialAttributes {
            if let v = config[attr], let t = try specialToken(v, path: configPath, key: attr, fromMap: false) {
                specials[attr] = t
            }
        }
        var extras: [CLIPAddedToken] = []
        if let v = config["additional_special_tokens"] ?? config["extra_special_tokens"] {
            extras = try extraTokens(v, path: configPath, key: "additional_special_tokens", fromMap: false)
        }
        // (id, token) pairs from added_tokens_decoder, added_tokens.json or tokenizer.json.
        var declared: [(id: Int, token: CLIPAddedToken)] = []
        if let decoder = config["added_tokens_decoder"] {
            // A modern config: special_tokens_map.json is ignored.
            guard let obj = decoder.object else {
                throw DarkroomError.invalidConfig(path: configPath, key: "added_tokens_decoder", reason: "expected an object, found \(decoder.kind)")
            }
            for (idString, value) in obj.entries {
                guard let id = Int(idString), let fields = value.object else {
                    throw DarkroomError.invalidConfig(path: configPath, key: "added_tokens_decoder.\(idString)", reason: "expected an integer key and an object")
                }
                declared.append((id, try CLIPAddedToken(fields: fields, path: configPath, key: "added_tokens_decoder.\(idString)")))
            }
        } else {
            if let url = file("special_tokens_map.json") {
                guard let map = try readJSON(url).object else {
                    throw DarkroomError.invalidFile(path: url.path, reason: "expected a JSON object")
                }
                for (key, value) in map.entries {
                    if specialAttributes.contains(key) {
                        if let t = try specialToken(value, path: url.path, key: key, fromMap: true) {
                            specials[key] = t
                        } else {
                            specials[key] = nil
                        }
                    } else if key == "additional_special_tokens" || key == "extra_special_tokens" {
                        for t in try extraTokens(value, path: url.path, key: key, fromMap: true)
                        where !extras.contains(t) {
                            extras.append(t)
                        }
                    }
                }
            }
            if let url = file("added_tokens.json") {
                guard let map = try readJSON(url).object else {
                    throw DarkroomError.invalidFile(path: url.path, reason: "expected a JSON object")
                }
                let specialContents = Set(specials.values.map(\.content) + extras.map(\.content))
                for (content, value) in map.entries {
                    guard let id = value.int else {
                        throw DarkroomError.invalidConfig(path: url.path, key: content, reason: "expected an integer id")
                    }
                    let isSpecial = specialContents.contains(content)
                    declared.append((id, CLIPAddedToken(content: content, normalized: !isSpecial, special: isSpecial)))
                }
            }
            if let obj = tokenizerJSON, let list = obj["added_tokens"], !list.isNull {
                let path = tokenizerJSONURL!.path
                guard let items = list.array else {
                    throw DarkroomError.invalidConfig(path: path, key: "added_tokens", reason: "expected an array, found \(list.kind)")
                }
                for (i, item) in items.enumerated() {
                    guard let fields = item.object, let id = fields["id"]?.int else {
                        throw DarkroomError.invalidConfig(path: path, key: "added_tokens[\(i)]", reason: "expected an object with an integer \"id\"")
                    }
                    declared.removeAll { $0.id == id }
                    declared.append((id, try CLIPAddedToken(fields: fields, path: path, key: "added_tokens[\(i)]")))
                }
            }
        }
        // A named special token whose content was declared takes the declared flags.
        var declaredByContent: [String: CLIPAddedToken] = [:]
        for d in declared { declaredByContent[d.token.content] = d.token }
        for (attr, t) in specials { if let d = declaredByContent[t.content] { specials[attr] = d } }
        // CLIPTokenizer.__init__ defaults.
        let defaults = ["bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"]
        for (attr, content) in defaults where specials[attr] == nil {
            specials[attr] = CLIPAddedToken(content: content, normalized: false, special: true)
        }

        // TokenizersBackend.__init__: declared tokens sorted by id, then every named special
        // token (then the extras) whose content was not declared.
        var added = declared.sorted { $0.id < $1.id }.map(\.token)
        let declaredContents = Set(added.map(\.content))
        for attr in specialAttributes {
            if let t = specials[attr], !declaredContents.contains(t.content) { added.append(t) }
        }
        for t in extras where !declaredContents.contains(t.content) { added.append(t) }
        // TokenizersBackend marks every added token named as a special token special.
        let namedContents = Set(specials.values.map(\.content))
        for i in added.indices where namedContents.contains(added[i].content) { added[i].special = true }

        var maxLength = 77
        if let v = config["model_max_length"], !v.isNull {
            guard case .number(let d) = v else {
                throw DarkroomError.invalidConfig(path: configPath, key: "model_max_length", reason: "expected a number, found \(v.kind)")
            }
            // transformers writes ~1e30 for "no limit"; a text encoder still has 77 positions.
            if d < 1e9 {
                guard let n = v.int, n >= 2 else {
                    throw DarkroomError.invalidConfig(path: configPath, key: "model_max_length", reason: "must be an integer >= 2, found \(d)")
                }
                maxLength = n
            }
        }

        return CLIPTokenizerFiles(
            vocab: vocab, merges: merges, vocabPath: vocabPath, mergesPath: mergesPath,
            bos: specials["bos_token"]!, eos: specials["eos_token"]!, unk: specials["unk_token"]!,
            pad: specials["pad_token"]!, addedTokens: added, maxLength: maxLength)
    }

    /// A named special token from tokenizer_config.json (`fromMap` false) or
    /// special_tokens_map.json (`fromMap` true). A plain string becomes
    /// `AddedToken(s, special=True)`, i.e. matched in the raw text. An object from the map is
    /// forced special (so `normalized` defaults to false); an object from the config keeps its
    /// own `special` (default false, so `normalized` defaults to true).
    private static func specialToken(_ v: TokenizerJSON, path: String, key: String, fromMap: Bool) throws -> CLIPAddedToken? {
        switch v {
        case .null: return nil
        case .string(let s): return CLIPAddedToken(content: s, normalized: false, special: true)
        case .object(let fields): return try CLIPAddedToken(fields: fields, path: path, key: key, forceSpecial: fromMap)
        default:
            throw DarkroomError.invalidConfig(path: path, key: key, reason: "expected a string or an AddedToken object, found \(v.kind)")
        }
    }

    private static func extraTokens(_ v: TokenizerJSON, path: String, key: String, fromMap: Bool) throws -> [CLIPAddedToken] {
        if v.isNull { return [] }
        // A dict of named model-specific tokens is also accepted by transformers 5.
        let items: [TokenizerJSON]
        if let a = v.array { items = a } else if let o = v.object { items = o.entries.map(\.value) } else {
            throw DarkroomError.invalidConfig(path: path, key: key, reason: "expected a list, found \(v.kind)")
        }
        return try items.enumerated().compactMap { i, item in
            try specialToken(item, path: path, key: "\(key)[\(i)]", fromMap: fromMap)
        }
    }

    /// `model` of tokenizer.json: a BPE vocab object and merges as "a b" strings (older files)
    /// or ["a", "b"] pairs (tokenizers >= 0.20).
    private static func bpeModel(from root: TokenizerJSONObject, path: String) throws -> ([String: Int], [(String, String)]) {
        guard let model = root["model"]?.object else {
            throw DarkroomError.invalidConfig(path: path, key: "model", reason: "missing or not an object")
        }
        if let type = model["type"]?.string, type != "BPE" {
            throw DarkroomError.unsupported(path: path, key: "model.type", value: type)
        }
        guard let vocabObject = model["vocab"]?.object else {
            throw DarkroomError.invalidConfig(path: path, key: "model.vocab", reason: "missing or not an object of token -> id")
        }
        var vocab: [String: Int] = [:]
        vocab.reserveCapacity(vocabObject.count)
        for (token, value) in vocabObject.entries {
            guard let id = value.int else {
                throw DarkroomError.invalidConfig(path: path, key: "model.vocab", reason: "the id of token \(TokenizerJSONParser.quote(token)) is not an integer")
            }
            vocab[token] = id
        }
        guard let list = model["merges"]?.array else {
            throw DarkroomError.invalidConfig(path: path, key: "model.merges", reason: "missing or not an array")
        }
        var merges: [(String, String)] = []
        merges.reserveCapacity(list.count)
        for (i, item) in list.enumerated() {
            switch item {
            case .string(let s):
                let parts = s.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2 else {
                    throw DarkroomError.invalidConfig(path: path, key: "model.merges[\(i)]", reason: "expected \"left right\", found \(TokenizerJSONParser.quote(s))")
                }
                merges.append((String(parts[0]), String(parts[1])))
            case .array(let pair) where pair.count == 2 && pair[0].string != nil && pair[1].string != nil:
                merges.append((pair[0].string!, pair[1].string!))
            default:
                throw DarkroomError.invalidConfig(path: path, key: "model.merges[\(i)]", reason: "expected a pair of strings")
            }
        }
        return (vocab, merges)
    }

    /// merges.txt: a `#version` line (optional), then one "left right" pair per line, split on
    /// single spaces like `tokenizers` does; any other line shape is an error.
    private static func readMerges(_ url: URL) throws -> [(String, String)] {
        let data = try readData(url)
        guard String(data: data, encoding: .utf8) != nil else {
            throw DarkroomError.invalidFile(path: url.path, reason: "not valid UTF-8")
        }
        return try data.withUnsafeBytes { raw -> [(String, String)] in
            let bytes = raw.bindMemory(to: UInt8.self)
            var merges: [(String, String)] = []
            merges.reserveCapacity(bytes.count / 10)
            var lineNumber = 0
            var start = 0
            if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF { start = 3 }
            while start < bytes.count {
                lineNumber += 1
                var end = start
                while end < bytes.count, bytes[end] != 0x0A { end += 1 }
                let nextStart = end + 1
                if end > start, bytes[end - 1] == 0x0D { end -= 1 }
                let line = UnsafeBufferPointer(rebasing: bytes[start..<end])
                start = nextStart
                if line.starts(with: "#version".utf8) { continue }
                guard let space = line.firstIndex(of: 0x20),
                      !line[(space + 1)...].contains(0x20) else {
                    let text = String(decoding: line, as: UTF8.self)
                    throw DarkroomError.invalidFile(path: url.path, reason: "line \(lineNumber): expected \"left right\", found \(TokenizerJSONParser.quote(text))")
                }
                merges.append((String(decoding: UnsafeBufferPointer(rebasing: line[..<space]), as: UTF8.self),
                               String(decoding: UnsafeBufferPointer(rebasing: line[(space + 1)...]), as: UTF8.self)))
            }
            return merges
        }
    }

    private static func readData(_ url: URL) throws -> Data {
        do {
            return try Data(contentsOf: url)
        } catch {
            throw DarkroomError.io(path: url.path, reason: "cannot read: \(error.localizedDescription)")
        }
    }

    private static func readJSON(_ url: URL) throws -> TokenizerJSON {
        try TokenizerJSONParser.parse(try readData(url), path: url.path)
    }
}
