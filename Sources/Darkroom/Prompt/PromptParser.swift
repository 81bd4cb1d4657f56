import Foundation

/// A piece of prompt text with its attention weight, as AUTOMATIC1111's `parse_prompt_attention`
/// returns it. A `BREAK` keyword is the fragment `("BREAK", -1)`, A1111's own marker.
public struct PromptFragment: Equatable, Sendable, CustomStringConvertible {
    public var text: String
    /// Double, as Python computes it; the text encoder later sees it as Float.
    public var weight: Double

    public init(_ text: String, _ weight: Double) {
        self.text = text
        self.weight = weight
    }

    public static let breakMarker = PromptFragment("BREAK", -1)

    /// A1111 starts a new chunk only for this exact pair: a `BREAK` inside brackets gets its
    /// weight scaled (e.g. -1.1) and is then encoded as the word "break", as in A1111.
    public var isBreak: Bool { self == Self.breakMarker }

    public var description: String { "(\(String(reflecting: text)), \(weight))" }
}

/// AUTOMATIC1111's prompt attention syntax (`modules/prompt_parser.py`, parse_prompt_attention):
///
/// - `(text)` multiplies the weight of `text` by 1.1, `[text]` divides it by 1.1; they nest;
/// - `(text:1.3)` multiplies by 1.3 (spaces allowed around the number, `+`/`-` sign, `.5`, `5.`);
/// - `\(` `\)` `\[` `\]` `\\` are the literal characters; any other backslash is dropped;
/// - an unclosed `(` or `[` still applies to everything after it; an unmatched `)` or `]` is text;
/// - `BREAK` (a whole word, in capitals) ends the current 75-token chunk; the spaces around it go;
/// - neighbouring fragments with equal weights are joined.
///
/// Scanning works on Unicode scalars (Python's code points) so that a bracket followed by a
/// combining mark is still a bracket; `\s`, `\d` and `\b` follow Python's Unicode definitions.
public enum PromptParser {
    /// The fragments of `text`, with BREAK markers. Throws only where A1111 itself fails: a
    /// weight such as `(a:1.2.3)` that Python's `float()` rejects.
    public static func parse(_ text: String) throws -> [PromptFragment] {
        let s = Array(text.unicodeScalars)
        // Fragments under construction: scalars + weight (joined into Strings at the end).
        var out: [(text: [Unicode.Scalar], weight: Double)] = []
        var roundOpen: [Int] = []
        var squareOpen: [Int] = []

        func scale(from start: Int, by factor: Double) {
            for p in start..<out.count { out[p].weight *= factor }
        }
        func appendText(_ piece: ArraySlice<Unicode.Scalar>) {
            for (i, part) in splitOnBreak(piece).enumerated() {
                if i > 0 { out.append((Array("BREAK".unicodeScalars), -1)) }
                out.append((part, 1))
            }
        }

        var i = 0
        while i < s.count {
            let c = s[i]
            switch c {
            case "\\":
                // \( \) \[ \] \\ are literals; a lone backslash yields nothing (A1111 keeps text[1:]).
                if i + 1 < s.count, "()[]\\".unicodeScalars.contains(s[i + 1]) {
                    out.append(([s[i + 1]], 1))
                    i += 2
                } else {
                    out.append(([], 1))
                    i += 1
                }
            case "(":
                roundOpen.append(out.count)
                i += 1
            case "[":
                squareOpen.append(out.count)
                i += 1
            case ":":
                if let (number, end) = weightSuffix(s, colon: i) {
                    if let start = roundOpen.popLast() {
                        guard let w = pythonFloat(number) else {
                            throw DarkroomError.invalidArgument("prompt weight \"\(String(String.UnicodeScalarView(number)))\" is not a number")
                        }
                        scale(from: start, by: w)
                    } else {
                        appendText(s[i..<end])   // ":1.2)" with no open "(" is plain text
                    }
                    i = end
                } else {
                    appendText(s[i..<(i + 1)])
                    i += 1
                }
            case ")":
                if let start = roundOpen.popLast() { scale(from: start, by: 1.1) } else { appendText(s[i..<(i + 1)]) }
                i += 1
            case "]":
                if let start = squareOpen.popLast() { scale(from: start, by: 1 / 1.1) } else { appendText(s[i..<(i + 1)]) }
                i += 1
            default:
                var j = i + 1
                while j < s.count, !isSyntax(s[j]) { j += 1 }
                appendText(s[i..<j])
                i = j
            }
        }
        for start in roundOpen { scale(from: start, by: 1.1) }
        for start in squareOpen { scale(from: start, by: 1 / 1.1) }
        if out.isEmpty { out = [([], 1)] }

        var merged: [(text: [Unicode.Scalar], weight: Double)] = [out[0]]
        for f in out.dropFirst() {
            if merged[merged.count - 1].weight == f.weight {
                merged[merged.count - 1].text.append(contentsOf: f.text)
            } else {
                merged.append(f)
            }
        }
        return merged.map { PromptFragment(String(String.UnicodeScalarView($0.text)), $0.weight) }
    }

