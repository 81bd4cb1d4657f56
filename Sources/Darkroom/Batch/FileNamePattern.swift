import Foundation

/// Output file names from a pattern with placeholders, e.g. the default
/// `{index:05}-{seed}-{prompt}.png` → `00042-1234567-red-heart.png` (AUTOMATIC1111's layout).
///
/// Placeholders: `{index}` (position in the batch), `{line}` (line of the prompts file),
/// `{image}` (number within the line), `{seed}`, `{steps}`, `{cfg}`, `{width}`, `{height}`,
/// `{sampler}`, `{prompt}`, `{negative}`, `{model}`, `{hash}` (10 hex digits of the SHA-256
/// of the image's parameters text). `{name:N}` zero-pads a number to N digits, or limits a text
/// to N bytes (text defaults to 60). `{{` and `}}` are literal braces; '/' makes subfolders.
///
/// Names depend only on the job, never on what is already in the folder, so a rerun or another
/// shard computes the same name. Texts become slugs: letters and digits of any script (NFC,
/// lower case) with everything else — slashes, dots, spaces, control and invisible characters —
/// collapsed to '-', so a prompt can never leave the folder or hide a file; each path component
/// stays under 255 bytes (the Linux and macOS limit).
public struct FileNamePattern: Sendable, Equatable, CustomStringConvertible {
    public static let defaultPattern = "{index:05}-{seed}-{prompt}.png"
    public static let numberFields = ["index", "line", "image", "seed", "steps", "width", "height"]
    public static let textFields = ["prompt", "negative", "model", "sampler", "cfg", "hash"]
    /// Longest path component written; leaves room for a "-NN" collision suffix under 255 bytes.
    public static let maxComponentBytes = 240

    enum Part: Sendable, Equatable {
        case literal(String)
        case field(String, Int?)
    }

    public let pattern: String
    let parts: [Part]

    public var description: String { pattern }

    public init(_ pattern: String = FileNamePattern.defaultPattern) throws {
        func bad(_ why: String) -> DarkroomError { .invalidArgument("name pattern '\(pattern)': \(why)") }
        var text = pattern
        if !text.lowercased().hasSuffix(".png") { text += ".png" }
        guard !text.hasPrefix("/") else { throw bad("must be relative to the output folder") }
        guard !text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else { throw bad("contains a control character") }
        var parts: [Part] = []
        var literal = ""
        var chars = Array(text)
        var i = 0
        while i < chars.count {
            let c = chars[i]
            if c == "{" && i + 1 < chars.count && chars[i + 1] == "{" { literal.append("{"); i += 2; continue }
            if c == "}" && i + 1 < chars.count && chars[i + 1] == "}" { literal.append("}"); i += 2; continue }
            if c == "}" { throw bad("unmatched '}' (write '}}' for a brace)") }
            if c != "{" { literal.append(c); i += 1; continue }
            guard let close = chars[(i + 1)...].firstIndex(of: "}") else { throw bad("unmatched '{'") }
            let inside = String(chars[(i + 1)..<close])
            let pieces = inside.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(pieces[0])
            guard Self.numberFields.contains(name) || Self.textFields.contains(name) else {
                throw bad("unknown placeholder {\(name)}; the placeholders are " + (Self.numberFields + Self.textFields).map { "{\($0)}" }.joined(separator: ", "))
            }
            var spec: Int? = nil
            if pieces.count == 2 {
                guard let n = Int(pieces[1]), n >= 1, n <= Self.maxComponentBytes else {
                    throw bad("{\(inside)}: after ':' give a width from 1 to \(Self.maxComponentBytes), e.g. {index:05} or {prompt:40}")
                }
                spec = n
            }
            if !literal.isEmpty { parts.append(.literal(literal)); literal = "" }
            parts.append(.field(name, spec))
            i = close + 1
        }
        if !literal.isEmpty { parts.append(.literal(literal)) }
        chars = []
        // Literal path components must be real names: no "", ".", "..".
        let joined = parts.map { if case .literal(let s) = $0 { return s } else { return "x" } }.joined()
        for comp in joined.split(separator: "/", omittingEmptySubsequences: false) where comp.isEmpty || comp.hasPrefix(".") {
            throw bad("path components may not be empty or start with '.' (no '..', no hidden files)")
        }
        self.pattern = text
        self.parts = parts
    }

