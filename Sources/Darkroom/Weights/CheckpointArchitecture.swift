import Foundation

/// Choices for loading a single-file checkpoint. Everything left nil is inferred from the
/// tensors as diffusers' `from_single_file` infers it for SD 1.x/2.x; set a field when a model
/// departs from the standard architecture in a way its shapes cannot show (head counts, group
/// counts, VAE scaling) or to correct the prediction type.
public struct CheckpointOptions: Sendable {
    /// What the UNet predicts. Inferred: SD 2.x is v-prediction (diffusers' rule for a file
    /// without `global_step`, i.e. every safetensors file: the 768-v models), SD 1.x epsilon.
    /// SD 2.x *base* (512) models predict epsilon and need this override.
    public var predictionType: SchedulerConfig.PredictionType?
    /// Replaces the noise schedule settings (default: SD's DDIM settings: scaled_linear
    /// 0.00085...0.012, 1000 steps, steps_offset 1, leading spacing). Its `predictionType` is
    /// not used: the prediction type is `predictionType` above, or inferred.
    public var scheduler: SchedulerConfig?
    /// A diffusers model folder whose `unet/`, `vae/`, `text_encoder/` and `scheduler/` configs
    /// (and `tokenizer/`) describe the checkpoint, as diffusers' `from_single_file(config=)`:
    /// nothing is inferred then, except what the key layout itself says.
    public var configFolder: URL?
    /// A tokenizer folder (vocab.json + merges.txt or tokenizer.json, with its configs) to use
    /// instead of the CLIP vocabulary shipped in Models/clip-tokenizer.
    public var tokenizerFolder: URL?
    /// The training resolution in pixels (the default image size). Inferred: 512, or 768 for
    /// an SD 2.x v-prediction model.
    public var imageSize: Int?
    /// Heads per UNet block (diffusers' `attention_head_dim`). Inferred: 8 (SD 1.x), or
    /// channels / 64 (SD 2.x: [5, 10, 20, 20]).
    public var unetAttentionHeads: [Int]?
    /// Text encoder heads. Inferred: hidden size / 64 (12 for CLIP ViT-L, 16 for OpenCLIP ViT-H).
    public var textAttentionHeads: Int?
    /// GroupNorm groups in the UNet / the VAE. Inferred: 32.
    public var unetNormGroups: Int?
    public var vaeNormGroups: Int?
    /// Latent scaling. Inferred: 0.18215 (LDM's `scale_factor` for SD 1.x and 2.x).
    public var vaeScalingFactor: Float?
    /// diffusers' `upcast_attention` (no effect on Darkroom's float32 arithmetic). Inferred:
    /// true for SD 2.x as in stabilityai/stable-diffusion-2-1, false for SD 1.x.
    public var upcastAttention: Bool?

    public init(predictionType: SchedulerConfig.PredictionType? = nil, scheduler: SchedulerConfig? = nil,
                configFolder: URL? = nil, tokenizerFolder: URL? = nil, imageSize: Int? = nil) {
        self.predictionType = predictionType
        self.scheduler = scheduler
        self.configFolder = configFolder
        self.tokenizerFolder = tokenizerFolder
        self.imageSize = imageSize
    }
}

/// What was decided about a single-file checkpoint, for `info`-style output and metadata.
public struct CheckpointInfo: Sendable {
    public let path: String
    public let family: CheckpointFamily
    public let predictionType: SchedulerConfig.PredictionType
    /// True when the prediction type came from `CheckpointOptions` rather than inference.
    public let predictionOverridden: Bool
    /// Tensor count per stored dtype ("F16": 1130, ...).
    public let dtypes: [String: Int]
}

/// The configs of the four components, inferred from a checkpoint's tensor shapes (or read
/// from `CheckpointOptions.configFolder`), plus how its keys map.
struct CheckpointArchitecture {
    var unet: UNetConfig
    var vae: VAEConfig
    var text: CLIPTextConfig
    var scheduler: SchedulerConfig
    /// LDM's `num_res_blocks`, which the UNet key mapping needs.
    var unetLayersPerBlock: Int
    var predictionOverridden: Bool

