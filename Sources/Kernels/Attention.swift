import Foundation
import KernelsAVX512

/// Multi-head scaled dot-product attention: out = softmax(scale · Q·Kᵀ [+ causal mask]) · V.
/// Tokens are rows; heads are interleaved in a row as PyTorch's `view(b, s, heads, d)` lays them:
///   q row i of batch b starts at q + (b * queryLength + i) * qRowStride, head h at + h * headDim.
///   k, v likewise with keyLength rows and their own strides; out with outRowStride.
/// `causal`: query i attends keys 0...i only (CLIP text encoder).
/// Never materialises more than one block of scores per worker.
///
/// Flash-style, in column form: for each (batch, head, block of 192 queries) the keys are visited
/// in blocks of 240, and per chunk of 32 queries (16 without AVX-512) the kernel computes
/// Sᵀ = K·Qᵀ (keys are rows, queries columns), an online softmax down the columns, and
/// Oᵀ += Vᵀ·Pᵀ, all on the GEMM micro-kernels with K and Vᵀ packed into 6-row panels once per
/// (batch, head) per worker. Why transposed: the softmax then works on whole vectors of queries
/// (vertical max, exponentials and sums, no horizontal reductions), and the head width becomes
/// the row count of Oᵀ, padded to a multiple of 6 (SD's d = 40: 42 rows) instead of the column
/// count, padded to a multiple of 16 (48: 17 % wasted FMAs). Scores are stored scaled by
/// scale·log2 e; exponentials via `vexp2NonPositive` (≈ 1 ulp). Every query column's arithmetic
/// is the same whatever the chunk width, so the AVX-512 and AVX2 paths give the same bits.
/// Memory per worker: O(keyLength · headDim) for packed K and Vᵀ plus O(240 · 32) for scores.
public func attention(
    q: UnsafePointer<Float>, qRowStride: Int,
    k: UnsafePointer<Float>, kRowStride: Int,
    v: UnsafePointer<Float>, vRowStride: Int,
    out: UnsafeMutablePointer<Float>, outRowStride: Int,
    batch: Int, heads: Int, queryLength: Int, keyLength: Int, headDim: Int,
    scale: Float, causal: Bool = false
) {
    guard batch > 0, heads > 0, queryLength > 0, headDim > 0 else { return }
    let d = headDim
    if keyLength == 0 {
        // softmax over no keys: define the result as zero rather than dividing by zero.
        for r in 0..<(batch * queryLength) {
            for h in 0..<heads { (out + r * outRowStride + h * d).update(repeating: 0, count: d) }
        }
        return
    }
    let bq = attnBlockQ
    let qBlocks = (queryLength + bq - 1) / bq
    let items = batch * heads * qBlocks
    let flops = Double(items) * Double(bq) * Double(keyLength) * Double(d) * 4
    let workers = min(Threads.count, items, max(1, Int(flops / 2e6)))
    let box = UncheckedBox((q, k, v, SendablePointer(out)))
    let geo = AttentionGeometry(qRowStride: qRowStride, kRowStride: kRowStride, vRowStride: vRowStride,
                                outRowStride: outRowStride, heads: heads, queryLength: queryLength,
                                keyLength: keyLength, headDim: d,
                                qScale: scale * 1.4426950408889634, causal: causal)
    let run = { (range: Range<Int>) in
        let (q, k, v, o) = box.value
        attentionWorker(q: q, k: k, v: v, out: o.p, geo: geo, items: range, qBlocks: qBlocks)
    }
    if workers <= 1 {
        run(0..<items)
    } else {
        // A few chunks per worker, claimed as workers free up (`parallelChunks`); whole heads
        // when there are enough of them, since a chunk packs K and V once per head it touches.
        let headCount = batch * heads
        let chunks = headCount >= 2 * workers ? headCount : min(items, 4 * workers)
        parallelChunks(chunks, workers: workers) { c in run(items * c / chunks..<items * (c + 1) / chunks) }
    }
}

let attnBlockQ = 192    // query rows per work item: 6 chunks of 32, or 12 of 16
let attnBlockK = 240    // keys per block: a multiple of 12 (pairs of 6-key panels)

struct AttentionGeometry {
    let qRowStride: Int, kRowStride: Int, vRowStride: Int, outRowStride: Int
    let heads: Int, queryLength: Int, keyLength: Int, headDim: Int
    let qScale: Float
    let causal: Bool
}

