/// The 32-bit Mersenne Twister exactly as PyTorch's CPU generator runs it
/// (`at::mt19937` in ATen/core/MT19937RNGEngine.h): seeded from the low 32 bits of the seed with
/// the standard Knuth initialiser, state regenerated lazily on the first draw, standard tempering.
/// Only the sequence of 32-bit outputs matters for parity; this reproduces it word for word.
struct MT19937: Sendable {
    static let n = 624
    static let m = 397
    private static let matrixA: UInt32 = 0x9908_b0df
    private static let upperMask: UInt32 = 0x8000_0000
    private static let lowerMask: UInt32 = 0x7fff_ffff

    private var state: [UInt32]
    /// Words left before the state must be regenerated (torch starts at 1: the first draw twists).
    private var left: Int
    private var next: Int

    init(seed: UInt64) {
        var s = [UInt32](repeating: 0, count: MT19937.n)
        s[0] = UInt32(truncatingIfNeeded: seed)
        for j in 1..<MT19937.n {
            let prev = s[j - 1]
            s[j] = 1_812_433_253 &* (prev ^ (prev >> 30)) &+ UInt32(j)
        }
        state = s
        left = 1
        next = 0
    }

    mutating func nextUInt32() -> UInt32 {
        left -= 1
        if left == 0 { regenerate() }
        var y = state[next]
        next += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9d2c_5680
        y ^= (y << 15) & 0xefc6_0000
        y ^= y >> 18
        return y
    }

    private mutating func regenerate() {
        let n = MT19937.n, m = MT19937.m
        state.withUnsafeMutableBufferPointer { s in
            @inline(__always) func twist(_ u: UInt32, _ v: UInt32) -> UInt32 {
                let mixed = (u & MT19937.upperMask) | (v & MT19937.lowerMask)
                return (mixed >> 1) ^ ((v & 1) != 0 ? MT19937.matrixA : 0)
            }
            for k in 0..<(n - m) { s[k] = s[k + m] ^ twist(s[k], s[k + 1]) }
            for k in (n - m)..<(n - 1) { s[k] = s[k + m - n] ^ twist(s[k], s[k + 1]) }
            s[n - 1] = s[m - 1] ^ twist(s[n - 1], s[0])
        }
        left = n
        next = 0
    }
}
