// Register-tiled GEMM micro-kernels and the operand packers that feed them.
import Foundation
//
// Layout of packed operands (BLIS style):
//   A block (mc × kc) → ⌈mc/MR⌉ panels; panel q holds rows q·MR..<q·MR+MR as kc groups of MR
//     consecutive floats (column p of the panel is contiguous), zero-padded past the last row.
//   B block (kc × nc) → ⌈nc/NR⌉ panels; panel q holds columns q·NR..<q·NR+NR as kc rows of NR
//     consecutive floats, zero-padded past the last column.
// The 6×16 kernel keeps its 12 accumulators (6 rows × 2 ymm) in registers and issues 12 FMAs per
// k step against 2 B loads and 6 A broadcasts: with AVX2's 16 ymm registers this is the largest
// tile that leaves room for the operands.

@usableFromInline let gemmMR = 6
@usableFromInline let gemmNR = 16

/// How a finished tile is combined into C. Pointers are already offset to the tile's origin.
/// Result = act(alpha·acc + beta·C + rowBias[i] + colBias[j]) + residual[i·ldr + j];
/// beta == 0 means C is not read.
@usableFromInline
struct TileStore {
    var alpha: Float = 1
    var beta: Float = 0
    var rowBias: UnsafePointer<Float>? = nil
    var colBias: UnsafePointer<Float>? = nil
    var residual: UnsafePointer<Float>? = nil
    var ldr: Int = 0
    var act: Activation? = nil

    @inline(__always) var hasEpilogue: Bool {
        rowBias != nil || colBias != nil || residual != nil || act != nil
    }
    @inline(__always) var isPlainOverwrite: Bool { alpha == 1 && beta == 0 && !hasEpilogue }
    @inline(__always) var isScaledOverwrite: Bool { beta == 0 && !hasEpilogue }
    @inline(__always) var isPlainAccumulate: Bool { alpha == 1 && beta == 1 && !hasEpilogue }

    /// Finishes 8 columns (j, j+8) of row i at `c`.
    @inline(__always)
    func finish(_ acc: F8, _ c: UnsafeMutablePointer<Float>, _ i: Int, _ j: Int) {
        var v = alpha == 1 ? acc : acc * alpha
        if beta != 0 { v = v.addingProduct(F8(repeating: beta), ld8(c)) }
        if let rowBias { v += rowBias[i] }
        if let colBias { v += ld8(colBias + j) }
        if let act { v = vactivate(v, act) }
        if let residual { v += ld8(residual + i * ldr + j) }
        st8(c, v)
    }

    /// Scalar version for edge tiles; goes through the vector code so results match full tiles.
    @inline(__always)
    func finishScalar(_ acc: Float, _ c: UnsafeMutablePointer<Float>, _ i: Int, _ j: Int) {
        var v = alpha == 1 ? acc : acc * alpha
        if beta != 0 { v = v.addingProduct(beta, c.pointee) }
        if let rowBias { v += rowBias[i] }
        if let colBias { v += colBias[j] }
        if let act { v = sactivate(v, act) }
        if let residual { v += residual[i * ldr + j] }
        c.pointee = v
    }
}

// MARK: - Micro-kernels

