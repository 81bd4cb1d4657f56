// The one GEMM tile that needs AVX-512. This target alone is compiled for an AVX-512 CPU
// (Package.swift), so its SIMD16 arithmetic becomes 16-wide zmm FMAs; nothing here is inlinable,
// so no AVX-512 instruction leaks into the portable Kernels module, which calls this only after
// checking the CPU (`gemmUsesAVX512`).

/// C[6×32] = scale · A[6×kc] · [B0 | B1] (or C += A · [B0 | B1] when `accumulate`), where B0 and
/// B1 are two 16-column B panels (row p of each at `b + p·bStep`: 16 for packed panels, 32 for
/// attention's probabilities, whose rows hold two panels side by side) and A is addressed as
/// `a[r·rs + p·ks]`. The k sum runs in order with one FMA per step, as in the AVX2 tiles, so both
/// give the same bits.
///
/// Twelve 16-wide accumulators (6 rows × 2 halves) plus two B vectors and one broadcast fit in
/// AVX-512's 32 registers; per k step that is 12 FMAs of 16 lanes, twice the work of the AVX2
/// 6x16 tile per instruction.
public func avx512Tile6x32(_ kc: Int, _ a: UnsafePointer<Float>, _ rs: Int, _ ks: Int,
                           _ b0: UnsafePointer<Float>, _ b1: UnsafePointer<Float>,
                           _ c: UnsafeMutablePointer<Float>, _ ldc: Int, accumulate: Bool, scale: Float = 1,
                           bStep: Int = 16) {
    typealias V = SIMD16<Float>
    @inline(__always) func load(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }
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
        off += ks; p0 += bStep; p1 += bStep
    }
    // Written out row by row: an array of the accumulators here cost a heap allocation per call.
    @inline(__always) func put(_ r: Int, _ lo: V, _ hi: V) { storeRow32(c + r * ldc, lo, hi, accumulate, scale) }
    put(0, c00, c01); put(1, c10, c11); put(2, c20, c21)
    put(3, c30, c31); put(4, c40, c41); put(5, c50, c51)
}

/// C[12×32] = scale · A[12×kc] · [B0 | B1] (or C += …): two 6-row A panels (`top`, `bottom`, each
/// addressed as in `avx512Tile6x32`) against one B pair. Twenty-four accumulators, two B vectors
/// and one broadcast fill 27 of the 32 registers; per k step 24 FMAs need 14 loads instead of the
/// 6x32 tile's 12 FMAs for 8, so the loads and loop overhead no longer crowd out the FMA units.
/// Each element's k sum runs in the same order as in the 6-row tiles (same bits).
public func avx512Tile12x32(_ kc: Int, _ top: UnsafePointer<Float>, _ bottom: UnsafePointer<Float>, _ rs: Int, _ ks: Int,
                            _ b0: UnsafePointer<Float>, _ b1: UnsafePointer<Float>,
                            _ c: UnsafeMutablePointer<Float>, _ ldc: Int, accumulate: Bool, scale: Float = 1) {
    typealias V = SIMD16<Float>
    @inline(__always) func load(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }
    var c00 = V(), c01 = V(), c10 = V(), c11 = V(), c20 = V(), c21 = V()
    var c30 = V(), c31 = V(), c40 = V(), c41 = V(), c50 = V(), c51 = V()
    var c60 = V(), c61 = V(), c70 = V(), c71 = V(), c80 = V(), c81 = V()
    var c90 = V(), c91 = V(), ca0 = V(), ca1 = V(), cb0 = V(), cb1 = V()
    // Rows 0-2 and 3-5 of each panel from base pointers t0/t3 (u0/u3) at 0, rs, 2·rs: two
    // pointers per panel plus the stride keep the loop within the general registers (more, and
    // LLVM spills vectors instead).
    let rs2 = 2 * rs
    var t0 = top, t3 = top + 3 * rs, u0 = bottom, u3 = bottom + 3 * rs
    var p0 = b0
    let d1 = b1 - b0
    for _ in 0..<kc {
        let v0 = load(p0), v1 = load(p0 + d1)
        var av = V(repeating: t0[0])
        c00 = c00.addingProduct(av, v0); c01 = c01.addingProduct(av, v1)
        av = V(repeating: t0[rs])
        c10 = c10.addingProduct(av, v0); c11 = c11.addingProduct(av, v1)
        av = V(repeating: t0[rs2])
        c20 = c20.addingProduct(av, v0); c21 = c21.addingProduct(av, v1)
        av = V(repeating: t3[0])
        c30 = c30.addingProduct(av, v0); c31 = c31.addingProduct(av, v1)
        av = V(repeating: t3[rs])
        c40 = c40.addingProduct(av, v0); c41 = c41.addingProduct(av, v1)
        av = V(repeating: t3[rs2])
        c50 = c50.addingProduct(av, v0); c51 = c51.addingProduct(av, v1)
        av = V(repeating: u0[0])
        c60 = c60.addingProduct(av, v0); c61 = c61.addingProduct(av, v1)
        av = V(repeating: u0[rs])
        c70 = c70.addingProduct(av, v0); c71 = c71.addingProduct(av, v1)
        av = V(repeating: u0[rs2])
        c80 = c80.addingProduct(av, v0); c81 = c81.addingProduct(av, v1)
        av = V(repeating: u3[0])
        c90 = c90.addingProduct(av, v0); c91 = c91.addingProduct(av, v1)
        av = V(repeating: u3[rs])
        ca0 = ca0.addingProduct(av, v0); ca1 = ca1.addingProduct(av, v1)
        av = V(repeating: u3[rs2])
        cb0 = cb0.addingProduct(av, v0); cb1 = cb1.addingProduct(av, v1)
        t0 += ks; t3 += ks; u0 += ks; u3 += ks; p0 += 16
    }
    @inline(__always) func put(_ r: Int, _ lo: V, _ hi: V) { storeRow32(c + r * ldc, lo, hi, accumulate, scale) }
    put(0, c00, c01); put(1, c10, c11); put(2, c20, c21); put(3, c30, c31)
    put(4, c40, c41); put(5, c50, c51); put(6, c60, c61); put(7, c70, c71)
    put(8, c80, c81); put(9, c90, c91); put(10, ca0, ca1); put(11, cb0, cb1)
}