    /// Characters that end a run of ordinary text (A1111's `[^\\()\[\]:]+`).
    @inline(__always)
    static func isSyntax(_ c: Unicode.Scalar) -> Bool {
        switch c {
        case "\\", "(", ")", "[", "]", ":": return true
        default: return false
        }
    }

    /// Matches `:\s*([+-]?[.\d]+)\s*\)` at `colon`: the number's scalars and the index after `)`.
    static func weightSuffix(_ s: [Unicode.Scalar], colon: Int) -> ([Unicode.Scalar], Int)? {
        var j = colon + 1
        while j < s.count, isPythonSpace(s[j]) { j += 1 }
        let numberStart = j
        if j < s.count, s[j] == "+" || s[j] == "-" { j += 1 }
        let bodyStart = j
        while j < s.count, s[j] == "." || isPythonDecimal(s[j]) { j += 1 }
        guard j > bodyStart else { return nil }
        let number = Array(s[numberStart..<j])
        while j < s.count, isPythonSpace(s[j]) { j += 1 }
        guard j < s.count, s[j] == ")" else { return nil }
        return (number, j + 1)
    }

    /// Python's `float()` on a `[+-]?[.\d]+` string: one dot at most, a digit at least; any
    /// Unicode decimal digit counts (`float("١.٥")` is 1.5).
    static func pythonFloat(_ number: [Unicode.Scalar]) -> Double? {
        var ascii = ""
        var dots = 0, digits = 0
        for c in number {
            if c == "." { dots += 1; ascii.append(".") }
            else if c == "+" || c == "-" { ascii.unicodeScalars.append(c) }
            else if let v = c.properties.numericValue, isPythonDecimal(c) { digits += 1; ascii.append(String(Int(v))) }
            else { return nil }
        }
        guard dots <= 1, digits >= 1 else { return nil }
        return Double(ascii)
    }

    /// Python's `re.split(r"\s*\bBREAK\b\s*", text)`: the spaces around each BREAK are removed
    /// with it; `BREAKfast` and `xBREAK` are not split.
    static func splitOnBreak(_ piece: ArraySlice<Unicode.Scalar>) -> [[Unicode.Scalar]] {
        let keyword = Array("BREAK".unicodeScalars)
        let lo = piece.startIndex, hi = piece.endIndex
        var parts: [[Unicode.Scalar]] = []
        var partStart = lo
        var start = lo
        while start < hi {
            // The leftmost match: optional spaces, then BREAK on word boundaries.
            var j = start
            while j < hi, isPythonSpace(piece[j]) { j += 1 }
            let end = j + keyword.count
            if end <= hi, piece[j..<end].elementsEqual(keyword),
               j == lo || !isPythonWord(piece[j - 1]), end == hi || !isPythonWord(piece[end]) {
                var stop = end
                while stop < hi, isPythonSpace(piece[stop]) { stop += 1 }
                parts.append(Array(piece[partStart..<start]))
                partStart = stop
                start = stop
            } else {
                start += 1
            }
        }
        parts.append(Array(piece[partStart..<hi]))
        return parts
    }

    /// Python's `\s` (str.isspace): Unicode White_Space plus the separators U+001C...U+001F.
    static func isPythonSpace(_ c: Unicode.Scalar) -> Bool {
        c.properties.isWhitespace || (0x1C...0x1F).contains(c.value)
    }

    /// Python's `\d`: a Unicode decimal digit (Nd).
    static func isPythonDecimal(_ c: Unicode.Scalar) -> Bool {
        c.properties.numericType == .decimal
    }

    /// Python's `\w` (for `\b`): letters, anything numeric, and `_`.
    static func isPythonWord(_ c: Unicode.Scalar) -> Bool {
        if c == "_" { return true }
        if c.properties.numericType != nil { return true }
        switch c.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return false
        }
    }
}
