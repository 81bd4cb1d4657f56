import XCTest
@testable import Kernels
import KernelsAVX512

/// attention against a naive softmax(QKᵀ·scale)·V in Double.
/// Tolerance: 2e-5 relative to Σ_j p_j·|v_j| per output element (the magnitude of the weighted sum).
final class AttentionTests: XCTestCase {
    func check(batch: Int, heads: Int, lq: Int, lk: Int, d: Int, causal: Bool = false, rowPad: Int = 0,
               threads: Int = 2, seed: UInt64, file: StaticString = #filePath, line: UInt = #line) {
        var rng = TestRNG(seed)
        let inner = heads * d
        let qs = inner + rowPad, ks = inner + 2 * rowPad, vs = inner + 3 * rowPad, os = inner + rowPad
        let q = rng.array(batch * lq * qs, scale: 2), k = rng.array(batch * lk * ks, scale: 2), v = rng.array(batch * lk * vs)
        var out = [Float](repeating: .nan, count: batch * lq * os)
        let scale = 1 / Float(d).squareRoot()
        withThreads(threads) {
            attention(q: q, qRowStride: qs, k: k, kRowStride: ks, v: v, vRowStride: vs, out: &out, outRowStride: os,
                      batch: batch, heads: heads, queryLength: lq, keyLength: lk, headDim: d, scale: scale, causal: causal)
        }
        var got: [Float] = [], want: [Double] = [], mag: [Double] = []
        for b in 0..<batch { for h in 0..<heads { for i in 0..<lq {
            let nk = causal ? min(lk, i + 1) : lk
            var s = [Double](repeating: 0, count: nk)
            for j in 0..<nk {
                var dot = 0.0
                for t in 0..<d { dot += Double(q[(b * lq + i) * qs + h * d + t]) * Double(k[(b * lk + j) * ks + h * d + t]) }
                s[j] = dot * Double(scale)
            }
            let mx = s.max()!
            let e = s.map { exp($0 - mx) }
            let sum = e.reduce(0, +)
            for t in 0..<d {
                var acc = 0.0, m = 0.0
                for j in 0..<nk {
                    let vv = Double(v[(b * lk + j) * vs + h * d + t])
                    acc += e[j] * vv; m += e[j] * abs(vv)
                }
                got.append(out[(b * lq + i) * os + h * d + t]); want.append(acc / sum); mag.append(m / sum)
            }
            // Row padding of the output is untouched.
            for t in inner..<os { XCTAssertTrue(out[(b * lq + i) * os + t].isNaN, "attention wrote output padding", file: file, line: line) }
        } } }
        assertClose(got, want, scale: mag, tol: 2e-5,
                    "attention b\(batch) h\(heads) lq\(lq) lk\(lk) d\(d) causal \(causal)", file: file, line: line)
    }

    func testSmallShapes() {
        check(batch: 1, heads: 1, lq: 1, lk: 1, d: 1, seed: 1)
        check(batch: 2, heads: 3, lq: 7, lk: 5, d: 3, seed: 2)
        check(batch: 1, heads: 2, lq: 17, lk: 33, d: 8, rowPad: 3, seed: 3)
        check(batch: 2, heads: 2, lq: 50, lk: 77, d: 40, threads: 1, seed: 4)
    }

    func testMultipleKeyAndQueryBlocks() {
        // 300 keys: two key blocks (240 + 60); 100 queries: one query block of 4 or 7 chunks.
        check(batch: 1, heads: 2, lq: 100, lk: 300, d: 40, seed: 5)
        check(batch: 2, heads: 1, lq: 60, lk: 520, d: 64, rowPad: 5, seed: 6)
        check(batch: 1, heads: 1, lq: 9, lk: 270, d: 17, seed: 7)
    }

    func testCausal() {
        check(batch: 2, heads: 3, lq: 77, lk: 77, d: 16, causal: true, seed: 8)
        check(batch: 1, heads: 1, lq: 300, lk: 300, d: 8, causal: true, seed: 9)
        check(batch: 1, heads: 2, lq: 5, lk: 5, d: 64, causal: true, threads: 1, seed: 10)
    }

    func testHeadDimsAroundPanelHeights() {
        // Oᵀ has d rows in 6-row panels, paired on AVX-512: whole panels (6, 12, 24), a padded
        // last panel (8, 20, 40, 56), an odd panel count (7: 2 panels; 20: 4; 56: 10 -> 9 + 1).
        for (i, d) in [6, 7, 8, 12, 20, 24, 56].enumerated() {
            check(batch: 1, heads: 2, lq: 31, lk: 45, d: d, seed: 20 + UInt64(i))
        }
    }

    func testWideHeads() {
        check(batch: 1, heads: 1, lq: 13, lk: 20, d: 160, seed: 11)
        check(batch: 1, heads: 1, lq: 7, lk: 9, d: 512, seed: 12)
    }

    func testManyQueryBlocksAndKeyBlocksWithCausalMask() {
        // 500 queries: 3 query blocks (192 + 192 + 116); causal over 3 key blocks (240 + 240 + 20),
        // so chunks skip blocks wholly after them and mask inside the diagonal blocks.
        check(batch: 1, heads: 2, lq: 500, lk: 500, d: 40, causal: true, seed: 14)
    }

