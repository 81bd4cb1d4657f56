import Foundation

/// torch.nn.Linear: y = x · Wᵀ + b over the last dimension. The weight ([out, in] in the file) is
/// packed once at load into the GEMM's panel layout, kept as Float16 when the file stores Float16
/// (widened inside the kernel), so memory stays at the file's size.
public struct Linear: Sendable {
    public let weight: PackedMatrix
    public let bias: Tensor?
    public let inFeatures: Int
    public let outFeatures: Int

    public init(_ w: WeightScope, in inFeatures: Int, out outFeatures: Int, bias hasBias: Bool = true) throws {
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        let t = try w.tensor("weight", [outFeatures, inFeatures])
        weight = PackedMatrix(b: t.data, ldb: inFeatures, transposed: true, k: inFeatures, n: outFeatures,
                              storage: w.storage("weight"))
        bias = hasBias ? try w.tensor("bias", [outFeatures]) : nil
    }

    /// x [..., in] → [..., out].
    public func callAsFunction(_ x: Tensor) -> Tensor {
        precondition(x.shape.last == inFeatures, "Linear expects last dim \(inFeatures), got \(x.shape)")
        let rows = x.count / inFeatures
        var shape = x.shape
        shape[shape.count - 1] = outFeatures
        let y = Tensor(shape: shape)
        sgemm(m: rows, n: outFeatures, k: inFeatures, a: x.data, lda: inFeatures, b: weight, c: y.data, ldc: outFeatures,
              epilogue: bias.map { GemmEpilogue(columnBias: UnsafePointer($0.data)) })
        return y
    }
}

/// torch.nn.Conv2d (groups 1, dilation 1) over NCHW. The weight is packed once at load (Float16
/// when the file stores Float16).
public struct Conv2d: Sendable {
    public let weight: PackedMatrix
    public let bias: Tensor?
    public let inChannels: Int, outChannels: Int, kernel: Int, stride: Int
    /// Zero padding (top, left, bottom, right); diffusers pads (0, 0, 1, 1) for unpadded downsampling.
    public let pads: (top: Int, left: Int, bottom: Int, right: Int)

    public init(_ w: WeightScope, in inChannels: Int, out outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0, bias hasBias: Bool = true) throws {
        try self.init(w, in: inChannels, out: outChannels, kernel: kernel, stride: stride,
                      pads: (padding, padding, padding, padding), bias: hasBias)
    }

    public init(_ w: WeightScope, in inChannels: Int, out outChannels: Int, kernel: Int, stride: Int, pads: (top: Int, left: Int, bottom: Int, right: Int), bias hasBias: Bool = true) throws {
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernel = kernel
        self.stride = stride
        self.pads = pads
        let t = try w.tensor("weight", [outChannels, inChannels, kernel, kernel])
        weight = PackedMatrix(a: t.data, lda: inChannels * kernel * kernel, m: outChannels, k: inChannels * kernel * kernel,
                              storage: w.storage("weight"))
        bias = hasBias ? try w.tensor("bias", [outChannels]) : nil
    }

    /// y = conv(x) (+ residual, added inside the kernel: diffusers' `input + conv2(h)`).
    public func callAsFunction(_ x: Tensor, residual: Tensor? = nil) -> Tensor {
        precondition(x.shape.count == 4 && x.shape[1] == inChannels, "Conv2d expects [N, \(inChannels), H, W], got \(x.shape)")
        let (n, h, wd) = (x.shape[0], x.shape[2], x.shape[3])
        let y = output(for: x, residual: residual)
        conv2d(input: x.data, batch: n, inChannels: inChannels, height: h, width: wd,
               weight: weight, bias: bias?.data, kernelH: kernel, kernelW: kernel, strideH: stride, strideW: stride,
               padTop: pads.top, padLeft: pads.left, padBottom: pads.bottom, padRight: pads.right, output: y.data,
               residual: residual?.data)
        return y
    }
}

extension Conv2d {
    /// The uninitialised output tensor for input x (and the residual's size check).
    func output(for x: Tensor, residual: Tensor?) -> Tensor {
        let oh = (x.shape[2] + pads.top + pads.bottom - kernel) / stride + 1
        let ow = (x.shape[3] + pads.left + pads.right - kernel) / stride + 1
        let y = Tensor(shape: [x.shape[0], outChannels, oh, ow])
        if let residual { precondition(residual.count == y.count, "residual \(residual.shape) for output \(y.shape)") }
        return y
    }

