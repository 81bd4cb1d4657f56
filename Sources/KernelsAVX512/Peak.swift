/// Register-only 16-lane FMA loop for KernelBench's `tile` group: 24 independent accumulators,
/// no memory traffic, so its rate is the core's AVX-512 FMA ceiling (one or two 512-bit FMA
/// units per core, at the clock the CPU grants to AVX-512 code). Returns a sum so the loop is kept.
@inline(never)
public func avx512FMAPeak(_ iters: Int, _ seed: Float) -> Float {
    typealias V = SIMD16<Float>
    let m = V(repeating: 0.999999), a = V(repeating: 1e-7)
    var c = (0..<24).map { V(repeating: seed + Float($0)) }
    return c.withUnsafeMutableBufferPointer { c in
        for _ in 0..<iters {
            for j in 0..<24 { c[j] = c[j].addingProduct(m, a) }
        }
        return c.reduce(V(), +).sum()
    }
}