/// C[6×16] (row stride ldc) ← store(A panel · B panel) over kc steps.
/// A element (i, p) is read at a[i·rs + p·ks]: a packed panel has rs = 1, ks = 6; a row-major
/// A read in place has rs = lda, ks = 1 (no packing: the 6 rows stream through L1 as is).
///
/// `touch`: Swift cannot emit prefetch instructions, so the kernel reads one float of each of
/// the next `touchLines` cache lines at `touch` (one every 8 k steps, 64 bytes apart) and folds
/// them into `sink`. An L3 hit completes within the reorder window of the FMAs around it, so the
/// next B panel arrives in L1/L2 before its own kernel call instead of stalling it.
@inline(never) @usableFromInline
func kernel6x16(_ kc: Int, _ a: UnsafePointer<Float>, _ rs: Int, _ ks: Int, _ b: UnsafePointer<Float>,
                _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ st: TileStore,
                touch: UnsafePointer<Float>? = nil, touchLines: Int = 0, sink: UnsafeMutablePointer<UInt32>? = nil) {
    var c00 = F8(), c01 = F8(), c10 = F8(), c11 = F8(), c20 = F8(), c21 = F8()
    var c30 = F8(), c31 = F8(), c40 = F8(), c41 = F8(), c50 = F8(), c51 = F8()
    let a0 = a, a1 = a + rs, a2 = a + 2 * rs, a3 = a + 3 * rs, a4 = a + 4 * rs, a5 = a + 5 * rs
    var bp = b
    var off = 0
    var p = 0
    if let touch, touchLines > 0, let sink {
        var acc: UInt32 = 0
        var t = 0
        var tp = touch
        while p + 8 <= kc {
            for _ in 0..<8 {
                do {
                    let b0 = ld8(bp), b1 = ld8(bp + 8)
                    var av = F8(repeating: a0[off])
                    c00 = c00.addingProduct(av, b0); c01 = c01.addingProduct(av, b1)
                    av = F8(repeating: a1[off])
                    c10 = c10.addingProduct(av, b0); c11 = c11.addingProduct(av, b1)
                    av = F8(repeating: a2[off])
                    c20 = c20.addingProduct(av, b0); c21 = c21.addingProduct(av, b1)
                    av = F8(repeating: a3[off])
                    c30 = c30.addingProduct(av, b0); c31 = c31.addingProduct(av, b1)
                    av = F8(repeating: a4[off])
                    c40 = c40.addingProduct(av, b0); c41 = c41.addingProduct(av, b1)
                    av = F8(repeating: a5[off])
                    c50 = c50.addingProduct(av, b0); c51 = c51.addingProduct(av, b1)
                    off += ks; bp += 16
                }
            }
            if t < touchLines { acc ^= tp.pointee.bitPattern; tp += 16; t += 1 }
            p += 8
        }
        sink.pointee ^= acc
    }
    while p < kc {
        do {
            let b0 = ld8(bp), b1 = ld8(bp + 8)
            var av = F8(repeating: a0[off])
            c00 = c00.addingProduct(av, b0); c01 = c01.addingProduct(av, b1)
            av = F8(repeating: a1[off])
            c10 = c10.addingProduct(av, b0); c11 = c11.addingProduct(av, b1)
            av = F8(repeating: a2[off])
            c20 = c20.addingProduct(av, b0); c21 = c21.addingProduct(av, b1)
            av = F8(repeating: a3[off])
            c30 = c30.addingProduct(av, b0); c31 = c31.addingProduct(av, b1)
            av = F8(repeating: a4[off])
            c40 = c40.addingProduct(av, b0); c41 = c41.addingProduct(av, b1)
            av = F8(repeating: a5[off])
            c50 = c50.addingProduct(av, b0); c51 = c51.addingProduct(av, b1)
            off += ks; bp += 16
        }
        p += 1
    }
    if st.isPlainOverwrite {
        st8(c, c00); st8(c + 8, c01)
        st8(c + ldc, c10); st8(c + ldc + 8, c11)
        st8(c + 2 * ldc, c20); st8(c + 2 * ldc + 8, c21)
        st8(c + 3 * ldc, c30); st8(c + 3 * ldc + 8, c31)
        st8(c + 4 * ldc, c40); st8(c + 4 * ldc + 8, c41)
        st8(c + 5 * ldc, c50); st8(c + 5 * ldc + 8, c51)
        return
    }
    if st.isScaledOverwrite {
        let al = F8(repeating: st.alpha)
        st8(c, c00 * al); st8(c + 8, c01 * al)
        st8(c + ldc, c10 * al); st8(c + ldc + 8, c11 * al)
        st8(c + 2 * ldc, c20 * al); st8(c + 2 * ldc + 8, c21 * al)
        st8(c + 3 * ldc, c30 * al); st8(c + 3 * ldc + 8, c31 * al)
        st8(c + 4 * ldc, c40 * al); st8(c + 4 * ldc + 8, c41 * al)
        st8(c + 5 * ldc, c50 * al); st8(c + 5 * ldc + 8, c51 * al)
        return
    }
    if st.isPlainAccumulate {
        // Accumulating pass of a multi-block k loop.
        var r = c
        r.accumulate8(c00); (r + 8).accumulate8(c01); r += ldc
        r.accumulate8(c10); (r + 8).accumulate8(c11); r += ldc
        r.accumulate8(c20); (r + 8).accumulate8(c21); r += ldc
        r.accumulate8(c30); (r + 8).accumulate8(c31); r += ldc
        r.accumulate8(c40); (r + 8).accumulate8(c41); r += ldc
        r.accumulate8(c50); (r + 8).accumulate8(c51)
        return
    }
    st.finish(c00, c, 0, 0); st.finish(c01, c + 8, 0, 8)
    st.finish(c10, c + ldc, 1, 0); st.finish(c11, c + ldc + 8, 1, 8)
    st.finish(c20, c + 2 * ldc, 2, 0); st.finish(c21, c + 2 * ldc + 8, 2, 8)
    st.finish(c30, c + 3 * ldc, 3, 0); st.finish(c31, c + 3 * ldc + 8, 3, 8)
    st.finish(c40, c + 4 * ldc, 4, 0); st.finish(c41, c + 4 * ldc + 8, 4, 8)
    st.finish(c50, c + 5 * ldc, 5, 0); st.finish(c51, c + 5 * ldc + 8, 5, 8)
}

