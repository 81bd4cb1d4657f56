import XCTest
@testable import Kernels

/// sgemm against a plain triple loop accumulated in Double.
/// Tolerance: |C − ref| ≤ 1e-5 · (|alpha|·Σ_p |op(A)[i,p]·op(B)[p,j]| + |beta·C0[i,j]| + |epilogue terms|),
/// i.e. relative to the magnitude of the sum (float accumulation of k terms).
final class GEMMTests: XCTestCase {
    struct Case {
        var m: Int, n: Int, k: Int
        var transA = false, transB = false
        var alpha: Float = 1, beta: Float = 0
        var padA = 0, padB = 0, padC = 0   // extra row stride beyond the minimum
    }

    /// Naive reference: returns (C, magnitude).
    static func reference(_ cs: Case, a: [Float], lda: Int, b: [Float], ldb: Int, c0: [Float], ldc: Int,
                          epilogue: (rowBias: [Float]?, colBias: [Float]?, act: Activation?, residual: [Float]?, ldr: Int)? = nil)
        -> (c: [Double], mag: [Double]) {
        var c = c0.map(Double.init)
        var mag = [Double](repeating: 0, count: c0.count)
        for i in 0..<cs.m {
            for j in 0..<cs.n {
                var s = 0.0, sa = 0.0
                for p in 0..<cs.k {
                    let av = Double(cs.transA ? a[p * lda + i] : a[i * lda + p])
                    let bv = Double(cs.transB ? b[j * ldb + p] : b[p * ldb + j])
                    s += av * bv
                    sa += abs(av * bv)
                }
                let idx = i * ldc + j
                var v = Double(cs.alpha) * s
                var m = abs(Double(cs.alpha)) * sa
                if cs.beta != 0 { v += Double(cs.beta) * Double(c0[idx]); m += abs(Double(cs.beta) * Double(c0[idx])) }
                if let e = epilogue {
                    if let rb = e.rowBias { v += Double(rb[i]); m += abs(Double(rb[i])) }
                    if let cb = e.colBias { v += Double(cb[j]); m += abs(Double(cb[j])) }
                    if let act = e.act { v = referenceActivation(v, act); m = max(m, abs(v)) }
                    if let r = e.residual { v += Double(r[i * e.ldr + j]); m += abs(Double(r[i * e.ldr + j])) }
                }
                c[idx] = v
                mag[idx] = m
            }
        }
        return (c, mag)
    }

    func run(_ cs: Case, threads: Int, seed: UInt64, file: StaticString = #filePath, line: UInt = #line) {
        run(cs, threadCounts: [threads], seed: seed, file: file, line: line)
    }

    /// Runs one case with each thread count on the same inputs (one reference computation).
    func run(_ cs: Case, threadCounts: [Int], seed: UInt64, file: StaticString = #filePath, line: UInt = #line) {
        var rng = TestRNG(seed)
        let lda = (cs.transA ? cs.m : cs.k) + cs.padA
        let ldb = (cs.transB ? cs.k : cs.n) + cs.padB
        let ldc = cs.n + cs.padC
        let a = rng.array(max(1, (cs.transA ? cs.k : cs.m) * lda))
        let b = rng.array(max(1, (cs.transB ? cs.n : cs.k) * ldb))
        var c = rng.array(max(1, cs.m * ldc))
        if cs.beta == 0 {
            // beta 0 must not read C: fill it with NaN (padding columns too).
            for i in 0..<c.count { c[i] = .nan }
        }
        let c0 = c
        let (ref, mag) = Self.reference(cs, a: a, lda: lda, b: b, ldb: ldb, c0: c0, ldc: ldc)
        for threads in threadCounts {
        c = c0
        withThreads(threads) {
            sgemm(transA: cs.transA, transB: cs.transB, m: cs.m, n: cs.n, k: cs.k, alpha: cs.alpha,
                  a: a, lda: lda, b: b, ldb: ldb, beta: cs.beta, c: &c, ldc: ldc)
        }
        var got: [Float] = [], want: [Double] = [], scale: [Double] = []
        for i in 0..<cs.m { for j in 0..<cs.n { got.append(c[i * ldc + j]); want.append(ref[i * ldc + j]); scale.append(mag[i * ldc + j]) } }
        assertClose(got, want, scale: scale, tol: 1e-5, "sgemm \(cs) threads \(threads)", file: file, line: line)
        // Padding columns of C are never written.
        for i in 0..<cs.m { for j in cs.n..<ldc {
            let same = c[i * ldc + j] == c0[i * ldc + j] || (c[i * ldc + j].isNaN && c0[i * ldc + j].isNaN)
            XCTAssertTrue(same, "sgemm wrote C padding at (\(i), \(j)) for \(cs)", file: file, line: line)
        } }
        }
    }

