import Foundation

/// How much memory a render will need, worked out before any weight is loaded: from the configs
/// and the safetensors headers alone (cheap even for a 4 GB checkpoint).
///
/// The estimate is the largest, over the phases of a run, of the weights held in that phase +
/// its working set + a fixed base:
/// - **weights** as Darkroom keeps them (a run's only batch frees the text encoder before the
///   UNet phase and the UNet before the decoder's, see `generate(batch:releasingWeights:)`): matrices and convolution kernels in their stored
///   precision (Float16 files stay Float16 in memory), everything else (biases, norms,
///   embeddings, BF16 and F32 files) as Float32; the VAE encoder only for image-to-image;
/// - **working set** of each phase: loading (the largest tensor widened to Float32 while it is
///   repacked), the UNet (every skip connection of the down path held for the up path, plus the
///   largest resnet or transformer block's temporaries, for `batch × 2` rows with guidance), the
///   VAE decoder at full resolution (one image at a time: its last blocks hold several
///   full-resolution planes of 128-256 channels, which is where SD's peak is), and the VAE
///   encoder for image-to-image;
/// - **base**: the Swift runtime, libraries and the tokenizer's tables;
/// - **allocator slack**: the working set counts 1.1 times, plus a quarter of the phase before
///   (freed memory the allocator keeps for reuse; see `estimate`).
///
/// The block counts mirror `ResnetBlock2D`, `Transformer2DModel`, `Upsample2D` and the VAE as
/// they are written (input, normalised copy, padded copy and output alive together): with
/// glibc forced to return every freed block (`MALLOC_MMAP_THRESHOLD_=131072`) the working-set
/// part matches measured peak RSS within 5 %. Against ordinary peak RSS the estimate is within
/// the factor stated in the README's "Reliability and bad input" section (`Tools/memory_check.sh`).
public struct ModelMemoryProfile: Sendable {
    public let unet: UNetConfig
    public let vae: VAEConfig
    public let text: CLIPTextConfig
    /// Bytes of the text encoder, UNet and VAE decoder weights once loaded.
    public let weightBytes: Int
    /// The UNet's and the text encoder's parts of `weightBytes` (a run's last batch frees the text
    /// encoder after encoding and the UNet before the VAE decode).
    public let unetWeightBytes: Int
    public let textWeightBytes: Int
    /// Bytes of the VAE encoder's weights (loaded for image-to-image only).
    public let encoderWeightBytes: Int
    /// The largest tensor as Float32: the transient copy while loading.
    public let largestTensorBytes: Int
    /// Pixels per latent cell.
    public var vaeScaleFactor: Int { vae.downscaleFactor }
    /// The UNet's trained size in pixels (the render default), as `StableDiffusionModel.defaultSize`.
    public var defaultSize: Int { (unet.sampleSize ?? 64) * vaeScaleFactor }

    /// The runtime, Foundation, ICU and the tokenizer's vocabulary and merges (measured: 35-45 MB
    /// for a `darkroom render` of a tiny model).
    public static let baseBytes = 48 << 20

    public init(unet: UNetConfig, vae: VAEConfig, text: CLIPTextConfig, weightBytes: Int, unetWeightBytes: Int, textWeightBytes: Int,
                encoderWeightBytes: Int, largestTensorBytes: Int) {
        self.unet = unet
        self.vae = vae
        self.text = text
        self.weightBytes = weightBytes
        self.unetWeightBytes = unetWeightBytes
        self.textWeightBytes = textWeightBytes
        self.encoderWeightBytes = encoderWeightBytes
        self.largestTensorBytes = largestTensorBytes
    }

