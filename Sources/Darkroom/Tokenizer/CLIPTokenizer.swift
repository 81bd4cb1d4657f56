import Foundation

/// CLIP's BPE tokenizer, giving exactly the ids of transformers 5.23's `CLIPTokenizer` (the
/// `tokenizers`-backed class; ftfy not installed) on the same folder, which is what diffusers'
/// pipelines feed the text encoder.
///
/// Pipeline per prompt (as `tokenizers` runs it):
/// 1. added tokens with `normalized: false` are cut out of the raw text;
/// 2. each remaining piece is normalized (`CLIPText.normalize`), then added tokens with
///    `normalized: true` are cut out of it;
/// 3. the rest is pre-tokenized (`CLIPText.preTokenize`), mapped to byte-level characters and
///    BPE-encoded word by word (`CLIPBPE`).
///
/// Which tokens are "added" comes from the folder: the named special tokens (bos, eos, unk,
/// pad) always are. So SD2 folders, whose pad token is `!`, turn every `!` in a prompt into
/// the bare `!` token (id 0) instead of BPE's `!</w>` or `!!</w>`, and in SD1 folders
/// `<|ENDOFTEXT|>` is not recognised (its eos is matched in the raw text) while
/// `<|STARTOFTEXT|>` is. Those are transformers' results; we reproduce them.
public struct CLIPTokenizer: Sendable {
    public let bosTokenID: Int
    public let eosTokenID: Int
    public let padTokenID: Int
    /// Length of `encode`'s output (`model_max_length`, 77 for every CLIP text encoder).
    public let maxLength: Int

    private let bpe: CLIPBPE
    /// id -> token text, for `decode`. Added tokens override the vocabulary.
    private let idToToken: [Int: String]
    private let specialIDs: Set<Int>
    /// Added tokens matched in the raw text, and in the normalized text.
    private let rawMatcher: AddedTokenMatcher
    private let normalizedMatcher: AddedTokenMatcher

    /// Loads from a diffusers `tokenizer/` folder: vocab.json + merges.txt, or tokenizer.json
    /// (recent transformers save only that; it wins when both exist, as in transformers).
    /// Reads tokenizer_config.json / special_tokens_map.json / added_tokens.json when present
    /// for the pad, bos, eos and unk tokens, the added-token flags and model_max_length
    /// (default 77).
    public init(directory: URL) throws {
        let files = try CLIPTokenizerFiles.load(directory: directory)
        let vocab = files.vocab

        // Register added tokens as `tokenizers` does: a content already in the vocabulary keeps
        // its id, a new one gets the next free id; a repeated content takes the last flags.
        var addedIDs: [String: Int] = [:]
        var addedFlags: [String: CLIPAddedToken] = [:]
        var addedOrder: [String] = []
        let vocabSize = vocab.count
        for token in files.addedTokens where !token.content.isEmpty {
            let id: Int
            if let existing = addedIDs[token.content] ?? vocab[token.content] {
                id = existing
            } else if let maxAdded = addedIDs.values.max(), maxAdded >= vocabSize || vocabSize == 0 {
                id = maxAdded + 1
            } else {
                id = vocabSize
            }
            if addedIDs[token.content] == nil { addedOrder.append(token.content) }
            addedIDs[token.content] = id
            addedFlags[token.content] = token
        }

        func idOf(_ token: CLIPAddedToken, _ role: String) throws -> Int {
            guard let id = addedIDs[token.content] ?? vocab[token.content] else {
                throw DarkroomError.invalidFile(path: files.vocabPath, reason: "the \(role) token \(TokenizerJSONParser.quote(token.content)) is not in the vocabulary")
            }
            return id
        }
        bosTokenID = try idOf(files.bos, "bos")
        eosTokenID = try idOf(files.eos, "eos")
        padTokenID = try idOf(files.pad, "pad")
        // The BPE model looks its unk token up in its own vocabulary only.
        let unkID = vocab[files.unk.content]
        maxLength = files.maxLength

        if unkID == nil {
            // `tokenizers` would fail on the first text needing a missing symbol; refuse the
            // folder now, since tokenize() cannot throw.
            for b in 0..<256 {
                let ch = String(CLIPText.byteToScalar[b])
                for symbol in [ch, ch + CLIPBPE.endOfWord] where vocab[symbol] == nil {
                    throw DarkroomError.invalidFile(path: files.vocabPath, reason: "the vocabulary lacks the byte symbol \(TokenizerJSONParser.quote(symbol)) and has no unk token \(TokenizerJSONParser.quote(files.unk.content))")
                }
            }
        }
        do {
            bpe = try CLIPBPE(vocab: vocab, merges: files.merges, unkID: unkID)
        } catch {
            let what = files.mergesPath == files.vocabPath ? "model.merges[\(error.index)]" : "merge \(error.index + 1)"
            let pair = TokenizerJSONParser.quote(error.pair.0 + " " + error.pair.1)
            throw DarkroomError.invalidFile(path: files.mergesPath, reason: "\(what) \(pair) needs \(TokenizerJSONParser.quote(error.token)), which is not in the vocabulary\(files.mergesPath == files.vocabPath ? "" : " (\(files.vocabPath))")")
        }

        var raw: [AddedTokenMatcher.Pattern] = []
        var normalized: [AddedTokenMatcher.Pattern] = []
        var special = Set<Int>()
        for content in addedOrder {
            let token = addedFlags[content]!
            let id = addedIDs[content]!
            if token.special { special.insert(id) }
            if token.normalized {
                // The pattern is normalized too, so `<|ENDOFTEXT|>` in a config would still
                // match the lowercased text.
                let scalars = CLIPText.normalize(ArraySlice(content.unicodeScalars))
                normalized.append(.init(scalars: scalars, id: id, token: token))
            } else {
                raw.append(.init(scalars: Array(content.unicodeScalars), id: id, token: token))
            }
        }
        rawMatcher = AddedTokenMatcher(patterns: raw)
        normalizedMatcher = AddedTokenMatcher(patterns: normalized)
        specialIDs = special
        var reverse: [Int: String] = [:]
        reverse.reserveCapacity(vocab.count)
        for (token, id) in vocab { reverse[id] = token }
        for (content, id) in addedIDs { reverse[id] = content }
        idToToken = reverse
    }