    /// Every size in the tail set against every other, cycling k, transposes and beta.
    func testTailShapesAllTransposes() {
        let sizes = [1, 3, 7, 15, 17, 33, 100]
        let ks = [1, 3, 7, 15, 17, 33, 100]
        var seed: UInt64 = 1
        for (mi, m) in sizes.enumerated() {
            for (ni, n) in sizes.enumerated() {
                let k = ks[(mi + 2 * ni) % ks.count]
                for t in 0..<4 {
                    let betas: [Float] = [0, 1, 0.5]
                    let cs = Case(m: m, n: n, k: k, transA: t & 1 != 0, transB: t & 2 != 0,
                                  alpha: t == 3 ? -1.5 : 1, beta: betas[(mi + ni + t) % 3])
                    run(cs, threads: 1, seed: seed)
                    seed += 1
                }
            }
        }
    }

    /// The AVX-512 6x32 tile (run when the CPU has AVX-512) and the AVX2 tiles both match the
    /// reference on shapes that reach the new tile: pairs of full 16-column panels beside a
    /// partial one, whole and partial 6-row panels, one k block (C written directly, beta 0 and 1)
    /// and several (the block buffer), and alpha/beta/epilogue cases that must fall back.
    func testAVX512AndAVX2TilesBothMatch() {
        let saved = gemmUsesAVX512
        defer { gemmUsesAVX512 = saved }
        var seed: UInt64 = 900
        for path in saved ? [true, false] : [false] {
            gemmUsesAVX512 = path
            for (m, n, k) in [(6, 32, 5), (13, 64, 40), (100, 80, 300), (37, 70, 1000), (12, 96, 17)] {
                for (alpha, beta) in [(Float(1), Float(0)), (1, 1), (-1.5, 0.5)] {
                    for t in [0, 2] {
                        run(Case(m: m, n: n, k: k, transA: false, transB: t != 0, alpha: alpha, beta: beta), threadCounts: [1, 2], seed: seed)
                        seed += 1
                    }
                }
            }
        }
    }

    /// On an AVX-512 CPU untransposed A is packed into 6-row panels for the fixed-stride 12x32
    /// tile; read in place it goes through the strided tile. Both sum each element's k terms in
    /// the same order, so the bits must agree (one and several k blocks, whole and partial panels,
    /// both thread counts). A packed tile that read a wrong row or step would break this.
    func testPackedAndInPlaceDenseAGiveTheSameBits() throws {
        guard gemmUsesAVX512 else { throw XCTSkip("no AVX-512 on this CPU") }
        let saved = gemmPacksDenseA
        defer { gemmPacksDenseA = saved }
        var rng = TestRNG(4242)
        for (m, n, k) in [(12, 32, 7), (24, 64, 37), (100, 96, 300), (37, 70, 1000)] {
            let a = rng.array(m * k), b = rng.array(k * n)
            for threads in [1, 2] {
                var results: [[Float]] = []
                for packs in [false, true] {
                    gemmPacksDenseA = packs
                    var c = [Float](repeating: .nan, count: m * n)
                    withThreads(threads) {
                        sgemm(transA: false, transB: false, m: m, n: n, k: k, a: a, lda: k, b: b, ldb: n, c: &c, ldc: n)
                    }
                    results.append(c)
                }
                XCTAssertEqual(results[0].map(\.bitPattern), results[1].map(\.bitPattern), "\(m)x\(n)x\(k), \(threads) threads")
            }
        }
    }