    /// conv(norm(x)) with the GroupNorm (+ SiLU) applied as the convolution reads x, so the
    /// normalised tensor is not materialised on the Winograd path (same bits as
    /// `self(norm(x, silu:))`; see `conv2d(normalizedBy:)`).
    public func callAsFunction(normalizing x: Tensor, with norm: GroupNorm, silu: Bool, residual: Tensor? = nil) -> Tensor {
        precondition(x.shape.count == 4 && x.shape[1] == inChannels && norm.channels == inChannels,
                     "Conv2d expects [N, \(inChannels), H, W], got \(x.shape)")
        let (n, h, wd) = (x.shape[0], x.shape[2], x.shape[3])
        let y = output(for: x, residual: residual)
        conv2d(input: x.data, batch: n, inChannels: inChannels, height: h, width: wd,
               normalizedBy: InputGroupNorm(groups: norm.groups, eps: norm.eps, gamma: norm.weight.data, beta: norm.bias.data, silu: silu),
               weight: weight, bias: bias?.data, kernelH: kernel, kernelW: kernel, strideH: stride, strideW: stride,
               padTop: pads.top, padLeft: pads.left, padBottom: pads.bottom, padRight: pads.right, output: y.data,
               residual: residual?.data)
        return y
    }

    /// conv(nearest-resize(x) to height × width), diffusers' Upsample2D, without materialising
    /// the resized tensor when the convolution runs as Winograd (see `conv2dUpsampledNearest`).
    public func upsampling(_ x: Tensor, toHeight uh: Int, width uw: Int) -> Tensor {
        precondition(x.shape.count == 4 && x.shape[1] == inChannels, "Conv2d expects [N, \(inChannels), H, W], got \(x.shape)")
        precondition(stride == 1, "upsampling conv with stride \(stride)")
        let (n, h, wd) = (x.shape[0], x.shape[2], x.shape[3])
        let oh = uh + pads.top + pads.bottom - kernel + 1
        let ow = uw + pads.left + pads.right - kernel + 1
        let y = Tensor(shape: [n, outChannels, oh, ow])
        conv2dUpsampledNearest(input: x.data, batch: n, inChannels: inChannels, height: h, width: wd,
                               upHeight: uh, upWidth: uw, weight: weight, bias: bias?.data, kernelH: kernel, kernelW: kernel,
                               padTop: pads.top, padLeft: pads.left, padBottom: pads.bottom, padRight: pads.right,
                               output: y.data)
        return y
    }
}

/// torch.nn.GroupNorm (affine) over NCHW, optionally followed by SiLU (fused).
public struct GroupNorm: Sendable {
    public let weight: Tensor
    public let bias: Tensor
    public let groups: Int
    public let channels: Int
    public let eps: Float

    public init(_ w: WeightScope, groups: Int, channels: Int, eps: Float) throws {
        guard groups > 0, channels % groups == 0 else {
            throw DarkroomError.weight(path: w.weights.label, key: w.key("weight"), reason: "\(channels) channels cannot be split into \(groups) groups")
        }
        self.groups = groups
        self.channels = channels
        self.eps = eps
        weight = try w.tensor("weight", [channels])
        bias = try w.tensor("bias", [channels])
    }

    /// Normalises x in place (for a tensor nothing else will read unnormalised).
    public func applyInPlace(_ x: Tensor, silu: Bool = false) {
        precondition(x.shape.count >= 2 && x.shape[1] == channels, "GroupNorm expects [N, \(channels), ...], got \(x.shape)")
        groupNorm(x: x.data, out: x.data, batch: x.shape[0], channels: channels, spatial: x.count / (x.shape[0] * channels),
                  groups: groups, eps: eps, gamma: weight.data, beta: bias.data, silu: silu)
    }

    public func callAsFunction(_ x: Tensor, silu: Bool = false) -> Tensor {
        precondition(x.shape.count >= 2 && x.shape[1] == channels, "GroupNorm expects [N, \(channels), ...], got \(x.shape)")
        let y = Tensor(shape: x.shape)
        groupNorm(x: x.data, out: y.data, batch: x.shape[0], channels: channels, spatial: x.count / (x.shape[0] * channels),
                  groups: groups, eps: eps, gamma: weight.data, beta: bias.data, silu: silu)
        return y
    }
}