/// C[6×8] ← store(A panel · first 8 columns of a 16-wide B panel). Used for narrow column tails
/// (e.g. head dim 40 = 16 + 16 + 8) so they cost half a full tile. A addressing as in kernel6x16.
@inline(never) @usableFromInline
func kernel6x8(_ kc: Int, _ a: UnsafePointer<Float>, _ rs: Int, _ ks: Int, _ b: UnsafePointer<Float>,
               _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ st: TileStore) {
    var c0 = F8(), c1 = F8(), c2 = F8(), c3 = F8(), c4 = F8(), c5 = F8()
    var d0 = F8(), d1 = F8(), d2 = F8(), d3 = F8(), d4 = F8(), d5 = F8()
    let a0 = a, a1 = a + rs, a2 = a + 2 * rs, a3 = a + 3 * rs, a4 = a + 4 * rs, a5 = a + 5 * rs
    var bp = b
    var off = 0
    var p = 0
    // Two k steps per iteration into separate accumulators: 6 chains alone would leave the
    // FMA pipes idle (latency 4 × 2 pipes needs ≥ 8 independent chains).
    while p + 1 < kc {
        let b0 = ld8(bp), b1 = ld8(bp + 16)
        let o2 = off + ks
        c0 = c0.addingProduct(F8(repeating: a0[off]), b0); d0 = d0.addingProduct(F8(repeating: a0[o2]), b1)
        c1 = c1.addingProduct(F8(repeating: a1[off]), b0); d1 = d1.addingProduct(F8(repeating: a1[o2]), b1)
        c2 = c2.addingProduct(F8(repeating: a2[off]), b0); d2 = d2.addingProduct(F8(repeating: a2[o2]), b1)
        c3 = c3.addingProduct(F8(repeating: a3[off]), b0); d3 = d3.addingProduct(F8(repeating: a3[o2]), b1)
        c4 = c4.addingProduct(F8(repeating: a4[off]), b0); d4 = d4.addingProduct(F8(repeating: a4[o2]), b1)
        c5 = c5.addingProduct(F8(repeating: a5[off]), b0); d5 = d5.addingProduct(F8(repeating: a5[o2]), b1)
        off += 2 * ks; bp += 32; p += 2
    }
    if p < kc {
        let b0 = ld8(bp)
        c0 = c0.addingProduct(F8(repeating: a0[off]), b0)
        c1 = c1.addingProduct(F8(repeating: a1[off]), b0)
        c2 = c2.addingProduct(F8(repeating: a2[off]), b0)
        c3 = c3.addingProduct(F8(repeating: a3[off]), b0)
        c4 = c4.addingProduct(F8(repeating: a4[off]), b0)
        c5 = c5.addingProduct(F8(repeating: a5[off]), b0)
    }
    c0 += d0; c1 += d1; c2 += d2; c3 += d3; c4 += d4; c5 += d5
    if st.isPlainOverwrite {
        st8(c, c0); st8(c + ldc, c1); st8(c + 2 * ldc, c2)
        st8(c + 3 * ldc, c3); st8(c + 4 * ldc, c4); st8(c + 5 * ldc, c5)
        return
    }
    st.finish(c0, c, 0, 0); st.finish(c1, c + ldc, 1, 0); st.finish(c2, c + 2 * ldc, 2, 0)
    st.finish(c3, c + 3 * ldc, 3, 0); st.finish(c4, c + 4 * ldc, 4, 0); st.finish(c5, c + 5 * ldc, 5, 0)
}

