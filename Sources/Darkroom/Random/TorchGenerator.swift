#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `torch.Generator().manual_seed(seed)` on the CPU, with `torch.randn(..., dtype=torch.float32)`
/// reproduced bit for bit, so a Darkroom seed gives the same initial latents (and DDIM eta noise)
/// as diffusers with the same seed.
///
/// What torch 2.x does (ATen/native/cpu/DistributionTemplates.h, DistributionKernels.cpp):
/// - fewer than 16 values: one `normal_distribution<double>` draw per value. Each draw takes two
///   53-bit uniforms from `random64()`, computes `r = sqrt(-2 log1p(-u2))`, `theta = 2 pi u1` in
///   double, returns `r cos(theta)` and caches `r sin(theta)` on the generator for the next
///   scalar draw (the cache survives across calls and is untouched by the vectorised path).
/// - 16 or more values: all values are first filled with 24-bit float uniforms
///   (`(random() & 0xffffff) / 2^24`), then Box–Muller runs in place on blocks of 16 (the first 8
///   of a block give the log radius, the last 8 the angle; cosines land in the first half, sines
///   in the second). If the count is not a multiple of 16, 16 fresh uniforms overwrite the last 16
///   slots and that block is transformed again.
/// - The block transform depends on torch's CPU dispatch. On x86-64 with AVX2 (also on AVX-512
///   machines: torch never dispatches `normal` to AVX-512) it is `avx_mathfun.h`'s Cephes
///   `log256_ps` / `sincos256_ps`, with the multiply-adds GCC fused into FMAs in the shipped
///   binary. Without AVX2 (`ATEN_CPU_CAPABILITY=default`, and non-x86 builds) it is libm's
///   `logf` / `sincosf` in float with the angle formed in double. `Flavor` picks one; `.avx2` is
///   the default because that is what diffusers users on x86-64 Linux get.
public struct TorchGenerator: Sendable {
    /// Which of torch's Box–Muller kernels to reproduce for tensors of 16 values or more.
    public enum Flavor: Sendable {
        /// torch's AVX2 kernel (Cephes polynomials, FMA): x86-64 with AVX2 or AVX-512.
        case avx2
        /// torch's portable kernel (libm logf / sinf / cosf): `ATEN_CPU_CAPABILITY=default`.
        case portable
    }

    public let seed: UInt64
    public let flavor: Flavor
    private var engine: MT19937
    /// torch's `next_double_normal_sample`: the sine half of the last scalar Box–Muller pair.
    private var cachedNormal: Double?

    public init(seed: UInt64, flavor: Flavor = .avx2) {
        self.seed = seed
        self.flavor = flavor
        engine = MT19937(seed: seed)
        cachedNormal = nil
    }

    /// `generator.random()`: one 32-bit word.
    public mutating func nextUInt32() -> UInt32 { engine.nextUInt32() }

    /// `generator.random64()`: two words, the first one high.
    public mutating func nextUInt64() -> UInt64 {
        let hi = UInt64(engine.nextUInt32())
        let lo = UInt64(engine.nextUInt32())
        return (hi << 32) | lo
    }

    /// `uniform_real_distribution<float>(0, 1)`: 24 random bits scaled by 2^-24 (exact).
    @inline(__always)
    private mutating func uniformFloat() -> Float {
        Float(engine.nextUInt32() & 0x00ff_ffff) * 0x1p-24
    }

    /// `uniform_real_distribution<double>(0, 1)`: 53 random bits scaled by 2^-53 (exact).
    @inline(__always)
    private mutating func uniformDouble() -> Double {
        Double(nextUInt64() & ((1 << 53) - 1)) * 0x1p-53
    }

    /// `at::normal_distribution<double>(0, 1)` with torch's one-value cache.
    private mutating func scalarNormal() -> Double {
        if let cached = cachedNormal {
            cachedNormal = nil
            return cached
        }
        let u1 = uniformDouble()
        let u2 = uniformDouble()
        let r = (-2.0 * log1p(-u2)).squareRoot()
        let theta = 2.0 * Double.pi * u1
        cachedNormal = r * sin(theta)
        return r * cos(theta)
    }

    /// `torch.randn(count, generator=g, dtype=torch.float32)` on the CPU, continuing the stream.
    public mutating func randn(count: Int) -> [Float] {
        precondition(count >= 0, "negative count")
        var out = [Float](repeating: 0, count: count)
        if count < 16 {
            for i in 0..<count { out[i] = Float(scalarNormal()) }
            return out
        }
        let flavor = self.flavor
        out.withUnsafeMutableBufferPointer { buf in
            let p = buf.baseAddress!
            for i in 0..<count { p[i] = uniformFloat() }
            var i = 0
            while i + 16 <= count {
                TorchGenerator.boxMuller16(p + i, flavor)
                i += 16
            }
            if count % 16 != 0 {
                let tail = p + (count - 16)
                for j in 0..<16 { tail[j] = uniformFloat() }
                TorchGenerator.boxMuller16(tail, flavor)
            }
        }
        return out
    }

    /// `torch.randn(shape, generator=g, dtype=torch.float32)` on the CPU, continuing the stream.
    public mutating func randn(shape: [Int]) -> Tensor {
        Tensor(shape: shape, values: randn(count: shape.reduce(1, *)))
    }

    /// torch's `NormalFill16` with mean 0 and std 1: 16 uniforms in, 16 normals out.
    private static func boxMuller16(_ d: UnsafeMutablePointer<Float>, _ flavor: Flavor) {
        // torch ends with fma(n, std, mean); with std 1 and mean 0 that only turns -0 into +0.
        let mean: Float = 0, std: Float = 1
        switch flavor {
        case .avx2:
            for j in 0..<8 {
                let u1 = 1 - d[j]
                let theta = CephesAVX2.twoPi * d[j + 8]
                let radius = (CephesAVX2.log(u1) * -2).squareRoot()
                let (s, c) = CephesAVX2.sincos(theta)
                d[j] = mean.addingProduct(radius * c, std)
                d[j + 8] = mean.addingProduct(radius * s, std)
            }
        case .portable:
            for j in 0..<8 {
                let u1 = 1 - d[j]
                let radius = (logf(u1) * -2).squareRoot()
                // `2.0f * c10::pi<double> * u2` is evaluated in double, then stored as float.
                let theta = Float(2.0 * Double.pi * Double(d[j + 8]))
                d[j] = mean.addingProduct(radius * cosf(theta), std)
                d[j + 8] = mean.addingProduct(radius * sinf(theta), std)
            }
        }
    }
}
