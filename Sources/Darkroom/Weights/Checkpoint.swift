import Foundation

/// Which Stable Diffusion generation a single-file checkpoint belongs to, decided by its text
/// encoder: SD 1.x ships OpenAI's CLIP ViT-L/14 in transformers' names
/// (`cond_stage_model.transformer.text_model.*`), SD 2.x OpenCLIP ViT-H/14 in open_clip's names
/// (`cond_stage_model.model.*`).
public enum CheckpointFamily: String, Sendable {
    case sd1 = "SD 1.x"
    case sd2 = "SD 2.x"
}

/// A single `.safetensors` file in the original LDM (CompVis / Stability) key layout, as
/// AUTOMATIC1111, ComfyUI and model sites use it: `model.diffusion_model.*` (UNet),
/// `first_stage_model.*` (VAE), `cond_stage_model.*` (text encoder). The file is memory-mapped;
/// this type maps its key names to the diffusers names Darkroom's modules ask for
/// (`WeightView`s), without copying anything.
public struct LDMCheckpoint: Sendable {
    public let file: SafetensorsFile
    public let family: CheckpointFamily

    static let unetPrefix = "model.diffusion_model."
    static let vaePrefixes = ["first_stage_model.", "vae."]
    static let clipPrefix = "cond_stage_model.transformer."
    static let openCLIPPrefix = "cond_stage_model.model."
    /// Buffers LDM saves beside the weights (the DDPM schedule, EMA bookkeeping): never weights.
    static let ldmBuffers: Set<String> = [
        "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
        "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
        "logvar", "model_ema.decay", "model_ema.num_updates", "v_pred",
    ]

    let vaePrefix: String

    public var path: String { file.path }

    public init(url: URL) throws {
        try self.init(file: SafetensorsFile(url: url))
    }

    /// Checks that the three components are present; one error lists everything missing.
    public init(file: SafetensorsFile) throws {
        self.file = file
        let names = file.entries.keys
        func any(_ prefix: String) -> Bool { names.contains { $0.hasPrefix(prefix) } }
        let hasUNet = any(Self.unetPrefix)
        let vae = Self.vaePrefixes.first { any($0 + "decoder.") }
        let hasCLIP = file.entries[Self.clipPrefix + "text_model.embeddings.token_embedding.weight"] != nil
            || file.entries[Self.clipPrefix + "embeddings.token_embedding.weight"] != nil
        let hasOpenCLIP = file.entries[Self.openCLIPPrefix + "token_embedding.weight"] != nil

        var missing: [String] = []
        if !hasUNet { missing.append("the UNet (model.diffusion_model.*)") }
        if vae == nil { missing.append("the VAE (first_stage_model.decoder.*)") }
        if !hasCLIP && !hasOpenCLIP {
            missing.append("the text encoder (cond_stage_model.transformer.text_model.* for SD 1.x or cond_stage_model.model.* for SD 2.x)")
        }
        if !missing.isEmpty {
            var reason = "not a Stable Diffusion 1.x/2.x single-file checkpoint: no weights for " + missing.joined(separator: ", ")
            if any("conditioner.embedders.") {
                reason += " (this looks like an SDXL checkpoint, which Darkroom does not run)"
            } else if names.contains(where: { $0.hasPrefix("down_blocks.") || $0.hasPrefix("text_model.") || $0.hasPrefix("decoder.up_blocks.") }) {
                reason += " (this looks like one component of a diffusers folder: pass the folder instead)"
            } else if names.isEmpty {
                reason += " (the file holds no tensors)"
            }
            throw DarkroomError.invalidFile(path: file.path, reason: reason)
        }
        vaePrefix = vae!
        family = hasOpenCLIP && !hasCLIP ? .sd2 : .sd1
    }

    // MARK: - Lookups used by the mapping and by architecture inference

    func entry(_ key: String) -> SafetensorsFile.Entry? { file.entries[key] }

    func shape(_ key: String) -> [Int]? { file.entries[key]?.shape }

