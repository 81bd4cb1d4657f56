// The one GEMM tile that needs AVX-512. This target alone is compiled for an AVX-512 CPU
// (Package.swift), so its SIMD16 arithmetic becomes 16-wide zmm FMAs; nothing here is inlinable,
// so no AVX-512 instruction leaks into the portable Kernels module, which calls this only after
// checking the CPU (`gemmUsesAVX512`).

/// C[6×32] = (or +=) A[6×kc] · [B0 | B1], where B0 and B1 are two 16-column packed B panels (kc
/// rows of 16 floats each) and A is addressed as `a[r·rs + p·ks]`.
///
/// Twelve 16-wide accumulators (6 rows × 2 halves) plus two B vectors and one broadcast fit in
/// AVX-512's 32 registers; per k step that is 12 FMAs of 16 lanes, twice the work of the AVX2
/// 6x16 tile per instruction.
public func avx512Tile6x32(_ kc: Int, _ a: UnsafePointer<Float>, _ rs: Int, _ ks: Int,
                           _ b0: UnsafePointer<Float>, _ b1: UnsafePointer<Float>,
                           _ c: UnsafeMutablePointer<Float>, _ ldc: Int, accumulate: Bool) {
    typealias V = SIMD16<Float>
    @inline(__always) func load(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }
    @inline(__always) func store(_ p: UnsafeMutablePointer<Float>, _ v: V) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: V.self) }
    var c00 = V(), c01 = V(), c10 = V(), c11 = V(), c20 = V(), c21 = V()
    var c30 = V(), c31 = V(), c40 = V(), c41 = V(), c50 = V(), c51 = V()
    let a0 = a, a1 = a + rs, a2 = a + 2 * rs, a3 = a + 3 * rs, a4 = a + 4 * rs, a5 = a + 5 * rs
    var p0 = b0, p1 = b1
    var off = 0
    for _ in 0..<kc {
        let v0 = load(p0), v1 = load(p1)
        var av = V(repeating: a0[off])
        c00 = c00.addingProduct(av, v0); c01 = c01.addingProduct(av, v1)
        av = V(repeating: a1[off])
        c10 = c10.addingProduct(av, v0); c11 = c11.addingProduct(av, v1)
        av = V(repeating: a2[off])
        c20 = c20.addingProduct(av, v0); c21 = c21.addingProduct(av, v1)
        av = V(repeating: a3[off])
        c30 = c30.addingProduct(av, v0); c31 = c31.addingProduct(av, v1)
        av = V(repeating: a4[off])
        c40 = c40.addingProduct(av, v0); c41 = c41.addingProduct(av, v1)
        av = V(repeating: a5[off])
        c50 = c50.addingProduct(av, v0); c51 = c51.addingProduct(av, v1)
        off += ks; p0 += 16; p1 += 16
    }
    let rows = [(c00, c01), (c10, c11), (c20, c21), (c30, c31), (c40, c41), (c50, c51)]
    for (r, (lo, hi)) in rows.enumerated() {
        let row = c + r * ldc
        if accumulate {
            store(row, load(row) + lo); store(row + 16, load(row + 16) + hi)
        } else {
            store(row, lo); store(row + 16, hi)
        }
    }
}
