import Foundation

// torch.log and torch.exp on float32 CPU tensors, as the official x86-64 torch wheel computes them.
// Like `torch.sqrt` (see `torchSqrt`), they go through MKL's VML in high-accuracy mode, which on
// this machine runs the SSE kernels `mkl_vml_kernel_sLn_EXHAynn` / `mkl_vml_kernel_sExp_EXHAynn`
// for 0-d tensors and vectors alike. Their results are within 1 ulp but not correctly rounded
// (about 8 % of logs and 0.6 % of exps differ from the rounded exact value), and DPM-Solver takes
// four logs and one or two exps per step, so the kernels are rebuilt here operation by operation
// in unfused float32. Verified bit-identical to torch on 25,000 values each (Tools/fixtures_samplers.py
// stores a sample; SamplerTests checks it). Inputs the kernels send to their slow path (zero,
// negative, subnormal, inf, NaN; |x| > 87.3 for exp) use the correctly rounded double result.

/// `torch.log` of a float32 (MKL `vsLn`, HA).
func torchLog(_ x: Float) -> Float {
    let bits = x.bitPattern
    // Fast path: positive normal finite numbers.
    guard bits >= 0x0080_0000, bits < 0x7f80_0000 else { return Float(Foundation.log(Double(x))) }
    // Split x = 2^k · m with m in [2/3, 4/3): subtracting the bits of 2/3 puts the exponent of
    // x·(3/2) in the top bits; the mantissa keeps x's, re-based on 2/3.
    let shifted = Int32(bitPattern: bits &- 0x3f2a_aaab)
    let k = Float(shifted >> 23)
    let m = Float(bitPattern: (UInt32(bitPattern: shifted) & 0x007f_ffff) &+ 0x3f2a_aaab)
    let r = m - 1
    // log1p(r) ≈ r + r² · P(r), P of degree 8 evaluated by Horner.
    var p = r * Float(bitPattern: 0xbe04_02c8) + Float(bitPattern: 0x3e0f_335d)
    p = p * r + Float(bitPattern: 0xbdf9_889e)
    p = p * r + Float(bitPattern: 0x3e0f_6b8c)
    p = p * r + Float(bitPattern: 0xbe2a_cee6)
    p = p * r + Float(bitPattern: 0x3e4c_e814)
    p = p * r + Float(bitPattern: 0xbe7f_ff78)
    p = p * r + Float(bitPattern: 0x3eaa_aa83)
    p = p * r - 0.5
    p = p * r
    p = p * r
    p = p + r
    // k · ln 2 in two parts: the low part first, then the exact high part.
    let low = k * Float(bitPattern: 0x35bf_be8e) + p
    return k * Float(bitPattern: 0x3f31_7200) + low
}

/// `torch.exp` of a float32 (MKL `vsExp`, HA).
func torchExp(_ x: Float) -> Float {
    guard x.bitPattern & 0x7fff_fff0 <= 0x42ae_ac4f else {
        return Float(Foundation.exp(Double(x)))
    }
    // n = round(x · 128 / ln 2) with the 1.5·2^23 shifter; its low 7 bits pick 2^(j/128).
    let shifter: Float = 12_582_912
    let shiftedN = x * Float(bitPattern: 0x4338_aa3b) + shifter
    let n = shiftedN - shifter
    let nBits = shiftedN.bitPattern
    // r = x − n · ln2/128, with ln2/128 split into a short high part and a correction.
    var r = n * Float(bitPattern: 0xbbb1_8000) + x
    r = n * Float(bitPattern: 0x35de_8083) + r
    let p = r * r * 0.5 + r
    let (hi, lo) = expTable[Int(nBits & 0x7f)]
    let y = p * hi + lo + hi
    // 2^floor(n / 128) from the shifted integer's bits.
    let scale = Float(bitPattern: ((nBits << 16) &+ 0x3f80_0000) & 0x7f80_0000)
    return y * scale
}

/// 2^(j/128) for j in 0..<128 as a float32 pair (rounded value, rounded remainder), as MKL's table
/// holds it. The remainder needs more than double precision to match MKL's in every entry.
private let expTable: [(Float, Float)] = (0..<128).map { j in
    #if arch(x86_64)
    let exact = Glibc.powl(2, Float80(j) / 128)
    let hi = Float(exact)
    return (hi, Float(exact - Float80(hi)))
    #else
    let exact = Foundation.pow(2, Double(j) / 128)
    let hi = Float(exact)
    return (hi, Float(exact - Double(hi)))
    #endif
}