    /// The profile of a diffusers folder, or of a single-file checkpoint (a path to a file) with
    /// its configs inferred as `StableDiffusionModel(checkpoint:options:)` infers them.
    public init(model url: URL, checkpointOptions: CheckpointOptions = CheckpointOptions()) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) else { throw DarkroomError.fileNotFound(path: url.path) }
        var sizes = WeightSizes()
        if isDir.boolValue {
            func sub(_ p: String) -> URL { url.appendingPathComponent(p) }
            let unet = try UNetConfig.load(sub("unet/config.json"))
            let vae = try VAEConfig.load(sub("vae/config.json"))
            let text = try CLIPTextConfig(ConfigFile.load(sub("text_encoder/config.json")))
            for (folder, stem) in [("text_encoder", "model"), ("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model")] {
                let w = try Weights.load(componentFolder: sub(folder), stem: stem)
                for f in w.files {
                    for (name, e) in f.entries {
                        let encoder = folder == "vae" && (name.hasPrefix("encoder.") || name.hasPrefix("quant_conv."))
                        sizes.add(name, e, encoder: encoder, part: folder)
                    }
                }
            }
            self.init(unet: unet, vae: vae, text: text, weightBytes: sizes.model, unetWeightBytes: sizes.unet, textWeightBytes: sizes.text,
                      encoderWeightBytes: sizes.encoder, largestTensorBytes: sizes.largest)
        } else {
            let ckpt = try LDMCheckpoint(url: url)
            let arch = try CheckpointArchitecture(ckpt, options: checkpointOptions)
            for (name, e) in ckpt.file.entries {
                if name.hasPrefix(LDMCheckpoint.unetPrefix) || name.hasPrefix("cond_stage_model.") {
                    sizes.add(name, e, encoder: false, part: name.hasPrefix(LDMCheckpoint.unetPrefix) ? "unet" : "text_encoder")
                } else if let p = LDMCheckpoint.vaePrefixes.first(where: { name.hasPrefix($0) }) {
                    let rest = name.dropFirst(p.count)
                    sizes.add(name, e, encoder: rest.hasPrefix("encoder.") || rest.hasPrefix("quant_conv."), part: "vae")
                }
                // Anything else (EMA copies, schedule buffers) is never loaded.
            }
            self.init(unet: arch.unet, vae: arch.vae, text: arch.text, weightBytes: sizes.model, unetWeightBytes: sizes.unet,
                      textWeightBytes: sizes.text, encoderWeightBytes: sizes.encoder, largestTensorBytes: sizes.largest)
        }
    }

    /// Bytes in memory per stored tensor: packed matrices and kernels keep Float16, the rest is Float32.
    struct WeightSizes {
        var model = 0, unet = 0, text = 0, encoder = 0, largest = 0
        /// `part`: the component folder ("text_encoder", "unet", "vae").
        mutating func add(_ name: String, _ e: SafetensorsFile.Entry, encoder isEncoder: Bool, part: String) {
            guard [.f32, .f16, .bf16, .f64].contains(e.dtype) else { return }  // position ids and other integer buffers
            let packed = e.shape.count >= 2 && name.hasSuffix("weight") && !name.contains("embedding")
            let bytes = e.count * (packed && e.dtype == .f16 ? 2 : 4)
            if isEncoder { encoder += bytes } else { model += bytes }
            if part == "unet" { unet += bytes }
            if part == "text_encoder" { text += bytes }
            largest = max(largest, e.count * 4)
        }
    }

    /// The estimate for images of `width` × `height` pixels, `batch` of them through the UNet
    /// together, with or without classifier-free guidance (twice the UNet rows), and the VAE
    /// encoder for image-to-image. `releasingWeights`: the run's only batch, which frees the text
    /// encoder before the UNet runs and the UNet before the VAE decode
    /// (`generate(batch:releasingWeights:)`), so each peak sits on the weights still needed.
    public func estimate(width: Int, height: Int, batch: Int = 1, guidance: Bool = true, imageToImage: Bool = false,
                         releasingWeights: Bool = false) -> MemoryEstimate {
        let f = vaeScaleFactor
        let lh = max(1, height / f), lw = max(1, width / f)
        let rows = max(1, batch) * (guidance ? 2 : 1)
        let load = largestTensorBytes * 2  // the Float32 copy and the mapped pages it was read from
        let unetWorkingSet = rows * unetFloats(lh, lw) * 4
        // Plus the freed activations a UNet call keeps for reuse (at most the pool's limit, and
        // never more than the call allocates).
        let unetPeak = unetWorkingSet + min(ActivationPool.shared.limitBytes, unetWorkingSet)
        let decoderPeak = decoderFloats(lh, lw) * 4 + width * height * 3 * 4 * 3  // + decoded, clamped and 8-bit copies
        let weights = weightBytes + (imageToImage ? encoderWeightBytes : 0)
        let releasing = releasingWeights && !imageToImage  // (image-to-image keeps its modules)
        let unetWeights = weights - (releasing ? textWeightBytes : 0)
        let decoderWeights = unetWeights - (releasing ? unetWeightBytes : 0)
        // The phases in the order they run.
        var phases: [(name: String, bytes: Int, weights: Int)] = [("loading", load, weights)]
        if imageToImage { phases.append(("VAE encoder", encoderFloats(height, width) * 4 + width * height * 3 * 4 * 3, weights)) }
        phases += [("UNet", unetPeak, unetWeights), ("VAE decoder", decoderPeak, decoderWeights)]
        // The allocator keeps part of what a phase frees (glibc's heap holds blocks under its mmap
        // threshold, which the CLI sets to 8 MB, see `limitHeapRetention`): measured peak RSS is
        // the live working set plus a tenth, plus a quarter of the phase before.
        var best: MemoryEstimate?
        for (i, p) in phases.enumerated() {
            let before = i > 0 ? phases[i - 1].bytes : 0
            let e = MemoryEstimate(weights: p.weights, activations: p.bytes * 11 / 10 + before / 4, base: Self.baseBytes, peakPhase: p.name)
            if best == nil || e.total > best!.total { best = e }
        }
        return best!
    }

    /// The largest size with the aspect ratio of `width` × `height` (sides multiples of the VAE
    /// factor, at most the requested ones) whose estimate fits in `limit` bytes; nil if none does.
    public func largestFitting(width: Int, height: Int, batch: Int = 1, guidance: Bool = true, imageToImage: Bool = false,
                               releasingWeights: Bool = false, limit: Int) -> (width: Int, height: Int)? {
        let f = vaeScaleFactor
        let wide = width >= height
        let long = wide ? width : height, short = wide ? height : width
        var side = long / f * f
        while side >= f {
            let other = max(f, Int((Double(side) * Double(short) / Double(long) / Double(f)).rounded(.down)) * f)
            let (w, h) = wide ? (side, other) : (other, side)
            if estimate(width: w, height: h, batch: batch, guidance: guidance, imageToImage: imageToImage,
                        releasingWeights: releasingWeights).total <= limit { return (w, h) }
            side -= f
        }
        return nil
    }

    // MARK: - Working sets, in Float32 elements

    /// ResnetBlock2D on `plane` pixels: x, norm1(x), its padded copy and conv1's output; then x,
    /// h, norm2(h), its padded copy, the shortcut (when the channels change) and the output.
    static func resnet(_ cin: Int, _ cout: Int, _ plane: Int, padded: Int) -> Int {
        max(cin * (plane + padded + plane) + cout * plane,
            cin * plane + cout * (plane + plane + padded + plane) + (cin != cout ? cout * plane : 0))
    }

    /// Transformer2DModel (one BasicTransformerBlock at a time) on `tokens` tokens of `c`
    /// channels: the input, the group norm, the projected tokens, the block's input and
    /// residual, then the feed-forward's norm, GEGLU projection (8c), gate (4c) and output.
    static func transformer(_ c: Int, _ tokens: Int) -> Int { 18 * c * tokens }

    /// The UNet for one row: skip states held from the down path + the block being run.
    func unetFloats(_ lh: Int, _ lw: Int) -> Int {
        let ch = unet.blockOutChannels, n = ch.count
        var sizes: [(Int, Int)] = [(lh, lw)]
        for _ in 1..<max(n, 1) { let (a, b) = sizes.last!; sizes.append(((a + 1) / 2, (b + 1) / 2)) }
        func plane(_ i: Int) -> Int { sizes[i].0 * sizes[i].1 }
        func padded(_ i: Int) -> Int { (sizes[i].0 + 2) * (sizes[i].1 + 2) }
        var skips: [Int] = [ch[0] * plane(0)]
        var held = skips[0]
        var peak = held + unet.inChannels * padded(0) + ch[0] * plane(0)
        var c = ch[0]
        for i in 0..<n {
            let attention = unet.downBlockTypes[i] == "CrossAttnDownBlock2D"
            for _ in 0..<unet.layersPerBlock[i] {
                peak = max(peak, held + Self.resnet(c, ch[i], plane(i), padded: padded(i)))
                c = ch[i]
                if attention { peak = max(peak, held + Self.transformer(c, plane(i))) }
                skips.append(c * plane(i)); held += c * plane(i)
            }
            if i < n - 1 {
                peak = max(peak, held + c * (padded(i) + plane(i + 1)))
                skips.append(c * plane(i + 1)); held += c * plane(i + 1)
            }
        }
        if unet.hasMidBlock {
            peak = max(peak, held + Self.resnet(c, c, plane(n - 1), padded: padded(n - 1)), held + Self.transformer(c, plane(n - 1)))
        }
        for i in 0..<n {
            let level = n - 1 - i
            let out = ch[level]
            let attention = unet.upBlockTypes[i] == "CrossAttnUpBlock2D"
            for _ in 0...unet.layersPerBlock[level] {
                let skip = skips.popLast() ?? 0
                let cin = c + skip / max(1, plane(level))
                // The skip and the input stay referenced while their concatenation runs through the resnet.
                peak = max(peak, held + c * plane(level) + Self.resnet(cin, out, plane(level), padded: padded(level)))
                held -= skip
                c = out
                if attention { peak = max(peak, held + Self.transformer(c, plane(level))) }
            }
            if level > 0 { peak = max(peak, held + c * (plane(level) + 3 * plane(level - 1))) }
        }
        return peak
    }

    /// The VAE decoder for one image: conv_in, the mid block with its attention, then the up
    /// blocks, each ending in a nearest 2x resize and a convolution, up to full resolution.
    func decoderFloats(_ lh: Int, _ lw: Int) -> Int {
        let rc = Array(vae.blockOutChannels.reversed())
        var h = lh, w = lw
        var c = rc[0]
        var peak = vae.latentChannels * (h + 2) * (w + 2) + c * h * w
        peak = max(peak, Self.resnet(c, c, h * w, padded: (h + 2) * (w + 2)))
        if vae.midBlockAddAttention { peak = max(peak, 8 * c * h * w) }
        for (i, out) in rc.enumerated() {
            for _ in 0...vae.layersPerBlock {
                peak = max(peak, Self.resnet(c, out, h * w, padded: (h + 2) * (w + 2)))
                c = out
            }
            if i < rc.count - 1 {
                // x, its 2x copy, the padded copy and the convolution's output.
                peak = max(peak, c * (h * w + 4 * h * w + (2 * h + 2) * (2 * w + 2) + 4 * h * w))
                h *= 2; w *= 2
            }
        }
        return max(peak, c * (h * w + h * w + (h + 2) * (w + 2)) + vae.outChannels * h * w)
    }

    /// The VAE encoder for one image of `height` × `width` pixels.
    func encoderFloats(_ height: Int, _ width: Int) -> Int {
        let ch = vae.blockOutChannels
        var h = height, w = width
        var c = ch[0]
        var peak = vae.inChannels * (h + 2) * (w + 2) + c * h * w
        for (i, out) in ch.enumerated() {
            for _ in 0..<vae.layersPerBlock {
                peak = max(peak, Self.resnet(c, out, h * w, padded: (h + 2) * (w + 2)))
                c = out
            }
            if i < ch.count - 1 {
                peak = max(peak, c * (h * w + (h + 1) * (w + 1) + (h / 2) * (w / 2)))
                h /= 2; w /= 2
            }
        }
        peak = max(peak, Self.resnet(c, c, h * w, padded: (h + 2) * (w + 2)))
        if vae.midBlockAddAttention { peak = max(peak, 8 * c * h * w) }
        return peak
    }
}