/// `avx512Tile12x32` for A packed in two consecutive 6-row panels (row r of step p at
/// `a[p·6 + r]`, rows 6-11 at `a[6·kc + p·6 + r]`: the GEMM's packed layout). With the strides
/// known here every broadcast is a fixed displacement from one pointer, so the loop has two
/// pointer increments instead of the strided version's dozen address computations, which share
/// the FMA ports (the strided loop issues ~36 vector-port uops per 24 FMAs). Same k order, same bits.
/// B rows step by `bStep` as in `avx512Tile6x32` (a register add either way).
public func avx512Tile12x32Packed(_ kc: Int, _ a: UnsafePointer<Float>,
                                  _ b0: UnsafePointer<Float>, _ b1: UnsafePointer<Float>,
                                  _ c: UnsafeMutablePointer<Float>, _ ldc: Int, accumulate: Bool, scale: Float = 1,
                                  bStep: Int = 16) {
    typealias V = SIMD16<Float>
    @inline(__always) func load(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }
    var c00 = V(), c01 = V(), c10 = V(), c11 = V(), c20 = V(), c21 = V()
    var c30 = V(), c31 = V(), c40 = V(), c41 = V(), c50 = V(), c51 = V()
    var c60 = V(), c61 = V(), c70 = V(), c71 = V(), c80 = V(), c81 = V()
    var c90 = V(), c91 = V(), ca0 = V(), ca1 = V(), cb0 = V(), cb1 = V()
    let lower = 6 * kc
    var t = a
    var p0 = b0
    let d1 = b1 - b0
    for _ in 0..<kc {
        let v0 = load(p0), v1 = load(p0 + d1)
        var av = V(repeating: t[0])
        c00 = c00.addingProduct(av, v0); c01 = c01.addingProduct(av, v1)
        av = V(repeating: t[1])
        c10 = c10.addingProduct(av, v0); c11 = c11.addingProduct(av, v1)
        av = V(repeating: t[2])
        c20 = c20.addingProduct(av, v0); c21 = c21.addingProduct(av, v1)
        av = V(repeating: t[3])
        c30 = c30.addingProduct(av, v0); c31 = c31.addingProduct(av, v1)
        av = V(repeating: t[4])
        c40 = c40.addingProduct(av, v0); c41 = c41.addingProduct(av, v1)
        av = V(repeating: t[5])
        c50 = c50.addingProduct(av, v0); c51 = c51.addingProduct(av, v1)
        av = V(repeating: t[lower])
        c60 = c60.addingProduct(av, v0); c61 = c61.addingProduct(av, v1)
        av = V(repeating: t[lower + 1])
        c70 = c70.addingProduct(av, v0); c71 = c71.addingProduct(av, v1)
        av = V(repeating: t[lower + 2])
        c80 = c80.addingProduct(av, v0); c81 = c81.addingProduct(av, v1)
        av = V(repeating: t[lower + 3])
        c90 = c90.addingProduct(av, v0); c91 = c91.addingProduct(av, v1)
        av = V(repeating: t[lower + 4])
        ca0 = ca0.addingProduct(av, v0); ca1 = ca1.addingProduct(av, v1)
        av = V(repeating: t[lower + 5])
        cb0 = cb0.addingProduct(av, v0); cb1 = cb1.addingProduct(av, v1)
        t += 6; p0 += bStep
    }
    @inline(__always) func put(_ r: Int, _ lo: V, _ hi: V) { storeRow32(c + r * ldc, lo, hi, accumulate, scale) }
    put(0, c00, c01); put(1, c10, c11); put(2, c20, c21); put(3, c30, c31)
    put(4, c40, c41); put(5, c50, c51); put(6, c60, c61); put(7, c70, c71)
    put(8, c80, c81); put(9, c90, c91); put(10, ca0, ca1); put(11, cb0, cb1)
}

/// One 32-float row of a tile into C: added to it, or stored (scaled when scale ≠ 1).
@inline(__always)
private func storeRow32(_ row: UnsafeMutablePointer<Float>, _ lo: SIMD16<Float>, _ hi: SIMD16<Float>,
                        _ accumulate: Bool, _ scale: Float) {
    typealias V = SIMD16<Float>
    @inline(__always) func load(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }
    @inline(__always) func store(_ p: UnsafeMutablePointer<Float>, _ v: V) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: V.self) }
    if accumulate {
        store(row, load(row) + lo); store(row + 16, load(row + 16) + hi)
    } else if scale == 1 {
        store(row, lo); store(row + 16, hi)
    } else {
        store(row, lo * scale); store(row + 16, hi * scale)
    }
}
