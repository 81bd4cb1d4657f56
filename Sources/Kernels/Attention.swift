import Foundation
import KernelsAVX512

/// Multi-head scaled dot-product attention: out = softmax(scale · Q·Kᵀ [+ causal mask]) · V.
/// Tokens are rows; heads are interleaved in a row as PyTorch's `view(b, s, heads, d)` lays them:
///   q row i of batch b starts at q + (b * queryLength + i) * qRowStride, head h at + h * headDim.
///   k, v likewise with keyLength rows and their own strides; out with outRowStride.
/// `causal`: query i attends keys 0...i only (CLIP text encoder).
/// Never materialises more than one block of scores per worker.
///
/// Flash-style: for each (batch, head, block of 48 queries) the keys are visited in blocks of
/// 256. S = Q·Kᵀ and O += P·V both run on the GEMM micro-kernels (Q read in place, the scores
/// stored scaled by scale·log2 e; K and V packed once per (batch, head) per worker), with an online
/// softmax in between (running row max and sum, O rescaled when the max grows; exponentials via
/// `vexp2NonPositive`, ≈ 1 ulp). Memory per worker: O(keyLength · headDim) for the packed K and V plus
/// O(48 · 256) for the score block.
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

let attnBlockQ = 192    // query rows per work item (4 chunks)
let attnChunkQ = 48     // query rows per score block: 8 micro-panels of 6
let attnBlockK = 256    // keys per block (multiple of 16)

struct AttentionGeometry {
    let qRowStride: Int, kRowStride: Int, vRowStride: Int, outRowStride: Int
    let heads: Int, queryLength: Int, keyLength: Int, headDim: Int
    let qScale: Float
    let causal: Bool
}