/// A memory estimate, in bytes.
public struct MemoryEstimate: Sendable, Equatable {
    public var weights: Int
    /// The largest working set of the run (see `peakPhase`), with the allocator's slack.
    public var activations: Int
    public var base: Int
    /// Where the working set peaks: "loading", "UNet", "VAE decoder" or "VAE encoder".
    public var peakPhase: String
    public var total: Int { weights + activations + base }
}

/// The memory this process may use: the smallest of the cgroup's limit (v2 `memory.max` of
/// this process's cgroup and its parents, or v1 `memory.limit_in_bytes`) and the kernel's
/// `MemAvailable`, or `DARKROOM_MEMORY_LIMIT` (bytes, or with K, M, G, T: powers of 1024) when set.
public struct SystemMemory: Sendable, Equatable {
    public var bytes: Int
    /// Where the number came from, for messages: "DARKROOM_MEMORY_LIMIT", "cgroup memory.max", "MemAvailable".
    public var source: String

    public init(bytes: Int, source: String) {
        self.bytes = bytes
        self.source = source
    }

    /// The limit for this process; nil when nothing could be read (not Linux). Throws when
    /// `DARKROOM_MEMORY_LIMIT` is set but not a size.
    public static func current(environment: [String: String] = ProcessInfo.processInfo.environment, root: String = "/") throws -> SystemMemory? {
        if let v = environment["DARKROOM_MEMORY_LIMIT"] {
            guard let b = parseSize(v) else {
                throw DarkroomError.invalidArgument("DARKROOM_MEMORY_LIMIT '\(v)' is not a size (bytes, or a number with K, M, G or T)")
            }
            return SystemMemory(bytes: b, source: "DARKROOM_MEMORY_LIMIT")
        }
        func read(_ p: String) -> String? { try? String(contentsOfFile: root + p, encoding: .utf8) }
        var found: [SystemMemory] = []
        if let m = read("proc/meminfo").flatMap(memAvailable) { found.append(SystemMemory(bytes: m, source: "MemAvailable")) }
        if let c = read("proc/self/cgroup").flatMap({ cgroupLimit(cgroupFile: $0, read: read) }) { found.append(c) }
        return found.min { $0.bytes < $1.bytes }
    }