/// torch.nn.LayerNorm over the last dimension.
public struct LayerNorm: Sendable {
    public let weight: Tensor
    public let bias: Tensor
    public let dim: Int
    public let eps: Float

    public init(_ w: WeightScope, dim: Int, eps: Float) throws {
        self.dim = dim
        self.eps = eps
        weight = try w.tensor("weight", [dim])
        bias = try w.tensor("bias", [dim])
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        precondition(x.shape.last == dim)
        let y = Tensor(shape: x.shape)
        layerNorm(x: x.data, out: y.data, rows: x.count / dim, cols: dim, eps: eps, gamma: weight.data, beta: bias.data)
        return y
    }
}

// MARK: - Tensor ops used by the models

extension Tensor {
    /// Elementwise sum (shapes must match).
    public static func + (a: Tensor, b: Tensor) -> Tensor {
        precondition(a.count == b.count, "add: \(a.shape) vs \(b.shape)")
        let y = Tensor(shape: a.shape)
        add(a.data, b.data, out: y.data, count: a.count)
        return y
    }

    /// Adds in place.
    public func addInPlace(_ b: Tensor) {
        precondition(count == b.count, "add: \(shape) vs \(b.shape)")
        add(data, b.data, out: data, count: count)
    }

    /// A copy with an activation applied.
    public func activated(_ act: Activation) -> Tensor {
        let y = copy()
        activate(y.data, count: count, act)
        return y
    }

    /// [N, C, H, W] → [N, H·W, C] (image to tokens).
    public func nchwToTokens() -> Tensor {
        let (n, c, hw) = (shape[0], shape[1], shape[2] * shape[3])
        let y = Tensor(shape: [n, hw, c])
        transpose(data, batch: n, rows: c, cols: hw, out: y.data)
        return y
    }

    /// [N, H·W, C] → [N, C, H, W] (tokens to image).
    public func tokensToNCHW(height: Int, width: Int) -> Tensor {
        let (n, hw, c) = (shape[0], shape[1], shape[2])
        precondition(hw == height * width)
        let y = Tensor(shape: [n, c, height, width])
        transpose(data, batch: n, rows: hw, cols: c, out: y.data)
        return y
    }

    /// Concatenation of two NCHW tensors along channels (UNet skip connections).
    public static func concatChannels(_ a: Tensor, _ b: Tensor) -> Tensor {
        let (n, ca, h, w) = (a.shape[0], a.shape[1], a.shape[2], a.shape[3])
        let cb = b.shape[1]
        precondition(b.shape[0] == n && b.shape[2] == h && b.shape[3] == w, "concat: \(a.shape) vs \(b.shape)")
        let y = Tensor(shape: [n, ca + cb, h, w])
        let plane = h * w
        for i in 0..<n {
            (y.data + i * (ca + cb) * plane).update(from: a.data + i * ca * plane, count: ca * plane)
            (y.data + (i * (ca + cb) + ca) * plane).update(from: b.data + i * cb * plane, count: cb * plane)
        }
        return y
    }

    /// Nearest-neighbour resize of NCHW to (height, width), as torch's F.interpolate(mode="nearest").
    public func upsampledNearest(height oh: Int, width ow: Int) -> Tensor {
        let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3])
        let y = Tensor(shape: [n, c, oh, ow])
        if oh == 2 * h && ow == 2 * w {
            upsampleNearest2x(data, planes: n * c, height: h, width: w, out: y.data)
            return y
        }
        // torch: src = floor(dst * (in / out)) computed in float.
        let sy = Float(h) / Float(oh), sx = Float(w) / Float(ow)
        for p in 0..<(n * c) {
            let src = data + p * h * w, dst = y.data + p * oh * ow
            for yy in 0..<oh {
                let iy = min(Int(Float(yy) * sy), h - 1)
                for xx in 0..<ow { dst[yy * ow + xx] = src[iy * w + min(Int(Float(xx) * sx), w - 1)] }
            }
        }
        return y
    }
}
