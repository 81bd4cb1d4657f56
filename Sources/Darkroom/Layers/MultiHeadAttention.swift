import Foundation

/// Multi-head attention with separate q/k/v/out projections: diffusers' `Attention` (to_q, to_k,
/// to_v, to_out.0) and CLIP's (q_proj, k_proj, v_proj, out_proj) differ only in key names and biases.
public struct MultiHeadAttention: Sendable {
    public let q: Linear, k: Linear, v: Linear, out: Linear
    public let heads: Int
    public let headDim: Int

    public init(q: Linear, k: Linear, v: Linear, out: Linear, heads: Int) {
        self.q = q; self.k = k; self.v = v; self.out = out
        self.heads = heads
        self.headDim = q.outFeatures / heads
    }

    /// x [B, S, queryDim]; context [B, Sk, contextDim] for cross-attention (nil: self-attention).
    public func callAsFunction(_ x: Tensor, context: Tensor? = nil, causal: Bool = false) -> Tensor {
        let ctx = context ?? x
        let (b, s) = (x.shape[0], x.shape[1])
        let sk = ctx.shape[1]
        let qt = q(x), kt = k(ctx), vt = v(ctx)
        let inner = heads * headDim
        let o = Tensor(shape: [b, s, inner])
        attention(q: qt.data, qRowStride: inner, k: kt.data, kRowStride: inner, v: vt.data, vRowStride: inner,
                  out: o.data, outRowStride: inner, batch: b, heads: heads, queryLength: s, keyLength: sk,
                  headDim: headDim, scale: 1 / Float(headDim).squareRoot(), causal: causal)
        return out(o)
    }
}
