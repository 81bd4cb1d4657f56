import Foundation

/// diffusers' `DiagonalGaussianDistribution`: the VAE encoder's posterior over latents, split from
/// the moments [N, 2C, h, w] (first C channels the mean, the rest the log-variance).
public struct DiagonalGaussianDistribution: Sendable {
    public let mean: Tensor
    /// Clamped to [-30, 20] as diffusers does (keeps `std` finite and non-zero).
    public let logvar: Tensor
    /// exp(logvar / 2).
    public let std: Tensor

    public init(moments: Tensor) {
        let s = moments.shape
        precondition(s.count == 4 && s[1] % 2 == 0, "moments must be [N, 2C, h, w], got \(s)")
        let (n, c, plane) = (s[0], s[1] / 2, s[2] * s[3])
        let half = [n, c, s[2], s[3]]
        mean = Tensor(shape: half)
        logvar = Tensor(shape: half)
        std = Tensor(shape: half)
        for b in 0..<n {
            let src = moments.data + b * 2 * c * plane
            (mean.data + b * c * plane).update(from: src, count: c * plane)
            (logvar.data + b * c * plane).update(from: src + c * plane, count: c * plane)
        }
        for i in 0..<logvar.count {
            // torch.clamp leaves NaN as NaN; min/max would turn it into a bound.
            let v = logvar.data[i]
            if !v.isNaN { logvar.data[i] = Swift.min(Swift.max(v, -30), 20) }
            std.data[i] = Foundation.exp(0.5 * logvar.data[i])
        }
    }

    /// The distribution's mode (diffusers `mode()`, `sample_mode="argmax"`).
    public var mode: Tensor { mean }

    /// mean + std · ε with ε = randn(mean.shape) drawn from `generator`, as diffusers'
    /// `sample(generator)` (randn_tensor on the CPU generator).
    public func sample(generator: inout TorchGenerator) -> Tensor {
        let noise = generator.randn(shape: mean.shape)
        let out = Tensor(shape: mean.shape)
        for i in 0..<out.count {
            let scaled = std.data[i] * noise.data[i]  // torch: std * sample, then mean + (...)
            out.data[i] = mean.data[i] + scaled
        }
        return out
    }
}

/// The AutoencoderKL encoder (diffusers `Encoder` + `quant_conv`): image in [-1, 1] → posterior
/// over latents. Only image-to-image needs it, so it is a separate module from `VAEDecoder`;
/// both bind the same `vae/` weights and each ignores the other half.
public struct VAEEncoder: Sendable {
    public let config: VAEConfig
    let convIn: Conv2d
    let downBlocks: [(resnets: [ResnetBlock2D], downsampler: Downsample2D?)]
    let midResnets: [ResnetBlock2D]
    let midAttention: VAEAttention?
    let convNormOut: GroupNorm
    let convOut: Conv2d
    let quantConv: Conv2d?

    public init(config c: VAEConfig, weights: Weights) throws {
        config = c
        let w = weights.scope("")
        let e = w["encoder"]
        let g = c.normNumGroups, eps: Float = 1e-6
        let ch = c.blockOutChannels
        convIn = try Conv2d(e["conv_in"], in: c.inChannels, out: ch[0], kernel: 3, padding: 1)
        var blocks: [(resnets: [ResnetBlock2D], downsampler: Downsample2D?)] = []
        var output = ch[0]
        for i in 0..<ch.count {
            let input = output
            output = ch[i]
            let b = e["down_blocks.\(i)"]
            let resnets = try (0..<c.layersPerBlock).map {
                try ResnetBlock2D(b["resnets.\($0)"], in: $0 == 0 ? input : output, out: output, tembChannels: nil, groups: g, eps: eps)
            }
            // DownEncoderBlock2D downsamples with padding 0: diffusers pads (0, 1, 0, 1) explicitly.
            let down = i < ch.count - 1 ? try Downsample2D(b["downsamplers.0"], channels: output, padding: 0) : nil
            blocks.append((resnets, down))
        }
        downBlocks = blocks
        let top = ch[ch.count - 1]
        midResnets = try (0..<2).map { try ResnetBlock2D(e["mid_block.resnets.\($0)"], in: top, out: top, tembChannels: nil, groups: g, eps: eps) }
        midAttention = c.midBlockAddAttention ? try VAEAttention(e["mid_block.attentions.0"], channels: top, groups: g) : nil
        convNormOut = try GroupNorm(e["conv_norm_out"], groups: g, channels: top, eps: eps)
        // double_z: mean and log-variance for every latent channel.
        let moments = 2 * c.latentChannels
        convOut = try Conv2d(e["conv_out"], in: top, out: moments, kernel: 3, padding: 1)
        quantConv = c.useQuantConv ? try Conv2d(w["quant_conv"], in: moments, out: moments, kernel: 1) : nil
        weights.ignore { $0.hasPrefix("decoder.") || $0.hasPrefix("post_quant_conv.") }
    }

    /// Loads the encoder from a diffusers `vae/` folder (config.json + diffusion_pytorch_model weights).
    public static func load(vaeFolder folder: URL) throws -> VAEEncoder {
        let config = try VAEConfig.load(folder.appendingPathComponent("config.json"))
        let weights = try Weights.load(componentFolder: folder, stem: "diffusion_pytorch_model")
        return try VAEEncoder(config: config, weights: weights)
    }

    /// Pixels per latent cell.
    public var downscaleFactor: Int { config.downscaleFactor }

    /// Encodes images [N, inChannels, H, W] in [-1, 1] (H, W multiples of `downscaleFactor`) to
    /// the posterior, as `vae.encode(x).latent_dist`. `observe` sees named intermediates.
    public func callAsFunction(_ image: Tensor, observe: ((String, Tensor) -> Void)? = nil) -> DiagonalGaussianDistribution {
        precondition(image.shape.count == 4 && image.shape[1] == config.inChannels,
                     "VAEEncoder expects [N, \(config.inChannels), H, W], got \(image.shape)")
        var h = convIn(image)
        observe?("encoder.conv_in", h)
        for (i, block) in downBlocks.enumerated() {
            for r in block.resnets { h = r(h) }
            if let d = block.downsampler { h = d(h) }
            observe?("encoder.down_blocks.\(i)", h)
        }
        h = midResnets[0](h)
        if let a = midAttention { h = a(h) }
        h = midResnets[1](h)
        observe?("encoder.mid_block", h)
        if let observe {
            // The fused GroupNorm+SiLU hides the norm's output; split it when someone looks.
            let normed = convNormOut(h)
            observe("encoder.conv_norm_out", normed)
            h = normed.activated(.silu)
        } else {
            h = convNormOut(h, silu: true)
        }
        h = convOut(h)
        observe?("encoder.conv_out", h)
        if let q = quantConv { h = q(h); observe?("quant_conv", h) }
        return DiagonalGaussianDistribution(moments: h)
    }

    /// The latents image-to-image starts from: a sample of the posterior (one `randn` draw from
    /// `generator`, diffusers' `retrieve_latents(..., sample_mode="sample")`), then
    /// `(z − shift_factor) · scaling_factor`, the inverse of what `decode` undoes. diffusers'
    /// SD img2img multiplies by the scaling factor only; SD 1.x/2.x VAEs have no shift factor.
    public func latents(for image: Tensor, generator: inout TorchGenerator) -> Tensor {
        let z = self(image).sample(generator: &generator)
        let (shift, scale) = (config.shiftFactor, config.scalingFactor)
        for i in 0..<z.count { z.data[i] = (z.data[i] - shift) * scale }
        return z
    }
}
