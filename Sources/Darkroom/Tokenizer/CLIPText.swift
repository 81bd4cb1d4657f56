import Foundation

/// The text side of Hugging Face's CLIP tokenizer (transformers 5 `CLIPTokenizer`, backed by the
/// `tokenizers` library), rebuilt over Unicode scalars:
///
/// - normalizer: `Sequence[NFC, Replace(Regex("\s+"), " "), Lowercase]`. No stripping, no
///   control-character removal, no accent stripping (that was the old slow tokenizer's
///   `BasicTokenizer` path, gone in transformers 5; with ftfy installed it differed again).
///   Control characters survive and become byte-level tokens.
/// - pre-tokenizer: `Split(<CLIP regex>, behavior: removed, invert: true)` keeps the regex
///   matches and drops everything between them (only whitespace can be left between them),
///   then `ByteLevel(add_prefix_space: false)` whose GPT-2 regex splits the matched pieces
///   again; only the `<|startoftext|>` / `<|endoftext|>` alternatives are actually split by
///   it (into `<|`, the letters, `|>`), every other piece stays whole.
///
/// Character classes follow Oniguruma's Unicode 16 tables as `tokenizers` builds them: `\s` is
/// the White_Space property (so U+001C...U+001F, U+180E and U+200B are *not* spaces), `\p{L}`
/// is general category L, `\p{N}` is general category N (Nd, Nl, No: `²`, `½`, `Ⅻ`, `①` are
/// numbers, one per piece). Combining marks (M*) are neither letters nor numbers, so `é` in NFD
/// would split; NFC runs first, but marks with no precomposed form (Devanagari vowel signs, a
/// lone U+0301, the U+0307 that lowercasing `İ` produces) still end a letter run.
enum CLIPText {
    enum CharClass: UInt8 { case space, letter, number, other }

    /// Unicode version of the regex tables in the pinned `tokenizers` (Oniguruma).
    static let regexUnicodeMajor = 16
    /// Unicode version of its NFC (the `unicode-normalization-alignments` crate): 9.0.
    /// Measured against every code point: marks added since then have combining class 0 to it
    /// and U+11935 U+11930 do not compose to U+11938.
    static let nfcUnicode: (major: Int, minor: Int) = (9, 0)

    /// Table for ASCII; everything else asks the scalar's properties.
    private static let asciiClass: [CharClass] = (0..<128).map { v in
        classify(Unicode.Scalar(UInt8(v)))
    }

    @inline(__always)
    static func charClass(_ s: Unicode.Scalar) -> CharClass {
        s.value < 128 ? asciiClass[Int(s.value)] : classify(s)
    }