extension UnsafeMutablePointer where Pointee == Float {
    @inline(__always) func accumulate8(_ v: F8) { st8(self, ld8(self) + v) }
}

/// A block handed to the kernels: element (i, p) at base[i·rs + p·ks] within a panel, panels
/// starting every MR rows at base + (ir / MR)·panelStep... expressed per row: panel(ir).
@usableFromInline
struct APanels {
    var base: UnsafePointer<Float>
    /// Offset between consecutive block rows' panel starts (1·lda in place, kc for packed panels
    /// where row ir's panel begins at ir·kc because each panel holds MR·kc floats).
    var rowStep: Int
    var rs: Int
    var ks: Int

    /// In-place rows of a row-major matrix.
    @inline(__always) static func inPlace(_ base: UnsafePointer<Float>, lda: Int) -> APanels {
        APanels(base: base, rowStep: lda, rs: lda, ks: 1)
    }

    /// MR-row panels of kc steps each, packed contiguously.
    @inline(__always) static func packed(_ base: UnsafePointer<Float>, kc: Int) -> APanels {
        APanels(base: base, rowStep: kc, rs: 1, ks: gemmMR)
    }

    /// Pointer to the panel starting at block row `ir` (a multiple of MR).
    @inline(__always) func panel(_ ir: Int) -> UnsafePointer<Float> { base + ir * rowStep }
}

/// Runs the right kernel for an mr × nr tile (mr ≤ 6, nr ≤ 16) of C at `c`, going through a
/// scratch tile when the tile is partial. `a` must address 6 valid rows (callers pad short panels).
@inline(__always)
func runTile(_ kc: Int, _ a: UnsafePointer<Float>, _ rs: Int, _ ks: Int, _ b: UnsafePointer<Float>,
             _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ mr: Int, _ nr: Int,
             _ st: TileStore, _ tile: UnsafeMutablePointer<Float>,
             touch: UnsafePointer<Float>? = nil, touchLines: Int = 0, sink: UnsafeMutablePointer<UInt32>? = nil) {
    if mr == gemmMR {
        if nr == gemmNR { kernel6x16(kc, a, rs, ks, b, c, ldc, st, touch: touch, touchLines: touchLines, sink: sink); return }
        if nr == 8 { kernel6x8(kc, a, rs, ks, b, c, ldc, st); return }
    }
    if nr <= 8 {
        kernel6x8(kc, a, rs, ks, b, tile, gemmNR, TileStore())
    } else {
        kernel6x16(kc, a, rs, ks, b, tile, gemmNR, TileStore())
    }
    for i in 0..<mr {
        for j in 0..<nr { st.finishScalar(tile[i * gemmNR + j], c + i * ldc + j, i, j) }
    }
}

// MARK: - Packers

