// The softmax row helpers of Kernels' attention, 16 lanes at a time.

/// The largest of x[0 ..< n] (−∞ for n = 0): the 16-lane twin of Kernels' `maxOf` (a maximum
/// does not depend on the order it is taken in, so both give the same value).
public func avx512MaxOf(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    typealias V = SIMD16<Float>
    var mv = V(repeating: -.infinity)
    var j = 0
    // Masked selects, not `pointwiseMax`: that one is lowered lane by lane with NaN handling.
    while j + 16 <= n {
        let v = UnsafeRawPointer(x + j).loadUnaligned(as: V.self)
        mv.replace(with: v, where: v .> mv)
        j += 16
    }
    var h = mv.lowHalf
    h.replace(with: mv.highHalf, where: mv.highHalf .> h)
    var m = max(max(max(h[0], h[1]), max(h[2], h[3])), max(max(h[4], h[5]), max(h[6], h[7])))
    while j < n { m = max(m, x[j]); j += 1 }
    return m
}

/// x[j] ← 2^(x[j] − m) for j < n; returns the sum. The 16-lane twin of Kernels'
/// `exp2Shifted`: the same polynomial and rounding for every element, and the same two 8-lane
/// partial sums (lanes 0-7 and 8-15 of the accumulator; a short tail goes to the half the 8-lane
/// code adds it to), added up in the same order, so both give the same bits.
public func avx512Exp2Shifted(_ x: UnsafeMutablePointer<Float>, _ n: Int, _ m: Float) -> Float {
    typealias V = SIMD16<Float>
    let mv = V(repeating: m)
    var s = V()
    var j = 0
    while j + 16 <= n {
        let e = exp2NonPositive16(UnsafeRawPointer(x + j).loadUnaligned(as: V.self) - mv)
        UnsafeMutableRawPointer(x + j).storeBytes(of: e, as: V.self)
        s += e
        j += 16
    }
    if j < n {
        // 8 or more left: lanes 0..<rest (the 8-lane code's whole vector, then its tail);
        // fewer: lanes 8..<8+rest (its tail alone, which it adds to its second sum).
        let rest = n - j
        let first = rest >= 8 ? 0 : 8
        var t = V(repeating: -.infinity)
        for l in 0..<rest { t[first + l] = x[j + l] }
        var e = exp2NonPositive16(t - mv)
        for l in 0..<16 where l < first || l >= first + rest { e[l] = 0 }
        for l in 0..<rest { x[j + l] = e[first + l] }
        s += e
    }
    let v = s.lowHalf + s.highHalf
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]))
}

/// 2^x for x ≤ 0, lane by lane exactly as Kernels' `vexp2NonPositive` (see there).
@inline(__always)
func exp2NonPositive16(_ x: SIMD16<Float>) -> SIMD16<Float> {
    typealias V = SIMD16<Float>
    var xc = x
    xc.replace(with: -126, where: x .< -126)
    let magic = V(repeating: 12582912)
    let t = xc + magic
    let f = xc - (t - magic)
    var p = V(repeating: 0.0001534580749039116)
    p = V(repeating: 0.0013399931182827424).addingProduct(p, f)
    p = V(repeating: 0.009618488973887618).addingProduct(p, f)
    p = V(repeating: 0.05550328777078395).addingProduct(p, f)
    p = V(repeating: 0.2402264689047916).addingProduct(p, f)
    p = V(repeating: 0.6931472057371982).addingProduct(p, f)
    p = V(repeating: 1).addingProduct(p, f)
    let bits = (unsafeBitCast(t, to: SIMD16<Int32>.self) &+ (127 &- 0x4B40_0000)) &<< 23
    return p * unsafeBitCast(bits, to: V.self)
}