/// Processes work items (batch·heads·queryBlocks, in that nesting) on one thread.
/// The key loop runs outside the chunk loop so each key block's packed K and Vᵀ (≈ 80 KB at
/// d = 40) is reused by every chunk of the query block from L2.
func attentionWorker(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                     out: UnsafeMutablePointer<Float>, geo g: AttentionGeometry, items: Range<Int>, qBlocks: Int) {
    let d = g.headDim
    let wide = gemmUsesAVX512
    let w = wide ? 32 : 16                  // query columns per chunk: one tile width
    let keyRows = wide ? 12 : 6             // key rows per score tile
    let dPad = (d + 5) / 6 * 6              // rows of Oᵀ: whole 6-row panels of Vᵀ
    let vPanels = dPad / 6
    let bq = attnBlockQ, bk = attnBlockK
    let L = g.keyLength
    let lPad = (L + 11) / 12 * 12
    let kBlocks = (L + bk - 1) / bk
    // Scratch layout.
    let kpSize = lPad * d                   // K in 6-key panels: key j, dim p at (j/6)·6d + p·6 + j%6
    let vtSize = kBlocks * bk * dPad        // Vᵀ per key block in 6-dim panels: dim r, key j at (r/6)·6·nk + j·6 + r%6
    let qtSize = bq * d                     // Qᵀ per chunk in 16-query panels: query j, dim p at (j/16)·16d + p·16 + j%16
    let sSize = bk * w                      // Sᵀ, then P, of one chunk: key j, query c at j·w + c
    let oSize = bq * dPad                   // Oᵀ per chunk: dim r, query c at r·w + c
    let total = kpSize + vtSize + qtSize + sSize + oSize + 2 * bq + 6 * 16
    withScratch(total) { buf in
        var cur = buf
        func carve(_ n: Int) -> UnsafeMutablePointer<Float> {
            let p = cur
            cur += (n + 15) / 16 * 16
            return p
        }
        let kp = carve(kpSize), vt = carve(vtSize), qt = carve(qtSize)
        let s = carve(sSize), o = carve(oSize), runMax = carve(bq), runSum = carve(bq)
        let scoreStore = TileStore(alpha: g.qScale)   // scale·log2 e applied as Sᵀ is stored
        let accumulate = TileStore(alpha: 1, beta: 1)
        var packedHead = -1
        for item in items {
            let qb = item % qBlocks
            let bh = item / qBlocks
            let h = bh % g.heads, b = bh / g.heads
            if packedHead != bh {
                packRowPanels(k + b * L * g.kRowStride + h * d, g.kRowStride, L, lPad, d, width: 6, kp)
                for kb in 0..<kBlocks {
                    let k0 = kb * bk
                    packValuePanels(v + (b * L + k0) * g.vRowStride + h * d, g.vRowStride, min(bk, L - k0), d, dPad,
                                    vt + kb * bk * dPad)
                }
                packedHead = bh
            }
            let q0 = qb * bq
            let nq = min(bq, g.queryLength - q0)
            let chunks = (nq + w - 1) / w
            packRowPanels(q + (b * g.queryLength + q0) * g.qRowStride + h * d, g.qRowStride, nq, chunks * w, d, width: 16, qt)
            for i in 0..<(chunks * w) { runMax[i] = -.infinity; runSum[i] = 0 }
            o.update(repeating: 0, count: chunks * w * dPad)
            let keyEnd = g.causal ? min(L, q0 + nq) : L
            var k0 = 0
            while k0 < keyEnd {
                // The whole block, also under the causal mask: Vᵀ's panels were cut for it, and
                // masked probabilities are exact zeros.
                let nk = min(bk, L - k0)
                let sRows = (nk + keyRows - 1) / keyRows * keyRows   // ≤ lPad − k0: K's padding is zero
                let vtb = vt + (k0 / bk) * bk * dPad
                for c in 0..<chunks {
                    let cq0 = q0 + c * w
                    if g.causal && k0 > min(cq0 + w, q0 + nq) - 1 { continue }   // every key after every query
                    let qtc = qt + c * w * d
                    let oc = o + c * w * dPad
                    // Sᵀ = K·Qᵀ for this key block.
                    var r = 0
                    while r < sRows {
                        let a = kp + (k0 + r) * d
                        if wide {
                            avx512Tile12x32Packed(d, a, qtc, qtc + 16 * d, s + r * w, w, accumulate: false, scale: g.qScale)
                        } else {
                            kernel6x16(d, a, 1, 6, qtc, s + r * w, w, scoreStore)
                        }
                        r += keyRows
                    }
                    let diagonal: Int? = g.causal ? cq0 - k0 : nil
                    if wide {
                        avx512SoftmaxColumns(s, rows: nk, cols: w, runMax: runMax + c * w, runSum: runSum + c * w,
                                             o: oc, oRows: dPad, causalDiagonal: diagonal)
                    } else {
                        softmaxColumns(s, rows: nk, cols: w, runMax: runMax + c * w, runSum: runSum + c * w,
                                       o: oc, oRows: dPad, causalDiagonal: diagonal)
                    }
                    // Oᵀ += Vᵀ·Pᵀ: P's rows (keys) hold the chunk's queries side by side, which is
                    // a B panel pair with row step w (AVX-512) or one packed panel (w = 16).
                    var pi = 0
                    while pi < vPanels {
                        let a = vtb + pi * 6 * nk
                        if !wide {
                            kernel6x16(nk, a, 1, 6, s, oc + pi * 6 * w, w, accumulate)
                            pi += 1
                        } else if pi + 2 <= vPanels {
                            avx512Tile12x32Packed(nk, a, s, s + 16, oc + pi * 6 * w, w, accumulate: true, bStep: w)
                            pi += 2
                        } else {
                            avx512Tile6x32(nk, a, 1, 6, s, s + 16, oc + pi * 6 * w, w, accumulate: true, bStep: w)
                            pi += 1
                        }
                    }
                }
                k0 += nk
            }
            // out = (Oᵀ / column sums)ᵀ.
            let outBase = out + (b * g.queryLength + q0) * g.outRowStride + h * d
            for i in 0..<nq {
                let inv: Float = runSum[i] > 0 ? 1 / runSum[i] : 0
                let oc = o + (i / w) * w * dPad + i % w
                let dst = outBase + i * g.outRowStride
                for p in 0..<d { dst[p] = oc[p * w] * inv }
            }
        }
    }
}

