import Darkroom
import Foundation

/// `render --preview N`: every N steps the image being rendered is decoded from the sampler's
/// estimate of the clean latents (x̂₀, what A1111 previews) and written next to its output as
/// `NAME.preview.png`, replaced atomically (PNGFile.write renames a finished file into place), so
/// an image viewer can watch the file. The preview is removed once the image itself is written
/// (or the run is interrupted) unless `--keep-preview`.
final class Previewer {
    enum Decoder {
        /// A TAESD decoder: milliseconds even for large images.
        case tiny(TinyDecoder, source: String)
        /// The model's own VAE: exact, but as slow as the final decode.
        case vae
    }

    let every: Int
    let decoder: Decoder
    let keep: Bool
    let pipeline: StableDiffusionPipeline
    let display: ProgressDisplay
    /// Previews on disk that this run wrote and has not removed yet.
    private(set) var written: [URL] = []
    private var warned = false

    init(every: Int, decoder: Decoder, keep: Bool, pipeline: StableDiffusionPipeline, display: ProgressDisplay) {
        self.every = every
        self.decoder = decoder
        self.keep = keep
        self.pipeline = pipeline
        self.display = display
    }

    /// Subfolders of a diffusers model folder that may hold an `AutoencoderTiny` for previews.
    static let modelSubfolders = ["vae_tiny", "taesd"]

    /// The decoder: `explicit` (a diffusers AutoencoderTiny folder or an original
    /// `taesd_decoder.safetensors`), else the model folder's `vae_tiny/` (or `taesd/`), else the
    /// full VAE. An explicit decoder that cannot be used is an error; a broken one in the model
    /// folder is a warning.
    static func decoder(explicit: String?, model: StableDiffusionModel) throws -> Decoder {
        func check(_ d: TinyDecoder, _ path: String) throws -> TinyDecoder {
            guard d.config.latentChannels == model.unetConfig.inChannels, d.upscaleFactor == model.vaeScaleFactor else {
                throw DarkroomError.invalidFile(
                    path: path,
                    reason: "the tiny decoder takes \(d.config.latentChannels) latent channels at \(d.upscaleFactor)x; the model has \(model.unetConfig.inChannels) at \(model.vaeScaleFactor)x")
            }
            return d
        }
        if let explicit {
            let url = URL(fileURLWithPath: explicit)
            return .tiny(try check(TinyDecoder.load(url), url.path), source: explicit)
        }
        var isDir: ObjCBool = false
        for name in modelSubfolders {
            let url = model.folder.appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir), isDir.boolValue else { continue }
            do {
                return .tiny(try check(TinyDecoder.load(url), url.path), source: url.path)
            } catch let e as DarkroomError {
                printWarning("\(e.description); previews use the full VAE")
            }
        }
        return .vae
    }

    var decoderDescription: String {
        switch decoder {
        case .tiny(_, let source): return "the tiny autoencoder \(source)"
        case .vae: return "the model's VAE (no vae_tiny/ in the model folder; --preview-decoder takes a TAESD)"
        }
    }

    static func previewURL(for output: URL) -> URL {
        output.deletingPathExtension().appendingPathExtension("preview.png")
    }

    /// Called after every denoising step with the outputs of the images in the step's batch.
    func step(_ s: DenoisingStep, outputs: [URL]) {
        guard s.stepsDone % every == 0, !warned else { return }
        for (denoised, output) in zip(s.denoised, outputs) {
            let image: RGBImage
            switch decoder {
            case .tiny(let d, _): image = d.previewImage(latents: denoised)
            case .vae: image = RGBImage(decoded: pipeline.decode(denoised))
            }
            let url = Self.previewURL(for: output)
            do {
                try PNGFile.write(image, text: [("preview", "step \(s.stepsDone)/\(s.totalSteps)")], to: url)
            } catch let e as DarkroomError {
                // A preview is never worth failing the render for.
                warned = true
                printWarning("\(e.description); no more previews")
                return
            } catch {
                return
            }
            if !written.contains(url) { written.append(url) }
            display.event("preview", [("file", .string(url.path)), ("step", .int(Int64(s.stepsDone))),
                                      ("steps", .int(Int64(s.totalSteps)))])
        }
    }

    /// The image for `output` is written: its preview goes (unless kept).
    func finished(_ output: URL) {
        let url = Self.previewURL(for: output)
        guard !keep, let i = written.firstIndex(of: url) else { return }
        try? FileManager.default.removeItem(at: url)
        written.remove(at: i)
    }

    /// Interrupted or failed: previews of unfinished images go (unless kept).
    func discard() {
        guard !keep else { return }
        for url in written { try? FileManager.default.removeItem(at: url) }
        written = []
    }
}