    /// Split along N, the column rectangles share one packing of A (`packWholeA`) instead of each
    /// packing its own. Every element still sums its k terms in the same order, so 1, 2 and 3
    /// threads must give the same bits as well as match the reference: a shared panel that was
    /// misplaced (wrong k block offset, wrong row panel, a short last panel not zero-padded)
    /// would break both. Shapes like a text encoder's: 154 rows (a short last panel), several
    /// k blocks, A plain and transposed, and a 4 KB row stride.
    func testColumnSplitSharesOnePackedA() {
        var seed: UInt64 = 470
        for (m, n, k, transA, padA) in [(154, 768, 600, false, 0), (154, 300, 77, true, 3), (25, 700, 1024, false, 0),
                                        (20, 400, 30, false, 1024 - 30)] {
            let cs = Case(m: m, n: n, k: k, transA: transA, padA: padA)
            run(cs, threadCounts: [1, 2, 3], seed: seed)
            assertSameBitsOnAnyThreadCount(cs, seed: seed)
            seed += 1
        }
    }

    /// 1, 2 and 3 threads give the same bits for `cs` (alpha 1, beta 0, padded A/B strides).
    func assertSameBitsOnAnyThreadCount(_ cs: Case, seed: UInt64, file: StaticString = #filePath, line: UInt = #line) {
        var rng = TestRNG(seed)
        let lda = (cs.transA ? cs.m : cs.k) + cs.padA, ldb = (cs.transB ? cs.k : cs.n) + cs.padB
        let a = rng.array((cs.transA ? cs.k : cs.m) * lda), b = rng.array((cs.transB ? cs.n : cs.k) * ldb)
        var results: [[UInt32]] = []
        for threads in [1, 2, 3] {
            var c = [Float](repeating: .nan, count: cs.m * cs.n)
            withThreads(threads) {
                sgemm(transA: cs.transA, transB: cs.transB, m: cs.m, n: cs.n, k: cs.k, a: a, lda: lda, b: b, ldb: ldb,
                      c: &c, ldc: cs.n)
            }
            results.append(c.map(\.bitPattern))
        }
        XCTAssertEqual(results[0], results[1], "\(cs): 1 vs 2 threads", file: file, line: line)
        XCTAssertEqual(results[0], results[2], "\(cs): 1 vs 3 threads", file: file, line: line)
    }

    /// A product split along M (m > n) with a B that is packed per call (strided, transposed, or
    /// an im2col) packs it once for all row rectangles (`SharedB`); every thread count must give
    /// the same bits and match the reference: short last panel, several k blocks, a 4 KB stride.
    func testRowSplitSharesOnePackedB() {
        var seed: UInt64 = 480
        for (m, n, k, transB, padB) in [(700, 48, 600, false, 0), (300, 154, 77, true, 3), (1000, 20, 1024, false, 0), (700, 530, 40, false, 0),
                                        (400, 40, 30, false, 1024 - 40)] {
            let cs = Case(m: m, n: n, k: k, transB: transB, padB: padB)
            run(cs, threadCounts: [1, 2, 3], seed: seed)
            assertSameBitsOnAnyThreadCount(cs, seed: seed)
            seed += 1
        }
    }

    func testStridedOperands() {
        var seed: UInt64 = 100
        for t in 0..<4 {
            for (m, n, k) in [(7, 17, 33), (33, 15, 100), (100, 33, 17)] {
                let cs = Case(m: m, n: n, k: k, transA: t & 1 != 0, transB: t & 2 != 0,
                              alpha: 0.75, beta: 0.5, padA: 5, padB: 3, padC: 7)
                run(cs, threads: 2, seed: seed)
                seed += 1
            }
        }
    }

    /// Row strides that are multiples of 4 KB take the packing path for A instead of reading in place.
    func testPowerOfTwoStrides() {
        run(Case(m: 13, n: 17, k: 20, alpha: 1, beta: 0, padA: 1024 - 20, padB: 0, padC: 1024 - 17), threads: 1, seed: 150)
        run(Case(m: 12, n: 40, k: 300, alpha: 2, beta: 0.5, padA: 1024 - 300, padB: 0, padC: 2048 - 40), threads: 2, seed: 151)
    }

