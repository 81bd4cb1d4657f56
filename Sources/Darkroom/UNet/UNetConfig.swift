import Foundation

/// `unet/config.json` of a UNet2DConditionModel, with diffusers' defaults and its per-block
/// expansion of int-or-list fields. Options Darkroom does not implement are rejected by name.
public struct UNetConfig: Sendable {
    public var sampleSize: Int?
    public var inChannels: Int
    public var outChannels: Int
    public var centerInputSample: Bool
    public var flipSinToCos: Bool
    public var freqShift: Float
    public var downBlockTypes: [String]
    public var upBlockTypes: [String]
    public var hasMidBlock: Bool
    public var blockOutChannels: [Int]
    public var layersPerBlock: [Int]
    public var downsamplePadding: Int
    public var midBlockScaleFactor: Float
    public var normNumGroups: Int
    public var normEps: Float
    public var crossAttentionDim: [Int]
    public var transformerLayersPerBlock: [Int]
    /// Heads per block (diffusers' `attention_head_dim`, which SD configs use as a head count).
    public var numAttentionHeads: [Int]
    public var onlyCrossAttention: [Bool]
    public var useLinearProjection: Bool
    public var upcastAttention: Bool
    public var resnetOutScaleFactor: Float
    public var timeEmbeddingDim: Int
    public var timeCondProjDim: Int?
    public var convInKernel: Int
    public var convOutKernel: Int

    public init(_ c: ConfigFile) throws {
        sampleSize = c.value("sample_size") == nil ? nil : try c.int("sample_size", range: 1...65536)
        inChannels = try c.int("in_channels", default: 4, range: 1...4096)
        outChannels = try c.int("out_channels", default: 4, range: 1...4096)
        centerInputSample = try c.bool("center_input_sample", default: false)
        flipSinToCos = try c.bool("flip_sin_to_cos", default: true)
        freqShift = Float(try c.double("freq_shift", default: 0))
        downBlockTypes = try c.stringList("down_block_types", default: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"])
        upBlockTypes = try c.stringList("up_block_types", default: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"])
        for t in downBlockTypes where !["CrossAttnDownBlock2D", "DownBlock2D"].contains(t) {
            throw DarkroomError.unsupported(path: c.path, key: "down_block_types", value: "\"\(t)\"")
        }
        for t in upBlockTypes where !["CrossAttnUpBlock2D", "UpBlock2D"].contains(t) {
            throw DarkroomError.unsupported(path: c.path, key: "up_block_types", value: "\"\(t)\"")
        }
        let mid = c.value("mid_block_type")
        if mid == nil && c.members["mid_block_type"] != nil {
            hasMidBlock = false  // explicit null: no mid block
        } else {
            hasMidBlock = true
            try c.require("mid_block_type", in: [.string("UNetMidBlock2DCrossAttn")])
        }
        let blocks = downBlockTypes.count
        blockOutChannels = try c.intList("block_out_channels", default: [320, 640, 1280, 1280], range: 1...65536)
        guard blockOutChannels.count == blocks, upBlockTypes.count == blocks, blocks >= 1 else {
            throw DarkroomError.invalidConfig(path: c.path, key: "block_out_channels", reason: "\(blockOutChannels.count) entries for \(blocks) down and \(upBlockTypes.count) up blocks")
        }
        layersPerBlock = try c.perBlock("layers_per_block", blocks: blocks, default: 2, range: 1...64)
        downsamplePadding = try c.int("downsample_padding", default: 1, range: 0...1)
        midBlockScaleFactor = Float(try c.double("mid_block_scale_factor", default: 1))
        normNumGroups = try c.int("norm_num_groups", default: 32, range: 1...4096)
        normEps = Float(try c.double("norm_eps", default: 1e-5))
        crossAttentionDim = try c.perBlock("cross_attention_dim", blocks: blocks, default: 1280, range: 1...65536)
        if case .array(let items)? = c.value("transformer_layers_per_block"), items.contains(where: { if case .array = $0 { return true }; return false }) {
            throw DarkroomError.unsupported(path: c.path, key: "transformer_layers_per_block", value: "nested lists")
        }
        transformerLayersPerBlock = try c.perBlock("transformer_layers_per_block", blocks: blocks, default: 1, range: 1...64)
        if c.value("num_attention_heads") != nil {
            // diffusers itself refuses this key for UNet2DConditionModel.
            throw DarkroomError.unsupported(path: c.path, key: "num_attention_heads", value: c.value("num_attention_heads")!.compactText)
        }
        numAttentionHeads = try c.perBlock("attention_head_dim", blocks: blocks, default: 8, range: 1...4096)
        if case .array(let items)? = c.value("only_cross_attention") {
            guard items.count == blocks else {
                throw DarkroomError.invalidConfig(path: c.path, key: "only_cross_attention", reason: "\(items.count) entries for \(blocks) blocks")
            }
            onlyCrossAttention = try items.map {
                guard case .bool(let b) = $0 else { throw DarkroomError.invalidConfig(path: c.path, key: "only_cross_attention", reason: "expected booleans") }
                return b
            }
        } else {
            onlyCrossAttention = Array(repeating: try c.bool("only_cross_attention", default: false), count: blocks)
        }
        useLinearProjection = try c.bool("use_linear_projection", default: false)
        upcastAttention = try c.bool("upcast_attention", default: false)
        resnetOutScaleFactor = Float(try c.double("resnet_out_scale_factor", default: 1))
        timeEmbeddingDim = try c.int("time_embedding_dim", default: blockOutChannels[0] * 4, range: 1...65536)
        timeCondProjDim = c.value("time_cond_proj_dim") == nil ? nil : try c.int("time_cond_proj_dim", range: 1...65536)
        convInKernel = try c.int("conv_in_kernel", default: 3, range: 1...15)
        convOutKernel = try c.int("conv_out_kernel", default: 3, range: 1...15)
        guard convInKernel % 2 == 1, convOutKernel % 2 == 1 else {
            throw DarkroomError.invalidConfig(path: c.path, key: "conv_in_kernel", reason: "kernel sizes must be odd")
        }

        try c.require("act_fn", in: [.string("silu"), .string("swish")])
        try c.require("time_embedding_type", in: [.string("positional")])
        try c.require("resnet_time_scale_shift", in: [.string("default")])
        try c.require("resnet_skip_time_act", in: [.bool(false)])
        try c.require("attention_type", in: [.string("default")])
        try c.require("dual_cross_attention", in: [.bool(false)])
        for key in ["class_embed_type", "addition_embed_type", "encoder_hid_dim", "encoder_hid_dim_type", "num_class_embeds",
                    "timestep_post_act", "time_embedding_act_fn", "cross_attention_norm", "projection_class_embeddings_input_dim"] {
            try c.require(key, in: [])
        }
        try c.require("class_embeddings_concat", in: [.bool(false)])
        try c.require("mid_block_only_cross_attention", in: [.bool(false)])
        try c.require("reverse_transformer_layers_per_block", in: [])
        for (ch, heads) in zip(blockOutChannels, numAttentionHeads) where ch % normNumGroups != 0 || ch < heads {
            throw DarkroomError.invalidConfig(path: c.path, key: "block_out_channels", reason: "\(ch) channels do not fit \(normNumGroups) groups and \(heads) heads")
        }
    }

    public static func load(_ url: URL) throws -> UNetConfig { try UNetConfig(ConfigFile.load(url)) }
}
