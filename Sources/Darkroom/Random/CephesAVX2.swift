/// One lane of the Cephes-style `log256_ps` and `sincos256_ps` that torch's AVX2 `randn` kernel
/// uses (ATen/native/cpu/avx_mathfun.h), rewritten as scalar Swift. The constants are the float
/// bit patterns read from torch's binary, and every place where the shipped kernel uses an FMA
/// (GCC contracted the intrinsics' multiply + add pairs) uses `addingProduct` here, in the same
/// operand order, so each lane rounds exactly as the vector code does. Swift never contracts
/// separate `*` and `+` on its own, so the unfused steps stay unfused.
enum CephesAVX2 {
    /// `(float)(2 * pi)`.
    static let twoPi = Float(bitPattern: 0x40c9_0fdb)

    private static let sqrtHalf = Float(bitPattern: 0x3f35_04f3)
    private static let minNormal = Float(bitPattern: 0x0080_0000)
    private static let logP: [Float] = [
        0x3d90_21bb, 0xbdeb_d1b8, 0x3def_251a, 0xbdfe_5d4f, 0x3e11_e9bf,
        0xbe2a_ae50, 0x3e4c_ceac, 0xbe7f_fffc, 0x3eaa_aaaa,
    ].map { Float(bitPattern: $0) }
    private static let logQ1 = Float(bitPattern: 0xb95e_8083)
    private static let logQ2 = Float(bitPattern: 0x3f31_8000)

    private static let fourOverPi = Float(bitPattern: 0x3fa2_f983)
    private static let minusDP1 = Float(bitPattern: 0xbf49_0000)
    private static let minusDP2 = Float(bitPattern: 0xb97d_a000)
    private static let minusDP3 = Float(bitPattern: 0xb322_2169)
    private static let cosP0 = Float(bitPattern: 0x37cc_f5ce)
    private static let cosP1 = Float(bitPattern: 0xbab6_061a)
    private static let cosP2 = Float(bitPattern: 0x3d2a_aaa5)
    private static let sinP0 = Float(bitPattern: 0xb94c_a1f9)
    private static let sinP1 = Float(bitPattern: 0x3c08_839e)
    private static let sinP2 = Float(bitPattern: 0xbe2a_aaa3)

    /// Natural log for x in (0, 1] (torch only feeds it `1 - u`); NaN for x <= 0 as in the original.
    static func log(_ input: Float) -> Float {
        let invalid = input <= 0
        var x = max(input, minNormal)
        let bits = x.bitPattern
        let exponent = Int32(bitPattern: bits >> 23) &- 0x7f
        x = Float(bitPattern: (bits & ~0x7f80_0000) | Float(0.5).bitPattern)
        var e = Float(exponent) + 1
        let small = x < sqrtHalf
        let tmp: Float = small ? x : 0
        x = x - 1
        e = e - (small ? 1 : 0)
        x = x + tmp
        let z = x * x
        var y = logP[1].addingProduct(logP[0], x)
        for k in 2...8 { y = logP[k].addingProduct(y, x) }
        let eq1 = e * logQ1
        y = x * y
        y = eq1.addingProduct(y, z)
        y = y.addingProduct(-z, 0.5)
        x = x + y
        x = x.addingProduct(e, logQ2)
        return invalid ? .nan : x
    }

    /// (sin, cos) for the non-negative angles torch feeds it (2 pi u, u in [0, 1)).
    static func sincos(_ input: Float) -> (sin: Float, cos: Float) {
        var signSin = input.bitPattern & 0x8000_0000
        var x = Float(bitPattern: input.bitPattern & 0x7fff_ffff)
        let scaled = x * fourOverPi
        // cvttps2dq: truncation toward zero (the angle is far below 2^31).
        let j = (Int32(scaled) &+ 1) & ~1
        let y = Float(j)
        let swapSin = (UInt32(bitPattern: j) & 4) << 29
        let polyMask = (j & 2) == 0
        x = x.addingProduct(y, minusDP1)
        x = x.addingProduct(y, minusDP2)
        x = x.addingProduct(y, minusDP3)
        let signCos = (~UInt32(bitPattern: j &- 2) & 4) << 29
        signSin ^= swapSin

        let z = x * x
        let half = z * 0.5
        var yc = cosP1.addingProduct(cosP0, z)
        yc = cosP2.addingProduct(yc, z)
        yc = z * yc
        yc = (-half).addingProduct(z, yc)
        yc = yc + 1

        var ys = sinP1.addingProduct(sinP0, z)
        ys = sinP2.addingProduct(ys, z)
        ys = z * ys
        ys = x.addingProduct(x, ys)

        // Blend exactly like the and/andnot/sub/add sequence, zeros included.
        let sinFromSinPoly: Float = polyMask ? ys : 0
        let sinFromCosPoly: Float = polyMask ? 0 : yc
        let cosFromCos = yc - sinFromCosPoly
        let cosFromSin = ys - sinFromSinPoly
        let s = sinFromSinPoly + sinFromCosPoly
        let c = cosFromSin + cosFromCos
        return (Float(bitPattern: s.bitPattern ^ signSin), Float(bitPattern: c.bitPattern ^ signCos))
    }
}