    /// Several k, m and n cache blocks, both thread splits (n ≥ m splits columns, else rows).
    func testMultipleBlocksAndThreads() {
        let kc = gemmBlocking.kc, mc = gemmBlocking.mc, nc = gemmBlocking.nc
        let shapes = [(mc * 2 + 5, 20, kc * 2 + 3), (13, nc + 37, kc + 1), (70, 90, 2 * kc + 10)]
        var seed: UInt64 = 200
        for (si, (m, n, k)) in shapes.enumerated() {
            for t in [0, 3] {
                let cs = Case(m: m, n: n, k: k, transA: t & 1 != 0, transB: t & 2 != 0,
                              alpha: 1, beta: si == 1 ? 1 : 0, padA: 1, padB: 2, padC: 3)
                run(cs, threadCounts: [1, 2, 3], seed: seed)
                seed += 1
            }
        }
    }

    func testZeroK() {
        var c: [Float] = [1, 2, 3, 4, 5, 6]
        let a: [Float] = [0], b: [Float] = [0]
        sgemm(transA: false, transB: false, m: 2, n: 3, k: 0, a: a, lda: 1, b: b, ldb: 3, beta: 0.5, c: &c, ldc: 3)
        XCTAssertEqual(c, [0.5, 1, 1.5, 2, 2.5, 3])
        c = [.nan, .nan, .nan, .nan, .nan, .nan]
        sgemm(transA: false, transB: false, m: 2, n: 3, k: 0, a: a, lda: 1, b: b, ldb: 3, beta: 0, c: &c, ldc: 3)
        XCTAssertEqual(c, [0, 0, 0, 0, 0, 0])
    }

    func testEpilogue() {
        var seed: UInt64 = 300
        for (m, n, k) in [(7, 17, 5), (33, 40, 300), (100, 33, 17), (1, 1, 1)] {
            for variant in 0..<4 {
                var rng = TestRNG(seed); seed += 1
                let cs = Case(m: m, n: n, k: k, transA: false, transB: variant % 2 == 1, alpha: 1.25, beta: variant == 2 ? 0.5 : 0)
                let lda = k, ldb = cs.transB ? k : n, ldc = n + 2, ldr = n + 1
                let a = rng.array(m * lda), b = rng.array((cs.transB ? n : k) * ldb)
                var c = rng.array(m * ldc)
                if cs.beta == 0 { for i in 0..<c.count { c[i] = .nan } }
                let c0 = c
                let rowBias = rng.array(m), colBias = rng.array(n), residual = rng.array(m * ldr)
                let acts: [Activation?] = [nil, .silu, .gelu, .quickGelu]
                let act = acts[variant]
                let useRow = variant != 1, useCol = variant != 0, useRes = variant != 3
                rowBias.withUnsafeBufferPointer { rb in colBias.withUnsafeBufferPointer { cb in residual.withUnsafeBufferPointer { rr in
                    let e = GemmEpilogue(rowBias: useRow ? rb.baseAddress : nil, columnBias: useCol ? cb.baseAddress : nil,
                                         activation: act, residual: useRes ? rr.baseAddress : nil, residualStride: ldr)
                    withThreads(2) {
                        sgemm(transA: false, transB: cs.transB, m: m, n: n, k: k, alpha: cs.alpha, a: a, lda: lda,
                              b: b, ldb: ldb, beta: cs.beta, c: &c, ldc: ldc, epilogue: e)
                    }
                } } }
                let (ref, mag) = Self.reference(cs, a: a, lda: lda, b: b, ldb: ldb, c0: c0, ldc: ldc,
                                                epilogue: (useRow ? rowBias : nil, useCol ? colBias : nil, act, useRes ? residual : nil, ldr))
                var got: [Float] = [], want: [Double] = [], scale: [Double] = []
                for i in 0..<m { for j in 0..<n { got.append(c[i * ldc + j]); want.append(ref[i * ldc + j]); scale.append(mag[i * ldc + j]) } }
                assertClose(got, want, scale: scale, tol: 1e-5, "epilogue \(m)×\(n)×\(k) variant \(variant)")
            }
        }
    }

