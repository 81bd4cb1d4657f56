import Foundation
import KernelsAVX512

/// Single-precision matrix multiply, row-major:
///   C[m×n] = alpha · op(A)[m×k] · op(B)[k×n] + beta · C
/// op(A) = A (A is m×k, row stride lda) or Aᵀ when `transA` (A stored k×m, row stride lda).
/// op(B) = B (B is k×n, row stride ldb) or Bᵀ when `transB` (B stored n×k, row stride ldb).
/// When beta == 0, C is written without being read (it may hold garbage or NaN).
/// Multi-threaded over `Threads.count` workers.
public func sgemm(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
    alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int,
    b: UnsafePointer<Float>, ldb: Int,
    beta: Float = 0,
    c: UnsafeMutablePointer<Float>, ldc: Int
) {
    gemmDispatch(DenseA(a, lda, transA), DenseB(b, ldb, transB), m: m, n: n, k: k,
                 alpha: alpha, beta: beta, c: c, ldc: ldc, epilogue: nil)
}

/// Work fused into the store of a GEMM's output tiles while they are still in L1, replacing
/// separate passes over C:
///   C[i, j] = act(alpha·(op(A)·op(B))[i, j] + beta·C[i, j] + rowBias[i] + columnBias[j])
///             + residual[i·residualStride + j]
/// Each part is optional. `rowBias` is a per-output-channel bias when C is [channels, pixels]
/// (convolution); `columnBias` is a Linear layer's bias when C is [tokens, features].
/// `residual` must not overlap C (for an in-place residual add pass the residual as C with beta 1).
public struct GemmEpilogue: @unchecked Sendable {
    public var rowBias: UnsafePointer<Float>?
    public var columnBias: UnsafePointer<Float>?
    public var activation: Activation?
    public var residual: UnsafePointer<Float>?
    public var residualStride: Int

    public init(rowBias: UnsafePointer<Float>? = nil, columnBias: UnsafePointer<Float>? = nil,
                activation: Activation? = nil,
                residual: UnsafePointer<Float>? = nil, residualStride: Int = 0) {
        self.rowBias = rowBias
        self.columnBias = columnBias
        self.activation = activation
        self.residual = residual
        self.residualStride = residualStride
    }
}

/// `sgemm` with a fused epilogue (bias, activation, residual); see `GemmEpilogue`.
public func sgemm(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
    alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int,
    b: UnsafePointer<Float>, ldb: Int,
    beta: Float = 0,
    c: UnsafeMutablePointer<Float>, ldc: Int,
    epilogue: GemmEpilogue
) {
    gemmDispatch(DenseA(a, lda, transA), DenseB(b, ldb, transB), m: m, n: n, k: k,
                 alpha: alpha, beta: beta, c: c, ldc: ldc, epilogue: epilogue)
}

// MARK: - Blocking

/// Cache blocking. KC·NR·4 = 16 KB keeps one B micro-panel in the 32 KB L1 next to the streaming A
/// micro-panels; the packed A block (MC·KC·4 ≈ 100 KB) and the C block (MC·NC·4 ≈ 200 KB) share
/// the 512 KB L2; the packed B column block (k·NC floats) lives in L3. Overridable for tuning with DARKROOM_GEMM_MC / _KC / _NC.
@usableFromInline
struct GemmBlocking: Sendable {
    var mc: Int
    var kc: Int
    var nc: Int

    /// Requested sizes made usable: MC and NC whole panels, KC at least 8.
    init(requestedMC mc: Int, kc: Int, nc: Int) {
        self.mc = max(gemmMR, mc / gemmMR * gemmMR)
        self.kc = max(8, kc)
        self.nc = max(gemmNR, nc / gemmNR * gemmNR)
    }

    static func fromEnvironment() -> GemmBlocking {
        func env(_ name: String, _ def: Int) -> Int {
            if let s = ProcessInfo.processInfo.environment[name], let v = Int(s), v > 0 { return v }
            return def
        }
        return GemmBlocking(requestedMC: env("DARKROOM_GEMM_MC", 96), kc: env("DARKROOM_GEMM_KC", 256),
                            nc: env("DARKROOM_GEMM_NC", 512))
    }
}

nonisolated(unsafe) var gemmBlocking = GemmBlocking.fromEnvironment()

