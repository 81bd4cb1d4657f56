#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// `torch.sqrt` (and `x ** 0.5`) on a float32 CPU tensor, as the official x86-64 torch wheel
/// computes it: not IEEE's correctly rounded square root but MKL's `vmsSqrt` (VML_HA), which on
/// this machine runs the SSE kernel `mkl_vml_kernel_sSqrt_EXHAynn`: the hardware `rsqrtps`
/// estimate, one Newton step on both sqrt and 1/(2 sqrt), and a final residual correction, all in
/// unfused float32. About 20 % of its results are 1 ulp away from the correctly rounded root, and
/// diffusers' DDIM takes five such roots per step, so reproducing it is what makes sampling loops
/// bit-identical. Caveat: torch's result is itself machine-dependent (MKL picks its kernel by CPU,
/// and `rsqrtps` tables differ between vendors); elsewhere this stays within 1 ulp of torch.
/// Inputs MKL sends to its slow path (zero, subnormal, negative, huge, inf, NaN) and non-x86
/// builds use the correctly rounded root, which is what the slow path returns for them.
@inline(__always)
func torchSqrt(_ x: Float) -> Float {
    #if arch(x86_64)
    guard x.isNormal, x > 0, x.bitPattern <= 0x7f7f_f000 else { return x.squareRoot() }
    var y: Float = 0
    _mm_store_ss(&y, _mm_rsqrt_ss(_mm_set_ss(x)))
    let s = x * y
    let h = y * 0.5
    let r = 0.5 - s * h
    let s1 = s * r + s
    let h1 = r * h + h
    let d = x - s1 * s1
    return d * h1 + s1
    #else
    return x.squareRoot()
    #endif
}
