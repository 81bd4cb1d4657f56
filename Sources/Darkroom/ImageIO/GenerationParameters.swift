import Foundation

/// The generation settings stored in a PNG's `parameters` text chunk, in AUTOMATIC1111's
/// "infotext" layout, which A1111, Forge, stable-diffusion.cpp, OnnxStream and image browsers
/// (Civitai, ...) read and write:
///
///     {prompt, may span lines}
///     Negative prompt: {negative prompt, may span lines}
///     Steps: 20, Sampler: DDIM, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: name, ...
///
/// Layout rules (A1111 `modules/processing.py` `create_infotext`, `modules/infotext_utils.py`):
/// the "Negative prompt:" line is left out when the negative prompt is empty; the parameter line
/// is `Key: value` pairs joined by ", " in A1111's key order (Steps, Sampler, CFG scale, Seed,
/// Size, Model hash, Model, then everything else); a value containing ',', ':' or a newline is
/// written as a JSON string (`Lora hashes: "a: 1, b: 2"`); the whole text is whitespace-stripped.
/// Parsing follows `parse_generation_parameters`: the last line holds the parameters only if
/// at least three `Key: value` pairs match in it; every other line is stripped and belongs to the
/// prompt until a line starting with "Negative prompt:".
public struct GenerationParameters: Sendable, Equatable {
    /// One extra `Key: value` pair (e.g. "Model hash", "Eta", "Clip skip", "Version").
    public struct Field: Sendable, Equatable {
        public var key: String
        public var value: String
        public init(_ key: String, _ value: String) {
            self.key = key
            self.value = value
        }
    }

    public var prompt: String
    public var negativePrompt: String
    public var steps: Int
    public var sampler: String
    public var cfgScale: Double
    public var seed: UInt64
    public var width: Int
    public var height: Int
    /// The model name; omitted from the text when nil.
    public var model: String?
    /// Further pairs in the order they are written. Keys must look like A1111 keys (a word
    /// character, then word characters, spaces, '-' or '/'; no ':' or ','), or a reader will not
    /// find them. Values may be anything; they are quoted when needed.
    public var extra: [Field]

    public init(prompt: String, negativePrompt: String = "", steps: Int, sampler: String, cfgScale: Double,
                seed: UInt64, width: Int, height: Int, model: String? = nil, extra: [Field] = []) {
        self.prompt = prompt
        self.negativePrompt = negativePrompt
        self.steps = steps
        self.sampler = sampler
        self.cfgScale = cfgScale
        self.seed = seed
        self.width = width
        self.height = height
        self.model = model
        self.extra = extra
    }

    /// The value of an extra key (nil if absent); setting nil removes it, setting a new key appends it.
    public subscript(extra key: String) -> String? {
        get { extra.first { $0.key == key }?.value }
        set {
            if let newValue {
                if let i = extra.firstIndex(where: { $0.key == key }) { extra[i].value = newValue }
                else { extra.append(Field(key, newValue)) }
            } else {
                extra.removeAll { $0.key == key }
            }
        }
    }

    // MARK: - Writing

    /// Extra keys A1111 writes among the core ones rather than after "Model", so that a parsed
    /// A1111 text is written back in its original order.
    private static let beforeSeed: Set<String> = ["Image CFG scale"]
    private static let beforeSize: Set<String> = ["Face restoration"]
    private static let beforeModel: Set<String> = ["Model hash"]

    /// The A1111 infotext (see the type's documentation).
    public var a1111Text: String {
        let placed = Self.beforeSeed.union(Self.beforeSize).union(Self.beforeModel)
        func extras(_ keys: Set<String>) -> [(String, String)] {
            extra.filter { keys.contains($0.key) }.map { ($0.key, $0.value) }
        }
        var fields: [(String, String)] = [
            ("Steps", String(steps)), ("Sampler", sampler), ("CFG scale", Self.formatNumber(cfgScale)),
        ]
        fields += extras(Self.beforeSeed)
        fields.append(("Seed", String(seed)))
        fields += extras(Self.beforeSize)
        fields.append(("Size", "\(width)x\(height)"))
        fields += extras(Self.beforeModel)
        if let model { fields.append(("Model", model)) }
        fields += extra.filter { !placed.contains($0.key) }.map { ($0.key, $0.value) }

        let line = fields.map { "\($0.0): \(Self.quote($0.1))" }.joined(separator: ", ")
        var text = prompt
        if !negativePrompt.isEmpty { text += "\nNegative prompt: \(negativePrompt)" }
        text += "\n" + line
        return Self.pythonStrip(text)
    }

