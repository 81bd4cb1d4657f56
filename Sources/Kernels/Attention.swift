import Foundation

/// Multi-head scaled dot-product attention: out = softmax(scale · Q·Kᵀ [+ causal mask]) · V.
/// Tokens are rows; heads are interleaved in a row as PyTorch's `view(b, s, heads, d)` lays them:
///   q row i of batch b starts at q + (b * queryLength + i) * qRowStride, head h at + h * headDim.
///   k, v likewise with keyLength rows and their own strides; out with outRowStride.
/// `causal`: query i attends keys 0...i only (CLIP text encoder).
/// Never materialises more than one block of scores per worker.
///
/// Flash-style: for each (batch, head, block of 48 queries) the keys are visited in blocks of
/// 256. S = Q·Kᵀ and O += P·V both run on the GEMM micro-kernels (Q pre-scaled by
/// scale·log2 e and packed; K and V packed once per (batch, head) per worker), with an online
/// softmax in between (running row max and sum, O rescaled when the max grows; exponentials via
/// `vexp2`, ≈ 2 ulp). Memory per worker: O(keyLength · headDim) for the packed K and V plus
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
        parallelFor(items, minChunk: max(1, items / workers)) { range in run(range) }
    }
}

let attnBlockQ = 48     // 8 micro-panels of 6 query rows
let attnBlockK = 256    // keys per block (multiple of 16)

struct AttentionGeometry {
    let qRowStride: Int, kRowStride: Int, vRowStride: Int, outRowStride: Int
    let heads: Int, queryLength: Int, keyLength: Int, headDim: Int
    let qScale: Float
    let causal: Bool
}