    /// Keys under `prefix`, with the prefix removed.
    func keys(under prefix: String) -> [String] {
        file.entries.keys.filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }
    }

    /// The distinct integers N in keys `<prefix>N.<anything>`.
    func indices(under prefix: String) -> [Int] {
        var found = Set<Int>()
        for k in keys(under: prefix) {
            if let dot = k.firstIndex(of: "."), let n = Int(k[..<dot]) { found.insert(n) }
        }
        return found.sorted()
    }

    func view(_ fileKey: String) -> WeightView? {
        guard let e = file.entries[fileKey] else { return nil }
        return WeightView(key: fileKey, shape: e.shape)
    }

    // MARK: - UNet: model.diffusion_model.* -> UNet2DConditionModel names

    /// LDM's resnet layers -> diffusers' ResnetBlock2D names.
    static let unetResnetNames: [(String, String)] = [
        ("in_layers.0.", "norm1."), ("in_layers.2.", "conv1."), ("emb_layers.1.", "time_emb_proj."),
        ("out_layers.0.", "norm2."), ("out_layers.3.", "conv2."), ("skip_connection.", "conv_shortcut."),
    ]

    static func renameResnet(_ rest: Substring, names: [(String, String)]) -> String? {
        for (old, new) in names where rest.hasPrefix(old) { return new + rest.dropFirst(old.count) }
        return nil
    }

    /// The diffusers name of a UNet key (without `model.diffusion_model.`), given
    /// `layersPerBlock` (LDM's `num_res_blocks`); nil when the key has no diffusers counterpart.
    /// Transformer internals (`proj_in`, `transformer_blocks.N.attn1.to_q`, `ff.net.0.proj`, ...)
    /// are spelled the same in both layouts.
    static func unetName(_ key: String, layersPerBlock l: Int) -> String? {
        let parts = key.split(separator: ".", maxSplits: 3, omittingEmptySubsequences: false)
        func tail(_ n: Int) -> Substring { parts.count > n ? parts[n...].joined(separator: ".")[...] : "" }
        switch parts.first {
        case "time_embed":
            if parts.count == 3, parts[1] == "0" { return "time_embedding.linear_1." + parts[2] }
            if parts.count == 3, parts[1] == "2" { return "time_embedding.linear_2." + parts[2] }
        case "out":
            if parts.count == 3, parts[1] == "0" { return "conv_norm_out." + parts[2] }
            if parts.count == 3, parts[1] == "2" { return "conv_out." + parts[2] }
        case "input_blocks":
            guard parts.count == 4, let i = Int(parts[1]), let sub = Int(parts[2]) else { return nil }
            if i == 0 { return sub == 0 ? "conv_in." + parts[3] : nil }
            let block = (i - 1) / (l + 1), layer = (i - 1) % (l + 1)
            if layer == l {
                // The level's downsampler: input_blocks.I.0.op
                guard sub == 0, parts[3].hasPrefix("op.") else { return nil }
                return "down_blocks.\(block).downsamplers.0.conv." + parts[3].dropFirst(3)
            }
            if sub == 0 { return renameResnet(parts[3], names: unetResnetNames).map { "down_blocks.\(block).resnets.\(layer)." + $0 } }
            if sub == 1 { return "down_blocks.\(block).attentions.\(layer)." + parts[3] }
        case "middle_block":
            guard parts.count >= 3, let sub = Int(parts[1]) else { return nil }
            let rest = tail(2)
            switch sub {
            case 0: return renameResnet(rest, names: unetResnetNames).map { "mid_block.resnets.0." + $0 }
            case 1: return "mid_block.attentions.0." + rest
            case 2: return renameResnet(rest, names: unetResnetNames).map { "mid_block.resnets.1." + $0 }
            default: return nil
            }
        case "output_blocks":
            guard parts.count == 4, let i = Int(parts[1]), let sub = Int(parts[2]) else { return nil }
            let block = i / (l + 1), layer = i % (l + 1)
            if sub == 0 { return renameResnet(parts[3], names: unetResnetNames).map { "up_blocks.\(block).resnets.\(layer)." + $0 } }
            // The upsampler follows the attention (sub 2) or, in blocks without one, the resnet (sub 1).
            if parts[3].hasPrefix("conv."), sub == 1 || sub == 2 {
                return "up_blocks.\(block).upsamplers.0.conv." + parts[3].dropFirst(5)
            }
            if sub == 1 { return "up_blocks.\(block).attentions.\(layer)." + parts[3] }
        default:
            break
        }
        return nil
    }

    /// Views for every UNet key, and the checkpoint keys that have no diffusers counterpart.
    func unetViews(layersPerBlock: Int) -> (views: [String: WeightView], unmapped: [String]) {
        var views: [String: WeightView] = [:]
        var unmapped: [String] = []
        for k in keys(under: Self.unetPrefix) {
            if let name = Self.unetName(k, layersPerBlock: layersPerBlock), let v = view(Self.unetPrefix + k) {
                views[name] = v
            } else {
                unmapped.append(Self.unetPrefix + k)
            }
        }
        return (views, unmapped)
    }

    // MARK: - VAE: first_stage_model.* -> AutoencoderKL names

    static let vaeResnetNames: [(String, String)] = [
        ("norm1.", "norm1."), ("conv1.", "conv1."), ("norm2.", "norm2."), ("conv2.", "conv2."), ("nin_shortcut.", "conv_shortcut."),
    ]
    static let vaeAttentionNames: [(String, String)] = [
        ("norm.", "group_norm."), ("q.", "to_q."), ("k.", "to_k."), ("v.", "to_v."), ("proj_out.", "to_out.0."),
    ]

    /// The diffusers name of a VAE key (without its prefix). LDM numbers the decoder's `up.N`
    /// levels from the lowest resolution's channel count upwards, diffusers' `up_blocks` in
    /// execution order: `up.i` is `up_blocks.(levels - 1 - i)`.
    static func vaeName(_ key: String, levels: Int) -> String? {
        let parts = key.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count >= 2 else { return nil }
        let side = parts[0]
        if side == "quant_conv" || side == "post_quant_conv" { return parts.count == 2 ? key : nil }
        guard side == "encoder" || side == "decoder" else { return nil }
        let rest = parts[1...]
        func join(_ s: ArraySlice<Substring>) -> Substring { s.joined(separator: ".")[...] }
        switch rest.first! {
        case "conv_in", "conv_out":
            return key
        case "norm_out":
            return "\(side).conv_norm_out." + join(rest.dropFirst())
        case "mid":
            guard rest.count >= 3 else { return nil }
            let tail = join(rest.dropFirst(2))
            switch rest[rest.startIndex + 1] {
            case "block_1": return renameResnet(tail, names: vaeResnetNames).map { "\(side).mid_block.resnets.0." + $0 }
            case "block_2": return renameResnet(tail, names: vaeResnetNames).map { "\(side).mid_block.resnets.1." + $0 }
            case "attn_1": return renameResnet(tail, names: vaeAttentionNames).map { "\(side).mid_block.attentions.0." + $0 }
            default: return nil
            }
        case "down", "up":
            guard rest.count >= 4, let i = Int(rest[rest.startIndex + 1]) else { return nil }
            let isDown = rest.first! == "down"
            guard isDown == (side == "encoder") else { return nil }
            let block = isDown ? i : levels - 1 - i
            guard block >= 0 else { return nil }
            let blocks = isDown ? "down_blocks" : "up_blocks"
            let kind = rest[rest.startIndex + 2]
            if kind == "block", rest.count >= 5, let j = Int(rest[rest.startIndex + 3]) {
                return renameResnet(join(rest.dropFirst(4)), names: vaeResnetNames).map { "\(side).\(blocks).\(block).resnets.\(j)." + $0 }
            }
            let sampler = isDown ? "downsample" : "upsample"
            if kind == sampler, rest[rest.startIndex + 3] == "conv", rest.count == 5 {
                return "\(side).\(blocks).\(block).\(isDown ? "downsamplers" : "upsamplers").0.conv." + rest.last!
            }
            return nil
        default:
            return nil
        }
    }

    /// Number of resolution levels of the VAE (decoder `up.N`).
    var vaeLevels: Int { (indices(under: vaePrefix + "decoder.up.").last ?? -1) + 1 }

    func vaeViews() -> (views: [String: WeightView], unmapped: [String]) {
        let levels = vaeLevels
        var views: [String: WeightView] = [:]
        var unmapped: [String] = []
        for k in keys(under: vaePrefix) {
            guard let name = Self.vaeName(k, levels: levels), var v = view(vaePrefix + k) else {
                unmapped.append(vaePrefix + k)
                continue
            }
            // Mid-block attention projections are 1x1 convolutions in LDM, Linear in diffusers.
            if name.contains(".mid_block.attentions.0.to_"), name.hasSuffix(".weight"), v.shape.count > 2 {
                v.shape = Array(v.shape.prefix(2))
            }
            views[name] = v
        }
        return (views, unmapped)
    }

    // MARK: - Text encoder: cond_stage_model.* -> CLIPTextModel names

    /// Views for the text encoder under transformers' `text_model.` names, the keys without a
    /// counterpart, and the keys deliberately left out (OpenCLIP's projection, logit scale and
    /// last block).
    func textEncoderViews() -> (views: [String: WeightView], unmapped: [String], skipped: [String]) {
        switch family {
        case .sd1: return clipViews()
        case .sd2: return openCLIPViews()
        }
    }

    private func clipViews() -> (views: [String: WeightView], unmapped: [String], skipped: [String]) {
        var views: [String: WeightView] = [:]
        var unmapped: [String] = []
        for k in keys(under: Self.clipPrefix) {
            // Checkpoints saved with old transformers lack the `text_model.` level.
            let name = k.hasPrefix("text_model.") ? k : "text_model." + k
            if let v = view(Self.clipPrefix + k) { views[name] = v } else { unmapped.append(Self.clipPrefix + k) }
        }
        return (views, unmapped, [])
    }

    /// Number of OpenCLIP residual blocks in the file.
    var openCLIPBlocks: Int { (indices(under: Self.openCLIPPrefix + "transformer.resblocks.").last ?? -1) + 1 }

    /// OpenCLIP -> CLIPTextModel. SD 2.x conditions on the penultimate layer (LDM's
    /// FrozenOpenCLIPEmbedder runs all blocks but the last, then `ln_final`); diffusers
    /// reproduces that by dropping the last residual block (resblocks.23 of 24) and declaring 23
    /// layers. The fused `in_proj_weight` [3h, h] becomes q, k, v row views.
    private func openCLIPViews() -> (views: [String: WeightView], unmapped: [String], skipped: [String]) {
        let p = Self.openCLIPPrefix
        let last = openCLIPBlocks - 1
        var views: [String: WeightView] = [:]
        var unmapped: [String] = []
        var skipped: [String] = []
        let blockNames: [(String, String)] = [
            ("ln_1.", "layer_norm1."), ("ln_2.", "layer_norm2."), ("attn.out_proj.", "self_attn.out_proj."),
            ("mlp.c_fc.", "mlp.fc1."), ("mlp.c_proj.", "mlp.fc2."),
        ]
        for k in keys(under: p) {
            let full = p + k
            switch k {
            case "token_embedding.weight": views["text_model.embeddings.token_embedding.weight"] = view(full)
            case "positional_embedding": views["text_model.embeddings.position_embedding.weight"] = view(full)
            case "ln_final.weight", "ln_final.bias": views["text_model.final_layer_norm." + k.dropFirst(9)] = view(full)
            case "text_projection", "logit_scale", "attn_mask": skipped.append(full)
            default:
                let rb = "transformer.resblocks."
                guard k.hasPrefix(rb), let dot = k.dropFirst(rb.count).firstIndex(of: "."),
                      let i = Int(k.dropFirst(rb.count)[..<dot]) else {
                    unmapped.append(full)
                    continue
                }
                if i == last {
                    skipped.append(full)
                    continue
                }
                let rest = k[k.index(after: dot)...]
                let layer = "text_model.encoder.layers.\(i)."
                if rest == "attn.in_proj_weight" || rest == "attn.in_proj_bias", let e = entry(full), let rows = e.shape.first, rows % 3 == 0 {
                    let h = rows / 3
                    let cols = e.shape.count == 2 ? e.shape[1] : 1
                    let suffix = rest.hasSuffix("weight") ? "weight" : "bias"
                    let shape = e.shape.count == 2 ? [h, cols] : [h]
                    for (n, proj) in ["q_proj", "k_proj", "v_proj"].enumerated() {
                        views[layer + "self_attn.\(proj).\(suffix)"] = WeightView(key: full, shape: shape, offset: n * h * cols)
                    }
                } else if let name = Self.renameResnet(rest, names: blockNames) {
                    views[layer + name] = view(full)
                } else {
                    unmapped.append(full)
                }
            }
        }
        return (views, unmapped, skipped)
    }

    /// Keys outside the three components: known LDM buffers and EMA copies are expected and
    /// skipped; anything else is worth a warning.
    func otherKeys() -> (expected: [String], unexpected: [String]) {
        var expected: [String] = [], unexpected: [String] = []
        for k in file.entries.keys where !k.hasPrefix(Self.unetPrefix) && !k.hasPrefix(vaePrefix) && !k.hasPrefix("cond_stage_model.") {
            if Self.ldmBuffers.contains(k) || k.hasPrefix("model_ema.") { expected.append(k) } else { unexpected.append(k) }
        }
        return (expected.sorted(), unexpected.sorted())
    }
}
