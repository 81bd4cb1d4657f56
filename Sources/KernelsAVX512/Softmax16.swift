// The online-softmax step of Kernels' attention, 16 query columns at a time.

/// The 16-lane twin of Kernels' `softmaxColumns` (see there for the contract): one key block's
/// scores Sᵀ (`rows` × `cols`, row stride `cols`, a multiple of 16) become probabilities in place,
/// the running column maxima and sums are updated, and the `oRows` rows of Oᵀ (row stride `cols`)
/// are rescaled where a maximum grew. Every lane does exactly the 8-lane code's operations in the
/// same order (maxima by compare-and-select, exponentials by the same polynomial, sums down the
/// rows), so both give the same bits.
public func avx512SoftmaxColumns(_ s: UnsafeMutablePointer<Float>, rows: Int, cols: Int,
                                 runMax: UnsafeMutablePointer<Float>, runSum: UnsafeMutablePointer<Float>,
                                 o: UnsafeMutablePointer<Float>, oRows: Int, causalDiagonal: Int?) {
    typealias V = SIMD16<Float>
    @inline(__always) func load(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }
    @inline(__always) func store(_ p: UnsafeMutablePointer<Float>, _ v: V) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: V.self) }
    let lanes = SIMD16<Int32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
    var g = 0
    while g < cols {
        // Masked (key after query): row r, column g + lane, when r − (g + lane) > diagonal.
        let firstMasked = causalDiagonal.map { lanes &+ Int32(g + $0) }
        let mOld = load(runMax + g)
        var bm = V(repeating: -.infinity)
        for r in 0..<rows {
            var x = load(s + r * cols + g)
            // Masked scores stay out of the maximum; the exponential pass below zeroes them.
            if let firstMasked { x.replace(with: -.infinity, where: SIMD16<Int32>(repeating: Int32(r)) .> firstMasked) }
            bm.replace(with: x, where: x .> bm)
        }
        var mNew = mOld
        mNew.replace(with: bm, where: bm .> mOld)
        var sum = load(runSum + g)
        if any(mNew .!= mOld) {
            // Columns whose maximum stayed put keep factor 1 (exactly what 2^0 gives; also for a
            // column with no visible key yet, where −∞ − (−∞) would be NaN).
            var corr = exp2NonPositive16(mOld - mNew)
            corr.replace(with: 1, where: mNew .== mOld)
            sum *= corr
            for r in 0..<oRows { store(o + r * cols + g, load(o + r * cols + g) * corr) }
        }
        for r in 0..<rows {
            var e = exp2NonPositive16(load(s + r * cols + g) - mNew)
            if let firstMasked { e.replace(with: 0, where: SIMD16<Int32>(repeating: Int32(r)) .> firstMasked) }
            store(s + r * cols + g, e)
            sum += e
        }
        store(runMax + g, mNew)
        store(runSum + g, sum)
        g += 16
    }
}

/// 2^x for x ≤ 0, lane by lane exactly as Kernels' `vexp2NonPositive` (see there).
@inline(__always)
func exp2NonPositive16(_ x: SIMD16<Float>) -> SIMD16<Float> {
    typealias V = SIMD16<Float>
    var xc = x
    xc.replace(with: -126, where: x .< -126)
    let magic = V(repeating: 12582912)
    let t = xc + magic
    let f = xc - (t - magic)
    var p = V(repeating: 0.0001534580749039116)
    p = V(repeating: 0.0013399931182827424).addingProduct(p, f)
    p = V(repeating: 0.009618488973887618).addingProduct(p, f)
    p = V(repeating: 0.05550328777078395).addingProduct(p, f)
    p = V(repeating: 0.2402264689047916).addingProduct(p, f)
    p = V(repeating: 0.6931472057371982).addingProduct(p, f)
    p = V(repeating: 1).addingProduct(p, f)
    let bits = (unsafeBitCast(t, to: SIMD16<Int32>.self) &+ (127 &- 0x4B40_0000)) &<< 23
    return p * unsafeBitCast(bits, to: V.self)
}