/// Processes work items (batch·heads·queryBlocks, in that nesting) on one thread.
func attentionWorker(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                     out: UnsafeMutablePointer<Float>, geo g: AttentionGeometry, items: Range<Int>, qBlocks: Int) {
    let d = g.headDim
    let dPad = (d + gemmNR - 1) / gemmNR * gemmNR
    let bq = attnBlockQ, bk = attnBlockK
    let L = g.keyLength
    let lPad = (L + gemmNR - 1) / gemmNR * gemmNR
    let kBlocks = (L + bk - 1) / bk
    // Scratch layout.
    let kpSize = lPad * d                  // K as B panels (k = d, n = keys)
    let vpSize = kBlocks * bk * dPad       // V as B panels per key block (k = keys, n = d)
    let qpSize = bq * d                    // Q block as A panels
    let sSize = bq * bk                    // scores / probabilities, row-major, ld = bk
    let oSize = bq * dPad                  // output accumulators, ld = dPad
    let total = kpSize + vpSize + qpSize + sSize + oSize + 2 * bq + gemmMR * gemmNR + 8 * 64
    withScratch(total) { buf in
        var cur = buf
        func carve(_ n: Int) -> UnsafeMutablePointer<Float> {
            let p = cur
            cur += (n + 15) / 16 * 16
            return p
        }
        let kp = carve(kpSize), vp = carve(vpSize), qp = carve(qpSize)
        let s = carve(sSize), o = carve(oSize), rowMax = carve(bq), rowSum = carve(bq)
        _ = carve(gemmMR * gemmNR)
        var packedHead = -1
        for item in items {
            let qb = item % qBlocks
            let bh = item / qBlocks
            let h = bh % g.heads, b = bh / g.heads
            let kBase = k + b * L * g.kRowStride + h * d
            let vBase = v + b * L * g.vRowStride + h * d
            if packedHead != bh {
                // Kᵀ as the B operand of S = Q·Kᵀ: panels of 16 keys × d.
                _ = DenseB(kBase, g.kRowStride, true).packB(0, d, 0, L, kp)
                // V as the B operand of O += P·V, one panel set per key block.
                for kb in 0..<kBlocks {
                    let k0 = kb * bk
                    _ = DenseB(vBase + k0 * g.vRowStride, g.vRowStride, false).packB(0, min(bk, L - k0), 0, d, vp + k0 * dPad)
                }
                packedHead = bh
            }
            let q0 = qb * bq
            let nq = min(bq, g.queryLength - q0)
            let nqPad = (nq + gemmMR - 1) / gemmMR * gemmMR
            // Q block, scaled by scale·log2 e, as A panels (zero rows past nq).
            let qBase = q + (b * g.queryLength + q0) * g.qRowStride + h * d
            packScaledRows(qBase, g.qRowStride, nq, d, g.qScale, qp)
            for i in 0..<nqPad { rowMax[i] = -.infinity; rowSum[i] = 0 }
            o.update(repeating: 0, count: nqPad * dPad)
            // Keys this block may see.
            let keyEnd = g.causal ? min(L, q0 + nq) : L
            var k0 = 0
            while k0 < keyEnd {
                let nk = min(bk, keyEnd - k0)
                let nkPad = (nk + gemmNR - 1) / gemmNR * gemmNR
                // S = Qs · Kᵀ over this key block (full tiles: padding is zero).
                var jr = 0
                while jr < nkPad {
                    let bpan = kp + (k0 + jr) * d
                    var ir = 0
                    while ir < nqPad {
                        kernel6x16(d, qp + ir * d, 1, gemmMR, bpan, s + ir * bk + jr, bk, TileStore())
                        ir += gemmMR
                    }
                    jr += gemmNR
                }
                // Online softmax; P overwrites S in place.
                for i in 0..<nqPad {
                    let row = s + i * bk
                    var limit = nk
                    if i >= nq {
                        limit = 0
                    } else if g.causal {
                        limit = min(nk, q0 + i - k0 + 1)
                    }
                    if limit <= 0 {
                        row.update(repeating: 0, count: nk)
                        continue
                    }
                    let mBlock = maxOf(row, limit)
                    let mOld = rowMax[i]
                    let mNew = max(mOld, mBlock)
                    let sum = exp2Shifted(row, limit, mNew)
                    if limit < nk { (row + limit).update(repeating: 0, count: nk - limit) }
                    if mOld != mNew {
                        let corr = mOld == -.infinity ? 0 : vexp2(F8(repeating: mOld - mNew))[0]
                        if corr != 1 {
                            rowSum[i] *= corr
                            scaleRow(o + i * dPad, dPad, corr)
                        }
                        rowMax[i] = mNew
                    }
                    rowSum[i] += sum
                }
                // O += P · V_block (P read in place: row stride bk).
                let vpan = vp + k0 * dPad
                let packedRows = min(bk, L - k0)   // V panels were cut for the whole key block
                let acc = TileStore(alpha: 1, beta: 1)
                jr = 0
                while jr < dPad {
                    let bpan = vpan + jr * packedRows
                    let nr = min(gemmNR, d - jr)
                    var ir = 0
                    while ir < nqPad {
                        if nr <= 8 {
                            kernel6x8(nk, s + ir * bk, bk, 1, bpan, o + ir * dPad + jr, dPad, acc)
                        } else {
                            kernel6x16(nk, s + ir * bk, bk, 1, bpan, o + ir * dPad + jr, dPad, acc)
                        }
                        ir += gemmMR
                    }
                    jr += gemmNR
                }
                k0 += nk
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

/// Packs n rows (stride ld, length d) times `scale` into A panels of 6 rows (zero-padded).
@inline(__always)
func packScaledRows(_ src: UnsafePointer<Float>, _ ld: Int, _ n: Int, _ d: Int, _ scale: Float,
                    _ dst: UnsafeMutablePointer<Float>) {
    var q = 0
    while q < n {
        let mr = min(gemmMR, n - q)
        let panel = dst + q * d
        for i in 0..<gemmMR {
            if i < mr {
                let r = src + (q + i) * ld
                for p in 0..<d { panel[p * gemmMR + i] = r[p] * scale }
            } else {
                for p in 0..<d { panel[p * gemmMR + i] = 0 }
            }
        }
        q += gemmMR
    }
}

@inline(__always)
func maxOf(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    var m0 = F8(repeating: -.infinity), m1 = m0
    var j = 0
    while j + 16 <= n {
        m0 = pointwiseMax(m0, ld8(x + j)); m1 = pointwiseMax(m1, ld8(x + j + 8))
        j += 16
    }
    if j + 8 <= n { m0 = pointwiseMax(m0, ld8(x + j)); j += 8 }
    var m = pointwiseMax(m0, m1).max()
    while j < n { m = max(m, x[j]); j += 1 }
    return m
}

/// x[j] ← 2^(x[j] − m) for j < n; returns the sum.
@inline(__always)
func exp2Shifted(_ x: UnsafeMutablePointer<Float>, _ n: Int, _ m: Float) -> Float {
    let mv = F8(repeating: m)
    var s0 = F8(), s1 = F8()
    var j = 0
    while j + 16 <= n {
        let e0 = vexp2(ld8(x + j) - mv), e1 = vexp2(ld8(x + j + 8) - mv)
        st8(x + j, e0); st8(x + j + 8, e1)
        s0 += e0; s1 += e1
        j += 16
    }
    if j + 8 <= n {
        let e0 = vexp2(ld8(x + j) - mv)
        st8(x + j, e0); s0 += e0
        j += 8
    }
    if j < n {
        var t = F8(repeating: -.infinity)
        for l in 0..<(n - j) { t[l] = x[j + l] }
        var e = vexp2(t - mv)
        for l in (n - j)..<8 { e[l] = 0 }
        for l in 0..<(n - j) { x[j + l] = e[l] }
        s1 += e
    }
    return (s0 + s1).sum()
}

@inline(__always)
func scaleRow(_ x: UnsafeMutablePointer<Float>, _ n: Int, _ c: Float) {
    var j = 0
    while j + 8 <= n { st8(x + j, ld8(x + j) * c); j += 8 }
    while j < n { x[j] *= c; j += 1 }
}
