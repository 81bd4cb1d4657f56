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
    // Simple reference-quality implementation; replaced by the packed, register-tiled kernel.
    let cp = SendablePointer(c)
    let ap = UncheckedBox(a), bp = UncheckedBox(b)
    parallelFor(m) { rows in
        let a = ap.value, b = bp.value
        var rowBuf = [Float](repeating: 0, count: n)
        for i in rows {
            for j in 0..<n { rowBuf[j] = 0 }
            for p in 0..<k {
                let av = transA ? a[p * lda + i] : a[i * lda + p]
                if av == 0 { continue }
                if transB {
                    for j in 0..<n { rowBuf[j] += av * b[j * ldb + p] }
                } else {
                    let brow = b + p * ldb
                    for j in 0..<n { rowBuf[j] += av * brow[j] }
                }
            }
            let crow = cp.p + i * ldc
            if beta == 0 {
                for j in 0..<n { crow[j] = alpha * rowBuf[j] }
            } else {
                for j in 0..<n { crow[j] = alpha * rowBuf[j] + beta * crow[j] }
            }
        }
    }
}