/// Supplies A blocks (rows i0..<i0+mc of op(A), k range p0..<p0+kc) to the kernels.
@usableFromInline
protocol GemmPackA {
    /// Packs into `dst` (room for ⌈mc/MR⌉·MR·kc floats), or returns in-place / pre-packed data.
    /// Every panel of the result must address MR readable rows (pad short ones).
    func packA(_ i0: Int, _ mc: Int, _ p0: Int, _ kc: Int, _ dst: UnsafeMutablePointer<Float>) -> APanels
    /// Whether `packA` always copies into `dst` (so rectangles that share rows would copy the
    /// same panels again) rather than returning data that is already in place.
    var copiesA: Bool { get }
}

extension GemmPackA {
    var copiesA: Bool { false }
}

/// A packed once for a whole product, in the driver's own blocking: k block [p0, p0 + kc) holds
/// mPad/MR panels of MR·kc floats from base + p0·mPad (panel of row i0 at + i0·kc).
struct SharedA: GemmPackA {
    let base: UnsafePointer<Float>
    let mPad: Int
    @inline(__always)
    func packA(_ i0: Int, _ mc: Int, _ p0: Int, _ kc: Int, _ dst: UnsafeMutablePointer<Float>) -> APanels {
        .packed(base + p0 * mPad + i0 * kc, kc: kc)
    }
}

/// Packs all of A into `SharedA`'s layout at `dst` (mPad·k floats).
func packWholeA<PA: GemmPackA>(_ pa: PA, m: Int, k: Int, into dst: UnsafeMutablePointer<Float>, workers: Int) {
    let box = UncheckedBox(pa)
    packWhole(count: m, unit: gemmMR, k: k, into: dst, workers: workers) { p0, kc, lo, hi, at in
        let out = box.value.packA(lo, hi - lo, p0, kc, at)
        precondition(out.base == UnsafePointer(at), "packWholeA needs an A that copies")
    }
}

/// Packs a whole operand into the pre-packed layout (k block [p0, p0 + kc) holds the `count`
/// rows or columns, padded to panels of `unit`, from dst + p0·padded; panel of index i at + i·kc):
/// k blocks and panel ranges split over the workers, `pack(p0, kc, lo, hi, at)` packing one.
private func packWhole(count: Int, unit: Int, k: Int, into dst: UnsafeMutablePointer<Float>, workers: Int,
                       _ pack: (Int, Int, Int, Int, UnsafeMutablePointer<Float>) -> Void) {
    let kcStep = kBlockSize(k)
    let kBlocks = (k + kcStep - 1) / kcStep
    let panels = (count + unit - 1) / unit
    let padded = panels * unit
    let parts = min(panels, workers)  // panel ranges per k block
    parallelChunks(kBlocks * parts, workers: workers) { t in
        let kb = t / parts, part = t % parts
        let p0 = kb * kcStep, kc = min(kcStep, k - p0)
        let lo = panels * part / parts * unit
        let hi = min(count, panels * (part + 1) / parts * unit)
        if lo < hi { pack(p0, kc, lo, hi, dst + p0 * padded + lo * kc) }
    }
}

/// Supplies packed B blocks (k range p0..<p0+kc, columns j0..<j0+nc of op(B)).
@usableFromInline
protocol GemmPackB {
    /// Packs into `dst` (room for ⌈nc/NR⌉·NR·kc floats) or returns a pointer to pre-packed data.
    func packB(_ p0: Int, _ kc: Int, _ j0: Int, _ nc: Int, _ dst: UnsafeMutablePointer<Float>) -> UnsafePointer<Float>
    /// Whether `packB` gathers or copies into `dst` (so row rectangles, which all need every
    /// column, would do that work once each) rather than returning data that is already packed.
    var copiesB: Bool { get }
}

extension GemmPackB {
    var copiesB: Bool { false }
}

/// B already in the pre-packed layout (packed once for a whole product by `packWholeB`, or
/// Winograd's transformed input): k block [p0, p0 + kc) holds nPad/NR panels of NR·kc floats
/// from base + p0·nPad (column j0 at + j0·kc).
struct SharedB: GemmPackB {
    let base: UnsafePointer<Float>
    let nPad: Int
    @inline(__always)
    func packB(_ p0: Int, _ kc: Int, _ j0: Int, _ nc: Int, _ dst: UnsafeMutablePointer<Float>) -> UnsafePointer<Float> {
        base + p0 * nPad + j0 * kc
    }
}

