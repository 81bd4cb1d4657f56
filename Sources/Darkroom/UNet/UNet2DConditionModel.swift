import Foundation

/// A down block: CrossAttnDownBlock2D (with transformers) or DownBlock2D (without).
struct DownBlock: Sendable {
    let resnets: [ResnetBlock2D]
    let attentions: [Transformer2DModel]
    let downsampler: Downsample2D?

    /// Returns the block output and the skip states it contributes (one per resnet, plus one
    /// after downsampling).
    func callAsFunction(_ x: Tensor, temb: Tensor, context: Tensor) -> (Tensor, [Tensor]) {
        var h = x
        var skips: [Tensor] = []
        for (i, resnet) in resnets.enumerated() {
            h = resnet(h, siluTemb: temb)
            if !attentions.isEmpty { h = attentions[i](h, context: context) }
            skips.append(h)
        }
        if let d = downsampler {
            h = d(h)
            skips.append(h)
        }
        return (h, skips)
    }
}

/// An up block: CrossAttnUpBlock2D or UpBlock2D; each resnet consumes one skip state.
struct UpBlock: Sendable {
    let resnets: [ResnetBlock2D]
    let attentions: [Transformer2DModel]
    let upsampler: Upsample2D?

    func callAsFunction(_ x: Tensor, skips: inout [Tensor], temb: Tensor, context: Tensor, upsampleSize: (Int, Int)?) -> Tensor {
        var h = x
        for (i, resnet) in resnets.enumerated() {
            let skip = skips.removeLast()
            h = resnet(Tensor.concatChannels(h, skip), siluTemb: temb)
            if !attentions.isEmpty { h = attentions[i](h, context: context) }
        }
        if let u = upsampler { h = u(h, size: upsampleSize) }
        return h
    }
}

/// diffusers' UNet2DConditionModel as Stable Diffusion 1.x/2.x use it.
public struct UNet2DConditionModel: Sendable {
    public let config: UNetConfig
    let timeLinear1: Linear, timeLinear2: Linear
    let timeCondProj: Linear?
    let convIn: Conv2d
    let downBlocks: [DownBlock]
    let midResnets: [ResnetBlock2D]
    let midAttention: Transformer2DModel?
    let upBlocks: [UpBlock]
    let convNormOut: GroupNorm
    let convOut: Conv2d

    public init(config c: UNetConfig, weights: Weights) throws {
        config = c
        let w = weights.scope("")
        let ch0 = c.blockOutChannels[0]
        let tdim = c.timeEmbeddingDim
        timeLinear1 = try Linear(w["time_embedding.linear_1"], in: ch0, out: tdim)
        timeLinear2 = try Linear(w["time_embedding.linear_2"], in: tdim, out: tdim)
        timeCondProj = try c.timeCondProjDim.map { try Linear(w["time_embedding.cond_proj"], in: $0, out: ch0, bias: false) }
        convIn = try Conv2d(w["conv_in"], in: c.inChannels, out: ch0, kernel: c.convInKernel, padding: (c.convInKernel - 1) / 2)
        let groups = c.normNumGroups, eps = c.normEps
        let n = c.blockOutChannels.count

        func transformer(_ s: WeightScope, channels: Int, block i: Int, heads: Int, layers: Int, crossDim: Int, onlyCross: Bool) throws -> Transformer2DModel {
            try Transformer2DModel(s, channels: channels, heads: heads, layers: layers, crossAttentionDim: crossDim,
                                   groups: groups, linearProjection: c.useLinearProjection, onlyCrossAttention: onlyCross)
        }

        var downs: [DownBlock] = []
        var outC = ch0
        for i in 0..<n {
            let inC = outC
            outC = c.blockOutChannels[i]
            let b = w["down_blocks.\(i)"]
            let withAttention = c.downBlockTypes[i] == "CrossAttnDownBlock2D"
            var resnets: [ResnetBlock2D] = []
            var attns: [Transformer2DModel] = []
            for j in 0..<c.layersPerBlock[i] {
                resnets.append(try ResnetBlock2D(b["resnets.\(j)"], in: j == 0 ? inC : outC, out: outC, tembChannels: tdim,
                                                 groups: groups, eps: eps, outputScaleFactor: c.resnetOutScaleFactor))
                if withAttention {
                    attns.append(try transformer(b["attentions.\(j)"], channels: outC, block: i, heads: c.numAttentionHeads[i],
                                                 layers: c.transformerLayersPerBlock[i], crossDim: c.crossAttentionDim[i], onlyCross: c.onlyCrossAttention[i]))
                }
            }
            let down = i < n - 1 ? try Downsample2D(b["downsamplers.0"], channels: outC, padding: c.downsamplePadding) : nil
            downs.append(DownBlock(resnets: resnets, attentions: attns, downsampler: down))
        }
        downBlocks = downs

        let top = c.blockOutChannels[n - 1]
        if c.hasMidBlock {
            let m = w["mid_block"]
            midResnets = try (0..<2).map {
                try ResnetBlock2D(m["resnets.\($0)"], in: top, out: top, tembChannels: tdim, groups: groups, eps: eps,
                                  outputScaleFactor: c.midBlockScaleFactor)
            }
            midAttention = try transformer(m["attentions.0"], channels: top, block: n - 1, heads: c.numAttentionHeads[n - 1],
                                           layers: c.transformerLayersPerBlock[n - 1], crossDim: c.crossAttentionDim[n - 1], onlyCross: false)
        } else {
            midResnets = []
            midAttention = nil
        }

        let rc = Array(c.blockOutChannels.reversed())
        let rHeads = Array(c.numAttentionHeads.reversed())
        let rLayers = Array(c.layersPerBlock.reversed())
        let rCross = Array(c.crossAttentionDim.reversed())
        let rTLayers = Array(c.transformerLayersPerBlock.reversed())
        let rOnly = Array(c.onlyCrossAttention.reversed())
        var ups: [UpBlock] = []
        var output = rc[0]
        for i in 0..<n {
            let prev = output
            output = rc[i]
            let input = rc[min(i + 1, n - 1)]
            let b = w["up_blocks.\(i)"]
            let withAttention = c.upBlockTypes[i] == "CrossAttnUpBlock2D"
            let layers = rLayers[i] + 1
            var resnets: [ResnetBlock2D] = []
            var attns: [Transformer2DModel] = []
            for j in 0..<layers {
                let skipC = j == layers - 1 ? input : output
                let resIn = j == 0 ? prev : output
                resnets.append(try ResnetBlock2D(b["resnets.\(j)"], in: resIn + skipC, out: output, tembChannels: tdim,
                                                 groups: groups, eps: eps, outputScaleFactor: c.resnetOutScaleFactor))
                if withAttention {
                    attns.append(try transformer(b["attentions.\(j)"], channels: output, block: i, heads: rHeads[i],
                                                 layers: rTLayers[i], crossDim: rCross[i], onlyCross: rOnly[i]))
                }
            }
            let up = i < n - 1 ? try Upsample2D(b["upsamplers.0"], channels: output) : nil
            ups.append(UpBlock(resnets: resnets, attentions: attns, upsampler: up))
        }
        upBlocks = ups
        convNormOut = try GroupNorm(w["conv_norm_out"], groups: groups, channels: ch0, eps: eps)
        convOut = try Conv2d(w["conv_out"], in: ch0, out: c.outChannels, kernel: c.convOutKernel, padding: (c.convOutKernel - 1) / 2)
    }