    /// A1111 writes Python's `str()` of the UI value: the slider hands over 7 (an int) for 7.0
    /// and 7.5 for 7.5, so integral values print without a fraction. Other values use the
    /// shortest round-trip form, which matches Python's `repr(float)`.
    static func formatNumber(_ x: Double) -> String {
        if x.isFinite, x == x.rounded(), abs(x) < 1e15 { return String(Int64(x)) }
        return "\(x)"
    }

    /// A1111's `quote`: values with ',', ':' or a newline become a JSON string (`json.dumps`
    /// with `ensure_ascii=False`). Darkroom also quotes a value that starts with '"', which A1111
    /// would otherwise unquote on reading; A1111 reads the result back correctly.
    static func quote(_ value: String) -> String {
        let needs = value.unicodeScalars.contains { $0 == "," || $0 == ":" || $0 == "\n" }
            || value.unicodeScalars.first == "\""
        return needs ? jsonString(value) : value
    }

    /// Python's `json.dumps(s, ensure_ascii=False)`.
    static func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if u.value < 0x20 {
                    let hex = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }

    // MARK: - Parsing

    /// Parses an A1111 infotext. Steps, Sampler, CFG scale, Seed and Size are required; "Model"
    /// fills `model`; every other pair lands in `extra` in text order (a repeated key keeps its
    /// first position and last value, like the Python dict A1111 builds). Values A1111 would
    /// drop (empty ones) are dropped.
    public init(parsing text: String) throws {
        var lines = Self.splitLines(Self.pythonStrip(text))
        var last = lines.removeLast()
        var pairs = Self.parameterPairs(last)
        if pairs.count < 3 {
            lines.append(last)
            last = ""
            pairs = []
        }
        var prompt = ""
        var negative = ""
        var inNegative = false
        let marker = "Negative prompt:"
        for raw in lines {
            var line = Self.pythonStrip(raw)
            if line.unicodeScalars.starts(with: marker.unicodeScalars) {
                inNegative = true
                line = Self.pythonStrip(String(line.unicodeScalars.dropFirst(marker.unicodeScalars.count)))
            }
            if inNegative { negative += (negative.isEmpty ? "" : "\n") + line }
            else { prompt += (prompt.isEmpty ? "" : "\n") + line }
        }

        var fields: [Field] = []
        for (key, raw) in pairs where !raw.isEmpty {
            var value = raw
            if value.unicodeScalars.first == "\"" && value.unicodeScalars.last == "\"" {
                value = Self.jsonUnquote(value) ?? value
            }
            if let i = fields.firstIndex(where: { $0.key == key }) { fields[i].value = value }
            else { fields.append(Field(key, value)) }
        }
        func take(_ key: String) throws -> String {
            guard let i = fields.firstIndex(where: { $0.key == key }) else {
                throw DarkroomError.invalidArgument("A1111 parameters: no '\(key)' in \"\(last)\"")
            }
            return fields.remove(at: i).value
        }
        func bad(_ key: String, _ value: String) -> DarkroomError {
            DarkroomError.invalidArgument("A1111 parameters: '\(key): \(value)' is not a valid value")
        }
        if pairs.isEmpty {
            throw DarkroomError.invalidArgument("A1111 parameters: no 'Steps: ..., Seed: ...' line found")
        }
        let stepsText = try take("Steps")
        guard let steps = Int(Self.pythonStrip(stepsText)) else { throw bad("Steps", stepsText) }
        let sampler = try take("Sampler")
        let cfgText = try take("CFG scale")
        guard let cfg = Double(Self.pythonStrip(cfgText)), cfg.isFinite else { throw bad("CFG scale", cfgText) }
        let seedText = try take("Seed")
        guard let seed = UInt64(Self.pythonStrip(seedText)) else { throw bad("Seed", seedText) }
        let sizeText = try take("Size")
        guard let size = Self.parseSize(sizeText) else { throw bad("Size", sizeText) }
        let model = fields.firstIndex { $0.key == "Model" }.map { fields.remove(at: $0).value }

        self.init(prompt: prompt, negativePrompt: negative, steps: steps, sampler: sampler, cfgScale: cfg,
                  seed: seed, width: size.0, height: size.1, model: model, extra: fields)
    }