/// Packs all of B into `SharedB`'s layout at `dst` (nPad·k floats).
func packWholeB<PB: GemmPackB>(_ pb: PB, n: Int, k: Int, into dst: UnsafeMutablePointer<Float>, workers: Int) {
    let box = UncheckedBox(pb)
    packWhole(count: n, unit: gemmNR, k: k, into: dst, workers: workers) { p0, kc, lo, hi, at in
        let out = box.value.packB(p0, kc, lo, hi - lo, at)
        precondition(out == UnsafePointer(at), "packWholeB needs a B that copies")
    }
}

/// A from a strided row-major matrix: op(A)[i, p] = trans ? a[p·lda + i] : a[i·lda + p].
/// Untransposed A is read in place by the AVX2 kernels (only a short last panel is copied) and
/// packed for the AVX-512 tile, whose packed form has fixed strides (~5 % faster per GEMM, paid
/// back after two column tiles); transposed A is packed into panels, reading its rows sequentially.
@usableFromInline
struct DenseA: GemmPackA {
    let a: UnsafePointer<Float>
    let lda: Int
    let trans: Bool

    @usableFromInline init(_ a: UnsafePointer<Float>, _ lda: Int, _ trans: Bool) {
        self.a = a; self.lda = lda; self.trans = trans
    }

    /// The cases in which `packA` copies (see there).
    @usableFromInline var copiesA: Bool { trans || lda % 1024 == 0 || (gemmUsesAVX512 && gemmPacksDenseA) }

    @inline(__always) @usableFromInline
    func packA(_ i0: Int, _ mc: Int, _ p0: Int, _ kc: Int, _ dst: UnsafeMutablePointer<Float>) -> APanels {
        if !trans {
            let full = mc / gemmMR * gemmMR
            // In place unless `copiesA`: the AVX-512 tile wants packed panels, and with a row
            // stride that is a multiple of 4 KB all rows of a panel fall into the same L1 set
            // (and few L2 sets) and evict each other.
            if full == mc && !copiesA {
                return .inPlace(a + i0 * lda + p0, lda: lda)
            }
            // Pack the whole block: always for the AVX-512 tile, else for a short last panel (once
            // per m) or a 4 KB-multiple stride.
            var q = 0
            var d = dst
            while q < mc {
                packRowsInterleaved(a + (i0 + q) * lda + p0, lda, min(gemmMR, mc - q), kc, d)
                d += gemmMR * kc
                q += gemmMR
            }
            return .packed(UnsafePointer(dst), kc: kc)
        }
        // Transposed: row p of the block is contiguous (mc floats); scatter it into the panels.
        let panels = (mc + gemmMR - 1) / gemmMR
        let full = mc / gemmMR
        for p in 0..<kc {
            let src = a + (p0 + p) * lda + i0
            var d = dst + p * gemmMR
            for q in 0..<full {
                let s = src + q * gemmMR
                d[0] = s[0]; d[1] = s[1]; d[2] = s[2]; d[3] = s[3]; d[4] = s[4]; d[5] = s[5]
                d += gemmMR * kc
            }
            if full < panels {
                let s = src + full * gemmMR
                let r = mc - full * gemmMR
                for i in 0..<gemmMR { d[i] = i < r ? s[i] : 0 }
            }
        }
        return .packed(UnsafePointer(dst), kc: kc)
    }
}

/// Whether untransposed A is packed into panels on an AVX-512 CPU (for the fixed-stride 12x32
/// tile) instead of being read in place. `DARKROOM_PACK_A=0` turns it off for A/B timing; tests
/// switch it to check both give the same bits.
nonisolated(unsafe) var gemmPacksDenseA = ProcessInfo.processInfo.environment["DARKROOM_PACK_A"] != "0"