    private static func classify(_ s: Unicode.Scalar) -> CharClass {
        let p = s.properties
        if p.isWhitespace { return .space }
        // tokenizers 0.23's Oniguruma has Unicode 16 tables; Swift 6.3 has Unicode 17, whose
        // 4,800 new letters and numbers are still unassigned (so "other") to the regex.
        guard let age = p.age, age.major <= regexUnicodeMajor else { return .other }
        switch p.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            return .letter
        case .decimalNumber, .letterNumber, .otherNumber:
            return .number
        default:
            return .other
        }
    }

    // MARK: Normalizer

    /// NFC, then every run of `\s` becomes one space, then each scalar is replaced by its full
    /// lowercase mapping (Rust's `char::to_lowercase`: `İ` -> `i̇`, no final-sigma rule).
    static func normalize(_ input: ArraySlice<Unicode.Scalar>) -> [Unicode.Scalar] {
        let composed = nfc(input)
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(composed.count)
        var inSpace = false
        for s in composed {
            if charClass(s) == .space {
                if !inSpace { out.append(" ") }
                inSpace = true
                continue
            }
            inSpace = false
            if s.value < 128 {
                out.append(s.value >= 0x41 && s.value <= 0x5A ? Unicode.Scalar(UInt8(s.value) | 0x20) : s)
            } else if s.properties.changesWhenLowercased {
                out.append(contentsOf: s.properties.lowercaseMapping.unicodeScalars)
            } else {
                out.append(s)
            }
        }
        return out
    }

    /// NFC as Unicode 9.0 defines it. Scalars assigned after 9.0 (or unassigned) are inert
    /// there: combining class 0, no decomposition, no composition. A class-0 scalar that
    /// composes with nothing cuts the text into independent normalization segments, so
    /// Foundation's (newer) NFC runs on the pieces between such scalars and gives 9.0's result.
    static func nfc(_ input: ArraySlice<Unicode.Scalar>) -> [Unicode.Scalar] {
        // Scalars below U+0300 are starters that never compose with a previous scalar, so text
        // made only of them is already NFC: skip Foundation for the common case.
        if input.allSatisfy({ $0.value < 0x300 }) { return Array(input) }
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(input.count)
        var segmentStart = input.startIndex
        func flush(_ end: Int) {
            guard segmentStart < end else { return }
            let segment = input[segmentStart..<end]
            if segment.allSatisfy({ $0.value < 0x300 }) {
                out.append(contentsOf: segment)
            } else {
                var view = String.UnicodeScalarView()
                view.append(contentsOf: segment)
                for s in String(view).precomposedStringWithCanonicalMapping.unicodeScalars {
                    // Foundation leaves a precomposed LV syllable + trailing jamo T apart
                    // (U+AC00 U+11B4 should be U+AC0D); compose them as NFC requires.
                    if (0x11A8...0x11C2).contains(s.value), let last = out.last,
                       (0xAC00...0xD7A3).contains(last.value), (last.value - 0xAC00) % 28 == 0 {
                        out[out.count - 1] = Unicode.Scalar(last.value + (s.value - 0x11A7))!
                    } else {
                        out.append(s)
                    }
                }
            }
        }
        for i in input.indices where input[i].value >= 0x300 && !knownToNFC(input[i]) {
            flush(i)
            out.append(input[i])
            segmentStart = i + 1
        }
        flush(input.endIndex)
        return out
    }

    @inline(__always)
    private static func knownToNFC(_ s: Unicode.Scalar) -> Bool {
        guard let age = s.properties.age else { return false }
        return age.major < nfcUnicode.major || (age.major == nfcUnicode.major && age.minor <= nfcUnicode.minor)
    }

    // MARK: Pre-tokenizer

    private static let startOfText = Array("<|startoftext|>".unicodeScalars)
    private static let endOfText = Array("<|endoftext|>".unicodeScalars)

    /// Splits normalized text into the words BPE sees, as ranges into `text`. Leftmost-first
    /// alternation of the CLIP regex, tried at each position in order:
    /// `<|startoftext|>`, `<|endoftext|>`, `'s 't 're 've 'm 'll 'd`, `\p{L}+`, `\p{N}`,
    /// `[^\s\p{L}\p{N}]+`; whitespace matches nothing and is dropped.
    static func preTokenize(_ text: [Unicode.Scalar], into words: inout [Range<Int>]) {
        let n = text.count
        var i = 0
        while i < n {
            let s = text[i]
            if s == "<", let literal = specialLiteral(text, at: i) {
                // ByteLevel's GPT-2 regex cuts the literal into "<|", letters, "|>".
                words.append(i..<(i + 2))
                words.append((i + 2)..<(i + literal - 2))
                words.append((i + literal - 2)..<(i + literal))
                i += literal
                continue
            }
            if s == "'", i + 1 < n {
                let c1 = text[i + 1]
                if c1 == "s" || c1 == "t" || c1 == "m" || c1 == "d" {
                    words.append(i..<(i + 2)); i += 2; continue
                }
                if i + 2 < n {
                    let c2 = text[i + 2]
                    if (c1 == "r" && c2 == "e") || (c1 == "v" && c2 == "e") || (c1 == "l" && c2 == "l") {
                        words.append(i..<(i + 3)); i += 3; continue
                    }
                }
            }
            switch charClass(s) {
            case .space:
                i += 1
            case .number:
                words.append(i..<(i + 1))
                i += 1
            case .letter:
                var j = i + 1
                while j < n, charClass(text[j]) == .letter { j += 1 }
                words.append(i..<j)
                i = j
            case .other:
                // Greedy: swallows any `'` or `<` that follows, even before "s" or "|endoftext|>".
                var j = i + 1
                while j < n, charClass(text[j]) == .other { j += 1 }
                words.append(i..<j)
                i = j
            }
        }
    }

    /// Length of `<|startoftext|>` or `<|endoftext|>` at `i`, or nil.
    private static func specialLiteral(_ text: [Unicode.Scalar], at i: Int) -> Int? {
        for literal in [startOfText, endOfText] where i + literal.count <= text.count {
            var k = 0
            while k < literal.count, text[i + k] == literal[k] { k += 1 }
            if k == literal.count { return k }
        }
        return nil
    }

    // MARK: Byte-level alphabet

    /// GPT-2's reversible byte -> printable character map: the printable Latin-1 bytes
    /// (`!`...`~`, `¡`...`¬`, `®`...`ÿ`) map to themselves, the other 68 bytes to U+0100 onward
    /// in byte order.
    static let byteToScalar: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: "\0", count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            if printable {
                table[b] = Unicode.Scalar(UInt8(b))
            } else {
                table[b] = Unicode.Scalar(next)!
                next += 1
            }
        }
        return table
    }()

    /// The inverse of `byteToScalar`, for decoding.
    static let scalarToByte: [UInt32: UInt8] = {
        var map: [UInt32: UInt8] = [:]
        for (b, s) in byteToScalar.enumerated() { map[s.value] = UInt8(b) }
        return map
    }()
}
