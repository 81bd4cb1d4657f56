import Foundation

/// `config.json` of a diffusers `AutoencoderTiny` (TAESD: madebyollin's tiny autoencoder, a few
/// MB, used to preview latents cheaply while sampling).
public struct AutoencoderTinyConfig: Sendable {
    public enum Act: String, Sendable { case relu, silu }

    public var inChannels: Int
    public var outChannels: Int
    public var latentChannels: Int
    public var encoderBlockOutChannels: [Int]
    public var decoderBlockOutChannels: [Int]
    public var numEncoderBlocks: [Int]
    public var numDecoderBlocks: [Int]
    public var upsamplingScalingFactor: Int
    public var act: Act
    /// Only used to pack latents into bytes (`scale_latents`); decoding does not need it.
    public var latentMagnitude: Float
    public var latentShift: Float
    /// TAESD for SD 1.x/2.x has 1: it decodes the UNet's (already scaled) latents directly.
    public var scalingFactor: Float
    public var shiftFactor: Float

    /// The original TAESD (madebyollin/taesd): 64 channels, decoder blocks (3, 3, 3, 1), ReLU.
    public static func taesd(latentChannels: Int = 4, channels: Int = 64) -> AutoencoderTinyConfig {
        AutoencoderTinyConfig(inChannels: 3, outChannels: 3, latentChannels: latentChannels,
                              encoderBlockOutChannels: Array(repeating: channels, count: 4),
                              decoderBlockOutChannels: Array(repeating: channels, count: 4),
                              numEncoderBlocks: [1, 3, 3, 3], numDecoderBlocks: [3, 3, 3, 1],
                              upsamplingScalingFactor: 2, act: .relu, latentMagnitude: 3, latentShift: 0.5,
                              scalingFactor: 1, shiftFactor: 0)
    }

    public init(inChannels: Int, outChannels: Int, latentChannels: Int, encoderBlockOutChannels: [Int],
                decoderBlockOutChannels: [Int], numEncoderBlocks: [Int], numDecoderBlocks: [Int],
                upsamplingScalingFactor: Int, act: Act, latentMagnitude: Float, latentShift: Float,
                scalingFactor: Float, shiftFactor: Float) {
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.latentChannels = latentChannels
        self.encoderBlockOutChannels = encoderBlockOutChannels
        self.decoderBlockOutChannels = decoderBlockOutChannels
        self.numEncoderBlocks = numEncoderBlocks
        self.numDecoderBlocks = numDecoderBlocks
        self.upsamplingScalingFactor = upsamplingScalingFactor
        self.act = act
        self.latentMagnitude = latentMagnitude
        self.latentShift = latentShift
        self.scalingFactor = scalingFactor
        self.shiftFactor = shiftFactor
    }

    public init(_ c: ConfigFile) throws {
        inChannels = try c.int("in_channels", default: 3, range: 1...64)
        outChannels = try c.int("out_channels", default: 3, range: 1...64)
        latentChannels = try c.int("latent_channels", default: 4, range: 1...1024)
        encoderBlockOutChannels = try c.intList("encoder_block_out_channels", default: [64, 64, 64, 64], range: 1...65536)
        decoderBlockOutChannels = try c.intList("decoder_block_out_channels", default: [64, 64, 64, 64], range: 1...65536)
        numEncoderBlocks = try c.intList("num_encoder_blocks", default: [1, 3, 3, 3], range: 0...64)
        numDecoderBlocks = try c.intList("num_decoder_blocks", default: [3, 3, 3, 1], range: 0...64)
        upsamplingScalingFactor = try c.int("upsampling_scaling_factor", default: 2, range: 1...8)
        let actName = try c.choice("act_fn", default: "relu", allowed: ["relu", "silu", "swish"])
        act = actName == "relu" ? .relu : .silu
        _ = try c.choice("upsample_fn", default: "nearest", allowed: ["nearest"])
        latentMagnitude = Float(try c.double("latent_magnitude", default: 3))
        latentShift = Float(try c.double("latent_shift", default: 0.5))
        scalingFactor = Float(try c.double("scaling_factor", default: 1))
        shiftFactor = Float(try c.double("shift_factor", default: 0))
        guard scalingFactor != 0 else { throw DarkroomError.invalidConfig(path: c.path, key: "scaling_factor", reason: "must not be 0") }
        for (key, channels, counts) in [("encoder_block_out_channels", encoderBlockOutChannels, numEncoderBlocks),
                                        ("decoder_block_out_channels", decoderBlockOutChannels, numDecoderBlocks)] {
            guard !channels.isEmpty, channels.count == counts.count else {
                throw DarkroomError.invalidConfig(path: c.path, key: key, reason: "\(channels.count) entries for \(counts.count) blocks")
            }
            // Each stage's conv maps its own width to itself (diffusers builds it that way), so a
            // model only loads in diffusers when every stage has the same width.
            guard Set(channels).count == 1 else {
                throw DarkroomError.invalidConfig(path: c.path, key: key, reason: "stages of different widths \(channels) cannot be built")
            }
        }
    }