/// Rows [0, n) of one head (K or Q) transposed into panels of `width` rows: row j, dim p at
/// (j/width)·width·d + p·width + j%width. K as 6-key A panels of Sᵀ = K·Qᵀ, Q as 16-query B
/// panels. Rows n..<nPad are zero (their scores are computed, never used).
private func packRowPanels(_ src: UnsafePointer<Float>, _ rowStride: Int, _ n: Int, _ nPad: Int, _ d: Int,
                           width: Int, _ dst: UnsafeMutablePointer<Float>) {
    for j in 0..<nPad {
        let panel = dst + (j / width) * width * d + j % width
        if j < n {
            let row = src + j * rowStride
            for p in 0..<d { panel[p * width] = row[p] }
        } else {
            for p in 0..<d { panel[p * width] = 0 }
        }
    }
}

/// Vᵀ of n keys as 6-dim A panels over the keys (dim r, key j at (r/6)·6n + j·6 + r%6): each
/// key's 6 values of a panel are 6 consecutive floats of its V row. Dims d..<dPad are zero.
private func packValuePanels(_ v: UnsafePointer<Float>, _ rowStride: Int, _ n: Int, _ d: Int, _ dPad: Int,
                             _ dst: UnsafeMutablePointer<Float>) {
    for r0 in stride(from: 0, to: dPad, by: 6) {
        let panel = dst + r0 * n
        let m = min(6, d - r0)
        for j in 0..<n {
            let src = v + j * rowStride + r0
            let t = panel + j * 6
            for r in 0..<m { t[r] = src[r] }
            for r in m..<6 { t[r] = 0 }
        }
    }
}

/// One key block's step of the online softmax for a chunk of query columns.
/// `s`: the block's scores Sᵀ (already scaled by scale·log2 e), `rows` keys × `cols` queries
/// (row stride `cols`, a multiple of 8), overwritten with 2^(s − running max). `runMax`/`runSum`:
/// per column, the maximum and the sum of exponentials so far. `o`: the chunk's Oᵀ (`oRows` rows of
/// stride `cols`), rescaled by 2^(old max − new max) where a column's maximum grew.
/// `causalDiagonal` (causal attention): entry (r, c) is masked, probability exactly 0, when
/// r − c > causalDiagonal, i.e. the key comes after the query.
@inline(never)
func softmaxColumns(_ s: UnsafeMutablePointer<Float>, rows: Int, cols: Int,
                    runMax: UnsafeMutablePointer<Float>, runSum: UnsafeMutablePointer<Float>,
                    o: UnsafeMutablePointer<Float>, oRows: Int, causalDiagonal: Int?) {
    let lanes = SIMD8<Int32>(0, 1, 2, 3, 4, 5, 6, 7)
    var g = 0
    while g < cols {
        let firstMasked = causalDiagonal.map { lanes &+ Int32(g + $0) }
        let mOld = ld8(runMax + g)
        var bm = F8(repeating: -.infinity)
        for r in 0..<rows {
            var x = ld8(s + r * cols + g)
            // Masked scores stay out of the maximum; the exponential pass below zeroes them.
            if let firstMasked { x.replace(with: -.infinity, where: SIMD8<Int32>(repeating: Int32(r)) .> firstMasked) }
            bm.replace(with: x, where: x .> bm)
        }
        var mNew = mOld
        mNew.replace(with: bm, where: bm .> mOld)
        var sum = ld8(runSum + g)
        if any(mNew .!= mOld) {
            // Columns whose maximum stayed put keep factor 1 (exactly what 2^0 gives; also for a
            // column with no visible key yet, where −∞ − (−∞) would be NaN).
            var corr = vexp2NonPositive(mOld - mNew)
            corr.replace(with: 1, where: mNew .== mOld)
            sum *= corr
            for r in 0..<oRows { st8(o + r * cols + g, ld8(o + r * cols + g) * corr) }
        }
        for r in 0..<rows {
            var e = vexp2NonPositive(ld8(s + r * cols + g) - mNew)
            if let firstMasked { e.replace(with: 0, where: SIMD8<Int32>(repeating: Int32(r)) .> firstMasked) }
            st8(s + r * cols + g, e)
            sum += e
        }
        st8(runMax + g, mNew)
        st8(runSum + g, sum)
        g += 8
    }
}
