import Foundation

extension RGBImage {
    /// The image resized with Pillow's Lanczos filter (`Image.resize(size, Image.LANCZOS)`), byte
    /// for byte: diffusers' `VaeImageProcessor` resizes init images this way, so reproducing
    /// Pillow keeps image-to-image runs identical to diffusers' even when the input is resized.
    ///
    /// Pillow's algorithm (libImaging/Resample.c, 8 bits per channel): a separable Lanczos-3
    /// kernel, widened by the scale when shrinking (antialiasing); per output pixel the weights
    /// are computed in double, normalised to sum 1 and rounded to 22-bit fixed point (half away
    /// from zero); the horizontal pass runs first and rounds to bytes, then the vertical pass
    /// reads those bytes. A pass whose size does not change is skipped. Same size: a copy.
    public func resizedLanczos(width outW: Int, height outH: Int) -> RGBImage {
        precondition(outW > 0 && outH > 0, "resize to \(outW)x\(outH)")
        precondition(width > 0 && height > 0, "resize of an empty \(width)x\(height) image")
        if outW == width && outH == height { return self }
        var current = self
        if outW != width {
            let k = LanczosTaps(inSize: width, outSize: outW)
            current = current.resampled(horizontal: true, taps: k, outSize: outW)
        }
        if outH != height {
            let k = LanczosTaps(inSize: height, outSize: outH)
            current = current.resampled(horizontal: false, taps: k, outSize: outH)
        }
        return current
    }

    /// One fixed-point pass along x (`horizontal`) or y.
    private func resampled(horizontal: Bool, taps k: LanczosTaps, outSize: Int) -> RGBImage {
        let (w, h) = horizontal ? (outSize, height) : (width, outSize)
        var out = [UInt8](repeating: 0, count: w * h * 3)
        let half: Int32 = 1 << (LanczosTaps.precisionBits - 1)
        pixels.withUnsafeBufferPointer { src in
            for y in 0..<h {
                for x in 0..<w {
                    let o = horizontal ? x : y
                    let first = k.first[o], n = k.count[o]
                    let weights = o * k.stride
                    var acc: (Int32, Int32, Int32) = (half, half, half)
                    for t in 0..<n {
                        let i = horizontal ? (y * width + first + t) * 3 : ((first + t) * width + x) * 3
                        let c = k.weights[weights + t]
                        acc.0 &+= Int32(src[i]) &* c
                        acc.1 &+= Int32(src[i + 1]) &* c
                        acc.2 &+= Int32(src[i + 2]) &* c
                    }
                    let d = (y * w + x) * 3
                    out[d] = LanczosTaps.clip8(acc.0)
                    out[d + 1] = LanczosTaps.clip8(acc.1)
                    out[d + 2] = LanczosTaps.clip8(acc.2)
                }
            }
        }
        return RGBImage(width: w, height: h, pixels: out)
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the Lanczos filter (support 3) along
/// one axis: for each output index, the first input index, the tap count and fixed-point weights.
struct LanczosTaps {
    static let precisionBits: Int32 = 32 - 8 - 2
    let first: [Int]
    let count: [Int]
    /// `stride` weights per output index (unused tail entries are 0).
    let weights: [Int32]
    let stride: Int

    init(inSize: Int, outSize: Int) {
        let scale = Double(inSize) / Double(outSize)
        let filterScale = Swift.max(scale, 1.0)
        let support = 3.0 * filterScale
        stride = Int(support.rounded(.up)) * 2 + 1
        var first = [Int](repeating: 0, count: outSize)
        var count = [Int](repeating: 0, count: outSize)
        var weights = [Int32](repeating: 0, count: outSize * stride)
        var k = [Double](repeating: 0, count: stride)
        let ss = 1.0 / filterScale
        let one = Double(1 << Self.precisionBits)
        for o in 0..<outSize {
            let center = (Double(o) + 0.5) * scale
            // C's (int) truncates toward zero.
            let lo = Swift.max(Int((center - support + 0.5).rounded(.towardZero)), 0)
            let hi = Swift.min(Int((center + support + 0.5).rounded(.towardZero)), inSize)
            let n = hi - lo
            var total = 0.0
            for t in 0..<n {
                let v = Self.lanczos((Double(t + lo) - center + 0.5) * ss)
                k[t] = v
                total += v
            }
            for t in 0..<n {
                let v = total != 0 ? k[t] / total : k[t]
                let fixed = v < 0 ? -0.5 + v * one : 0.5 + v * one
                weights[o * stride + t] = Int32(fixed.rounded(.towardZero))
            }
            first[o] = lo
            count[o] = n
        }
        self.first = first
        self.count = count
        self.weights = weights
    }

    /// sinc(x) · sinc(x / 3) on [-3, 3), Pillow's `lanczos_filter`.
    static func lanczos(_ x: Double) -> Double {
        guard x >= -3.0 && x < 3.0 else { return 0 }
        return sinc(x) * sinc(x / 3)
    }

    static func sinc(_ x: Double) -> Double {
        if x == 0 { return 1 }
        let px = x * Double.pi
        return Foundation.sin(px) / px
    }

    /// Pillow's `clip8`: the accumulator's integer part, clamped to 0...255.
    @inline(__always)
    static func clip8(_ v: Int32) -> UInt8 {
        if v >= (1 << precisionBits) << 8 { return 255 }
        if v <= 0 { return 0 }
        return UInt8(truncatingIfNeeded: v >> precisionBits)
    }
}