    /// On an AVX-512 CPU the products run on the 16-wide tiles; both paths must meet the reference,
    /// and (each k sum being one in-order FMA chain in either) give the same bits.
    func testAVX512AndAVX2PathsBothMatch() {
        let saved = gemmUsesAVX512
        defer { gemmUsesAVX512 = saved }
        for path in saved ? [true, false] : [false] {
            gemmUsesAVX512 = path
            check(batch: 2, heads: 2, lq: 70, lk: 300, d: 40, seed: 30)     // 7 panels of Vᵀ: 3 pairs and one
            check(batch: 1, heads: 1, lq: 13, lk: 50, d: 80, seed: 31)      // 14 panels
            check(batch: 1, heads: 2, lq: 20, lk: 33, d: 64, causal: true, seed: 32)
            check(batch: 1, heads: 1, lq: 9, lk: 17, d: 8, seed: 33)
        }
        guard saved else { return }
        var rng = TestRNG(34)
        // Chunks of 32 queries (AVX-512) and of 16 (AVX2) must give each query the same bits: 61
        // queries and 77 (causal, CLIP's shape) leave partly padded last chunks in both.
        for (lq, lk, d, causal) in [(61, 290, 40, false), (77, 77, 64, true)] {
            let q = rng.array(lq * d, scale: 2), k = rng.array(lk * d, scale: 2), v = rng.array(lk * d)
            var outs: [[Float]] = []
            for path in [true, false] {
                gemmUsesAVX512 = path
                var out = [Float](repeating: 0, count: lq * d)
                attention(q: q, qRowStride: d, k: k, kRowStride: d, v: v, vRowStride: d, out: &out, outRowStride: d,
                          batch: 1, heads: 1, queryLength: lq, keyLength: lk, headDim: d, scale: 0.158, causal: causal)
                outs.append(out)
            }
            XCTAssertEqual(outs[0].map(\.bitPattern), outs[1].map(\.bitPattern), "AVX-512 and AVX2 attention differ, lq \(lq)")
        }
    }

    /// The column softmax's AVX-512 twin gives the same bits as the 8-lane one: probabilities,
    /// running maxima and sums, and the rescaled Oᵀ, over blocks that raise some columns' maxima
    /// and not others, with and without a causal mask; probabilities (≤ 1, within 2e-7: the float
    /// difference s − max rounds) and sums also meet a Double reference.
    func testAVX512SoftmaxColumnsMatch() throws {
        guard gemmUsesAVX512 else { throw XCTSkip("no AVX-512 on this CPU") }
        var rng = TestRNG(35)
        let cols = 32, oRows = 12
        for (rows, diagonal) in [(1, nil), (7, nil), (240, nil), (60, 3), (60, -20)] as [(Int, Int?)] {
            var maxA = (0..<cols).map { c in c % 3 == 0 ? -Float.infinity : rng.next() * 10 }
            var sumA = (0..<cols).map { c in c % 3 == 0 ? 0 : 1 + rng.next() }
            var oA = (0..<(oRows * cols)).map { _ in rng.next() }
            let scores = (0..<(rows * cols)).map { _ in rng.next() * 30 - 15 }
            var sA = scores
            var maxB = maxA, sumB = sumA, oB = oA, sB = scores
            let oldMax = maxA, oldSum = sumA
            softmaxColumns(&sA, rows: rows, cols: cols, runMax: &maxA, runSum: &sumA, o: &oA, oRows: oRows, causalDiagonal: diagonal)
            avx512SoftmaxColumns(&sB, rows: rows, cols: cols, runMax: &maxB, runSum: &sumB, o: &oB, oRows: oRows, causalDiagonal: diagonal)
            let label = "rows \(rows) diagonal \(String(describing: diagonal))"
            XCTAssertEqual(sA.map(\.bitPattern), sB.map(\.bitPattern), "probabilities, " + label)
            XCTAssertEqual(maxA.map(\.bitPattern), maxB.map(\.bitPattern), "maxima, " + label)
            XCTAssertEqual(sumA.map(\.bitPattern), sumB.map(\.bitPattern), "sums, " + label)
            XCTAssertEqual(oA.map(\.bitPattern), oB.map(\.bitPattern), "rescaled O, " + label)
            for c in 0..<cols {
                var m = Double(oldMax[c]), e = 0.0
                for r in 0..<rows where diagonal.map({ r - c <= $0 }) ?? true { m = max(m, Double(scores[r * cols + c]) ) }
                for r in 0..<rows {
                    let visible = diagonal.map { r - c <= $0 } ?? true
                    let p = visible ? pow(2, Double(scores[r * cols + c]) - m) : 0
                    XCTAssertEqual(Double(sA[r * cols + c]), p, accuracy: 2e-7, "p(\(r), \(c)), " + label)
                    e += p
                }
                let want = Double(oldSum[c]) * (oldMax[c] == -.infinity ? 0 : pow(2, Double(oldMax[c]) - m)) + e
                XCTAssertEqual(Double(maxA[c]), m, "max of column \(c), " + label)
                XCTAssertEqual(Double(sumA[c]), want, accuracy: 1e-5 * want, "sum of column \(c), " + label)
            }
        }
    }

    func testLargeScoresStayFinite() {
        // Scores up to ~±400: the running max must keep every exponential in range.
        var q = [Float](repeating: 0, count: 4 * 8), k = q, v = q
        var rng = TestRNG(13)
        for i in 0..<q.count { q[i] = rng.next() * 20; k[i] = rng.next() * 20; v[i] = rng.next() }
        var out = [Float](repeating: 0, count: 4 * 8)
        attention(q: q, qRowStride: 8, k: k, kRowStride: 8, v: v, vRowStride: 8, out: &out, outRowStride: 8,
                  batch: 1, heads: 1, queryLength: 4, keyLength: 4, headDim: 8, scale: 1)
        XCTAssertTrue(out.allSatisfy { $0.isFinite })
    }
}
