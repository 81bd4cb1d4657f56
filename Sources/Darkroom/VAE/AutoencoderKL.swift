import Foundation

/// `vae/config.json` of an AutoencoderKL.
public struct VAEConfig: Sendable {
    public var inChannels: Int
    public var outChannels: Int
    public var blockOutChannels: [Int]
    public var layersPerBlock: Int
    public var latentChannels: Int
    public var normNumGroups: Int
    public var scalingFactor: Float
    public var shiftFactor: Float
    public var usePostQuantConv: Bool
    public var useQuantConv: Bool
    public var midBlockAddAttention: Bool
    public var sampleSize: Int?

    public init(_ c: ConfigFile) throws {
        inChannels = try c.int("in_channels", default: 3, range: 1...64)
        outChannels = try c.int("out_channels", default: 3, range: 1...64)
        blockOutChannels = try c.intList("block_out_channels", default: [64], range: 1...65536)
        guard !blockOutChannels.isEmpty else {
            throw DarkroomError.invalidConfig(path: c.path, key: "block_out_channels", reason: "empty")
        }
        let blocks = blockOutChannels.count
        let ups = try c.stringList("up_block_types", default: Array(repeating: "UpDecoderBlock2D", count: blocks))
        let downs = try c.stringList("down_block_types", default: Array(repeating: "DownEncoderBlock2D", count: blocks))
        guard ups.count == blocks, downs.count == blocks else {
            throw DarkroomError.invalidConfig(path: c.path, key: "up_block_types", reason: "\(ups.count) up / \(downs.count) down blocks for \(blocks) block_out_channels")
        }
        for t in ups where t != "UpDecoderBlock2D" { throw DarkroomError.unsupported(path: c.path, key: "up_block_types", value: "\"\(t)\"") }
        for t in downs where t != "DownEncoderBlock2D" { throw DarkroomError.unsupported(path: c.path, key: "down_block_types", value: "\"\(t)\"") }
        layersPerBlock = try c.int("layers_per_block", default: 1, range: 1...64)
        latentChannels = try c.int("latent_channels", default: 4, range: 1...1024)
        normNumGroups = try c.int("norm_num_groups", default: 32, range: 1...4096)
        scalingFactor = Float(try c.double("scaling_factor", default: 0.18215))
        shiftFactor = Float(try c.double("shift_factor", default: 0))
        usePostQuantConv = try c.bool("use_post_quant_conv", default: true)
        useQuantConv = try c.bool("use_quant_conv", default: true)
        midBlockAddAttention = try c.bool("mid_block_add_attention", default: true)
        sampleSize = c.value("sample_size") == nil ? nil : try? c.int("sample_size")
        try c.require("act_fn", in: [.string("silu"), .string("swish")])
        try c.require("latents_mean", in: [])
        try c.require("latents_std", in: [])
        guard scalingFactor != 0 else { throw DarkroomError.invalidConfig(path: c.path, key: "scaling_factor", reason: "must not be 0") }
        for ch in blockOutChannels where ch % normNumGroups != 0 {
            throw DarkroomError.invalidConfig(path: c.path, key: "norm_num_groups", reason: "\(ch) channels cannot be split into \(normNumGroups) groups")
        }
    }

    /// Pixels per latent cell: 2^(blocks - 1).
    public var downscaleFactor: Int { 1 << (blockOutChannels.count - 1) }

    public static func load(_ url: URL) throws -> VAEConfig { try VAEConfig(ConfigFile.load(url)) }
}

/// The VAE's single-head spatial self-attention (diffusers `Attention` with group norm and a
/// residual), under either key spelling: to_q/to_k/to_v/to_out.0 or legacy query/key/value/proj_attn.
struct VAEAttention: Sendable {
    let groupNorm: GroupNorm
    let attention: MultiHeadAttention