/// Processes work items (batch·heads·queryBlocks, in that nesting) on one thread.
/// A query block holds up to `attnBlockQ` rows, handled in chunks of `attnChunkQ`: the key loop
/// runs outside the chunk loop so each key block (packed K and V, ≈ 90 KB at d = 40) is reused by
/// every chunk from L2 instead of streaming the whole sequence's K and V from L3 per chunk.
func attentionWorker(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                     out: UnsafeMutablePointer<Float>, geo g: AttentionGeometry, items: Range<Int>, qBlocks: Int) {
    let d = g.headDim
    let dPad = (d + gemmNR - 1) / gemmNR * gemmNR
    let bq = attnBlockQ, cq = attnChunkQ, bk = attnBlockK
    let L = g.keyLength
    let lPad = (L + gemmNR - 1) / gemmNR * gemmNR
    let kBlocks = (L + bk - 1) / bk
    // Head dims 16·n + 8 (SD's 40) take their first 24 columns with the 4×24 kernel, which is
    // not load-bound like the 6×8 tail kernel.
    // On an AVX-512 CPU every product runs on the 16-wide tiles instead (panels of 16, in pairs).
    let wide512 = gemmUsesAVX512
    let wide24 = !wide512 && d % gemmNR == 8 && d >= 24
    // Scratch layout.
    let kpSize = lPad * d                  // K as B panels (k = d, n = keys)
    let vpSize = kBlocks * bk * dPad       // V as B panels per key block (k = keys, n = d)
    let qpSize = cq * d                    // a short last Q chunk, zero-padded rows
    let sSize = cq * bk                    // scores / probabilities of one chunk, ld = bk
    let oSize = (bq + 12) * dPad           // output accumulators, ld = dPad
    let total = kpSize + vpSize + qpSize + sSize + oSize + 2 * bq + 8 * 64
    withScratch(total) { buf in
        var cur = buf
        func carve(_ n: Int) -> UnsafeMutablePointer<Float> {
            let p = cur
            cur += (n + 15) / 16 * 16
            return p
        }
        let kp = carve(kpSize), vp = carve(vpSize), qp = carve(qpSize)
        let s = carve(sSize), o = carve(oSize), rowMax = carve(bq), rowSum = carve(bq)
        let scoreStore = TileStore(alpha: g.qScale)   // scale·log2 e applied as S is stored
        let accumulate = TileStore(alpha: 1, beta: 1)
        var packedHead = -1
        for item in items {
            let qb = item % qBlocks
            let bh = item / qBlocks
            let h = bh % g.heads, b = bh / g.heads
            if packedHead != bh {
                let kBase = k + b * L * g.kRowStride + h * d
                let vBase = v + b * L * g.vRowStride + h * d
                // Kᵀ as the B operand of S = Q·Kᵀ: panels of 16 keys × d.
                _ = DenseB(kBase, g.kRowStride, true).packB(0, d, 0, L, kp)
                // V as the B operand of O += P·V, one panel set per key block. With
                // wide24 the first panel is 24 columns wide (then 16-wide panels).
                for kb in 0..<kBlocks {
                    let k0 = kb * bk
                    let rows = min(bk, L - k0)
                    let src = vBase + k0 * g.vRowStride
                    let dst = vp + k0 * dPad
                    if wide24 {
                        for r in 0..<rows { (dst + r * 24).update(from: src + r * g.vRowStride, count: 24) }
                        _ = DenseB(src + 24, g.vRowStride, false).packB(0, rows, 0, d - 24, dst + 24 * rows)
                    } else {
                        _ = DenseB(src, g.vRowStride, false).packB(0, rows, 0, d, dst)
                    }
                }
                packedHead = bh
            }
            let q0 = qb * bq
            let nq = min(bq, g.queryLength - q0)
            let nqPad = (nq + gemmMR - 1) / gemmMR * gemmMR
            let qBase = q + (b * g.queryLength + q0) * g.qRowStride + h * d
            for i in 0..<nqPad { rowMax[i] = -.infinity; rowSum[i] = 0 }
            o.update(repeating: 0, count: nqPad * dPad)
            let keyEnd = g.causal ? min(L, q0 + nq) : L
            var k0 = 0
            while k0 < keyEnd {
                let nkBlock = min(bk, keyEnd - k0)
                let packedRows = min(bk, L - k0)   // V panels were cut for the whole key block
                var c0 = 0
                while c0 < nq {
                    let nc = min(cq, nq - c0)
                    let ncPad = (nc + gemmMR - 1) / gemmMR * gemmMR
                    // Keys this chunk may see in this block.
                    let nk = g.causal ? min(nkBlock, q0 + c0 + nc - k0) : nkBlock
                    if nk <= 0 { c0 += cq; continue }
                    let nkPad = (nk + gemmNR - 1) / gemmNR * gemmNR
                    // Q rows are read in place; a short last chunk is copied and zero-padded so
                    // every 6-row panel is readable.
                    var qA = qBase + c0 * g.qRowStride, qStride = g.qRowStride
                    if nc < ncPad {
                        for i in 0..<ncPad {
                            if i < nc { (qp + i * d).update(from: qA + i * g.qRowStride, count: d) } else { (qp + i * d).update(repeating: 0, count: d) }
                        }
                        qA = UnsafePointer(qp); qStride = d
                    }
                    // S = Q·Kᵀ over this key block (full tiles: K padding is zero).
                    var jr = 0
                    while jr < nkPad {
                        let bpan = kp + (k0 + jr) * d
                        let pair = wide512 && jr + 2 * gemmNR <= nkPad
                        var ir = 0
                        while ir < ncPad {
                            if pair && ir + 2 * gemmMR <= ncPad {
                                avx512Tile12x32(d, qA + ir * qStride, qA + (ir + gemmMR) * qStride, qStride, 1, bpan, bpan + gemmNR * d,
                                                s + ir * bk + jr, bk, accumulate: false, scale: g.qScale)
                                ir += 2 * gemmMR
                                continue
                            }
                            if pair {
                                avx512Tile6x32(d, qA + ir * qStride, qStride, 1, bpan, bpan + gemmNR * d,
                                               s + ir * bk + jr, bk, accumulate: false, scale: g.qScale)
                            } else if wide512 {
                                avx512Tile6x16(d, qA + ir * qStride, qStride, 1, bpan, s + ir * bk + jr, bk,
                                               accumulate: false, scale: g.qScale)
                            } else {
                                kernel6x16(d, qA + ir * qStride, qStride, 1, bpan, s + ir * bk + jr, bk, scoreStore)
                            }
                            ir += gemmMR
                        }
                        jr += pair ? 2 * gemmNR : gemmNR
                    }
                    // Online softmax; P overwrites S in place. Rows up to a multiple of 12 are
                    // written (zeros past nc) so both 6- and 4-row kernels read defined values.
                    let rowsPad = (nc + 11) / 12 * 12
                    for i in 0..<rowsPad {
                        let row = s + i * bk
                        let qi = c0 + i                       // row within the block
                        var limit = nk
                        if i >= nc {
                            limit = 0
                        } else if g.causal {
                            limit = min(nk, q0 + qi - k0 + 1)
                        }
                        if limit <= 0 {
                            row.update(repeating: 0, count: nk)
                            continue
                        }
                        // Masked and padding columns become −inf so the row is processed in
                        // whole vectors (their exponentials, ≤ 2^-126, are then zeroed for P·V).
                        if limit < nkPad { (row + limit).update(repeating: -.infinity, count: nkPad - limit) }
                        let mBlock = wide512 ? avx512MaxOf(row, nkPad) : maxOf(row, nkPad)
                        let mOld = rowMax[qi]
                        let mNew = max(mOld, mBlock)
                        let sum = wide512 ? avx512Exp2Shifted(row, nkPad, mNew) : exp2Shifted(row, nkPad, mNew)
                        if limit < nk { (row + limit).update(repeating: 0, count: nk - limit) }
                        if mOld != mNew {
                            let corr = mOld == -.infinity ? 0 : vexp2NonPositive(F8(repeating: mOld - mNew))[0]
                            if corr != 1 {
                                rowSum[qi] *= corr
                                scaleRow(o + qi * dPad, dPad, corr)
                            }
                            rowMax[qi] = mNew
                        }
                        rowSum[qi] += sum
                    }
                    // O += P · V_block (P read in place: row stride bk).
                    let vpan = vp + k0 * dPad
                    let oc = o + c0 * dPad
                    jr = 0
                    if wide24 {
                        var ir = 0
                        while ir < nc {
                            kernel4x24(nk, s + ir * bk, bk, 1, vpan, oc + ir * dPad, dPad, accumulate)
                            ir += 4
                        }
                        jr = 24
                    }
                    while wide512 && jr < d {
                        // Whole 16-column panels: o's row stride dPad covers the zero padding.
                        let bpan = vpan + jr * packedRows
                        let pair = jr + 2 * gemmNR <= dPad
                        var ir = 0
                        while ir < ncPad {
                            if pair && ir + 2 * gemmMR <= ncPad {
                                avx512Tile12x32(nk, s + ir * bk, s + (ir + gemmMR) * bk, bk, 1, bpan, bpan + gemmNR * packedRows,
                                                oc + ir * dPad + jr, dPad, accumulate: true)
                                ir += 2 * gemmMR
                                continue
                            }
                            if pair {
                                avx512Tile6x32(nk, s + ir * bk, bk, 1, bpan, bpan + gemmNR * packedRows,
                                               oc + ir * dPad + jr, dPad, accumulate: true)
                            } else {
                                avx512Tile6x16(nk, s + ir * bk, bk, 1, bpan, oc + ir * dPad + jr, dPad, accumulate: true)
                            }
                            ir += gemmMR
                        }
                        jr += pair ? 2 * gemmNR : gemmNR
                    }
                    while jr < d {
                        let bpan = vpan + jr * packedRows
                        let nr = min(gemmNR, d - jr)
                        var ir = 0
                        while ir < ncPad {
                            if nr <= 8 {
                                kernel6x8(nk, s + ir * bk, bk, 1, bpan, oc + ir * dPad + jr, dPad, accumulate)
                            } else {
                                kernel6x16(nk, s + ir * bk, bk, 1, bpan, oc + ir * dPad + jr, dPad, accumulate)
                            }
                            ir += gemmMR
                        }
                        jr += gemmNR
                    }
                    c0 += cq
                }
                k0 += nkBlock
            }
            // out = O / rowSum.
            let outBase = out + (b * g.queryLength + q0) * g.outRowStride + h * d
            for i in 0..<nq {
                let inv: Float = rowSum[i] > 0 ? 1 / rowSum[i] : 0
                let orow = o + i * dPad
                let dst = outBase + i * g.outRowStride
                var j = 0
                while j + 8 <= d { st8(dst + j, ld8(orow + j) * inv); j += 8 }
                while j < d { dst[j] = orow[j] * inv; j += 1 }
            }
        }
    }
}