    /// BPE token ids of `text` without BOS/EOS, no truncation.
    public func tokenize(_ text: String) -> [Int] {
        var out: [Int] = []
        let raw = Array(text.unicodeScalars)
        var words: [Range<Int>] = []
        rawMatcher.split(raw[...]) { piece in
            switch piece {
            case .token(let id):
                out.append(id)
            case .text(let range):
                let normalized = CLIPText.normalize(raw[range])
                normalizedMatcher.split(normalized[...]) { inner in
                    switch inner {
                    case .token(let id):
                        out.append(id)
                    case .text(let r):
                        let segment = Array(normalized[r])
                        words.removeAll(keepingCapacity: true)
                        CLIPText.preTokenize(segment, into: &words)
                        for w in words { bpe.encode(word: segment[w], into: &out) }
                    }
                }
            }
        }
        return out
    }

    /// BOS + ids truncated to maxLength-2 + EOS, padded with the pad token to maxLength
    /// (what diffusers' pipeline sends the text encoder: padding="max_length", truncation=True).
    public func encode(_ text: String) -> [Int] {
        let ids = tokenize(text)
        var out = [bosTokenID]
        out.reserveCapacity(maxLength)
        out.append(contentsOf: ids.prefix(maxLength - 2))
        out.append(eosTokenID)
        while out.count < maxLength { out.append(padTokenID) }
        return out
    }

