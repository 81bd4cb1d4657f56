// Vectorised transcendental functions on SIMD8<Float> (one AVX2 register).
//
// Accuracy (measured against Double references in KernelsTests/SIMDMathTests):
//   vexp   : ≤ 2 ulp (≈ 1.5e-7 relative) for x in [-87, 88.7]; +inf above 88.72, 0 below -104,
//            correctly scaled subnormals in between, NaN propagates.
//   vexp2  : ≤ 2 ulp for x in [-126, 127.9] (same polynomial, no argument reduction error).
//   vexp2NonPositive: ≤ 2 ulp for x in [-126, 0] (softmax).
//   GELU   : ≤ 1e-6 relative over the whole float range where the result is normal (the erfc fit
//            is 1.2e-7; the exponent −x²/2 is carried in double-float, see verfcHalfSquare).
//   sigmoid-based activations (SiLU, QuickGELU, tanh-GELU) inherit vexp's accuracy
//   (≈ 3e-7 relative) plus the rounding of their exponent argument in float
//   (≈ 1e-7·|argument| relative, far out in the tails; PyTorch's float formulas have it too).

@usableFromInline typealias F8 = SIMD8<Float>

@inline(__always) @usableFromInline
func ld8(_ p: UnsafePointer<Float>) -> F8 {
    UnsafeRawPointer(p).loadUnaligned(as: F8.self)
}

@inline(__always) @usableFromInline
func ld8(_ p: UnsafeMutablePointer<Float>) -> F8 {
    UnsafeRawPointer(p).loadUnaligned(as: F8.self)
}

@inline(__always) @usableFromInline
func st8(_ p: UnsafeMutablePointer<Float>, _ v: F8) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: F8.self)
}

/// a·b + c, fused (vfmadd). Swift does not contract `a * b + c` on its own.
@inline(__always) @usableFromInline
func fma8(_ a: F8, _ b: F8, _ c: F8) -> F8 { c.addingProduct(a, b) }

/// Lane-wise clamp. (The stdlib's `clamped`/`pointwiseMin` are not inlined: they compile to
/// calls that split the vector into two xmm halves.) NaN lanes pass through unchanged.
@inline(__always) @usableFromInline
func clamp8(_ x: F8, _ lo: Float, _ hi: Float) -> F8 {
    var y = x
    y.replace(with: lo, where: x .< lo)
    y.replace(with: hi, where: x .> hi)
    return y
}

/// Lane-wise maximum (see clamp8 for why not `pointwiseMax`).
@inline(__always) @usableFromInline
func max8(_ a: F8, _ b: F8) -> F8 {
    var y = a
    y.replace(with: b, where: b .> a)
    return y
}

/// |x| lane-wise (clears the sign bit).
@inline(__always) @usableFromInline
func vabs(_ x: F8) -> F8 {
    unsafeBitCast(unsafeBitCast(x, to: SIMD8<UInt32>.self) & 0x7fff_ffff, to: F8.self)
}

/// 2^n for integer-valued lanes n in [-126, 127] (exponent-field construction).
@inline(__always)
func pow2i(_ n: SIMD8<Int32>) -> F8 {
    unsafeBitCast((n &+ 127) &<< 23, to: F8.self)
}

/// e^r for |r| ≤ ln2/2: 1 + r + r²·P(r), P fitted for minimax relative error (3e-9 in exact
/// arithmetic; ≈ 1 ulp after float rounding).
@inline(__always)
func expReduced(_ r: F8) -> F8 {
    var p = F8(repeating: 0.0013814608287288158)
    p = fma8(p, r, F8(repeating: 0.008368710296498287))
    p = fma8(p, r, F8(repeating: 0.041668387465302104))
    p = fma8(p, r, F8(repeating: 0.1666652068475526))
    p = fma8(p, r, F8(repeating: 0.4999999345119003))
    let r2 = r * r
    return fma8(r2, p, r) + 1
}