    /// `^(\d+)x(\d+)$`, as A1111's `re_imagesize`.
    static func parseSize(_ s: String) -> (Int, Int)? {
        let parts = s.split(separator: "x", omittingEmptySubsequences: false)
        guard parts.count == 2,
              parts.allSatisfy({ !$0.isEmpty && $0.unicodeScalars.allSatisfy { ("0"..."9").contains($0) } }),
              let w = Int(parts[0]), let h = Int(parts[1])
        else { return nil }
        return (w, h)
    }

    /// The `Key: value` pairs of a parameter line, found exactly as A1111's `re_param.findall`:
    /// `\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)`.
    static func parameterPairs(_ line: String) -> [(String, String)] {
        let pattern = #"\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)"#
        guard let regex = try? NSRegularExpression(pattern: pattern) else { return [] }
        let ns = NSRange(line.startIndex..., in: line)
        return regex.matches(in: line, range: ns).compactMap { m in
            guard let k = Range(m.range(at: 1), in: line), let v = Range(m.range(at: 2), in: line) else { return nil }
            return (String(line[k]), String(line[v]))
        }
    }

    /// Python's `json.loads` for a string literal (strict: raw control characters are errors);
    /// nil when it is not exactly one valid JSON string, in which case A1111 keeps the raw text.
    static func jsonUnquote(_ s: String) -> String? {
        let u = Array(s.unicodeScalars)
        guard u.count >= 2, u.first == "\"", u.last == "\"" else { return nil }
        var out = String.UnicodeScalarView()
        var i = 1
        func hex4(_ at: Int) -> UInt32? {
            guard at + 4 <= u.count - 1 else { return nil }
            var v: UInt32 = 0
            for s in u[at..<at + 4] {
                guard let d = Int(String(s), radix: 16) else { return nil }
                v = v * 16 + UInt32(d)
            }
            return v
        }
        while i < u.count - 1 {
            let c = u[i]
            if c == "\"" || c.value < 0x20 { return nil }  // an unescaped quote ends the string early
            if c != "\\" {
                out.append(c)
                i += 1
                continue
            }
            guard i + 1 < u.count - 1 else { return nil }
            let e = u[i + 1]
            i += 2
            switch e {
            case "\"": out.append("\"")
            case "\\": out.append("\\")
            case "/": out.append("/")
            case "b": out.append("\u{08}")
            case "f": out.append("\u{0C}")
            case "n": out.append("\n")
            case "r": out.append("\r")
            case "t": out.append("\t")
            case "u":
                guard let v = hex4(i) else { return nil }
                i += 4
                if (0xD800..<0xDC00).contains(v), i + 1 < u.count - 1, u[i] == "\\", u[i + 1] == "u",
                   let lo = hex4(i + 2), (0xDC00..<0xE000).contains(lo) {
                    i += 6
                    out.append(Unicode.Scalar(0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00))!)
                } else {
                    // A lone surrogate (Python keeps it; Swift cannot): U+FFFD.
                    out.append(Unicode.Scalar(v) ?? "\u{FFFD}")
                }
            default: return nil
            }
        }
        return String(out)
    }

    /// Python's `str.strip()`: Unicode whitespace plus the separators U+001C...U+001F.
    static func pythonStrip(_ s: String) -> String {
        func isSpace(_ u: Unicode.Scalar) -> Bool { u.properties.isWhitespace || (0x1C...0x1F).contains(u.value) }
        let scalars = s.unicodeScalars
        guard let first = scalars.firstIndex(where: { !isSpace($0) }),
              let last = scalars.lastIndex(where: { !isSpace($0) })
        else { return "" }
        return String(scalars[first...last])
    }

    /// Python's `split("\n")` (on U+000A only; Swift would treat "\r\n" as one Character).
    static func splitLines(_ s: String) -> [String] {
        s.unicodeScalars.split(separator: "\n", omittingEmptySubsequences: false).map { String($0) }
    }
}