    init(_ w: WeightScope, channels: Int, groups: Int) throws {
        groupNorm = try GroupNorm(w["group_norm"], groups: groups, channels: channels, eps: 1e-6)
        let legacy = !w.has("to_q.weight") && w.has("query.weight")
        let names = legacy ? ["query", "key", "value", "proj_attn"] : ["to_q", "to_k", "to_v", "to_out.0"]
        attention = MultiHeadAttention(
            q: try Linear(w[names[0]], in: channels, out: channels), k: try Linear(w[names[1]], in: channels, out: channels),
            v: try Linear(w[names[2]], in: channels, out: channels), out: try Linear(w[names[3]], in: channels, out: channels),
            heads: 1)
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        let (h, w) = (x.shape[2], x.shape[3])
        let out = attention(groupNorm(x).nchwToTokens()).tokensToNCHW(height: h, width: w)
        out.addInPlace(x)
        return out
    }
}

/// The AutoencoderKL decoder: latents → image in [-1, 1].
public struct VAEDecoder: Sendable {
    public let config: VAEConfig
    let postQuantConv: Conv2d?
    let convIn: Conv2d
    let midResnets: [ResnetBlock2D]
    let midAttention: VAEAttention?
    let upBlocks: [(resnets: [ResnetBlock2D], upsampler: Upsample2D?)]
    let convNormOut: GroupNorm
    let convOut: Conv2d

    public init(config c: VAEConfig, weights: Weights) throws {
        config = c
        let w = weights.scope("")
        let lc = c.latentChannels, g = c.normNumGroups, eps: Float = 1e-6
        postQuantConv = c.usePostQuantConv ? try Conv2d(w["post_quant_conv"], in: lc, out: lc, kernel: 1) : nil
        let d = w["decoder"]
        let top = c.blockOutChannels.last!
        convIn = try Conv2d(d["conv_in"], in: lc, out: top, kernel: 3, padding: 1)
        midResnets = try (0..<2).map { try ResnetBlock2D(d["mid_block.resnets.\($0)"], in: top, out: top, tembChannels: nil, groups: g, eps: eps) }
        midAttention = c.midBlockAddAttention ? try VAEAttention(d["mid_block.attentions.0"], channels: top, groups: g) : nil
        let rc = Array(c.blockOutChannels.reversed())
        var ups: [(resnets: [ResnetBlock2D], upsampler: Upsample2D?)] = []
        var output = rc[0]
        for i in 0..<rc.count {
            let prev = output
            output = rc[i]
            let b = d["up_blocks.\(i)"]
            let resnets = try (0...c.layersPerBlock).map {
                try ResnetBlock2D(b["resnets.\($0)"], in: $0 == 0 ? prev : output, out: output, tembChannels: nil, groups: g, eps: eps)
            }
            let up = i < rc.count - 1 ? try Upsample2D(b["upsamplers.0"], channels: output) : nil
            ups.append((resnets, up))
        }
        upBlocks = ups
        convNormOut = try GroupNorm(d["conv_norm_out"], groups: g, channels: c.blockOutChannels[0], eps: eps)
        convOut = try Conv2d(d["conv_out"], in: c.blockOutChannels[0], out: c.outChannels, kernel: 3, padding: 1)
        // The encoder half is not needed to decode.
        weights.ignore { $0.hasPrefix("encoder.") || $0.hasPrefix("quant_conv.") }
    }

    /// Decodes raw latents z [N, latentChannels, h, w] (already divided by the scaling factor, as
    /// diffusers' `vae.decode` expects) to an image [N, outChannels, 8h, 8w] in about [-1, 1].
    public func callAsFunction(_ z: Tensor, observe: ((String, Tensor) -> Void)? = nil) -> Tensor {
        var h = z
        if let p = postQuantConv { h = p(h); observe?("post_quant_conv", h) }
        h = convIn(h)
        observe?("decoder.conv_in", h)
        // `consume`: each block may free its input as soon as it has read it.
        h = midResnets[0](consume h)
        if let a = midAttention { h = a(h) }
        h = midResnets[1](consume h)
        observe?("decoder.mid_block", h)
        for (i, block) in upBlocks.enumerated() {
            for r in block.resnets { h = r(consume h) }
            if let u = block.upsampler { h = u(h) }
            observe?("decoder.up_blocks.\(i)", h)
        }
        return convOut(normalizing: h, with: convNormOut, silu: true)
    }
}