/// Interleaves mr (≤ 6) rows of length kc (row stride ld) into a kc × 6 panel, zero rows past mr.
@inline(__always)
func packRowsInterleaved(_ src: UnsafePointer<Float>, _ ld: Int, _ mr: Int, _ kc: Int, _ d: UnsafeMutablePointer<Float>) {
    if mr == gemmMR {
        let r0 = src, r1 = src + ld, r2 = src + 2 * ld, r3 = src + 3 * ld, r4 = src + 4 * ld, r5 = src + 5 * ld
        var p = 0
        var o = d
        while p < kc {
            o[0] = r0[p]; o[1] = r1[p]; o[2] = r2[p]; o[3] = r3[p]; o[4] = r4[p]; o[5] = r5[p]
            o += gemmMR; p += 1
        }
    } else {
        for i in 0..<gemmMR {
            if i < mr {
                let r = src + i * ld
                for p in 0..<kc { d[p * gemmMR + i] = r[p] }
            } else {
                for p in 0..<kc { d[p * gemmMR + i] = 0 }
            }
        }
    }
}

/// B from a strided row-major matrix: op(B)[p, j] = trans ? b[j·ldb + p] : b[p·ldb + j].
@usableFromInline
struct DenseB: GemmPackB {
    let b: UnsafePointer<Float>
    let ldb: Int
    let trans: Bool

    @usableFromInline init(_ b: UnsafePointer<Float>, _ ldb: Int, _ trans: Bool) {
        self.b = b; self.ldb = ldb; self.trans = trans
    }

    @usableFromInline var copiesB: Bool { true }

    @inline(__always) @usableFromInline
    func packB(_ p0: Int, _ kc: Int, _ j0: Int, _ nc: Int, _ dst: UnsafeMutablePointer<Float>) -> UnsafePointer<Float> {
        if trans {
            var q = 0
            while q < nc {
                packColumnsTransposed(b + (j0 + q) * ldb + p0, ldb, min(gemmNR, nc - q), kc, dst + q * kc)
                q += gemmNR
            }
            return UnsafePointer(dst)
        }
        // Row by row: each source row is read sequentially and dealt out to the panels.
        let full = nc / gemmNR
        let tail = nc - full * gemmNR
        let panelSize = gemmNR * kc
        for p in 0..<kc {
            let src = b + (p0 + p) * ldb + j0
            var d = dst + p * gemmNR
            for q in 0..<full {
                let s = src + q * gemmNR
                st8(d, ld8(s)); st8(d + 8, ld8(s + 8))
                d += panelSize
            }
            if tail > 0 {
                let s = src + full * gemmNR
                for j in 0..<gemmNR { d[j] = j < tail ? s[j] : 0 }
            }
        }
        return UnsafePointer(dst)
    }
}

/// Packs nr (≤ 16) source rows of length kc (stride ld) as the columns of a kc × 16 panel.
@inline(__always)
func packColumnsTransposed(_ src: UnsafePointer<Float>, _ ld: Int, _ nr: Int, _ kc: Int, _ d: UnsafeMutablePointer<Float>) {
    // 8 source rows at a time, 8 k steps at a time: an 8×8 transpose through registers keeps
    // both reads and writes contiguous.
    var j = 0
    while j + 8 <= nr {
        let s = src + j * ld
        var p = 0
        while p + 8 <= kc {
            let t = transpose8x8(ld8(s + p), ld8(s + ld + p), ld8(s + 2 * ld + p), ld8(s + 3 * ld + p),
                                 ld8(s + 4 * ld + p), ld8(s + 5 * ld + p), ld8(s + 6 * ld + p), ld8(s + 7 * ld + p))
            let o = d + p * gemmNR + j
            st8(o, t.0); st8(o + gemmNR, t.1); st8(o + 2 * gemmNR, t.2); st8(o + 3 * gemmNR, t.3)
            st8(o + 4 * gemmNR, t.4); st8(o + 5 * gemmNR, t.5); st8(o + 6 * gemmNR, t.6); st8(o + 7 * gemmNR, t.7)
            p += 8
        }
        while p < kc {
            for jj in 0..<8 { d[p * gemmNR + j + jj] = s[jj * ld + p] }
            p += 1
        }
        j += 8
    }
    while j < nr {
        let s = src + j * ld
        for p in 0..<kc { d[p * gemmNR + j] = s[p] }
        j += 1
    }
    if nr < gemmNR {
        for p in 0..<kc { for jj in nr..<gemmNR { d[p * gemmNR + jj] = 0 } }
    }
}

