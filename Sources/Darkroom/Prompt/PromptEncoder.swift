import Foundation

/// How prompt text becomes text-encoder conditioning.
public enum PromptMode: String, Sendable, CaseIterable {
    /// The default: diffusers' exact code path when prompt and negative prompt are plain text
    /// (no weighting syntax, escapes or BREAK) of at most 75 tokens each, a1111 otherwise. Both
    /// paths give the same embeddings for plain prompts, so `auto` renders what `a1111` renders;
    /// it only guarantees that plain prompts run exactly what diffusers runs.
    case auto
    /// AUTOMATIC1111: weighting syntax, BREAK, prompts of any length in 75-token chunks whose
    /// embeddings are concatenated. For a prompt of at most 75 tokens without `(`, `[`, `\` or
    /// BREAK this gives exactly diffusers' embeddings (same ids, weights all 1).
    case a1111
    /// diffusers' StableDiffusionPipeline: the text as is, truncated to 77 tokens, no weights.
    case diffusers
}

/// Text conditioning from prompts, in AUTOMATIC1111's or diffusers' way, with clip skip as A1111
/// and stable-diffusion.cpp count it: 1 = the last layer (no skip); N takes the output N-1
/// layers before the last (hidden_states[-N]) and applies the final LayerNorm, which is
/// diffusers' `clip_skip = N - 1`.
///
/// SD2 note: a diffusers SD2 text encoder already ends at OpenCLIP's penultimate layer (the
/// conversion drops the last one), so clip skip 1 is what SD2 was trained with; clip skip 2
/// there equals stable-diffusion.cpp's clip skip 3 on the original checkpoint. (A1111 ignores
/// clip skip for SD2.)
public struct PromptEncoder: Sendable {
    public let chunker: PromptChunker
    /// The text encoder, fetched for each encoding: a model can free it between runs
    /// (`StableDiffusionModel.releaseTextEncoder()`) and build it again on the next.
    public let textEncoderSource: @Sendable () throws -> CLIPTextModel

    public init(tokenizer: CLIPTokenizer, textEncoder: CLIPTextModel, commaPaddingBacktrack: Int = 20) {
        self.init(tokenizer: tokenizer, textEncoderSource: { textEncoder }, commaPaddingBacktrack: commaPaddingBacktrack)
    }

    public init(tokenizer: CLIPTokenizer, textEncoderSource: @escaping @Sendable () throws -> CLIPTextModel, commaPaddingBacktrack: Int = 20) {
        chunker = PromptChunker(tokenizer: tokenizer, commaPaddingBacktrack: commaPaddingBacktrack)
        self.textEncoderSource = textEncoderSource
    }

    public var tokenizer: CLIPTokenizer { chunker.tokenizer }

    /// Conditioning for one text: [1, 77 × chunks, hidden] (a1111) or [1, 77, hidden] (diffusers).
    /// `weighting: false` (a1111 only) treats brackets and BREAK as plain text but still chunks.
    public func encode(_ text: String, clipSkip: Int = 1, mode: PromptMode = .a1111, weighting: Bool = true) throws -> Tensor {
        switch try resolve(mode, texts: [text], weighting: weighting) {
        case .diffusers, .auto:
            let te = try textEncoderSource()
            return try te([tokenizer.encode(text)], skipLayers: try skipLayers(clipSkip, te))
        case .a1111:
            return try encodeChunks(try chunker.chunks(text, weighting: weighting).chunks, clipSkip: clipSkip)
        }
    }

    /// Conditioning for prompt and negative prompt, each [1, tokens, hidden] with the same token
    /// count, ready to stack as diffusers' [negative, positive] batch. In a1111 mode the side
    /// with fewer chunks is padded with empty-prompt chunks (A1111's "Pad prompt/negative
    /// prompt" option; without it A1111 runs the UNet on the two separately, which `encode(_:)`
    /// allows). One text-encoder call covers both.
    public func encode(prompt: String, negativePrompt: String, clipSkip: Int = 1, mode: PromptMode = .a1111,
                       weighting: Bool = true) throws -> (positive: Tensor, negative: Tensor) {
        switch try resolve(mode, texts: [prompt, negativePrompt], weighting: weighting) {
        case .diffusers, .auto:
            let te = try textEncoderSource()
            let both = try te([tokenizer.encode(prompt), tokenizer.encode(negativePrompt)], skipLayers: try skipLayers(clipSkip, te))
            return (both.rows(0..<1), both.rows(1..<2))
        case .a1111:
            var positive = try chunker.chunks(prompt, weighting: weighting).chunks
            var negative = try chunker.chunks(negativePrompt, weighting: weighting).chunks
            let count = max(positive.count, negative.count)
            positive += Array(repeating: chunker.emptyChunk, count: count - positive.count)
            negative += Array(repeating: chunker.emptyChunk, count: count - negative.count)
            let z = try encodeChunks(positive + negative, clipSkip: clipSkip)
            let sides = z.reshaped([2, z.shape[1] / 2, z.shape[2]])
            return (sides.rows(0..<1), sides.rows(1..<2))
        }
    }