/// The cache blocking in use (rows, k and columns per block). Settable for tuning benchmarks
/// (KernelBench `blocking`), between products only: weights packed before a change keep the k
/// blocks they were cut with, and the packed-operand products refuse them afterwards.
public var gemmCacheBlocking: (mc: Int, kc: Int, nc: Int) {
    get { (gemmBlocking.mc, gemmBlocking.kc, gemmBlocking.nc) }
    set { gemmBlocking = GemmBlocking(requestedMC: newValue.mc, kc: newValue.kc, nc: newValue.nc) }
}

/// The k-block size: k split into equal blocks of at most KC (k = 320 → 2 × 160, not 256 + 64).
@inline(__always)
func kBlockSize(_ k: Int) -> Int {
    let kc = gemmBlocking.kc
    let blocks = (k + kc - 1) / kc
    return (k + blocks - 1) / blocks
}

/// Splits `len` into equal blocks of at most `maxBlock`, each a multiple of `unit`.
@inline(__always)
func balancedBlock(_ len: Int, _ maxBlock: Int, _ unit: Int) -> Int {
    let blocks = max(1, (len + maxBlock - 1) / maxBlock)
    let per = (len + blocks - 1) / blocks
    return (per + unit - 1) / unit * unit
}

// MARK: - Driver

/// Splits C into rectangles (along N when n ≥ m, else along M, in whole tile pairs), a few per
/// worker, and runs an independent blocked GEMM on each. Each rectangle packs its own operand
/// blocks, so there is no synchronisation inside the product; the duplicated packing of the
/// shared operand costs O(1/len) of the arithmetic.
@usableFromInline
func gemmDispatch<PA: GemmPackA, PB: GemmPackB>(
    _ pa: PA, _ pb: PB, m: Int, n: Int, k: Int, alpha: Float, beta: Float,
    c: UnsafeMutablePointer<Float>, ldc: Int, epilogue: GemmEpilogue?
) {
    guard m > 0, n > 0 else { return }
    if k == 0 {
        gemmScaleOnly(m: m, n: n, beta: beta, c: c, ldc: ldc, epilogue: epilogue)
        return
    }
    let mTiles = (m + gemmMR - 1) / gemmMR
    let nTiles = (n + gemmNR - 1) / gemmNR
    let splitN = n >= m
    let macs = Double(m) * Double(n) * Double(k)
    // Below ~1M multiply-adds per worker the dispatch overhead (tens of µs) outweighs the split.
    var workers = min(Threads.count, max(1, Int(macs / Double(1 << 20))))
    workers = min(workers, splitN ? nTiles : mTiles)
    if workers <= 1 {
        gemmWorker(pa, pb, rows: 0..<m, cols: 0..<n, k: k, alpha: alpha, beta: beta, c: c, ldc: ldc, epilogue: epilogue)
        return
    }
    // Several rectangles per worker, claimed as workers free up (see `parallelChunks`), in whole
    // tile pairs (12 rows or 32 columns) so the AVX-512 12x32 tile covers them.
    let unitM = 2 * gemmMR, unitN = 2 * gemmNR
    let units = splitN ? (n + unitN - 1) / unitN : (m + unitM - 1) / unitM
    let chunks = min(units, workers * 4)
    if splitN && chunks > 1 && pa.copiesA && m * k <= sharedAMaxFloats {
        // Column rectangles all need the whole of A: packed by each, a text encoder's 154 × 768
        // activations were copied eight times per product (15 % of its time). Pack it once.
        let mPad = mTiles * gemmMR
        withScratch(mPad * k + 64) { shared in
            packWholeA(pa, m: m, k: k, into: shared, workers: workers)
            gemmSplit(SharedA(base: UnsafePointer(shared), mPad: mPad), pb, m: m, n: n, k: k, alpha: alpha, beta: beta,
                      c: c, ldc: ldc, epilogue: epilogue, splitN: true, units: units, unit: unitN, chunks: chunks, workers: workers)
        }
        return
    }
    if !splitN && chunks > 1 && pb.copiesB && n * k <= sharedBMaxFloats {
        // Row rectangles all need the whole of B: an im2col B of a small feature map (8×8 at
        // 1280 channels: 11520 × 128, gathered value by value) was built once per rectangle.
        let nPad = nTiles * gemmNR
        withScratch(nPad * k + 64) { shared in
            packWholeB(pb, n: n, k: k, into: shared, workers: workers)
            gemmSplit(pa, SharedB(base: UnsafePointer(shared), nPad: nPad), m: m, n: n, k: k, alpha: alpha, beta: beta,
                      c: c, ldc: ldc, epilogue: epilogue, splitN: false, units: units, unit: unitM, chunks: chunks, workers: workers)
        }
        return
    }
    gemmSplit(pa, pb, m: m, n: n, k: k, alpha: alpha, beta: beta, c: c, ldc: ldc, epilogue: epilogue,
              splitN: splitN, units: units, unit: splitN ? unitN : unitM, chunks: chunks, workers: workers)
}

