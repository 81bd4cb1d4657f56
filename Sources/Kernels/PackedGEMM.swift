/// A GEMM operand packed once into the micro-kernel's panel layout, for weights that multiply
/// many activations (Linear weights as B, convolution weights as A). Skips the per-call packing
/// (and for x·Wᵀ the transposing gather), and can hold the panels as Float16 to halve weight
/// memory; Float16 panels are widened block by block as the GEMM runs (F16C `vcvtph2ps`), so the
/// arithmetic stays Float32.
public final class PackedMatrix: @unchecked Sendable {
    public enum Role: Sendable { case a, b }
    public enum Storage: Sendable { case float32, float16 }

    /// A: op(A) is rows × cols = m × k.  B: op(B) is rows × cols = k × n.
    public let role: Role
    public let rows: Int
    public let cols: Int
    public let storage: Storage
    /// The k-block size the panels were cut with (see `kBlockSize`).
    let kc: Int
    /// The non-k dimension rounded up to whole panels (MR for A, NR for B).
    let padded: Int
    let f32: UnsafeMutablePointer<Float>?
    let f16: UnsafeMutablePointer<Float16>?

    /// Packs op(A) (m × k): A is m × k with row stride lda, or k × m when `transposed`.
    /// For a convolution weight [outC, inC, kh, kw] use m = outC, k = inC·kh·kw, lda = k.
    public convenience init(a: UnsafePointer<Float>, lda: Int, transposed: Bool = false, m: Int, k: Int,
                            storage: Storage = .float32) {
        self.init(role: .a, rows: m, cols: k, storage: storage) { dst, p0, kc in
            var q = 0
            while q < m {
                let mr = min(gemmMR, m - q)
                if transposed {
                    for p in 0..<kc {
                        let s = a + (p0 + p) * lda + q
                        for i in 0..<gemmMR { dst[q * kc + p * gemmMR + i] = i < mr ? s[i] : 0 }
                    }
                } else {
                    packRowsInterleaved(a + q * lda + p0, lda, mr, kc, dst + q * kc)
                }
                q += gemmMR
            }
        }
    }

    /// Packs op(B) (k × n): B is k × n with row stride ldb, or n × k when `transposed`
    /// (a PyTorch Linear weight [out, in] is B transposed with k = in, n = out, ldb = in).
    public convenience init(b: UnsafePointer<Float>, ldb: Int, transposed: Bool = false, k: Int, n: Int,
                            storage: Storage = .float32) {
        self.init(role: .b, rows: k, cols: n, storage: storage) { dst, p0, kc in
            _ = DenseB(b, ldb, transposed).packB(p0, kc, 0, n, dst)
        }
    }

    /// Same as `init(a:...)` from Float16 weights (widened once while packing).
    public convenience init(a: UnsafePointer<Float16>, lda: Int, transposed: Bool = false, m: Int, k: Int,
                            storage: Storage = .float16) {
        let rowsStored = transposed ? k : m, colsStored = transposed ? m : k
        let wide = widenMatrix(a, rows: rowsStored, cols: colsStored, ld: lda)
        defer { wide.deallocate() }
        self.init(a: wide, lda: colsStored, transposed: transposed, m: m, k: k, storage: storage)
    }

    /// Same as `init(b:...)` from Float16 weights (widened once while packing).
    public convenience init(b: UnsafePointer<Float16>, ldb: Int, transposed: Bool = false, k: Int, n: Int,
                            storage: Storage = .float16) {
        let rowsStored = transposed ? n : k, colsStored = transposed ? k : n
        let wide = widenMatrix(b, rows: rowsStored, cols: colsStored, ld: ldb)
        defer { wide.deallocate() }
        self.init(b: wide, ldb: colsStored, transposed: transposed, k: k, n: n, storage: storage)
    }

    private init(role: Role, rows: Int, cols: Int, storage: Storage,
                 pack: (UnsafeMutablePointer<Float>, Int, Int) -> Void) {
        precondition(rows >= 0 && cols >= 0)
        self.role = role
        self.rows = rows
        self.cols = cols
        self.storage = storage
        let k = role == .a ? cols : rows
        let other = role == .a ? rows : cols
        let unit = role == .a ? gemmMR : gemmNR
        kc = max(1, kBlockSize(max(k, 1)))
        padded = (other + unit - 1) / unit * unit
        // 16 values of slack past the panels: Winograd's filter transform reads a panel's taps
        // with 8-wide loads that may run 2 values past the last one.
        let total = padded * k + 16
        let buf = UnsafeMutablePointer<Float>.allocate(capacity: total)
        (buf + padded * k).initialize(repeating: 0, count: 16)
        var p0 = 0
        while p0 < k {
            let kc = min(self.kc, k - p0)
            pack(buf + p0 * padded, p0, kc)
            p0 += kc
        }
        if storage == .float32 {
            f32 = buf
            f16 = nil
        } else {
            let h = UnsafeMutablePointer<Float16>.allocate(capacity: total)
            for i in 0..<total { h[i] = Float16(buf[i]) }
            buf.deallocate()
            f16 = h
            f32 = nil
        }
    }

