import Foundation

/// The settings a line of a prompts file may give; what it leaves out comes from `BatchDefaults`.
public struct PromptEntry: Sendable, Equatable {
    public var source: BatchJob.Source
    public var prompt: String
    public var negativePrompt: String?
    public var seed: UInt64?
    public var steps: Int?
    public var guidanceScale: Float?
    public var width: Int?
    public var height: Int?
    public var count: Int?
    public var sampler: SamplerKind?
    public var eta: Float?
    public var clipSkip: Int?
    public var promptMode: PromptMode?
    public var guidanceRescale: Float?
    /// img2img: the init image as written in the line (relative paths are relative to the
    /// prompts file's folder) and the strength.
    public var initImage: String?
    public var strength: Float?

    public init(source: BatchJob.Source, prompt: String) {
        self.source = source
        self.prompt = prompt
    }
}

/// A line that cannot be used, with the reason. A bad line never stops the other lines.
public struct PromptFileProblem: Sendable, Equatable, CustomStringConvertible, Error {
    public var source: BatchJob.Source
    public var message: String
    /// The line's `count` when it could be read (used to reserve its job indices).
    public var count: Int?
    /// The job indices the line would have had (set by `PromptFile.jobs(defaults:)`).
    public var indices: Range<Int>?

    public init(source: BatchJob.Source, message: String, count: Int? = nil) {
        self.source = source
        self.message = message
        self.count = count
    }

    public var description: String { "\(source): \(message)" }
}

/// What lines leave out: the command line's options and the model's defaults.
public struct BatchDefaults: Sendable, Equatable {
    public var negativePrompt: String
    /// nil: a line without a seed starts at its first job index (so seeds are distinct and a
    /// rerun uses the same ones); S: every line without a seed starts at S.
    public var seed: UInt64?
    public var steps: Int
    public var guidanceScale: Float
    public var width: Int
    public var height: Int
    public var count: Int
    public var sampler: SamplerKind
    public var eta: Float
    /// A1111's clip skip (1 = none).
    public var clipSkip: Int
    public var promptMode: PromptMode
    public var guidanceRescale: Float

    public init(negativePrompt: String = "", seed: UInt64? = nil, steps: Int = 50, guidanceScale: Float = 7.5,
                width: Int = 512, height: Int = 512, count: Int = 1, sampler: SamplerKind = .ddim, eta: Float = 0,
                clipSkip: Int = 1, promptMode: PromptMode = .auto, guidanceRescale: Float = 0) {
        self.negativePrompt = negativePrompt
        self.seed = seed
        self.steps = steps
        self.guidanceScale = guidanceScale
        self.width = width
        self.height = height
        self.count = count
        self.sampler = sampler
        self.eta = eta
        self.clipSkip = clipSkip
        self.promptMode = promptMode
        self.guidanceRescale = guidanceRescale
    }
}

/// A prompts file: plain text (one prompt per line) or JSON Lines (one object per line with the
/// keys in `PromptFile.keys`). In both, blank lines and lines whose first non-blank character is
/// '#' are skipped, a UTF-8 byte-order mark and CRLF line ends are accepted.
public struct PromptFile: Sendable {
    public enum Format: String, Sendable, CaseIterable {
        /// JSON Lines for `.jsonl`/`.ndjson`, plain text for `.txt`; otherwise JSON Lines when the
        /// first line that is not blank or a comment starts with '{'.
        case auto
        case text
        case jsonl
    }

    /// One line that is not blank or a comment, in file order.
    public enum Line: Sendable, Equatable {
        case entry(PromptEntry)
        case problem(PromptFileProblem)
    }

    /// The keys a JSON line may have.
    public static let keys = ["prompt", "negative_prompt", "seed", "steps", "guidance_scale", "width", "height", "count", "sampler", "eta",
                              "clip_skip", "prompt_mode", "guidance_rescale", "init_image", "strength"]
    /// Likely mistakes, for the error message.
    static let suggestions = ["negative": "negative_prompt", "cfg_scale": "guidance_scale", "cfg": "guidance_scale",
                              "guidance": "guidance_scale", "num_inference_steps": "steps", "n": "count",
                              "num_images": "count", "scheduler": "sampler", "text": "prompt",
                              "clipskip": "clip_skip", "clip-skip": "clip_skip", "cfg_rescale": "guidance_rescale",
                              "image": "init_image", "init-image": "init_image", "denoising_strength": "strength"]
    /// Larger files or lines are refused rather than read into memory.
    public static let maxFileBytes = 256 << 20
    public static let maxLineBytes = 1 << 20
    public static let maxCount = 10000