// MARK: - numpy float64 helpers (diffusers builds sigma schedules with numpy)

/// `np.linspace(start, stop, num, endpoint)` in float64: `i * step + start`, the end point exact.
func numpyLinspace(_ start: Double, _ stop: Double, _ num: Int, endpoint: Bool = true) -> [Double] {
    guard num > 0 else { return [] }
    let div = endpoint ? num - 1 : num
    var y = (0..<num).map(Double.init)
    if div > 0 {
        let step = (stop - start) / Double(div)
        if step == 0 {
            y = y.map { $0 / Double(div) * (stop - start) }
        } else {
            y = y.map { $0 * step }
        }
    } else {
        y = y.map { $0 * (stop - start) }
    }
    y = y.map { $0 + start }
    if endpoint && num > 1 { y[num - 1] = stop }
    return y
}

/// `np.interp(x, arange(len(fp)), fp)`: linear interpolation between integer abscissae, as numpy's
/// C loop computes it (`slope * (x - xp[j]) + fp[j]`, no fused multiply-add), clamped at the ends.
func numpyInterp(_ x: Double, _ fp: [Double]) -> Double {
    let n = fp.count
    if x.isNaN { return x }
    if x <= 0 { return fp[0] }  // left value, and x == xp[0]
    if x >= Double(n - 1) { return fp[n - 1] }
    let j = Int(x.rounded(.down))
    if Double(j) == x { return fp[j] }
    let slope = (fp[j + 1] - fp[j]) / (Double(j + 1) - Double(j))
    return slope * (x - Double(j)) + fp[j]
}

/// `np.arange(start, 0, -step)` for positive `start` and `step` (numpy's float fill: element 1 is
/// start - step, element i >= 2 is start + i * (element1 - start)), then `round()` half to even.
func numpyDescendingArangeRounded(from start: Double, step: Double) -> [Double] {
    let stepValue = -step
    let length = Int(((0 - start) / stepValue).rounded(.up))
    guard length > 0 else { return [] }
    var v = [Double](repeating: start, count: length)
    if length > 1 {
        v[1] = start + stepValue
        let delta = v[1] - start
        if length > 2 { for i in 2..<length { v[i] = start + Double(i) * delta } }
    }
    return v.map { $0.rounded(.toNearestOrEven) }
}

/// `np.log` of a float32 array element, as numpy 2.x computes it on x86-64 with AVX2/AVX-512
/// (`simd_log_FLOAT`): mantissa in (√½, √2], a (5, 5) rational approximation of log(1 + x) with
/// fused multiply-adds, plus exponent · ln 2 (fused). Up to ~4 ulp from the exact log; diffusers'
/// `_sigma_to_t` interpolates fractional Karras timesteps in these values.
func numpyLogFloat(_ input: Float) -> Float {
    if input.isNaN { return .nan }
    if input < 0 { return -.nan }
    if input == 0 { return -.infinity }
    if input == .infinity { return .infinity }
    // Subnormals are scaled by 2^100 first.
    let subnormal = input < Float.leastNormalMagnitude
    let v = subnormal ? input * Float(bitPattern: 0x7180_0000) : input
    var exponent = Float(Int32((v.bitPattern >> 23) & 0xff) - 0x7e) - (subnormal ? 100 : 0)
    var x = Float(bitPattern: (v.bitPattern & 0x007f_ffff) | (126 << 23))  // [0.5, 1)
    if x <= Float(bitPattern: 0x3f35_04f3) {
        x = x + x
        exponent = exponent - 1
    }
    x = x - 1
    var num = Float(bitPattern: 0x3ec3_0333).addingProduct(Float(bitPattern: 0x3cd4_2bcd), x)
    num = Float(bitPattern: 0x3fbd_70a9).addingProduct(num, x)
    num = Float(bitPattern: 0x4007_361c).addingProduct(num, x)
    num = Float(1).addingProduct(num, x)
    num = Float(0).addingProduct(num, x)
    var den = Float(bitPattern: 0x3e1e_5bf3).addingProduct(Float(bitPattern: 0x3bc0_83df), x)
    den = Float(bitPattern: 0x3f7c_8ae4).addingProduct(den, x)
    den = Float(bitPattern: 0x401c_fe0d).addingProduct(den, x)
    den = Float(bitPattern: 0x4027_361c).addingProduct(den, x)
    den = Float(1).addingProduct(den, x)
    return (num / den).addingProduct(exponent, Float(bitPattern: 0x3f31_7218))
}