    public static func load(_ url: URL) throws -> AutoencoderTinyConfig { try AutoencoderTinyConfig(ConfigFile.load(url)) }

    /// Pixels per latent cell of the decoder: factor^(stages − 1) (8 for TAESD).
    public var decoderUpscaleFactor: Int {
        (0..<(decoderBlockOutChannels.count - 1)).reduce(1) { r, _ in r * upsamplingScalingFactor }
    }
}

/// Where the tensors of a tiny autoencoder live.
public enum TinyAutoencoderLayout: Sendable {
    /// diffusers `AutoencoderTiny`: `decoder.layers.N.*`, `encoder.layers.N.*`.
    case diffusers
    /// madebyollin's `taesd_decoder.safetensors` / `taesd_encoder.safetensors`: `N.*` with the
    /// decoder's indices one higher (its Sequential starts with the clamp).
    case original
}

/// diffusers' `AutoencoderTinyBlock`: three 3x3 convs with activations, plus a skip (1x1 when the
/// width changes), then ReLU (`fuse`).
struct TinyBlock: Sendable {
    let conv0: Conv2d, conv2: Conv2d, conv4: Conv2d
    let skip: Conv2d?
    let act: AutoencoderTinyConfig.Act

    init(_ w: WeightScope, in inC: Int, out outC: Int, act: AutoencoderTinyConfig.Act) throws {
        conv0 = try Conv2d(w["conv.0"], in: inC, out: outC, kernel: 3, padding: 1)
        conv2 = try Conv2d(w["conv.2"], in: outC, out: outC, kernel: 3, padding: 1)
        conv4 = try Conv2d(w["conv.4"], in: outC, out: outC, kernel: 3, padding: 1)
        skip = inC != outC ? try Conv2d(w["skip"], in: inC, out: outC, kernel: 1, bias: false) : nil
        self.act = act
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        var h = conv0(x)
        applyActivation(h, act)
        h = conv2(h)
        applyActivation(h, act)
        h = conv4(h)
        h.addInPlace(skip.map { $0(x) } ?? x)
        applyActivation(h, .relu)
        return h
    }
}

/// In place.
func applyActivation(_ x: Tensor, _ act: AutoencoderTinyConfig.Act) {
    switch act {
    case .relu:
        let p = x.data
        // NaN stays NaN, as torch.relu.
        for i in 0..<x.count where p[i] < 0 { p[i] = 0 }
    case .silu:
        activate(x.data, count: x.count, .silu)
    }
}

/// diffusers' `DecoderTiny`: latents → image in [-1, 1]. Softly clamps the latents to ±3 with
/// tanh(x / 3) · 3 first, then conv + activation, stages of blocks separated by nearest-neighbour
/// upsampling and a bias-free conv, and a final conv whose [0, 1] output is mapped to [-1, 1].
public struct TinyDecoder: Sendable {
    public let config: AutoencoderTinyConfig
    let convIn: Conv2d
    /// Per stage: blocks, then (for all but the last stage) upsample + conv; the last stage ends
    /// with the output conv.
    let stages: [(blocks: [TinyBlock], conv: Conv2d)]