/// Vectorised e^x (see accuracy table above).
@inline(__always) @usableFromInline
func vexp(_ x: F8) -> F8 {
    // Clamp so the integer part stays representable; results saturate correctly below.
    let xc = clamp8(x, -104, 88.8)
    // n = round(x·log2 e) via the 1.5·2^23 trick (exact for |n| < 2^22).
    let magic = F8(repeating: 12582912)
    let t = fma8(xc, F8(repeating: 1.44269504088896341), magic)
    let nf = t - magic
    let n = unsafeBitCast(t, to: SIMD8<Int32>.self) &- unsafeBitCast(magic, to: SIMD8<Int32>.self)
    // Cody–Waite: r = x − n·ln2 with ln2 split so n·ln2_hi is exact.
    var r = fma8(nf, F8(repeating: -0.693359375), xc)
    r = fma8(nf, F8(repeating: 2.12194440e-4), r)
    let p = expReduced(r)
    // Scale by 2^n in two halves so both factors stay normal for n in [-150, 128].
    let n1 = n &>> 1
    let n2 = n &- n1
    // NaN needs no special case: it propagates through the clamp and the polynomial.
    return p * pow2i(n1) * pow2i(n2)
}

/// Vectorised 2^x (same polynomial; used by attention, whose scores are pre-scaled by log2 e).
@inline(__always) @usableFromInline
func vexp2(_ x: F8) -> F8 {
    let xc = clamp8(x, -150, 128.5)
    let magic = F8(repeating: 12582912)
    let t = xc + magic
    let nf = t - magic
    let n = unsafeBitCast(t, to: SIMD8<Int32>.self) &- unsafeBitCast(magic, to: SIMD8<Int32>.self)
    let r = (xc - nf) * 0.693147180559945309
    let p = expReduced(r)
    let n1 = n &>> 1
    let n2 = n &- n1
    return p * pow2i(n1) * pow2i(n2)
}

/// 2^x for x ≤ 0 (softmax after subtracting the running max): fewer steps than `vexp2` since
/// neither overflow nor subnormal results need care (x < −126 gives ≈ 2^-126 instead of a
/// subnormal: irrelevant next to the row's maximum term, which is 1). Degree-6 polynomial for 2^f,
/// f ∈ [−½, ½], fitted for minimax relative error (2e-9; ≈ 1 ulp after float rounding).
@inline(__always) @usableFromInline
func vexp2NonPositive(_ x: F8) -> F8 {
    var xc = x
    xc.replace(with: -126, where: x .< -126)
    let magic = F8(repeating: 12582912)
    let t = xc + magic
    let f = xc - (t - magic)
    var p = F8(repeating: 0.0001534580749039116)
    p = fma8(p, f, F8(repeating: 0.0013399931182827424))
    p = fma8(p, f, F8(repeating: 0.009618488973887618))
    p = fma8(p, f, F8(repeating: 0.05550328777078395))
    p = fma8(p, f, F8(repeating: 0.2402264689047916))
    p = fma8(p, f, F8(repeating: 0.6931472057371982))
    p = fma8(p, f, F8(repeating: 1))
    // Exponent field: (n + 127) << 23 with n = bits(t) − bits(magic).
    let bits = (unsafeBitCast(t, to: SIMD8<Int32>.self) &+ (127 &- 0x4B40_0000)) &<< 23
    return p * unsafeBitCast(bits, to: F8.self)
}

/// Logistic sigmoid 1 / (1 + e^-x).
@inline(__always) @usableFromInline
func vsigmoid(_ x: F8) -> F8 {
    1 / (1 + vexp(-x))
}