/// Largest A (in floats) packed once for all column rectangles: 16 MB.
let sharedAMaxFloats = 4 << 20
/// Largest B (in floats) packed once for all row rectangles: 16 MB.
let sharedBMaxFloats = 4 << 20

/// The rectangles of one product on the workers: `chunks` strips of whole `unit`s along N
/// (`splitN`) or M, claimed as workers free up.
@inline(__always)
func gemmSplit<PA: GemmPackA, PB: GemmPackB>(
    _ pa: PA, _ pb: PB, m: Int, n: Int, k: Int, alpha: Float, beta: Float,
    c: UnsafeMutablePointer<Float>, ldc: Int, epilogue: GemmEpilogue?,
    splitN: Bool, units: Int, unit: Int, chunks: Int, workers: Int
) {
    let box = UncheckedBox((pa, pb, c))
    parallelChunks(chunks, workers: workers) { w in
        let (pa, pb, c) = box.value
        var rows = 0..<m, cols = 0..<n
        if splitN {
            cols = min(n, units * w / chunks * unit)..<min(n, units * (w + 1) / chunks * unit)
        } else {
            rows = min(m, units * w / chunks * unit)..<min(m, units * (w + 1) / chunks * unit)
        }
        if rows.isEmpty || cols.isEmpty { return }
        gemmWorker(pa, pb, rows: rows, cols: cols, k: k, alpha: alpha, beta: beta, c: c, ldc: ldc, epilogue: epilogue)
    }
}