    public init(config c: AutoencoderTinyConfig, weights: Weights, layout: TinyAutoencoderLayout = .diffusers) throws {
        config = c
        let root = weights.scope(layout == .diffusers ? "decoder.layers" : "")
        // Sequential indices: diffusers' start at the first conv, the original's at the clamp.
        var index = layout == .diffusers ? 0 : 1
        func next() -> WeightScope { defer { index += 1 }; return root["\(index)"] }
        let ch = c.decoderBlockOutChannels
        convIn = try Conv2d(next(), in: c.latentChannels, out: ch[0], kernel: 3, padding: 1)
        index += 1  // activation
        var stages: [(blocks: [TinyBlock], conv: Conv2d)] = []
        for (i, count) in c.numDecoderBlocks.enumerated() {
            let last = i == ch.count - 1
            let blocks = try (0..<count).map { _ in try TinyBlock(next(), in: ch[i], out: ch[i], act: c.act) }
            if !last { index += 1 }  // upsample
            let conv = try Conv2d(next(), in: ch[i], out: last ? c.outChannels : ch[i], kernel: 3, padding: 1, bias: last)
            stages.append((blocks, conv))
        }
        self.stages = stages
        if layout == .diffusers { weights.ignore { $0.hasPrefix("encoder.") } }
    }

    /// Loads a decoder from a diffusers `AutoencoderTiny` folder (config.json +
    /// diffusion_pytorch_model.safetensors; e.g. a model's `vae_tiny/`) or from an original TAESD
    /// `taesd_decoder.safetensors` file (default TAESD config; latent channels and width are read
    /// from the first conv).
    public static func load(_ url: URL) throws -> TinyDecoder {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) else {
            throw DarkroomError.fileNotFound(path: url.path)
        }
        if isDir.boolValue {
            let config = try AutoencoderTinyConfig.load(url.appendingPathComponent("config.json"))
            let weights = try Weights.load(componentFolder: url, stem: "diffusion_pytorch_model")
            return try TinyDecoder(config: config, weights: weights, layout: .diffusers)
        }
        let weights = try Weights(files: [SafetensorsFile(url: url)], label: url.lastPathComponent)
        if weights.has("decoder.layers.0.weight") {
            throw DarkroomError.invalidFile(path: url.path, reason: "a diffusers AutoencoderTiny file: pass its folder (with config.json) instead")
        }
        guard let first = weights.entry("1.weight"), first.shape.count == 4 else {
            throw DarkroomError.invalidFile(path: url.path, reason: "not a TAESD decoder (no tensor '1.weight' of rank 4)")
        }
        let config = AutoencoderTinyConfig.taesd(latentChannels: first.shape[1], channels: first.shape[0])
        return try TinyDecoder(config: config, weights: weights, layout: .original)
    }

    /// Pixels per latent cell (8 for TAESD).
    public var upscaleFactor: Int { config.decoderUpscaleFactor }

    /// Decodes raw latents [N, latentChannels, h, w] (the `vae.decode` input: already divided by
    /// the scaling factor) to images [N, outChannels, f·h, f·w] in about [-1, 1].
    public func callAsFunction(_ z: Tensor, observe: ((String, Tensor) -> Void)? = nil) -> Tensor {
        precondition(z.shape.count == 4 && z.shape[1] == config.latentChannels,
                     "TinyDecoder expects [N, \(config.latentChannels), h, w], got \(z.shape)")
        let x = z.mapped { Foundation.tanh($0 / 3) * 3 }
        var h = convIn(x)
        applyActivation(h, config.act)
        // Hook names follow diffusers' Sequential indices.
        var index = 1
        observe?("decoder.layers.\(index)", h)
        let factor = config.upsamplingScalingFactor
        for (i, stage) in stages.enumerated() {
            for b in stage.blocks {
                h = b(h)
                index += 1
            }
            observe?("decoder.layers.\(index)", h)
            if i < stages.count - 1 {
                h = h.upsampledNearest(height: h.shape[2] * factor, width: h.shape[3] * factor)
                index += 1
            }
            h = stage.conv(h)
            index += 1
        }
        for i in 0..<h.count { h.data[i] = h.data[i] * 2 - 1 }
        return h
    }

    /// Decodes the UNet's latents (as the pipeline holds them): z = latents / scaling + shift.
    public func decode(latents: Tensor) -> Tensor {
        let (scale, shift) = (config.scalingFactor, config.shiftFactor)
        return self(latents.mapped { $0 / scale + shift })
    }

    /// A quick RGB preview of the first image of a batch of UNet latents, quantised as diffusers'
    /// postprocessing does (see `RGBImage(decoded:)`).
    public func previewImage(latents: Tensor) -> RGBImage {
        let first = latents.shape[0] == 1 ? latents : latents.rows(0..<1)
        return RGBImage(decoded: decode(latents: first))
    }
}