    func testPackedOperands() {
        var seed: UInt64 = 400
        for (m, n, k) in [(7, 17, 33), (100, 33, 300), (3, 530, 17), (50, 40, 1)] {
            for trans in [false, true] {
                for storage in [PackedMatrix.Storage.float32, .float16] {
                    var rng = TestRNG(seed); seed += 1
                    let x = rng.array(m * k)                       // activations, row-major [m, k]
                    let w = rng.array(n * k)                       // weight, [n, k] if trans else [k, n]
                    let bias = rng.array(n)
                    let wRounded = storage == .float16 ? w.map { Float(Float16($0)) } : w
                    let packedB = w.withUnsafeBufferPointer {
                        PackedMatrix(b: $0.baseAddress!, ldb: trans ? k : n, transposed: trans, k: k, n: n, storage: storage)
                    }
                    var c = [Float](repeating: .nan, count: m * n)
                    bias.withUnsafeBufferPointer { bp in
                        withThreads(2) {
                            sgemm(m: m, n: n, k: k, a: x, lda: k, b: packedB, c: &c, ldc: n,
                                  epilogue: GemmEpilogue(columnBias: bp.baseAddress))
                        }
                    }
                    let cs = Case(m: m, n: n, k: k, transA: false, transB: trans)
                    var (ref, mag) = Self.reference(cs, a: x, lda: k, b: wRounded, ldb: trans ? k : n,
                                                    c0: [Float](repeating: 0, count: m * n), ldc: n)
                    for i in 0..<m { for j in 0..<n { ref[i * n + j] += Double(bias[j]); mag[i * n + j] += abs(Double(bias[j])) } }
                    assertClose(c, ref, scale: mag, tol: 1e-5, "packed B \(m)×\(n)×\(k) trans \(trans) \(storage)")

                    // The same weight as a packed A operand: C' = W' · X' with W' [n, k].
                    let wa = trans ? w : transposed(w, rows: k, cols: n)     // [n, k] row-major
                    let waRounded = storage == .float16 ? wa.map { Float(Float16($0)) } : wa
                    let packedA = wa.withUnsafeBufferPointer {
                        PackedMatrix(a: $0.baseAddress!, lda: k, m: n, k: k, storage: storage)
                    }
                    let xt = transposed(x, rows: m, cols: k)               // [k, m]
                    var c2 = [Float](repeating: .nan, count: n * m)
                    withThreads(2) {
                        sgemm(m: n, n: m, k: k, a: packedA, b: xt, ldb: m, c: &c2, ldc: m)
                    }
                    let cs2 = Case(m: n, n: m, k: k)
                    let (ref2, mag2) = Self.reference(cs2, a: waRounded, lda: k, b: xt, ldb: m,
                                                      c0: [Float](repeating: 0, count: m * n), ldc: m)
                    assertClose(c2, ref2, scale: mag2, tol: 1e-5, "packed A \(n)×\(m)×\(k) \(storage)")
                }
            }
        }
    }

    func testPackedFromFloat16Source() {
        var rng = TestRNG(77)
        let (m, n, k) = (13, 21, 40)
        let x = rng.array(m * k)
        let w16 = rng.array(n * k).map { Float16($0) }
        let packed = w16.withUnsafeBufferPointer { PackedMatrix(b: $0.baseAddress!, ldb: k, transposed: true, k: k, n: n) }
        XCTAssertEqual(packed.storage, .float16)
        var c = [Float](repeating: 0, count: m * n)
        sgemm(m: m, n: n, k: k, a: x, lda: k, b: packed, c: &c, ldc: n)
        let (ref, mag) = Self.reference(Case(m: m, n: n, k: k, transB: true), a: x, lda: k, b: w16.map { Float($0) }, ldb: k,
                                        c0: [Float](repeating: 0, count: m * n), ldc: n)
        assertClose(c, ref, scale: mag, tol: 1e-5, "packed from Float16")
    }
}

func transposed(_ x: [Float], rows: Int, cols: Int) -> [Float] {
    var t = [Float](repeating: 0, count: x.count)
    for i in 0..<rows { for j in 0..<cols { t[j * rows + i] = x[i * cols + j] } }
    return t
}

/// Activations in Double, as PyTorch defines them.
func referenceActivation(_ x: Double, _ act: Activation) -> Double {
    switch act {
    case .silu: return x / (1 + exp(-x))
    case .gelu: return 0.5 * x * erfc(-x / 2.0.squareRoot())
    // 0.5·x·(1 + tanh y) written as x·σ(2y): the same value without cancellation for x ≪ 0.
    case .geluTanh: return x / (1 + exp(-2 * 0.7978845608028654 * (x + 0.044715 * x * x * x)))
    case .quickGelu: return x / (1 + exp(-1.702 * x))
    }
}
