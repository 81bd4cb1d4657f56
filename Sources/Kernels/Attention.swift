import Foundation

/// Multi-head scaled dot-product attention: out = softmax(scale · Q·Kᵀ [+ causal mask]) · V.
/// Tokens are rows; heads are interleaved in a row as PyTorch's `view(b, s, heads, d)` lays them:
///   q row i of batch b starts at q + (b * queryLength + i) * qRowStride, head h at + h * headDim.
///   k, v likewise with keyLength rows and their own strides; out with outRowStride.
/// `causal`: query i attends keys 0...i only (CLIP text encoder).
/// Never materialises more than one block of scores per worker.
public func attention(
    q: UnsafePointer<Float>, qRowStride: Int,
    k: UnsafePointer<Float>, kRowStride: Int,
    v: UnsafePointer<Float>, vRowStride: Int,
    out: UnsafeMutablePointer<Float>, outRowStride: Int,
    batch: Int, heads: Int, queryLength: Int, keyLength: Int, headDim: Int,
    scale: Float, causal: Bool = false
) {
    let o = SendablePointer(out)
    let box = UncheckedBox((q, k, v))
    parallelFor(batch * heads * queryLength) { range in
        let (q, k, v) = box.value
        var scores = [Float](repeating: 0, count: keyLength)
        var acc = [Float](repeating: 0, count: headDim)
        for idx in range {
            let i = idx % queryLength
            let bh = idx / queryLength
            let h = bh % heads, b = bh / heads
            let qrow = q + (b * queryLength + i) * qRowStride + h * headDim
            let nk = causal ? min(keyLength, i + 1) : keyLength
            var mx = -Float.infinity
            for j in 0..<nk {
                let krow = k + (b * keyLength + j) * kRowStride + h * headDim
                var s: Float = 0
                for d in 0..<headDim { s += qrow[d] * krow[d] }
                s *= scale
                scores[j] = s
                mx = max(mx, s)
            }
            var sum: Float = 0
            for j in 0..<nk { let e = expf(scores[j] - mx); scores[j] = e; sum += e }
            for d in 0..<headDim { acc[d] = 0 }
            for j in 0..<nk {
                let vrow = v + (b * keyLength + j) * vRowStride + h * headDim
                let p = scores[j]
                for d in 0..<headDim { acc[d] += p * vrow[d] }
            }
            let orow = o.p + (b * queryLength + i) * outRowStride + h * headDim
            let inv = 1 / sum
            for d in 0..<headDim { orow[d] = acc[d] * inv }
        }
    }
}