/// Φ-tail for GELU: erfc(|x|/√2) for any x, as t·exp(P(t) − x²/2) with t = 1/(1 + z/2),
/// z = |x|/√2 and P a degree-9 Chebyshev fit (Numerical Recipes' erfcc coefficients; fractional
/// error < 1.2e-7 in exact arithmetic). The exponent is formed from x directly, with x² split
/// into hi + lo (FMA) and the rounding of P − hi recovered (Fast2Sum), so the tail keeps its
/// relative accuracy instead of losing ulp(x²) to the argument.
@inline(__always)
func verfcHalfSquare(_ x: F8) -> F8 {
    let z = vabs(x) * 0.70710678118654752
    let t = 1 / fma8(z, F8(repeating: 0.5), F8(repeating: 1))
    var p = F8(repeating: 0.17087277)
    p = fma8(p, t, F8(repeating: -0.82215223))
    p = fma8(p, t, F8(repeating: 1.48851587))
    p = fma8(p, t, F8(repeating: -1.13520398))
    p = fma8(p, t, F8(repeating: 0.27886807))
    p = fma8(p, t, F8(repeating: -0.18628806))
    p = fma8(p, t, F8(repeating: 0.09678418))
    p = fma8(p, t, F8(repeating: 0.37409196))
    p = fma8(p, t, F8(repeating: 1.00002368))
    p = fma8(p, t, F8(repeating: -1.26551223))
    let hi = x * x
    let sqHi = hi * 0.5
    let sqLo = (-hi).addingProduct(x, x) * 0.5          // exact: x² − hi
    let a = -sqHi
    let s = a + p
    let err = p - (s - a)                                 // exact when |a| ≥ |p| (the tail)
    let corr = err - sqLo
    return t * vexp(s) * (1 + corr)
}

/// Exact GELU x·Φ(x) with Φ(x) = erfc(−x/√2)/2, evaluated without cancellation on either side.
@inline(__always) @usableFromInline
func vgelu(_ x: F8) -> F8 {
    let half = 0.5 * verfcHalfSquare(x)
    var phi = 1 - half
    phi.replace(with: half, where: x .< 0)
    return x * phi
}

/// Tanh-approximated GELU, rewritten as x·σ(2y) (equal to 0.5x(1 + tanh y)).
@inline(__always) @usableFromInline
func vgeluTanh(_ x: F8) -> F8 {
    let y = fma8(x * x, F8(repeating: 0.044715), F8(repeating: 1)) * x * 0.7978845608028654
    return x / (1 + vexp(-2 * y))
}

@inline(__always) @usableFromInline
func vsilu(_ x: F8) -> F8 {
    x / (1 + vexp(-x))
}

@inline(__always) @usableFromInline
func vquickGelu(_ x: F8) -> F8 {
    x / (1 + vexp(-1.702 * x))
}

@inline(__always) @usableFromInline
func vactivate(_ x: F8, _ act: Activation) -> F8 {
    switch act {
    case .silu: return vsilu(x)
    case .gelu: return vgelu(x)
    case .geluTanh: return vgeluTanh(x)
    case .quickGelu: return vquickGelu(x)
    }
}

/// Scalar entry to the vector code (lane 0), so scalar tails give bit-identical results.
@inline(__always)
func sactivate(_ x: Float, _ act: Activation) -> Float {
    vactivate(F8(repeating: x), act)[0]
}

/// Applies `f` to n floats from `src` into `dst` (may alias), 8 at a time, tail via a padded copy.
@inline(__always)
func mapF8(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, _ n: Int, _ f: (F8) -> F8) {
    var i = 0
    while i + 16 <= n {
        let a = f(ld8(src + i)), b = f(ld8(src + i + 8))
        st8(dst + i, a); st8(dst + i + 8, b)
        i += 16
    }
    while i + 8 <= n { st8(dst + i, f(ld8(src + i))); i += 8 }
    if i < n {
        var v = F8()
        for j in 0..<(n - i) { v[j] = src[i + j] }
        let r = f(v)
        for j in 0..<(n - i) { dst[i + j] = r[j] }
    }
}