    init(_ ckpt: LDMCheckpoint, options o: CheckpointOptions) throws {
        let l = try Self.unetLayersPerBlock(ckpt)
        unetLayersPerBlock = l
        if let folder = o.configFolder {
            func sub(_ p: String) -> URL { folder.appendingPathComponent(p) }
            unet = try UNetConfig.load(sub("unet/config.json"))
            vae = try VAEConfig.load(sub("vae/config.json"))
            text = try CLIPTextConfig(ConfigFile.load(sub("text_encoder/config.json")))
            scheduler = try o.scheduler ?? SchedulerConfig.load(from: sub("scheduler/scheduler_config.json"))
            if let p = o.predictionType { scheduler.predictionType = p }
            predictionOverridden = o.predictionType != nil
            return
        }
        let predictionType = o.predictionType ?? Self.inferPredictionType(ckpt)
        predictionOverridden = o.predictionType != nil
        let imageSize = o.imageSize ?? (ckpt.family == .sd2 && predictionType == .vPrediction ? 768 : 512)
        let vaeMembers = try Self.inferVAE(ckpt, options: o, imageSize: imageSize)
        vae = try VAEConfig(ConfigFile(path: ckpt.path + " [VAE config inferred from first_stage_model.*]", members: vaeMembers))
        unet = try UNetConfig(ConfigFile(path: ckpt.path + " [UNet config inferred from model.diffusion_model.*]",
                                         members: Self.inferUNet(ckpt, layersPerBlock: l, options: o, sampleSize: imageSize / vae.downscaleFactor)))
        text = try CLIPTextConfig(ConfigFile(path: ckpt.path + " [text encoder config inferred from cond_stage_model.*]",
                                             members: Self.inferText(ckpt, options: o)))
        var s = o.scheduler ?? Self.stableDiffusionScheduler
        s.predictionType = predictionType
        scheduler = s
    }

    /// SD's DDIM settings (stable-diffusion-v1-5 / stable-diffusion-2-1 scheduler configs).
    static var stableDiffusionScheduler: SchedulerConfig {
        var s = SchedulerConfig()
        s.numTrainTimesteps = 1000
        s.betaStart = 0.00085
        s.betaEnd = 0.012
        s.betaSchedule = .scaledLinear
        s.clipSample = false
        s.setAlphaToOne = false
        s.stepsOffset = 1
        s.timestepSpacing = .leading
        return s
    }

    /// diffusers: an SD 2 checkpoint is v-prediction unless its `global_step` is 875000 (the
    /// 512 base model), and safetensors files carry no `global_step`. A `v_pred` marker tensor
    /// (ComfyUI's convention) also means v-prediction.
    static func inferPredictionType(_ ckpt: LDMCheckpoint) -> SchedulerConfig.PredictionType {
        if ckpt.entry("v_pred") != nil { return .vPrediction }
        return ckpt.family == .sd2 ? .vPrediction : .epsilon
    }

    static func fail(_ ckpt: LDMCheckpoint, _ reason: String) -> DarkroomError {
        .invalidFile(path: ckpt.path, reason: reason)
    }

    static func need(_ ckpt: LDMCheckpoint, _ key: String, dims: Int? = nil) throws -> [Int] {
        guard let s = ckpt.shape(key) else { throw fail(ckpt, "missing tensor '\(key)'") }
        if let dims, s.count != dims { throw fail(ckpt, "tensor '\(key)' has shape \(s), expected \(dims) dimensions") }
        return s
    }

    /// `num_res_blocks`: the input blocks before the first downsampler (`input_blocks.N.0.op`).
    static func unetLayersPerBlock(_ ckpt: LDMCheckpoint) throws -> Int {
        let p = LDMCheckpoint.unetPrefix
        let inputs = ckpt.indices(under: p + "input_blocks.")
        guard inputs.count >= 2, inputs == Array(0..<inputs.count) else {
            throw fail(ckpt, "the UNet's input_blocks are missing or not numbered 0...N (found \(inputs.prefix(8)))")
        }
        if let op = inputs.first(where: { ckpt.entry(p + "input_blocks.\($0).0.op.weight") != nil }) { return op - 1 }
        return inputs.count - 1  // a single level
    }

