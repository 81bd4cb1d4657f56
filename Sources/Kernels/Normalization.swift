import Foundation

/// GroupNorm over NCHW: x [batch, channels, spatial] normalised per (batch, group) with
/// biased variance, then out = norm · gamma[c] + beta[c]; SiLU applied after when `silu`.
/// `out` may alias `x`.
///
/// Two passes for the statistics (mean, then Σ(x − mean)²), each summed 8 lanes wide in Float
/// over chunks of 512 values and across chunks in Double; the mean pass sums x − x₀, so neither
/// a large mean nor the cancellation of E[x²] − E[x]² costs precision. Parallel over (batch, group); SiLU via `vsilu` (≈ 3e-7 relative).
public func groupNorm(
    x: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
    batch: Int, channels: Int, spatial: Int, groups: Int, eps: Float,
    gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>, silu: Bool = false
) {
    guard batch > 0, channels > 0, spatial > 0 else { return }
    let cpg = channels / groups
    let o = SendablePointer(out)
    let box = UncheckedBox((x, gamma, beta))
    parallelFor(batch * groups, minChunk: max(1, 16384 / max(1, cpg * spatial))) { range in
        let (x, gamma, beta) = box.value
        for bg in range {
            let b = bg / groups, g = bg % groups
            let base = (b * channels + g * cpg) * spatial
            let n = cpg * spatial
            let (m, mLo, rstd) = groupStatistics(x + base, n, eps: eps)
            for c in 0..<cpg {
                let ch = g * cpg + c
                let off = base + c * spatial
                // (x − mean)·(gamma·rstd) + beta: subtracting first avoids cancellation when
                // |mean| ≫ std.
                normalizeChannel(x + off, o.p + off, spatial, m, mLo, gamma[ch] * rstd, beta[ch], silu)
            }
        }
    }
}

/// Mean (as hi + lo floats) and 1/√(variance + eps) of n values, as groupNorm uses them.
@inline(__always)
func groupStatistics(_ src: UnsafePointer<Float>, _ n: Int, eps: Float) -> (m: Float, mLo: Float, rstd: Float) {
    let mean = meanOf(src, n)
    let variance = sumOfSquaredDeviations(src, n, Float(mean)) / Double(n)
    let rstd = Float(1 / (variance + Double(eps)).squareRoot())
    // The mean as hi + lo floats: (x − hi) − lo is exact to float precision even when
    // |mean| ≫ std (x − hi is exact by Sterbenz when x is near the mean).
    let m = Float(mean), mLo = Float(mean - Double(m))
    return (m, mLo, rstd)
}

/// groupNorm's per-channel affine map without applying it: affine[4·(b·channels + c) ..< +4] =
/// (m, mLo, gamma[c]·rstd, beta[c]), so that y = ((x − m) − mLo)·scale + shift (then SiLU)
/// reproduces groupNorm bit for bit wherever it is evaluated (see `conv2d(normalizedBy:)`).
public func groupNormAffine(
    x: UnsafePointer<Float>, batch: Int, channels: Int, spatial: Int, groups: Int, eps: Float,
    gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>, into affine: UnsafeMutablePointer<Float>
) {
    guard batch > 0, channels > 0, spatial > 0 else { return }
    let cpg = channels / groups
    let o = SendablePointer(affine)
    let box = UncheckedBox((x, gamma, beta))
    parallelFor(batch * groups, minChunk: max(1, 16384 / max(1, cpg * spatial))) { range in
        let (x, gamma, beta) = box.value
        for bg in range {
            let b = bg / groups, g = bg % groups
            let (m, mLo, rstd) = groupStatistics(x + (b * channels + g * cpg) * spatial, cpg * spatial, eps: eps)
            for c in 0..<cpg {
                let ch = g * cpg + c
                let a = o.p + 4 * (b * channels + ch)
                a[0] = m; a[1] = mLo; a[2] = gamma[ch] * rstd; a[3] = beta[ch]
            }
        }
    }
}

