import Foundation

/// diffusers' ResnetBlock2D ("default" time-embedding norm): GroupNorm+SiLU → conv1 → + time
/// projection → GroupNorm+SiLU → conv2, plus a 1x1 shortcut when the channel count changes.
public struct ResnetBlock2D: Sendable {
    let norm1: GroupNorm, conv1: Conv2d
    let timeEmbProj: Linear?
    let norm2: GroupNorm, conv2: Conv2d
    let convShortcut: Conv2d?
    let outputScaleFactor: Float

    public init(_ w: WeightScope, in inC: Int, out outC: Int, tembChannels: Int?, groups: Int, eps: Float, outputScaleFactor: Float = 1) throws {
        norm1 = try GroupNorm(w["norm1"], groups: groups, channels: inC, eps: eps)
        conv1 = try Conv2d(w["conv1"], in: inC, out: outC, kernel: 3, padding: 1)
        timeEmbProj = try tembChannels.map { try Linear(w["time_emb_proj"], in: $0, out: outC) }
        norm2 = try GroupNorm(w["norm2"], groups: groups, channels: outC, eps: eps)
        conv2 = try Conv2d(w["conv2"], in: outC, out: outC, kernel: 3, padding: 1)
        convShortcut = inC != outC ? try Conv2d(w["conv_shortcut"], in: inC, out: outC, kernel: 1) : nil
        self.outputScaleFactor = outputScaleFactor
    }

    /// x [N, C, H, W]; temb [N, tembChannels] already passed through SiLU by the caller (the
    /// UNet computes SiLU(temb) once for all blocks).
    /// The input is consumed: a caller that passes its last reference (`r(consume h)`) lets the
    /// block free it before conv2, the block's largest moment (with a channel-changing shortcut
    /// only the projected skip is kept).
    public func callAsFunction(_ input: consuming Tensor, siluTemb: Tensor? = nil) -> Tensor {
        let skip = convShortcut.map { $0(input) } ?? copy input
        // GroupNorm + SiLU happen as each convolution reads its input (no normalised copy).
        var h = conv1(normalizing: input, with: norm1, silu: true)
        _ = consume input
        if let proj = timeEmbProj, let t = siluTemb {
            let e = proj(t)  // [N, outC]
            let (n, c) = (h.shape[0], h.shape[1])
            let plane = h.count / (n * c)
            for b in 0..<n {
                for ch in 0..<c {
                    let v = e[b * c + ch]
                    let p = h.data + (b * c + ch) * plane
                    for i in 0..<plane { p[i] += v }
                }
            }
        }
        // input + conv2(h), the add fused into the convolution's store.
        h = conv2(normalizing: h, with: norm2, silu: true, residual: skip)
        if outputScaleFactor != 1 {
            let inv = 1 / outputScaleFactor
            for i in 0..<h.count { h.data[i] *= inv }
        }
        return h
    }
}

/// diffusers' Downsample2D with a convolution: 3x3 stride 2 (key `conv`). Padding 0 means
/// diffusers' explicit (0, 1, 0, 1) pad.
public struct Downsample2D: Sendable {
    let conv: Conv2d
    public init(_ w: WeightScope, channels: Int, padding: Int) throws {
        conv = padding == 0
            ? try Conv2d(w["conv"], in: channels, out: channels, kernel: 3, stride: 2, pads: (0, 0, 1, 1))
            : try Conv2d(w["conv"], in: channels, out: channels, kernel: 3, stride: 2, padding: padding)
    }
    public func callAsFunction(_ x: Tensor) -> Tensor { conv(x) }
}

/// diffusers' Upsample2D with a convolution: nearest-neighbour resize then 3x3 conv, fused
/// (the 4× larger resized tensor is not materialised on the Winograd path).
public struct Upsample2D: Sendable {
    let conv: Conv2d
    public init(_ w: WeightScope, channels: Int) throws {
        conv = try Conv2d(w["conv"], in: channels, out: channels, kernel: 3, padding: 1)
    }
    /// `size`: the output size when not exactly 2x (odd latent sizes in the UNet).
    public func callAsFunction(_ x: Tensor, size: (Int, Int)? = nil) -> Tensor {
        let (h, w) = size ?? (x.shape[2] * 2, x.shape[3] * 2)
        return conv.upsampling(x, toHeight: h, width: w)
    }
}