    /// "4G", "512M", "1.5GiB", "123456" → bytes (K/M/G/T are powers of 1024).
    public static func parseSize(_ text: String) -> Int? {
        var s = text.trimmingCharacters(in: .whitespaces).uppercased()
        for suffix in ["IB", "B"] where s.hasSuffix(suffix) && s.count > suffix.count { s.removeLast(suffix.count); break }
        var scale = 1.0
        if let last = s.last, let i = "KMGT".firstIndex(of: last) {
            scale = pow(1024, Double("KMGT".distance(from: "KMGT".startIndex, to: i) + 1))
            s.removeLast()
        }
        guard let v = Double(s.trimmingCharacters(in: .whitespaces)), v.isFinite, v > 0 else { return nil }
        let bytes = v * scale
        guard bytes >= 1, bytes < 9.0e18 else { return nil }
        return Int(bytes)
    }

    /// `MemAvailable` from /proc/meminfo, in bytes.
    static func memAvailable(_ meminfo: String) -> Int? {
        for line in meminfo.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            guard parts.count >= 2, let kb = Int(parts[1]) else { return nil }
            return kb * 1024
        }
        return nil
    }

    /// The tightest memory limit on this process's cgroup path (v2: `memory.max` of the cgroup
    /// and each parent; v1: `memory.limit_in_bytes` of the memory controller's cgroup).
    static func cgroupLimit(cgroupFile: String, read: (String) -> String?) -> SystemMemory? {
        var limits: [Int] = []
        for line in cgroupFile.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3 else { continue }
            let path = parts[2].split(separator: "/").map(String.init)
            if parts[0] == "0" && parts[1].isEmpty {
                // v2: the cgroup and every ancestor up to the root.
                for depth in stride(from: path.count, through: 0, by: -1) {
                    let dir = (["sys/fs/cgroup"] + path.prefix(depth)).joined(separator: "/")
                    if let v = read(dir + "/memory.max"), let n = Int(v.trimmingCharacters(in: .whitespacesAndNewlines)) { limits.append(n) }
                }
            } else if parts[1].split(separator: ",").contains("memory") {
                for dir in ["sys/fs/cgroup/memory/" + path.joined(separator: "/"), "sys/fs/cgroup/memory"] {
                    // v1 reports "no limit" as a huge number (2^63 rounded to pages).
                    if let v = read(dir + "/memory.limit_in_bytes"), let n = Int(v.trimmingCharacters(in: .whitespacesAndNewlines)), n < 1 << 60 {
                        limits.append(n)
                    }
                }
            }
        }
        return limits.min().map { SystemMemory(bytes: $0, source: "cgroup memory limit") }
    }

    /// "1.5 GiB", "512 MiB", "800 KiB".
    public static func format(_ bytes: Int) -> String {
        let b = Double(bytes), gib = Double(1 << 30), mib = Double(1 << 20)
        if b >= gib { return String(format: "%.1f GiB", b / gib) }
        if b >= mib { return String(format: "%.0f MiB", b / mib) }
        return String(format: "%.0f KiB", b / 1024)
    }
}
