import Foundation

/// diffusers' BasicTransformerBlock as SD uses it: self-attention, cross-attention and a GEGLU
/// feed-forward, each pre-LayerNorm with a residual.
struct BasicTransformerBlock: Sendable {
    let norm1: LayerNorm, attn1: MultiHeadAttention
    let norm2: LayerNorm, attn2: MultiHeadAttention
    let norm3: LayerNorm
    let ffProj: Linear, ffOut: Linear
    let onlyCrossAttention: Bool

    init(_ w: WeightScope, dim: Int, heads: Int, headDim: Int, crossAttentionDim: Int, onlyCrossAttention: Bool) throws {
        let inner = heads * headDim
        func attention(_ a: WeightScope, contextDim: Int) throws -> MultiHeadAttention {
            MultiHeadAttention(
                q: try Linear(a["to_q"], in: dim, out: inner, bias: false),
                k: try Linear(a["to_k"], in: contextDim, out: inner, bias: false),
                v: try Linear(a["to_v"], in: contextDim, out: inner, bias: false),
                out: try Linear(a["to_out.0"], in: inner, out: dim), heads: heads)
        }
        norm1 = try LayerNorm(w["norm1"], dim: dim, eps: 1e-5)
        attn1 = try attention(w["attn1"], contextDim: onlyCrossAttention ? crossAttentionDim : dim)
        norm2 = try LayerNorm(w["norm2"], dim: dim, eps: 1e-5)
        attn2 = try attention(w["attn2"], contextDim: crossAttentionDim)
        norm3 = try LayerNorm(w["norm3"], dim: dim, eps: 1e-5)
        ffProj = try Linear(w["ff.net.0.proj"], in: dim, out: dim * 8)
        ffOut = try Linear(w["ff.net.2"], in: dim * 4, out: dim)
        self.onlyCrossAttention = onlyCrossAttention
    }

    /// x [N, tokens, dim]; context [N, contextTokens, contextDim].
    func callAsFunction(_ x: Tensor, context: Tensor) -> Tensor {
        let h1 = attn1(norm1(x), context: onlyCrossAttention ? context : nil)
        h1.addInPlace(x)
        let h2 = attn2(norm2(h1), context: context)
        h2.addInPlace(h1)
        return feedForward(norm3(h2), residual: h2)
    }

    /// ff(x) + residual, over blocks of rows. The GEGLU projection (8·dim wide) and its gated
    /// half (4·dim) are the UNet's largest temporaries (128 MB at 512x512 with guidance if built
    /// whole); rows are independent, so blocks of about 16 MB give the same numbers.
    func feedForward(_ x: Tensor, residual: Tensor) -> Tensor {
        let dim = x.shape[x.shape.count - 1], inner = dim * 4
        let rows = x.count / dim
        let block = min(rows, max(64, (16 << 20) / (inner * 2 * 4)))
        let out = Tensor(shape: x.shape)
        let p = Tensor(shape: [block, inner * 2]), g = Tensor(shape: [block, inner])
        for start in stride(from: 0, to: rows, by: block) {
            let r = min(block, rows - start)
            sgemm(m: r, n: inner * 2, k: dim, a: x.data + start * dim, lda: dim, b: ffProj.weight, c: p.data, ldc: inner * 2,
                  epilogue: ffProj.bias.map { GemmEpilogue(columnBias: UnsafePointer($0.data)) })
            geglu(p.data, rows: r, dim: inner, out: g.data)
            sgemm(m: r, n: dim, k: inner, a: g.data, lda: inner, b: ffOut.weight, c: out.data + start * dim, ldc: dim,
                  epilogue: GemmEpilogue(columnBias: ffOut.bias.map { UnsafePointer($0.data) },
                                         residual: residual.data + start * dim, residualStride: dim))
        }
        return out
    }
}

/// diffusers' Transformer2DModel for SD: GroupNorm (eps 1e-6), proj_in (1x1 conv, or linear when
/// `use_linear_projection`), transformer blocks over the H·W tokens, proj_out, residual.
struct Transformer2DModel: Sendable {
    let norm: GroupNorm
    let projInConv: Conv2d?, projInLinear: Linear?
    let blocks: [BasicTransformerBlock]
    let projOutConv: Conv2d?, projOutLinear: Linear?

    init(_ w: WeightScope, channels: Int, heads: Int, layers: Int, crossAttentionDim: Int, groups: Int, linearProjection: Bool, onlyCrossAttention: Bool) throws {
        let headDim = channels / heads
        let inner = heads * headDim
        norm = try GroupNorm(w["norm"], groups: groups, channels: channels, eps: 1e-6)
        if linearProjection {
            projInLinear = try Linear(w["proj_in"], in: channels, out: inner)
            projOutLinear = try Linear(w["proj_out"], in: inner, out: channels)
            projInConv = nil; projOutConv = nil
        } else {
            projInConv = try Conv2d(w["proj_in"], in: channels, out: inner, kernel: 1)
            projOutConv = try Conv2d(w["proj_out"], in: inner, out: channels, kernel: 1)
            projInLinear = nil; projOutLinear = nil
        }
        blocks = try (0..<layers).map {
            try BasicTransformerBlock(w["transformer_blocks.\($0)"], dim: inner, heads: heads, headDim: headDim,
                                      crossAttentionDim: crossAttentionDim, onlyCrossAttention: onlyCrossAttention)
        }
    }

    func callAsFunction(_ x: Tensor, context: Tensor) -> Tensor {
        let (h, w) = (x.shape[2], x.shape[3])
        var t: Tensor
        if let conv = projInConv {
            t = conv(norm(x)).nchwToTokens()
        } else {
            t = projInLinear!(norm(x).nchwToTokens())
        }
        for block in blocks { t = block(t, context: context) }
        let out: Tensor
        if let conv = projOutConv {
            out = conv(t.tokensToNCHW(height: h, width: w))
        } else {
            out = projOutLinear!(t).tokensToNCHW(height: h, width: w)
        }
        out.addInPlace(x)
        return out
    }
}