/// 8×8 transpose of rows r0…r7 (returns the columns), in 24 shuffles.
@inline(__always)
func transpose8x8(_ r0: F8, _ r1: F8, _ r2: F8, _ r3: F8, _ r4: F8, _ r5: F8, _ r6: F8, _ r7: F8)
    -> (F8, F8, F8, F8, F8, F8, F8, F8) {
    // Stage 1: interleave pairs (unpacklo/hi within 128-bit lanes).
    let t0 = F8(r0[0], r1[0], r0[1], r1[1], r0[4], r1[4], r0[5], r1[5])
    let t1 = F8(r0[2], r1[2], r0[3], r1[3], r0[6], r1[6], r0[7], r1[7])
    let t2 = F8(r2[0], r3[0], r2[1], r3[1], r2[4], r3[4], r2[5], r3[5])
    let t3 = F8(r2[2], r3[2], r2[3], r3[3], r2[6], r3[6], r2[7], r3[7])
    let t4 = F8(r4[0], r5[0], r4[1], r5[1], r4[4], r5[4], r4[5], r5[5])
    let t5 = F8(r4[2], r5[2], r4[3], r5[3], r4[6], r5[6], r4[7], r5[7])
    let t6 = F8(r6[0], r7[0], r6[1], r7[1], r6[4], r7[4], r6[5], r7[5])
    let t7 = F8(r6[2], r7[2], r6[3], r7[3], r6[6], r7[6], r6[7], r7[7])
    // Stage 2: 64-bit interleave.
    let u0 = F8(t0[0], t0[1], t2[0], t2[1], t0[4], t0[5], t2[4], t2[5])
    let u1 = F8(t0[2], t0[3], t2[2], t2[3], t0[6], t0[7], t2[6], t2[7])
    let u2 = F8(t1[0], t1[1], t3[0], t3[1], t1[4], t1[5], t3[4], t3[5])
    let u3 = F8(t1[2], t1[3], t3[2], t3[3], t1[6], t1[7], t3[6], t3[7])
    let u4 = F8(t4[0], t4[1], t6[0], t6[1], t4[4], t4[5], t6[4], t6[5])
    let u5 = F8(t4[2], t4[3], t6[2], t6[3], t4[6], t4[7], t6[6], t6[7])
    let u6 = F8(t5[0], t5[1], t7[0], t7[1], t5[4], t5[5], t7[4], t7[5])
    let u7 = F8(t5[2], t5[3], t7[2], t7[3], t5[6], t5[7], t7[6], t7[7])
    // Stage 3: 128-bit lane exchange.
    let c0 = F8(u0[0], u0[1], u0[2], u0[3], u4[0], u4[1], u4[2], u4[3])
    let c1 = F8(u1[0], u1[1], u1[2], u1[3], u5[0], u5[1], u5[2], u5[3])
    let c2 = F8(u2[0], u2[1], u2[2], u2[3], u6[0], u6[1], u6[2], u6[3])
    let c3 = F8(u3[0], u3[1], u3[2], u3[3], u7[0], u7[1], u7[2], u7[3])
    let c4 = F8(u0[4], u0[5], u0[6], u0[7], u4[4], u4[5], u4[6], u4[7])
    let c5 = F8(u1[4], u1[5], u1[6], u1[7], u5[4], u5[5], u5[6], u5[7])
    let c6 = F8(u2[4], u2[5], u2[6], u2[7], u6[4], u6[5], u6[6], u6[7])
    let c7 = F8(u3[4], u3[5], u3[6], u3[7], u7[4], u7[5], u7[6], u7[7])
    return (c0, c1, c2, c3, c4, c5, c6, c7)
}