// The row helpers are kept out of line: inlined into the large worker, LLVM splits their
// 8-wide vector code into 4-wide halves.
@inline(never)
func maxOf(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    var m0 = F8(repeating: -.infinity), m1 = m0
    var j = 0
    while j + 16 <= n {
        m0 = max8(m0, ld8(x + j)); m1 = max8(m1, ld8(x + j + 8))
        j += 16
    }
    if j + 8 <= n { m0 = max8(m0, ld8(x + j)); j += 8 }
    let v = max8(m0, m1)
    // Horizontal max by hand: the stdlib's `max()` on SIMD8 is an out-of-line call.
    var m = max(max(max(v[0], v[1]), max(v[2], v[3])), max(max(v[4], v[5]), max(v[6], v[7])))
    while j < n { m = max(m, x[j]); j += 1 }
    return m
}

/// x[j] ← 2^(x[j] − m) for j < n; returns the sum.
@inline(never)
func exp2Shifted(_ x: UnsafeMutablePointer<Float>, _ n: Int, _ m: Float) -> Float {
    let mv = F8(repeating: m)
    var s0 = F8(), s1 = F8()
    var j = 0
    while j + 16 <= n {
        let e0 = vexp2NonPositive(ld8(x + j) - mv), e1 = vexp2NonPositive(ld8(x + j + 8) - mv)
        st8(x + j, e0); st8(x + j + 8, e1)
        s0 += e0; s1 += e1
        j += 16
    }
    if j + 8 <= n {
        let e0 = vexp2NonPositive(ld8(x + j) - mv)
        st8(x + j, e0); s0 += e0
        j += 8
    }
    if j < n {
        var t = F8(repeating: -.infinity)
        for l in 0..<(n - j) { t[l] = x[j + l] }
        var e = vexp2NonPositive(t - mv)
        for l in (n - j)..<8 { e[l] = 0 }
        for l in 0..<(n - j) { x[j + l] = e[l] }
        s1 += e
    }
    // Added up by hand in a fixed order, which the AVX-512 twin (avx512Exp2Shifted) repeats.
    let v = s0 + s1
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]))
}

@inline(never)
func scaleRow(_ x: UnsafeMutablePointer<Float>, _ n: Int, _ c: Float) {
    var j = 0
    while j + 8 <= n { st8(x + j, ld8(x + j) * c); j += 8 }
    while j < n { x[j] *= c; j += 1 }
}