/// y = ((x − m) − mLo)·scale + shift, then SiLU when asked. Out of line so the vector code is
/// compiled on its own (LLVM splits it into 4-wide halves when inlined into the parallel closure).
@inline(never)
func normalizeChannel(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int,
                      _ m: Float, _ mLo: Float, _ scale: Float, _ shift: Float, _ silu: Bool) {
    let mv = F8(repeating: m), mlv = F8(repeating: mLo)
    let scv = F8(repeating: scale), shv = F8(repeating: shift)
    if silu {
        mapF8(x, y, n) { vsilu(fma8(($0 - mv) - mlv, scv, shv)) }
    } else {
        mapF8(x, y, n) { fma8(($0 - mv) - mlv, scv, shv) }
    }
}

/// LayerNorm over the last dimension: x [rows, cols]. `out` may alias `x`.
/// Two-pass statistics (Float lanes, Double across chunks), parallel over rows.
public func layerNorm(
    x: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, rows: Int, cols: Int, eps: Float,
    gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>
) {
    guard rows > 0, cols > 0 else { return }
    let o = SendablePointer(out)
    let box = UncheckedBox((x, gamma, beta))
    parallelFor(rows, minChunk: max(1, 8192 / cols)) { range in
        let (x, gamma, beta) = box.value
        for r in range {
            let row = x + r * cols
            let meanD = meanOf(row, cols)
            let mean = Float(meanD), meanLo = Float(meanD - Double(mean))   // hi + lo, see groupNorm
            let variance = Float(sumOfSquaredDeviations(row, cols, mean) / Double(cols))
            let rstd = 1 / (variance + eps).squareRoot()
            let orow = o.p + r * cols
            let mv = F8(repeating: mean), mlv = F8(repeating: meanLo), rv = F8(repeating: rstd)
            var j = 0
            while j + 8 <= cols {
                let y = ((ld8(row + j) - mv) - mlv) * rv
                st8(orow + j, y * ld8(gamma + j) + ld8(beta + j))
                j += 8
            }
            while j < cols {
                orow[j] = ((row[j] - mean) - meanLo) * rstd * gamma[j] + beta[j]
                j += 1
            }
        }
    }
}

/// Mean of n values: Σ (x − x₀) in Float lanes within chunks of 512, Double across chunks.
/// Shifting by a sample keeps the summands at the scale of the spread, not of the mean, so the
/// Float partial sums stay accurate when |mean| ≫ std.
@inline(__always)
func meanOf(_ x: UnsafePointer<Float>, _ n: Int) -> Double {
    let shift = x[0]
    let sv = F8(repeating: shift)
    var total: Double = 0
    var start = 0
    while start < n {
        let end = min(n, start + 512)
        var a0 = F8(), a1 = F8()
        var j = start
        while j + 16 <= end { a0 += ld8(x + j) - sv; a1 += ld8(x + j + 8) - sv; j += 16 }
        if j + 8 <= end { a0 += ld8(x + j) - sv; j += 8 }
        var s = (a0 + a1).sum()
        while j < end { s += x[j] - shift; j += 1 }
        total += Double(s)
        start = end
    }
    return Double(shift) + total / Double(n)
}

/// Σ (x − mean)² over n values, chunked like `meanOf`.
@inline(__always)
func sumOfSquaredDeviations(_ x: UnsafePointer<Float>, _ n: Int, _ mean: Float) -> Double {
    let mv = F8(repeating: mean)
    var total: Double = 0
    var start = 0
    while start < n {
        let end = min(n, start + 512)
        var a0 = F8(), a1 = F8()
        var j = start
        while j + 16 <= end {
            let d0 = ld8(x + j) - mv, d1 = ld8(x + j + 8) - mv
            a0 = a0.addingProduct(d0, d0); a1 = a1.addingProduct(d1, d1)
            j += 16
        }
        if j + 8 <= end { let d0 = ld8(x + j) - mv; a0 = a0.addingProduct(d0, d0); j += 8 }
        var s = (a0 + a1).sum()
        while j < end { let d = x[j] - mean; s += d * d; j += 1 }
        total += Double(s)
        start = end
    }
    return total
}
