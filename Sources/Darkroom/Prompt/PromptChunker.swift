import Foundation

/// One 77-token window of a prompt: BOS, 75 prompt tokens (EOS-padded), EOS, with the weight of
/// each token (1 for BOS, EOS and padding).
public struct PromptChunk: Equatable, Sendable {
    public var tokens: [Int]
    public var multipliers: [Double]

    public init(tokens: [Int], multipliers: [Double]) {
        self.tokens = tokens
        self.multipliers = multipliers
    }
}

/// Splits prompts into 75-token chunks as AUTOMATIC1111 does (`modules/sd_hijack_clip.py`,
/// FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line), so prompts are not cut at 77 tokens:
///
/// - every parsed fragment is tokenized on its own, each token keeping its fragment's weight;
/// - a chunk holds 75 tokens; when one more token arrives and the last comma of the full chunk
///   is at most `commaPaddingBacktrack` tokens back, the words after that comma move to the next
///   chunk (A1111's "prompt word wrap length limit", default 20; 0 turns it off);
/// - `BREAK` closes the chunk at once (consecutive BREAKs give empty chunks; a BREAK at the end
///   adds nothing);
/// - each chunk is padded to 75 with EOS, then framed by BOS and EOS; an empty prompt is one
///   chunk of BOS followed by 76 EOS.
/// Textual-inversion embeddings are not supported.
public struct PromptChunker: Sendable {
    public static let chunkLength = 75

    public let tokenizer: CLIPTokenizer
    public var commaPaddingBacktrack: Int
    /// The id of `,</w>` (what `tokenize(",")` gives), or nil if a comma is not one token.
    public let commaTokenID: Int?

    public init(tokenizer: CLIPTokenizer, commaPaddingBacktrack: Int = 20) {
        self.tokenizer = tokenizer
        self.commaPaddingBacktrack = commaPaddingBacktrack
        let comma = tokenizer.tokenize(",")
        commaTokenID = comma.count == 1 ? comma[0] : nil
    }

    /// The empty chunk (BOS + 76 × EOS, weights 1): the encoding of "" and the padding that
    /// evens out prompt and negative prompt.
    public var emptyChunk: PromptChunk {
        PromptChunk(tokens: [tokenizer.bosTokenID] + Array(repeating: tokenizer.eosTokenID, count: Self.chunkLength + 1),
                    multipliers: Array(repeating: 1, count: Self.chunkLength + 2))
    }

    /// The chunks of `text` and its token count (A1111's "N/75" counter: 75 per closed chunk,
    /// the real count for the last). `weighting: false` is A1111's emphasis "None": no parsing
    /// at all, brackets and BREAK are plain text.
    public func chunks(_ text: String, weighting: Bool = true) throws -> (chunks: [PromptChunk], tokenCount: Int) {
        let fragments = weighting ? try PromptParser.parse(text) : [PromptFragment(text, 1)]
        return chunks(fragments)
    }

    /// Chunks of already parsed fragments.
    public func chunks(_ fragments: [PromptFragment]) -> (chunks: [PromptChunk], tokenCount: Int) {
        let n = Self.chunkLength
        let bos = tokenizer.bosTokenID, eos = tokenizer.eosTokenID
        var chunks: [PromptChunk] = []
        var tokens: [Int] = [], weights: [Double] = []
        var tokenCount = 0
        var lastComma = -1

        func close(isLast: Bool = false) {
            tokenCount += isLast ? tokens.count : n
            let fill = n - tokens.count
            if fill > 0 {
                tokens += Array(repeating: eos, count: fill)
                weights += Array(repeating: 1, count: fill)
            }
            chunks.append(PromptChunk(tokens: [bos] + tokens + [eos], multipliers: [1] + weights + [1]))
            lastComma = -1
            tokens = []
            weights = []
        }

        for fragment in fragments {
            if fragment.isBreak {
                close()
                continue
            }
            for token in tokenizer.tokenize(fragment.text) {
                if token == commaTokenID {
                    lastComma = tokens.count
                } else if commaPaddingBacktrack != 0, tokens.count == n, lastComma != -1,
                          tokens.count - lastComma <= commaPaddingBacktrack {
                    // Full chunk, comma near its end: the words after the comma move on.
                    let cut = lastComma + 1
                    let movedTokens = Array(tokens[cut...]), movedWeights = Array(weights[cut...])
                    tokens.removeSubrange(cut...)
                    weights.removeSubrange(cut...)
                    close()
                    tokens = movedTokens
                    weights = movedWeights
                }
                if tokens.count == n { close() }
                tokens.append(token)
                weights.append(fragment.weight)
            }
        }
        if !tokens.isEmpty || chunks.isEmpty { close(isLast: true) }
        return (chunks, tokenCount)
    }

    /// The ids the text encoder sees for a chunk (A1111's process_tokens): when the pad token is
    /// not EOS (SD2 pads with `!`, id 0) everything after the first EOS becomes the pad token,
    /// which is also what diffusers' tokenizer produces for a prompt that fits.
    public func inputIDs(_ chunk: PromptChunk) -> [Int] {
        var ids = chunk.tokens
        let eos = tokenizer.eosTokenID, pad = tokenizer.padTokenID
        if pad != eos, let first = ids.firstIndex(of: eos) {
            for i in (first + 1)..<ids.count { ids[i] = pad }
        }
        return ids
    }
}