    /// Text of `ids`, as HF's `decode`: tokens joined, byte-level characters turned back into
    /// UTF-8 (invalid sequences become U+FFFD), `</w>` replaced by a space, ends stripped.
    /// Unknown ids are skipped.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) -> String {
        var bytes: [UInt8] = []
        for id in ids {
            guard let token = idToToken[id] else { continue }
            if skipSpecialTokens, specialIDs.contains(id) { continue }
            // `tokenizers`' ByteLevel decoder: a token with a character outside the byte
            // alphabet is kept as its own UTF-8.
            var tokenBytes: [UInt8] = []
            var mapped = true
            for s in token.unicodeScalars {
                guard let b = CLIPText.scalarToByte[s.value] else { mapped = false; break }
                tokenBytes.append(b)
            }
            bytes.append(contentsOf: mapped ? tokenBytes : Array(token.utf8))
        }
        // Replace `</w>` scalar by scalar: String's own search works on grapheme clusters and
        // misses a `>` that a following combining mark has joined.
        let decoded = Array(String(decoding: bytes, as: UTF8.self).unicodeScalars)
        let suffix = Array(CLIPBPE.endOfWord.unicodeScalars)
        var scalars: [Unicode.Scalar] = []
        scalars.reserveCapacity(decoded.count)
        var i = 0
        while i < decoded.count {
            if decoded[i] == suffix[0], i + suffix.count <= decoded.count,
               decoded[i..<(i + suffix.count)].elementsEqual(suffix) {
                scalars.append(" ")
                i += suffix.count
            } else {
                scalars.append(decoded[i])
                i += 1
            }
        }
        // Python's str.strip(): White_Space plus the information separators U+001C...U+001F.
        func isPythonSpace(_ s: Unicode.Scalar) -> Bool { s.properties.isWhitespace || (0x1C...0x1F).contains(s.value) }
        guard let first = scalars.firstIndex(where: { !isPythonSpace($0) }),
              let last = scalars.lastIndex(where: { !isPythonSpace($0) }) else { return "" }
        var view = String.UnicodeScalarView()
        view.append(contentsOf: scalars[first...last])
        return String(view)
    }
}

/// Finds added tokens in text: leftmost-longest matches scanned left to right, as the
/// Aho-Corasick automaton in `tokenizers` (MatchKind::LeftmostLongest) does, with the
/// `single_word`, `lstrip` and `rstrip` rules of `AddedVocabulary::find_matches`.
struct AddedTokenMatcher: Sendable {
    struct Pattern: Sendable {
        let scalars: [Unicode.Scalar]
        let id: Int
        let token: CLIPAddedToken
    }

    enum Piece { case text(Range<Int>), token(Int) }

    let patterns: [Pattern]

    init(patterns: [Pattern]) { self.patterns = patterns.filter { !$0.scalars.isEmpty } }

    /// Calls `body` with the text pieces and tokens of `text` in order. Empty text pieces are
    /// not reported (they produce no ids).
    func split(_ text: ArraySlice<Unicode.Scalar>, _ body: (Piece) -> Void) {
        let lo = text.startIndex, hi = text.endIndex
        if patterns.isEmpty {
            if lo < hi { body(.text(lo..<hi)) }
            return
        }
        var pieceStart = lo
        var i = lo
        while i < hi {
            // Longest pattern starting at i.
            var best: Pattern?
            for p in patterns where p.scalars.count <= hi - i && (best == nil || p.scalars.count > best!.scalars.count) {
                if text[i] == p.scalars[0], text[i..<(i + p.scalars.count)].elementsEqual(p.scalars) { best = p }
            }
            guard let match = best else { i += 1; continue }
            var start = i
            var stop = i + match.scalars.count
            i = stop  // a discarded match is not rescanned (find_iter moves past it)
            if match.token.singleWord {
                let leftOK = start == lo || !Self.isWordScalar(text[start - 1])
                let rightOK = stop == hi || !Self.isWordScalar(text[stop])
                if !leftOK || !rightOK { continue }
            }
            if match.token.lstrip {
                var s = start
                while s > pieceStart, text[s - 1].properties.isWhitespace { s -= 1 }
                start = s
            }
            if match.token.rstrip {
                while stop < hi, text[stop].properties.isWhitespace { stop += 1 }
                i = stop
            }
            if pieceStart < start { body(.text(pieceStart..<start)) }
            body(.token(match.id))
            pieceStart = stop
        }
        if pieceStart < hi { body(.text(pieceStart..<hi)) }
    }

    /// Rust regex `\w`: Alphabetic, marks, decimal digits, connector punctuation, join controls.
    private static func isWordScalar(_ s: Unicode.Scalar) -> Bool {
        let p = s.properties
        if p.isAlphabetic || p.isJoinControl { return true }
        switch p.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation: return true
        default: return false
        }
    }
}