/// The blocked loop nest on one rectangle of C, in the order jc, ic, pc, jr, ir.
/// Unlike BLIS (jc, pc, ic) the k loop runs inside the row-block loop, so the mc × nc block of C
/// stays in L2 across all k blocks: without software prefetch (which Swift cannot emit) the
/// per-k-block accumulation into C would otherwise miss to L3/DRAM on every tile. B is therefore
/// packed for the whole k range of a column block (k × nc floats) and reused by every row block.
/// When k spans several blocks the partial sums go to a contiguous mc × nc buffer whose row
/// stride is an odd number of cache lines: C's own stride is often a power of two (conv outputs
/// of 4096 or 1024 pixels), which maps a tile's rows onto the same L1/L2 sets and evicts the
/// block between k passes. C itself is then written once, with alpha, beta and the epilogue.
@inline(__always)
func gemmWorker<PA: GemmPackA, PB: GemmPackB>(
    _ pa: PA, _ pb: PB, rows: Range<Int>, cols: Range<Int>, k: Int, alpha: Float, beta: Float,
    c: UnsafeMutablePointer<Float>, ldc: Int, epilogue: GemmEpilogue?
) {
    let kcStep = kBlockSize(k)
    // Blocks in whole tile pairs (12 rows, 32 columns) so the AVX-512 12x32 tile covers all but
    // a rectangle's last block: with 6-row units, 2048 rows on two workers made blocks of 90
    // rows, each ending in a half-speed 6x32 tile, and 1280 columns made 27-panel blocks whose
    // odd panel fell back to the AVX2 tile.
    let mcStep = balancedBlock(rows.count, gemmBlocking.mc, 2 * gemmMR)
    let ncStep = balancedBlock(cols.count, gemmBlocking.nc, 2 * gemmNR)
    let kBlocks = (k + kcStep - 1) / kcStep
    let useBlockBuffer = kBlocks > 1
    let ldcb = ncStep + gemmNR                 // ncStep is a multiple of 32: odd number of lines
    let aSize = mcStep * kcStep + 64
    let bSize = ncStep * k + 64
    let cSize = useBlockBuffer ? mcStep * ldcb + 64 : 0
    withScratch(aSize + bSize + cSize + gemmMR * gemmNR + 64) { buf in
        let bufA = buf
        let bufB = buf + (aSize + 15) / 16 * 16
        let bufC = bufB + (bSize + 15) / 16 * 16
        let tile = bufC + (cSize + 15) / 16 * 16
        let sink = UnsafeMutableRawPointer(tile + gemmMR * gemmNR).bindMemory(to: UInt32.self, capacity: 1)
        // Packed B block pointers, one per k block (pre-packed operands return their own storage).
        var bBlocks = [UnsafePointer<Float>](repeating: UnsafePointer(bufB), count: kBlocks)
        var jc = cols.lowerBound
        while jc < cols.upperBound {
            let nc = min(ncStep, cols.upperBound - jc)
            let ncPad = (nc + gemmNR - 1) / gemmNR * gemmNR
            for kb in 0..<kBlocks {
                let p0 = kb * kcStep
                let kc = min(kcStep, k - p0)
                bBlocks[kb] = pb.packB(p0, kc, jc, nc, bufB + p0 * ncPad)
            }
            var ic = rows.lowerBound
            while ic < rows.upperBound {
                let mc = min(mcStep, rows.upperBound - ic)
                for kb in 0..<kBlocks {
                    let p0 = kb * kcStep
                    let kc = min(kcStep, k - p0)
                    let first = kb == 0
                    let last = kb == kBlocks - 1
                    let aPanels = pa.packA(ic, mc, p0, kc, bufA)
                    let bPacked = bBlocks[kb]
                    let linesPerCall = kc / 8
                    var jr = 0
                    while jr < nc {
                        if gemmUsesAVX512, jr + 2 * gemmNR <= nc {
                            // Two full panels: the 16-wide AVX-512 tile, 6x32. Only where it writes
                            // plain sums (the block buffer, or C without alpha/beta/epilogue);
                            // elsewhere the AVX2 tiles below handle the pair.
                            let bp = bPacked + jr * kc
                            let plain = useBlockBuffer || (alpha == 1 && (beta == 0 || beta == 1) && epilogue == nil)
                            if plain {
                                var ir = 0
                                while ir < mc {
                                    let mr = min(gemmMR, mc - ir)
                                    // Plain sums go to the block buffer (its padding absorbs short
                                    // rows) or straight to C.
                                    let (dst, ld, acc) = useBlockBuffer ? (bufC + ir * ldcb + jr, ldcb, !first)
                                                                        : (c + (ic + ir) * ldc + jc + jr, ldc, beta == 1)
                                    if ir + 2 * gemmMR <= mc {
                                        // Twelve whole rows: two A panels against the pair, 24 accumulators.
                                        if aPanels.ks == gemmMR && aPanels.rs == 1 {
                                            avx512Tile12x32Packed(kc, aPanels.panel(ir), bp, bp + gemmNR * kc, dst, ld, accumulate: acc)
                                        } else {
                                            avx512Tile12x32(kc, aPanels.panel(ir), aPanels.panel(ir + gemmMR), aPanels.rs, aPanels.ks,
                                                            bp, bp + gemmNR * kc, dst, ld, accumulate: acc)
                                        }
                                        ir += 2 * gemmMR
                                        continue
                                    }
                                    if useBlockBuffer || mr == gemmMR {
                                        avx512Tile6x32(kc, aPanels.panel(ir), aPanels.rs, aPanels.ks, bp, bp + gemmNR * kc,
                                                       dst, ld, accumulate: acc)
                                    } else {
                                        let st = TileStore(alpha: alpha, beta: beta)
                                        for h in 0..<2 {
                                            runTile(kc, aPanels.panel(ir), aPanels.rs, aPanels.ks, bp + h * gemmNR * kc,
                                                    dst + h * gemmNR, ldc, mr, gemmNR, st, tile)
                                        }
                                    }
                                    ir += gemmMR
                                }
                                jr += 2 * gemmNR
                                continue
                            }
                        }
                        let nr = min(gemmNR, nc - jr)
                        let bp = bPacked + jr * kc
                        let j = jc + jr
                        // The B panel the kernels will need next (L3-resident: see kernel6x16).
                        var next: UnsafePointer<Float>? = nil
                        var nextLines = 0
                        if jr + gemmNR < nc {
                            next = bPacked + (jr + gemmNR) * kc; nextLines = kc
                        } else if kb + 1 < kBlocks {
                            next = bBlocks[kb + 1]; nextLines = min(kcStep, k - p0 - kc)
                        }
                        var ir = 0
                        var touchStart = 0
                        while ir < mc {
                            let mr = min(gemmMR, mc - ir)
                            let i = ic + ir
                            var touchLines = 0
                            if next != nil, touchStart < nextLines { touchLines = min(linesPerCall, nextLines - touchStart) }
                            let touch = next.map { $0 + touchStart * gemmNR }
                            touchStart += touchLines
                            if useBlockBuffer {
                                // Whole tiles into the block buffer (its padding absorbs edge rows
                                // and columns; A and B panels are zero-padded).
                                kernel6x16(kc, aPanels.panel(ir), aPanels.rs, aPanels.ks, bp, bufC + ir * ldcb + jr, ldcb,
                                           first ? TileStore() : TileStore(alpha: 1, beta: 1),
                                           touch: touch, touchLines: touchLines, sink: sink)
                            } else {
                                var st = TileStore(alpha: alpha, beta: beta)
                                if let e = epilogue {
                                    st.rowBias = e.rowBias.map { $0 + i }
                                    st.colBias = e.columnBias.map { $0 + j }
                                    st.residual = e.residual.map { $0 + i * e.residualStride + j }
                                    st.ldr = e.residualStride
                                    st.act = e.activation
                                }
                                runTile(kc, aPanels.panel(ir), aPanels.rs, aPanels.ks, bp, c + i * ldc + j, ldc, mr, nr, st, tile,
                                        touch: touch, touchLines: touchLines, sink: sink)
                            }
                            ir += gemmMR
                        }
                        jr += gemmNR
                    }
                    if useBlockBuffer && last {
                        storeBlock(bufC, ldcb, rows: ic..<(ic + mc), cols: jc..<(jc + nc),
                                   alpha: alpha, beta: beta, c: c, ldc: ldc, epilogue: epilogue)
                    }
                }
                ic += mc
            }
            jc += nc
        }
    }
}