    static func inferUNet(_ ckpt: LDMCheckpoint, layersPerBlock l: Int, options o: CheckpointOptions, sampleSize: Int) throws -> [String: JSONValue] {
        let p = LDMCheckpoint.unetPrefix
        func has(_ k: String) -> Bool { ckpt.entry(p + k) != nil }
        let inputs = ckpt.indices(under: p + "input_blocks.").count
        let outputs = ckpt.indices(under: p + "output_blocks.").count
        guard inputs % (l + 1) == 0 else {
            throw fail(ckpt, "\(inputs) UNet input blocks do not form levels of \(l) resnets plus a downsampler")
        }
        let levels = inputs / (l + 1)
        guard outputs == levels * (l + 1) else {
            throw fail(ckpt, "the UNet has \(outputs) output blocks; \(levels) levels of \(l + 1) were expected")
        }
        if has("label_emb.0.0.weight") || has("label_emb.weight") {
            throw DarkroomError.unsupported(path: ckpt.path, key: "model.diffusion_model.label_emb", value: "class embeddings (SD 2 unCLIP / upscaler models)")
        }
        let convIn = try need(ckpt, p + "input_blocks.0.0.weight", dims: 4)
        let convOut = try need(ckpt, p + "out.2.weight", dims: 4)
        let timeEmbed = try need(ckpt, p + "time_embed.0.weight", dims: 2)
        if convIn[1] != convOut[0] {
            let what = convIn[1] == 9 ? "an inpainting model (9 input channels)" : "\(convIn[1]) input but \(convOut[0]) output channels"
            throw DarkroomError.unsupported(path: ckpt.path, key: "model.diffusion_model.input_blocks.0.0.weight", value: what)
        }

        var channels: [Int] = [], down: [String] = [], up: [String] = [], depth: [Int] = []
        for b in 0..<levels {
            let first = 1 + b * (l + 1)
            channels.append(try need(ckpt, p + "input_blocks.\(first).0.out_layers.3.weight")[0])
            let attn = "input_blocks.\(first).1."
            if has(attn + "proj_in.weight") {
                down.append("CrossAttnDownBlock2D")
                depth.append(max(1, ckpt.indices(under: p + attn + "transformer_blocks.").count))
            } else {
                down.append("DownBlock2D")
                depth.append(1)
            }
            // output_blocks run from the lowest resolution up, as diffusers' up_blocks do.
            up.append(has("output_blocks.\(b * (l + 1)).1.proj_in.weight") ? "CrossAttnUpBlock2D" : "UpBlock2D")
        }
        guard has("middle_block.1.proj_in.weight") else {
            throw DarkroomError.unsupported(path: ckpt.path, key: "model.diffusion_model.middle_block", value: "a mid block without cross-attention")
        }
        let mid = "middle_block.1."
        let crossDim = try need(ckpt, p + mid + "transformer_blocks.0.attn2.to_k.weight", dims: 2)[1]
        let linear = try need(ckpt, p + mid + "proj_in.weight").count == 2

        let heads: [Int]
        if let h = o.unetAttentionHeads {
            guard h.count == levels else {
                throw DarkroomError.invalidArgument("\(h.count) UNet head counts given for \(levels) blocks")
            }
            heads = h
        } else if ckpt.family == .sd2 {
            // SD 2's num_head_channels 64: heads = channels / 64 per block.
            for c in channels where c % 64 != 0 {
                throw fail(ckpt, "UNet channels \(channels) are not multiples of 64, so SD 2's 64-wide heads do not fit; give the head counts explicitly")
            }
            heads = channels.map { $0 / 64 }
        } else {
            heads = Array(repeating: 8, count: levels)
        }
        let groups = o.unetNormGroups ?? 32
        for c in channels where c % groups != 0 {
            throw fail(ckpt, "UNet channels \(channels) cannot be split into \(groups) groups; give the group count explicitly")
        }

        var m: [String: JSONValue] = [
            "sample_size": .number(Double(sampleSize)),
            "in_channels": .number(Double(convIn[1])),
            "out_channels": .number(Double(convOut[0])),
            "conv_in_kernel": .number(Double(convIn[2])),
            "conv_out_kernel": .number(Double(convOut[2])),
            "down_block_types": .array(down.map { .string($0) }),
            "up_block_types": .array(up.map { .string($0) }),
            "block_out_channels": .array(channels.map { .number(Double($0)) }),
            "layers_per_block": .number(Double(l)),
            "cross_attention_dim": .number(Double(crossDim)),
            "attention_head_dim": .array(heads.map { .number(Double($0)) }),
            "transformer_layers_per_block": .array(depth.map { .number(Double($0)) }),
            "use_linear_projection": .bool(linear),
            "upcast_attention": .bool(o.upcastAttention ?? (ckpt.family == .sd2)),
            "norm_num_groups": .number(Double(groups)),
        ]
        if timeEmbed[0] != 4 * channels[0] { m["time_embedding_dim"] = .number(Double(timeEmbed[0])) }
        return m
    }