    /// Sinusoidal timestep features as diffusers' get_timestep_embedding computes them in float32.
    func timestepFeatures(_ t: Float, batch: Int) -> Tensor {
        let dim = config.blockOutChannels[0]
        let half = dim / 2
        let f = Tensor.zeros([batch, dim])
        let logPeriod = Float(-log(10000.0))
        for i in 0..<half {
            let exponent = (Float(i) * logPeriod) / (Float(half) - config.freqShift)
            let arg = t * expf(exponent)
            let (s, co) = (sinf(arg), cosf(arg))
            for b in 0..<batch {
                let row = f.data + b * dim
                if config.flipSinToCos { row[i] = co; row[half + i] = s } else { row[i] = s; row[half + i] = co }
            }
        }
        return f
    }

    /// Predicts noise (or v) for `sample` [N, C, H, W] at `timestep`, conditioned on
    /// `context` [N, tokens, crossAttentionDim]. `guidanceEmbedding` is the LCM `w` embedding
    /// when the model has `time_cond_proj_dim`. `observe` sees named intermediate outputs.
    public func callAsFunction(_ sample: Tensor, timestep: Float, context: Tensor, condition: Tensor? = nil,
                               observe: ((String, Tensor) -> Void)? = nil) -> Tensor {
        // Freed activations are reused for the next one of the same size during the call.
        ActivationPool.shared.withReuse {
            forward(sample, timestep: timestep, context: context, condition: condition, observe: observe)
        }
    }

    /// Runs `body` (e.g. a denoising loop) with freed activations kept for reuse across the UNet
    /// calls inside it, not only within each call: every step then starts on storage the last
    /// one freed instead of page-faulting fresh memory (SD 1.5 at 512x512: ~3 % of a step in
    /// page faults and zeroing). The kept storage is bounded as within a call and freed when
    /// `body` returns, so the decoder that follows does not carry it.
    public func reusingActivations<T>(_ body: () throws -> T) rethrows -> T {
        try ActivationPool.shared.withReuse(body)
    }

    private func forward(_ sample: Tensor, timestep: Float, context: Tensor, condition: Tensor?,
                         observe: ((String, Tensor) -> Void)?) -> Tensor {
        let batch = sample.shape[0]
        var tfeat = timestepFeatures(timestep, batch: batch)
        if let proj = timeCondProj, let cond = condition { tfeat = tfeat + proj(cond) }
        let h1 = timeLinear1(tfeat)
        activate(h1.data, count: h1.count, .silu)
        let temb = timeLinear2(h1)
        observe?("time_embedding", temb)
        // Every resnet applies SiLU to the embedding first: do it once.
        let siluTemb = temb.activated(.silu)

        var x = sample
        if config.centerInputSample {
            x = sample.copy()
            for i in 0..<x.count { x.data[i] = 2 * x.data[i] - 1 }
        }
        var h = convIn(x)
        observe?("conv_in", h)
        var skips = [h]
        for (i, block) in downBlocks.enumerated() {
            let (out, s) = block(h, temb: siluTemb, context: context)
            h = out
            skips.append(contentsOf: s)
            observe?("down_blocks.\(i)", h)
        }
        if !midResnets.isEmpty {
            h = midResnets[0](h, siluTemb: siluTemb)
            h = midAttention!(h, context: context)
            h = midResnets[1](h, siluTemb: siluTemb)
            observe?("mid_block", h)
        }
        for (i, block) in upBlocks.enumerated() {
            var size: (Int, Int)? = nil
            if block.upsampler != nil {
                // Upsample to the size of the next skip state (handles odd latent sizes).
                let next = skips[skips.count - block.resnets.count - 1]
                size = (next.shape[2], next.shape[3])
            }
            h = block(h, skips: &skips, temb: siluTemb, context: context, upsampleSize: size)
            observe?("up_blocks.\(i)", h)
        }
        return convOut(normalizing: h, with: convNormOut, silu: true)
    }
}
