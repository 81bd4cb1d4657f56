import Foundation

/// An 8-bit RGB image: interleaved R, G, B bytes, row-major, top row first (PNG order).
public struct RGBImage: Sendable, Equatable {
    public var width: Int
    public var height: Int
    /// `width * height * 3` bytes.
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width >= 0 && height >= 0, "negative image size \(width)x\(height)")
        precondition(pixels.count == width * height * 3,
                     "\(pixels.count) bytes for a \(width)x\(height) RGB image (need \(width * height * 3))")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// From a float tensor [3, H, W] or [1, 3, H, W] with values in [-1, 1], as the VAE decodes,
    /// quantised exactly as diffusers does: `VaeImageProcessor.denormalize` (`x * 0.5 + 0.5`,
    /// clamped to [0, 1]) then `numpy_to_pil` (`(x * 255).round()` to uint8, ties to even), all
    /// in float32. NaN (where numpy's cast is undefined) becomes 0.
    public init(decoded: Tensor) {
        let s = decoded.shape
        precondition((s.count == 3 && s[0] == 3) || (s.count == 4 && s[0] == 1 && s[1] == 3),
                     "RGBImage(decoded:) needs a [3, H, W] or [1, 3, H, W] tensor, got \(s)")
        self = RGBImage.quantise(decoded.data, height: s[s.count - 2], width: s[s.count - 1])
    }

    /// Every image of a decoded batch [N, 3, H, W] (see `init(decoded:)`).
    public static func images(decoded: Tensor) -> [RGBImage] {
        let s = decoded.shape
        precondition(s.count == 4 && s[1] == 3, "RGBImage.images(decoded:) needs [N, 3, H, W], got \(s)")
        let plane = 3 * s[2] * s[3]
        return (0..<s[0]).map { quantise(decoded.data + $0 * plane, height: s[2], width: s[3]) }
    }

    /// One float in [-1, 1] to a byte, as diffusers does (see `init(decoded:)`).
    @inlinable
    public static func quantise(_ x: Float) -> UInt8 {
        let v = x * 0.5 + 0.5  // x * 0.5 is exact, so fusing into an FMA would not change it
        let clamped: Float = v > 0 ? min(v, 1) : 0  // NaN fails `v > 0` and maps to 0
        return UInt8((clamped * 255).rounded(.toNearestOrEven))
    }

    /// Planar CHW floats to interleaved HWC bytes.
    private static func quantise(_ src: UnsafePointer<Float>, height: Int, width: Int) -> RGBImage {
        let plane = height * width
        let bytes = [UInt8](unsafeUninitializedCapacity: plane * 3) { buf, count in
            for c in 0..<3 {
                let channel = src + c * plane
                for i in 0..<plane { buf[i * 3 + c] = quantise(channel[i]) }
            }
            count = plane * 3
        }
        return RGBImage(width: width, height: height, pixels: bytes)
    }
}