/// C[rows, cols] = act(alpha·block + beta·C + biases) + residual, from the accumulated block buffer.
@inline(never)
func storeBlock(_ block: UnsafePointer<Float>, _ ldb: Int, rows: Range<Int>, cols: Range<Int>,
                alpha: Float, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int, epilogue: GemmEpilogue?) {
    let n = cols.count
    for (r, i) in rows.enumerated() {
        var st = TileStore(alpha: alpha, beta: beta)
        let j0 = cols.lowerBound
        if let e = epilogue {
            st.rowBias = e.rowBias.map { $0 + i }
            st.colBias = e.columnBias.map { $0 + j0 }
            st.residual = e.residual.map { $0 + i * e.residualStride + j0 }
            st.ldr = 0
            st.act = e.activation
        }
        let src = block + r * ldb
        let dst = c + i * ldc + j0
        var j = 0
        if st.isPlainOverwrite {
            while j + 8 <= n { st8(dst + j, ld8(src + j)); j += 8 }
        } else {
            while j + 8 <= n { st.finish(ld8(src + j), dst + j, 0, j); j += 8 }
        }
        while j < n { st.finishScalar(src[j], dst + j, 0, j); j += 1 }
    }
}

/// k == 0: the product is empty, only the beta term and the epilogue remain.
func gemmScaleOnly(m: Int, n: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int, epilogue: GemmEpilogue?) {
    var st = TileStore(alpha: 1, beta: beta)
    for i in 0..<m {
        if let e = epilogue {
            st.rowBias = e.rowBias.map { $0 + i }
            st.colBias = e.columnBias
            st.residual = e.residual.map { $0 + i * e.residualStride }
            st.ldr = 0
            st.act = e.activation
        }
        for j in 0..<n { st.finishScalar(0, c + i * ldc + j, 0, j) }
    }
}

/// Whether the GEMM uses its AVX-512 tile: the CPU reports AVX-512F (and the OS saves the zmm
/// state, which Linux lists in /proc/cpuinfo only when it does) and `DARKROOM_AVX512` is not 0.
/// Tests switch it to compare both paths.
nonisolated(unsafe) public var gemmUsesAVX512: Bool = cpuHasAVX512()

func cpuHasAVX512() -> Bool {
    #if arch(x86_64) && os(Linux)
    if ProcessInfo.processInfo.environment["DARKROOM_AVX512"] == "0" { return false }
    guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return false }
    for line in info.split(separator: "\n") where line.hasPrefix("flags") {
        let flags = Set(line.split(separator: " "))
        return flags.contains("avx512f")
    }
    return false
    #else
    return false
    #endif
}