    static func inferVAE(_ ckpt: LDMCheckpoint, options o: CheckpointOptions, imageSize: Int) throws -> [String: JSONValue] {
        let p = ckpt.vaePrefix
        let levels = ckpt.vaeLevels
        guard levels >= 1 else { throw fail(ckpt, "the VAE decoder has no up.N levels") }
        var channels: [Int] = []
        for i in 0..<levels {
            channels.append(try need(ckpt, p + "decoder.up.\(i).block.0.conv2.weight", dims: 4)[0])
        }
        let resnets = ckpt.indices(under: p + "decoder.up.0.block.").count
        guard resnets >= 2 else { throw fail(ckpt, "the VAE decoder's up.0 has \(resnets) resnets; at least 2 were expected") }
        let convIn = try need(ckpt, p + "decoder.conv_in.weight", dims: 4)
        let convOut = try need(ckpt, p + "decoder.conv_out.weight", dims: 4)
        let inChannels = ckpt.shape(p + "encoder.conv_in.weight")?[1] ?? convOut[0]
        let groups = o.vaeNormGroups ?? 32
        for c in channels where c % groups != 0 {
            throw fail(ckpt, "VAE channels \(channels) cannot be split into \(groups) groups; give the group count explicitly")
        }
        return [
            "in_channels": .number(Double(inChannels)),
            "out_channels": .number(Double(convOut[0])),
            "block_out_channels": .array(channels.map { .number(Double($0)) }),
            "layers_per_block": .number(Double(resnets - 1)),
            "latent_channels": .number(Double(convIn[1])),
            "norm_num_groups": .number(Double(groups)),
            "scaling_factor": .number(Double(o.vaeScalingFactor ?? 0.18215)),
            "sample_size": .number(Double(imageSize)),
            "use_quant_conv": .bool(ckpt.entry(p + "quant_conv.weight") != nil),
            "use_post_quant_conv": .bool(ckpt.entry(p + "post_quant_conv.weight") != nil),
            "mid_block_add_attention": .bool(ckpt.entry(p + "decoder.mid.attn_1.q.weight") != nil),
        ]
    }

    static func inferText(_ ckpt: LDMCheckpoint, options o: CheckpointOptions) throws -> [String: JSONValue] {
        let token: [Int], position: [Int], fc1: [Int], layers: Int, act: String
        switch ckpt.family {
        case .sd1:
            let p = LDMCheckpoint.clipPrefix + (ckpt.entry(LDMCheckpoint.clipPrefix + "text_model.embeddings.token_embedding.weight") != nil ? "text_model." : "")
            token = try need(ckpt, p + "embeddings.token_embedding.weight", dims: 2)
            position = try need(ckpt, p + "embeddings.position_embedding.weight", dims: 2)
            fc1 = try need(ckpt, p + "encoder.layers.0.mlp.fc1.weight", dims: 2)
            layers = ckpt.indices(under: p + "encoder.layers.").count
            act = "quick_gelu"
        case .sd2:
            let p = LDMCheckpoint.openCLIPPrefix
            token = try need(ckpt, p + "token_embedding.weight", dims: 2)
            position = try need(ckpt, p + "positional_embedding", dims: 2)
            fc1 = try need(ckpt, p + "transformer.resblocks.0.mlp.c_fc.weight", dims: 2)
            // The last block is not used: SD 2 conditions on the penultimate layer.
            layers = ckpt.openCLIPBlocks - 1
            guard layers >= 1 else { throw fail(ckpt, "the OpenCLIP text encoder has \(ckpt.openCLIPBlocks) residual blocks; SD 2 needs at least 2 (it uses the penultimate)") }
            act = "gelu"
        }
        let hidden = token[1]
        let heads: Int
        if let h = o.textAttentionHeads {
            heads = h
        } else {
            guard hidden % 64 == 0 else {
                throw fail(ckpt, "the text encoder's width \(hidden) is not a multiple of 64, so CLIP's 64-wide heads do not fit; give the head count explicitly")
            }
            heads = hidden / 64
        }
        return [
            "vocab_size": .number(Double(token[0])),
            "hidden_size": .number(Double(hidden)),
            "intermediate_size": .number(Double(fc1[0])),
            "num_hidden_layers": .number(Double(layers)),
            "num_attention_heads": .number(Double(heads)),
            "max_position_embeddings": .number(Double(position[0])),
            "hidden_act": .string(act),
            "layer_norm_eps": .number(1e-5),
        ]
    }
}

extension ConfigFile {
    /// A config built in code (inferred from a checkpoint); `path` names it in messages.
    init(path: String, members: [String: JSONValue]) {
        self.path = path
        self.members = members
    }
}