    /// The path (relative to the output folder) for a job, given the parameters its PNG carries.
    public func relativePath(for job: BatchJob, parameters p: GenerationParameters) -> String {
        var out = ""
        for part in parts {
            switch part {
            case .literal(let s): out += s
            case .field(let name, let spec):
                func number(_ v: UInt64) -> String {
                    let s = String(v)
                    guard let w = spec, s.count < w else { return s }
                    return String(repeating: "0", count: w - s.count) + s
                }
                func text(_ t: String) -> String { Self.slug(t, maxBytes: spec ?? 60) }
                switch name {
                case "index": out += number(UInt64(job.index))
                case "line": out += number(UInt64(job.source?.line ?? 0))
                case "image": out += number(UInt64(job.imageInLine))
                case "seed": out += number(job.request.seed)
                case "steps": out += number(UInt64(job.request.steps))
                case "width": out += number(UInt64(p.width))
                case "height": out += number(UInt64(p.height))
                case "prompt": out += text(job.request.prompt)
                case "negative": out += text(job.request.negativePrompt)
                case "model": out += text(p.model ?? "")
                case "sampler": out += job.request.sampler.rawValue
                case "cfg": out += formatNumber(job.request.guidanceScale)
                case "hash": out += String(SHA256.hash(Array(p.a1111Text.utf8)).prefix(spec ?? 10))
                default: break
                }
            }
        }
        let comps = out.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        return comps.enumerated().map { i, c in
            Self.fitComponent(c, isLast: i == comps.count - 1)
        }.joined(separator: "/")
    }

    /// A component within `maxComponentBytes`, cut on a character boundary (keeping ".png").
    static func fitComponent(_ c: String, isLast: Bool) -> String {
        let c = c.isEmpty ? "image" : c
        guard c.utf8.count > maxComponentBytes else { return c }
        let ext = isLast && c.lowercased().hasSuffix(".png") ? String(c.suffix(4)) : ""
        var stem = ext.isEmpty ? Substring(c) : c.dropLast(4)
        while stem.utf8.count + ext.utf8.count > maxComponentBytes { stem = stem.dropLast() }
        return String(stem) + ext
    }

    /// `name.png` → `name-2.png`: the alternative when another image holds the name.
    public static func alternative(_ relativePath: String, number: Int) -> String {
        let comps = relativePath.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        var last = comps.last ?? relativePath
        let ext = last.lowercased().hasSuffix(".png") ? String(last.suffix(4)) : ""
        if !ext.isEmpty { last.removeLast(4) }
        let suffix = "-\(number)"
        var stem = Substring(last)
        while stem.utf8.count + suffix.utf8.count + ext.utf8.count > 255 - 1 { stem = stem.dropLast() }
        return (comps.dropLast() + [String(stem) + suffix + ext]).joined(separator: "/")
    }

    /// Words of a text for a file name: letters (with their combining marks) and digits of any
    /// script in NFC lower case; every run of anything else becomes one '-'; at most `maxBytes`
    /// bytes of UTF-8, cut between characters; "image" when nothing is left.
    public static func slug(_ text: String, maxBytes: Int = 60) -> String {
        var scalars = String.UnicodeScalarView()
        var pendingDash = false
        var afterLetter = false
        for u in text.lowercased().precomposedStringWithCanonicalMapping.unicodeScalars {
            let p = u.properties
            let isMark = p.generalCategory == .nonspacingMark || p.generalCategory == .spacingMark
            if isMark && afterLetter {
                scalars.append(u)
                continue
            }
            if p.isAlphabetic && !isMark || p.numericType == .decimal || p.generalCategory == .decimalNumber
                || p.generalCategory == .letterNumber || p.generalCategory == .otherNumber {
                if pendingDash && !scalars.isEmpty { scalars.append("-") }
                pendingDash = false
                scalars.append(u)
                afterLetter = true
            } else {
                pendingDash = true
                afterLetter = false
            }
        }
        var out = ""
        for ch in String(scalars) {
            if out.utf8.count + String(ch).utf8.count > maxBytes { break }
            out.append(ch)
        }
        while out.hasSuffix("-") { out.removeLast() }
        return out.isEmpty ? "image" : out
    }
}