    public let path: String
    /// Where relative `init_image` paths start: the prompts file's folder (`load`), or the
    /// current folder (standard input, `init(data:)` without one).
    public var baseDirectory: URL?
    /// The strength of an `init_image` line without a `strength` key (as `render --strength`).
    public static let defaultStrength: Float = 0.75
    /// The format used (never `.auto`).
    public let format: Format
    public let lines: [Line]

    public var entries: [PromptEntry] { lines.compactMap { if case .entry(let e) = $0 { return e } else { return nil } } }
    public var problems: [PromptFileProblem] { lines.compactMap { if case .problem(let p) = $0 { return p } else { return nil } } }

    /// Reads a prompts file. Throws only when the file as a whole
    /// cannot be read; bad lines become `problems`. Messages and manifests name the file as
    /// `displayPath` (default: the path as given, relative paths staying relative).
    public static func load(_ url: URL, format: Format = .auto, displayPath: String? = nil) throws -> PromptFile {
        let path = url.path
        let shown = displayPath ?? (url.baseURL != nil ? url.relativePath : path)
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw DarkroomError.fileNotFound(path: path) }
        guard !isDir.boolValue else { throw DarkroomError.invalidFile(path: path, reason: "is a folder, not a prompts file") }
        if let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int, size > maxFileBytes {
            throw DarkroomError.invalidFile(path: path, reason: "\(size) bytes is too large for a prompts file (limit \(maxFileBytes >> 20) MiB)")
        }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw DarkroomError.io(path: path, reason: "cannot read: \(error.localizedDescription)")
        }
        var file = PromptFile(data: data, path: shown, format: format)
        file.baseDirectory = url.deletingLastPathComponent()
        return file
    }

    public init(data: Data, path: String, format: Format = .auto) {
        self.path = path
        var bytes = [UInt8](data)
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes.removeFirst(3) }
        // Split into lines (1-based numbers), dropping a final empty line after the last "\n".
        var rawLines: [(Int, ArraySlice<UInt8>)] = []
        var start = 0
        var number = 1
        for i in 0..<bytes.count where bytes[i] == 0x0A {
            rawLines.append((number, bytes[start..<i]))
            start = i + 1
            number += 1
        }
        if start < bytes.count { rawLines.append((number, bytes[start..<bytes.count])) }

        func trimmed(_ s: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
            var s = s
            while let f = s.first, f == 0x20 || f == 0x09 || f == 0x0D { s.removeFirst() }
            while let l = s.last, l == 0x20 || l == 0x09 || l == 0x0D { s.removeLast() }
            return s
        }
        var resolved = format
        if format == .auto {
            let lower = path.lowercased()
            if lower.hasSuffix(".jsonl") || lower.hasSuffix(".ndjson") { resolved = .jsonl }
            else if lower.hasSuffix(".txt") { resolved = .text }
            else {
                let first = rawLines.lazy.map { trimmed($0.1) }.first { !$0.isEmpty && $0.first != UInt8(ascii: "#") }
                resolved = first?.first == UInt8(ascii: "{") ? .jsonl : .text
            }
        }
        self.format = resolved

        var lines: [Line] = []
        for (n, raw) in rawLines {
            let source = BatchJob.Source(path: path, line: n)
            let t = trimmed(raw)
            if t.isEmpty || t.first == UInt8(ascii: "#") { continue }
            guard raw.count <= Self.maxLineBytes else {
                lines.append(.problem(PromptFileProblem(source: source, message: "line is longer than \(Self.maxLineBytes >> 20) MiB")))
                continue
            }
            guard let text = String(validating: t, as: UTF8.self) else {
                let bad = Self.firstInvalidUTF8(Array(raw))
                lines.append(.problem(PromptFileProblem(source: source, message: "not valid UTF-8 (byte \(bad + 1) of the line)")))
                continue
            }
            if resolved == .text {
                if text.unicodeScalars.contains("\u{0}") {
                    lines.append(.problem(PromptFileProblem(source: source, message: "the prompt contains a NUL character")))
                } else {
                    lines.append(.entry(PromptEntry(source: source, prompt: text)))
                }
                continue
            }
            do {
                lines.append(.entry(try Self.parseJSONLine(Array(t), source: source)))
            } catch let p as PromptFileProblem {
                lines.append(.problem(p))
            } catch {
                lines.append(.problem(PromptFileProblem(source: source, message: "\(error)")))
            }
        }
        self.lines = lines
    }

    /// Expands the lines into jobs, `count` per line, in file order. A bad line reserves the
    /// indices its images would have had (its `count`, or the default count when it could not
    /// be read), so fixing it later does not renumber the lines after it.
    public func jobs(defaults d: BatchDefaults) -> (jobs: [BatchJob], problems: [PromptFileProblem]) {
        var jobs: [BatchJob] = []
        var problems: [PromptFileProblem] = []
        var next = 0
        for line in lines {
            switch line {
            case .problem(var p):
                let n = p.count ?? d.count
                p.indices = next..<(next + n)
                next += n
                problems.append(p)
            case .entry(let e):
                let n = e.count ?? d.count
                var request = GenerationRequest(
                    prompt: e.prompt, negativePrompt: e.negativePrompt ?? d.negativePrompt, steps: e.steps ?? d.steps,
                    guidanceScale: e.guidanceScale ?? d.guidanceScale, width: e.width ?? d.width, height: e.height ?? d.height,
                    seed: e.seed ?? d.seed ?? UInt64(next), eta: e.eta ?? d.eta, sampler: e.sampler ?? d.sampler,
                    clipSkip: e.clipSkip ?? d.clipSkip, promptMode: e.promptMode ?? d.promptMode,
                    guidanceRescale: e.guidanceRescale ?? d.guidanceRescale)
                var initImage: BatchJob.InitImage?
                if let path = e.initImage {
                    let base = baseDirectory ?? URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
                    let url = path.hasPrefix("/") ? URL(fileURLWithPath: path) : base.appendingPathComponent(path)
                    initImage = BatchJob.InitImage(url: url.standardizedFileURL, strength: e.strength ?? Self.defaultStrength)
                    // img2img takes the init image's size unless the line itself gives one.
                    request.width = e.width
                    request.height = e.height
                }
                jobs += BatchJob.series(request, count: n, firstIndex: next, source: e.source, initImage: initImage)
                next += n
            }
        }
        return (jobs, problems)
    }

    // MARK: - JSON lines

    static func parseJSONLine(_ bytes: [UInt8], source: BatchJob.Source) throws -> PromptEntry {
        func problem(_ m: String, count: Int? = nil) -> PromptFileProblem { PromptFileProblem(source: source, message: m, count: count) }
        let value: JSONValue
        do { value = try JSONParser.parse(bytes: bytes) } catch let e as JSONParseError {
            if bytes.first != UInt8(ascii: "{") && bytes.first != UInt8(ascii: "[") {
                throw problem("not a JSON object (the file is read as JSON Lines; --format text reads one plain prompt per line)")
            }
            throw problem("invalid JSON at column \(e.offset + 1): \(e.message)")
        }
        guard case .object(let members) = value else {
            throw problem("expected a JSON object like {\"prompt\": \"...\"}, found \(value.typeName)")
        }
        // Read count first so that a line with another bad value still reserves its indices.
        var count: Int?
        if let v = value["count"], v != .null {
            guard case .number(let d) = v, d == d.rounded(), d >= 1, d <= Double(maxCount) else {
                throw problem("'count' must be a whole number from 1 to \(maxCount), found \(describe(v))")
            }
            count = Int(d)
        }
        func fail(_ m: String) -> PromptFileProblem { problem(m, count: count) }
        for (k, _) in members where !keys.contains(k) {
            let hint = suggestions[k].map { " (did you mean '\($0)'?)" } ?? ""
            throw fail("unknown key '\(k)'\(hint); the keys are \(keys.joined(separator: ", "))")
        }
        func string(_ key: String) throws -> String? {
            guard let v = value[key], v != .null else { return nil }
            guard case .string(let s) = v else { throw fail("'\(key)' must be a string, found \(describe(v))") }
            guard !s.unicodeScalars.contains("\u{0}") else { throw fail("'\(key)' contains a NUL character") }
            return s
        }
        func int(_ key: String, _ range: ClosedRange<Int>, multipleOf m: Int = 1) throws -> Int? {
            guard let v = value[key], v != .null else { return nil }
            let rule = m > 1 ? "a multiple of \(m) from \(range.lowerBound) to \(range.upperBound)" : "a whole number from \(range.lowerBound) to \(range.upperBound)"
            guard case .number(let d) = v, d == d.rounded(), d >= Double(range.lowerBound), d <= Double(range.upperBound), Int(d) % m == 0 else {
                throw fail("'\(key)' must be \(rule), found \(describe(v))")
            }
            return Int(d)
        }
        func float(_ key: String, _ range: ClosedRange<Float>) throws -> Float? {
            guard let v = value[key], v != .null else { return nil }
            guard case .number(let d) = v, Float(d) >= range.lowerBound, Float(d) <= range.upperBound else {
                throw fail("'\(key)' must be a number from \(formatNumber(range.lowerBound)) to \(formatNumber(range.upperBound)), found \(describe(v))")
            }
            return Float(d)
        }
        guard let prompt = try string("prompt") else { throw fail("no 'prompt'") }
        var e = PromptEntry(source: source, prompt: prompt)
        e.count = count
        e.negativePrompt = try string("negative_prompt")
        e.steps = try int("steps", 1...1000)
        e.guidanceScale = try float("guidance_scale", 0...100)
        e.width = try int("width", 8...8192, multipleOf: 8)
        e.height = try int("height", 8...8192, multipleOf: 8)
        e.eta = try float("eta", 0...1)
        e.initImage = try string("init_image")
        if e.initImage?.isEmpty == true { throw fail("'init_image' is empty") }
        if let v = value["strength"], v != .null {
            guard case .number(let d) = v, d > 0, d <= 1 else { throw fail("'strength' must be a number greater than 0 and at most 1, found \(describe(v))") }
            guard e.initImage != nil else { throw fail("'strength' needs an 'init_image'") }
            e.strength = Float(d)
        }
        e.clipSkip = try int("clip_skip", 1...64)
        e.guidanceRescale = try float("guidance_rescale", 0...1)
        if let name = try string("prompt_mode") {
            guard let m = PromptMode(rawValue: name.lowercased()) else {
                throw fail("unknown prompt_mode '\(name)'; the modes are \(PromptMode.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            e.promptMode = m
        }
        if let name = try string("sampler") {
            guard let k = SamplerKind(name: name) else {
                throw fail("unknown sampler '\(name)'; the samplers are \(SamplerKind.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            e.sampler = k
        }
        if let v = value["seed"], v != .null {
            let rule = "'seed' must be a whole number from 0 to \(UInt64.max) (a fixed seed: resuming a batch needs the same seeds)"
            switch v {
            case .number(let d):
                guard d == d.rounded(), d >= 0 else { throw fail("\(rule), found \(describe(v))") }
                if d < 9007199254740992 {  // 2^53: every integer below is exact in a Double
                    e.seed = UInt64(d)
                } else {
                    guard let raw = JSONParser.rawMember("seed", in: bytes), let s = UInt64(raw) else {
                        throw fail("\(rule), found \(describe(v))")
                    }
                    e.seed = s
                }
            case .string(let s):
                guard let u = UInt64(s) else { throw fail("\(rule), found \(describe(v))") }
                e.seed = u
            default:
                throw fail("\(rule), found \(describe(v))")
            }
        }
        return e
    }

    static func describe(_ v: JSONValue) -> String {
        switch v {
        case .number(let d): return d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : "\(d)"
        case .string(let s): return JSONText.string(s.count > 40 ? String(s.prefix(40)) + "..." : s).serialized
        default: return v.typeName
        }
    }

    /// Offset of the first byte that breaks UTF-8 (the Unicode standard's well-formed table).
    static func firstInvalidUTF8(_ b: [UInt8]) -> Int {
        var i = 0
        while i < b.count {
            let c = b[i]
            var n = 0
            var lo: UInt8 = 0x80, hi: UInt8 = 0xBF
            switch c {
            case 0x00...0x7F: i += 1; continue
            case 0xC2...0xDF: n = 1
            case 0xE0: n = 2; lo = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: n = 2
            case 0xED: n = 2; hi = 0x9F
            case 0xF0: n = 3; lo = 0x90
            case 0xF1...0xF3: n = 3
            case 0xF4: n = 3; hi = 0x8F
            default: return i
            }
            guard i + n < b.count, (lo...hi).contains(b[i + 1]) else { return i }
            for j in 2...max(2, n) where j <= n {
                guard (0x80...0xBF).contains(b[i + j]) else { return i }
            }
            i += n + 1
        }
        return b.count
    }
}