    /// `auto` resolved for these texts (other modes are returned as they are): diffusers when
    /// every text is plain (A1111's parser returns it unchanged as one weight-1 fragment, so no
    /// brackets, escapes or BREAK) and at most 75 tokens long, a1111 otherwise.
    public func resolve(_ mode: PromptMode, texts: [String], weighting: Bool = true) throws -> PromptMode {
        guard mode == .auto else { return mode }
        for text in texts where !(try isPlain(text, weighting: weighting)) { return .a1111 }
        return .diffusers
    }

    /// Whether a1111 mode would see `text` exactly as diffusers does: one chunk, weights all 1.
    func isPlain(_ text: String, weighting: Bool) throws -> Bool {
        if weighting {
            let fragments = try PromptParser.parse(text)
            guard fragments.count == 1, fragments[0].weight == 1, fragments[0].text == text else { return false }
        }
        return tokenizer.tokenize(text).count <= min(PromptChunker.chunkLength, tokenizer.maxLength - 2)
    }

    /// Tokens of conditioning (77 per chunk) that `encode(prompt:negativePrompt:...)` returns for
    /// each side, or `encode(_:)` for `prompt` alone when `negativePrompt` is nil; no text encoder
    /// run. Images can share a UNet batch only when this agrees.
    public func conditioningLength(prompt: String, negativePrompt: String?, mode: PromptMode = .a1111,
                                   weighting: Bool = true) throws -> Int {
        let texts = [prompt] + (negativePrompt.map { [$0] } ?? [])
        let seq = tokenizer.maxLength
        switch try resolve(mode, texts: texts, weighting: weighting) {
        case .diffusers, .auto:
            return seq
        case .a1111:
            let counts = try texts.map { try chunker.chunks($0, weighting: weighting).chunks.count }
            return counts.max()! * (PromptChunker.chunkLength + 2)
        }
    }

    /// The chunks encoded and concatenated along the tokens: [1, 77 × chunks, hidden]. Each
    /// chunk gets A1111's "Original" emphasis: z × weight per token, then z rescaled so its mean
    /// is what it was before weighting (sd_emphasis.EmphasisOriginal). A chunk whose weights
    /// are all 1 is left untouched: A1111's rescale factor is then exactly 1.
    public func encodeChunks(_ chunks: [PromptChunk], clipSkip: Int = 1) throws -> Tensor {
        guard !chunks.isEmpty else { throw DarkroomError.invalidArgument("no prompt chunks to encode") }
        let te = try textEncoderSource()
        let z = try te(chunks.map { chunker.inputIDs($0) }, skipLayers: try skipLayers(clipSkip, te))
        let seq = z.shape[1], h = z.shape[2]
        for (c, chunk) in chunks.enumerated() where chunk.multipliers.contains(where: { $0 != 1 }) {
            precondition(chunk.multipliers.count == seq, "a chunk has \(chunk.multipliers.count) weights for \(seq) tokens")
            Self.applyEmphasis(z.data + c * seq * h, tokens: seq, hidden: h, multipliers: chunk.multipliers)
        }
        return z.reshaped([1, chunks.count * seq, h])
    }

    /// sd_emphasis.EmphasisOriginal on one chunk [tokens, hidden]: means summed in Double,
    /// weights and the rescale factor in Float as torch has them.
    static func applyEmphasis(_ z: UnsafeMutablePointer<Float>, tokens: Int, hidden: Int, multipliers: [Double]) {
        let n = tokens * hidden
        var before = 0.0
        for i in 0..<n { before += Double(z[i]) }
        var after = 0.0
        for t in 0..<tokens {
            let w = Float(multipliers[t])
            let row = z + t * hidden
            for j in 0..<hidden {
                row[j] *= w
                after += Double(row[j])
            }
        }
        let originalMean = Float(before / Double(n)), newMean = Float(after / Double(n))
        let factor = originalMean / newMean
        // A zero mean after weighting would make A1111 produce inf/NaN; keep the weighted values.
        guard factor.isFinite else { return }
        for i in 0..<n { z[i] *= factor }
    }

    /// A1111's clip skip N → layers skipped after the last (N - 1); 1 ... number of layers.
    func skipLayers(_ clipSkip: Int, _ textEncoder: CLIPTextModel) throws -> Int {
        let layers = textEncoder.config.numHiddenLayers
        guard clipSkip >= 1, clipSkip <= layers else {
            throw DarkroomError.invalidArgument("clip skip \(clipSkip) must be between 1 (no skip) and \(layers), the text encoder's layer count")
        }
        return clipSkip - 1
    }
}
