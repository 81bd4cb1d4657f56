import Foundation

/// GroupNorm over NCHW: x [batch, channels, spatial] normalised per (batch, group) with
/// biased variance, then out = norm · gamma[c] + beta[c]; SiLU applied after when `silu`.
/// `out` may alias `x`.
public func groupNorm(
    x: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
    batch: Int, channels: Int, spatial: Int, groups: Int, eps: Float,
    gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>, silu: Bool = false
) {
    let cpg = channels / groups
    let o = SendablePointer(out)
    let box = UncheckedBox((x, gamma, beta))
    parallelFor(batch * groups) { range in
        let (x, gamma, beta) = box.value
        for bg in range {
            let b = bg / groups, g = bg % groups
            let base = (b * channels + g * cpg) * spatial
            let n = cpg * spatial
            var mean: Double = 0
            for i in 0..<n { mean += Double(x[base + i]) }
            mean /= Double(n)
            var varSum: Double = 0
            for i in 0..<n { let d = Double(x[base + i]) - mean; varSum += d * d }
            let rstd = Float(1 / (varSum / Double(n) + Double(eps)).squareRoot())
            let m = Float(mean)
            for c in 0..<cpg {
                let ch = g * cpg + c
                let sc = gamma[ch] * rstd, sh = beta[ch] - m * gamma[ch] * rstd
                let off = base + c * spatial
                for i in 0..<spatial {
                    var y = x[off + i] * sc + sh
                    if silu { y = y / (1 + expf(-y)) }
                    o[off + i] = y
                }
            }
        }
    }
}

/// LayerNorm over the last dimension: x [rows, cols]. `out` may alias `x`.
public func layerNorm(
    x: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, rows: Int, cols: Int, eps: Float,
    gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>
) {
    let o = SendablePointer(out)
    let box = UncheckedBox((x, gamma, beta))
    parallelFor(rows) { range in
        let (x, gamma, beta) = box.value
        for r in range {
            let row = x + r * cols
            var mean: Float = 0
            for i in 0..<cols { mean += row[i] }
            mean /= Float(cols)
            var v: Float = 0
            for i in 0..<cols { let d = row[i] - mean; v += d * d }
            let rstd = 1 / (v / Float(cols) + eps).squareRoot()
            let orow = o.p + r * cols
            for i in 0..<cols { orow[i] = (row[i] - mean) * rstd * gamma[i] + beta[i] }
        }
    }
}