    deinit {
        f32?.deallocate()
        f16?.deallocate()
    }

    /// Bytes held by the packed panels.
    public var byteCount: Int {
        padded * (role == .a ? cols : rows) * (storage == .float32 ? 4 : 2)
    }

    /// Pointer to the panels of block (p0, kc) starting at panel-aligned offset `o` (row for A,
    /// column for B), widened into `dst` when stored as Float16.
    @inline(__always)
    func block(_ o: Int, _ count: Int, _ p0: Int, _ kc: Int, _ dst: UnsafeMutablePointer<Float>) -> UnsafePointer<Float> {
        let unit = role == .a ? gemmMR : gemmNR
        let offset = p0 * padded + o * kc
        if let f32 { return UnsafePointer(f32 + offset) }
        let n = (count + unit - 1) / unit * unit * kc
        widenHalf(UnsafePointer(f16! + offset), dst, n)
        return UnsafePointer(dst)
    }
}

/// Float16 → Float32 over n values (vectorised: one vcvtph2ps per 8).
@inline(__always)
func widenHalf(_ src: UnsafePointer<Float16>, _ dst: UnsafeMutablePointer<Float>, _ n: Int) {
    var i = 0
    while i + 8 <= n {
        let h = UnsafeRawPointer(src + i).loadUnaligned(as: SIMD8<Float16>.self)
        st8(dst + i, F8(h))
        i += 8
    }
    while i < n { dst[i] = Float(src[i]); i += 1 }
}

func widenMatrix(_ src: UnsafePointer<Float16>, rows: Int, cols: Int, ld: Int) -> UnsafeMutablePointer<Float> {
    let w = UnsafeMutablePointer<Float>.allocate(capacity: max(1, rows * cols))
    for r in 0..<rows { widenHalf(src + r * ld, w + r * cols, cols) }
    return w
}

struct PackedA: GemmPackA {
    let m: PackedMatrix
    @inline(__always)
    func packA(_ i0: Int, _ mc: Int, _ p0: Int, _ kc: Int, _ dst: UnsafeMutablePointer<Float>) -> APanels {
        .packed(m.block(i0, mc, p0, kc, dst), kc: kc)
    }
}

struct PackedB: GemmPackB {
    let m: PackedMatrix
    // Not `copiesB` even for Float16: a row rectangle's freshly widened block is hot in its own
    // L2, and one widened copy shared by all rectangles (`SharedB`) measured slower
    // in a trial (KernelBench packed, fp16 4096×1280×320: 72 vs 80 GFLOP per core-second for fp32).
    @inline(__always)
    func packB(_ p0: Int, _ kc: Int, _ j0: Int, _ nc: Int, _ dst: UnsafeMutablePointer<Float>) -> UnsafePointer<Float> {
        m.block(j0, nc, p0, kc, dst)
    }
}

/// C = alpha · op(A) · B + beta · C (+ epilogue) with B pre-packed (op(B) is k × n).
/// The usual call for a Linear layer: a = activations [tokens, in], b = the packed weight.
public func sgemm(
    transA: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int,
    b: PackedMatrix,
    beta: Float = 0,
    c: UnsafeMutablePointer<Float>, ldc: Int,
    epilogue: GemmEpilogue? = nil
) {
    precondition(b.role == .b && b.rows == k && b.cols == n, "packed B is \(b.rows)×\(b.cols), expected \(k)×\(n)")
    precondition(b.kc == max(1, kBlockSize(max(k, 1))), "packed with a different k blocking")
    gemmDispatch(DenseA(a, lda, transA), PackedB(m: b), m: m, n: n, k: k,
                 alpha: alpha, beta: beta, c: c, ldc: ldc, epilogue: epilogue)
}

/// C = alpha · A · op(B) + beta · C (+ epilogue) with A pre-packed (op(A) is m × k).
/// The usual call for a convolution written as W · columns.
public func sgemm(
    transB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
    a: PackedMatrix,
    b: UnsafePointer<Float>, ldb: Int,
    beta: Float = 0,
    c: UnsafeMutablePointer<Float>, ldc: Int,
    epilogue: GemmEpilogue? = nil
) {
    precondition(a.role == .a && a.rows == m && a.cols == k, "packed A is \(a.rows)×\(a.cols), expected \(m)×\(k)")
    precondition(a.kc == max(1, kBlockSize(max(k, 1))), "packed with a different k blocking")
    gemmDispatch(PackedA(m: a), DenseB(b, ldb, transB), m: m, n: n, k: k,
                 alpha: alpha, beta: beta, c: c, ldc: ldc, epilogue: epilogue)
}