/// diffusers' `EncoderTiny`: image in [-1, 1] → latents (no distribution). Maps the image to
/// [0, 1] first (the TAESD convention), then a conv, stages of blocks each (after the first)
/// opened by a stride-2 bias-free conv, and an output conv.
public struct TinyEncoder: Sendable {
    public let config: AutoencoderTinyConfig
    /// Per stage: the opening conv (stride 1 for the first stage, 2 after), then blocks.
    let stages: [(conv: Conv2d, blocks: [TinyBlock])]
    let convOut: Conv2d

    public init(config c: AutoencoderTinyConfig, weights: Weights, layout: TinyAutoencoderLayout = .diffusers) throws {
        config = c
        let root = weights.scope(layout == .diffusers ? "encoder.layers" : "")
        var index = 0
        func next() -> WeightScope { defer { index += 1 }; return root["\(index)"] }
        let ch = c.encoderBlockOutChannels
        var stages: [(conv: Conv2d, blocks: [TinyBlock])] = []
        for (i, count) in c.numEncoderBlocks.enumerated() {
            let conv = i == 0
                ? try Conv2d(next(), in: c.inChannels, out: ch[0], kernel: 3, padding: 1)
                : try Conv2d(next(), in: ch[i], out: ch[i], kernel: 3, stride: 2, padding: 1, bias: false)
            let blocks = try (0..<count).map { _ in try TinyBlock(next(), in: ch[i], out: ch[i], act: c.act) }
            stages.append((conv, blocks))
        }
        self.stages = stages
        convOut = try Conv2d(next(), in: ch[ch.count - 1], out: c.latentChannels, kernel: 3, padding: 1)
        if layout == .diffusers { weights.ignore { $0.hasPrefix("decoder.") } }
    }

    /// Encodes images [N, inChannels, H, W] in [-1, 1] to raw latents (`vae.encode(x).latents`).
    public func callAsFunction(_ image: Tensor) -> Tensor {
        precondition(image.shape.count == 4 && image.shape[1] == config.inChannels,
                     "TinyEncoder expects [N, \(config.inChannels), H, W], got \(image.shape)")
        var h = image.mapped { ($0 + 1) / 2 }
        for stage in stages {
            h = stage.conv(h)
            for b in stage.blocks { h = b(h) }
        }
        return convOut(h)
    }
}

/// A diffusers `AutoencoderTiny` folder: the decoder, and the encoder when its weights are there.
public struct AutoencoderTiny: Sendable {
    public let config: AutoencoderTinyConfig
    public let decoder: TinyDecoder
    public let encoder: TinyEncoder?

    public init(folder: URL) throws {
        config = try AutoencoderTinyConfig.load(folder.appendingPathComponent("config.json"))
        let weights = try Weights.load(componentFolder: folder, stem: "diffusion_pytorch_model")
        decoder = try TinyDecoder(config: config, weights: weights)
        encoder = weights.has("encoder.layers.0.weight") ? try TinyEncoder(config: config, weights: weights) : nil
    }
}
