// Winograd F(4×4, 3×3) input transform for 16 tiles at once (SIMD16 lanes = tiles), the AVX-512
// twin of `WinogradPlan.transformPatch` in Kernels. Same operations in the same order lane by
// lane, so V is bit-identical to the 8-lane version; one 16-lane store fills a whole 64-byte
// line of V's 16-tile panel instead of two halves. (A 16-lane output transform was tried too:
// no measurable change, its time goes to interleaving the pixels and adding the residual.)

/// V = Bᵀ·d·B for 16 horizontally adjacent tiles of one channel. Tile l's patch value at row r,
/// column c is `src[r·rowStride + (c & 3)·phaseStride + (c >> 2) + l]` (the phase-split staged
/// rows of the caller); V[ξ = 6i + j] lane l goes to `dst[ξ·vStride + l]`.
public func avx512WinogradInput16(_ src: UnsafePointer<Float>, rowStride: Int, phaseStride q: Int,
                                  _ dst: UnsafeMutablePointer<Float>, vStride: Int) {
    typealias V = SIMD16<Float>
    @inline(__always) func d(_ r: Int, _ c: Int) -> V {
        UnsafeRawPointer(src + r * rowStride + (c & 3) * q + (c >> 2)).loadUnaligned(as: V.self)
    }
    @inline(__always) func st(_ p: UnsafeMutablePointer<Float>, _ v: V) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: V.self)
    }
    let four = V(repeating: 4), minusFive = V(repeating: -5), two = V(repeating: 2)
    // Bᵀ applied to one column (w0…w5) of d·B, then stored as V[6i + j], i = 0..<6.
    @inline(__always) func put(_ j: Int, _ d0: V, _ d1: V, _ d2: V, _ d3: V, _ d4: V, _ d5: V) {
        let o0 = d4.addingProduct(minusFive, d2).addingProduct(four, d0)
        let o5 = d5.addingProduct(minusFive, d3).addingProduct(four, d1)
        let s12 = d1 + d2, s34 = d3 + d4
        let o1 = s34.addingProduct(-four, s12)
        let o2 = (d4 - d3).addingProduct(four, d1 - d2)
        let e = d4 - d2, f = d3 - d1
        let o3 = e.addingProduct(two, f)
        let o4 = e.addingProduct(-two, f)
        st(dst + j * vStride, o0)
        st(dst + (6 + j) * vStride, o1)
        st(dst + (12 + j) * vStride, o2)
        st(dst + (18 + j) * vStride, o3)
        st(dst + (24 + j) * vStride, o4)
        st(dst + (30 + j) * vStride, o5)
    }
    // Column 0 of d·B: 4·d0 − 5·d2 + d4.
    @inline(__always) func c0(_ r: Int) -> V { d(r, 4).addingProduct(minusFive, d(r, 2)).addingProduct(four, d(r, 0)) }
    put(0, c0(0), c0(1), c0(2), c0(3), c0(4), c0(5))
    // Columns 1 and 2: −4·(d1 + d2) + (d3 + d4) and 4·(d1 − d2) + (d4 − d3).
    @inline(__always) func c12(_ r: Int) -> (V, V) {
        let d1 = d(r, 1), d2 = d(r, 2), d3 = d(r, 3), d4 = d(r, 4)
        return ((d3 + d4).addingProduct(-four, d1 + d2), (d4 - d3).addingProduct(four, d1 - d2))
    }
    do {
        let a0 = c12(0), a1 = c12(1), a2 = c12(2), a3 = c12(3), a4 = c12(4), a5 = c12(5)
        put(1, a0.0, a1.0, a2.0, a3.0, a4.0, a5.0)
        put(2, a0.1, a1.1, a2.1, a3.1, a4.1, a5.1)
    }
    // Columns 3 and 4: ±2·(d3 − d1) + (d4 − d2).
    @inline(__always) func c34(_ r: Int) -> (V, V) {
        let d1 = d(r, 1), d2 = d(r, 2), d3 = d(r, 3), d4 = d(r, 4)
        let e = d4 - d2, f = d3 - d1
        return (e.addingProduct(two, f), e.addingProduct(-two, f))
    }
    do {
        let a0 = c34(0), a1 = c34(1), a2 = c34(2), a3 = c34(3), a4 = c34(4), a5 = c34(5)
        put(3, a0.0, a1.0, a2.0, a3.0, a4.0, a5.0)
        put(4, a0.1, a1.1, a2.1, a3.1, a4.1, a5.1)
    }
    // Column 5: 4·d1 − 5·d3 + d5.
    @inline(__always) func c5(_ r: Int) -> V { d(r, 5).addingProduct(minusFive, d(r, 3)).addingProduct(four, d(r, 1)) }
    put(5, c5(0), c5(1), c5(2), c5(3), c5(4), c5(5))
}
