import Foundation
import XCTest
@testable import Darkroom

/// AutoencoderTiny (TAESD) against diffusers on Models/tiny-taesd (Tools/fixtures_img2img.py,
/// Fixtures/img2img/taesd.safetensors and taesd_preview.png).
final class AutoencoderTinyTests: XCTestCase {
    static let folder = TestPaths.model("tiny-taesd")

    func testDecoderMatchesDiffusers() throws {
        let config = try AutoencoderTinyConfig.load(Self.folder.appendingPathComponent("config.json"))
        let weights = try Weights.load(componentFolder: Self.folder, stem: "diffusion_pytorch_model")
        let decoder = try TinyDecoder(config: config, weights: weights)
        XCTAssertEqual(weights.unusedKeys, [], "every decoder weight is bound (encoder ignored)")
        XCTAssertEqual(decoder.upscaleFactor, 8)
        let g = try Golden("img2img", "taesd.safetensors")
        var seen: [String: Tensor] = [:]
        let out = decoder(try g.tensor("latent")) { seen[$0] = $1 }
        for key in ["decoder.layers.1", "decoder.layers.4", "decoder.layers.9", "decoder.layers.14"] {
            guard let value = seen[key] else { XCTFail("\(key) not observed"); continue }
            assertClose(value, try g.tensor(key), atol: 1e-4, rtol: 1e-5, key)
        }
        // Tolerance: float32, different summation order, outputs O(1).
        assertClose(out, try g.tensor("decoded"), atol: 1e-4, "decoded")
        // decode(latents:) divides by scaling_factor (1 here) and adds shift_factor (0).
        assertClose(decoder.decode(latents: try g.tensor("latent")), out, atol: 0, "decode(latents:)")
    }

    func testEncoderMatchesDiffusers() throws {
        let vae = try AutoencoderTiny(folder: Self.folder)
        let encoder = try XCTUnwrap(vae.encoder)
        let g = try Golden("img2img", "taesd.safetensors")
        assertClose(encoder(try g.tensor("image")), try g.tensor("encoded"), atol: 1e-4, "encoded")
    }

    func testPreviewImageMatchesDiffusersPostprocessing() throws {
        let decoder = try TinyDecoder.load(Self.folder)
        let g = try Golden("img2img", "taesd.safetensors")
        let expected = try PNGFile.read(TestPaths.fixtures.appendingPathComponent("img2img/taesd_preview.png")).image
        let preview = decoder.previewImage(latents: try g.tensor("latent"))
        XCTAssertEqual(preview.width, 96)
        XCTAssertEqual(preview.height, 64)
        // Decoded floats agree to 1e-4, so a byte can differ by one where a value sits on a
        // rounding boundary; require that to be rare.
        var off = 0, worst = 0
        for (a, b) in zip(preview.pixels, expected.pixels) where a != b {
            off += 1
            worst = max(worst, abs(Int(a) - Int(b)))
        }
        XCTAssertLessThanOrEqual(worst, 1)
        XCTAssertLessThanOrEqual(off, preview.pixels.count / 1000, "\(off) bytes differ")
        // A batch previews its first image.
        let latent = try g.tensor("latent")
        let batch = Tensor.concat([latent, latent.mapped { -$0 }])
        XCTAssertEqual(decoder.previewImage(latents: batch), preview)
    }

    func testOriginalTAESDFileLayout() throws {
        // madebyollin's taesd_decoder.safetensors names tensors by Sequential index, one higher
        // than diffusers' (its index 0 is the clamp). Convert tiny-taesd's decoder and compare.
        let file = try SafetensorsFile(url: Self.folder.appendingPathComponent("diffusion_pytorch_model.safetensors"))
        let prefix = "decoder.layers."
        var items: [SafetensorsWriter.Item] = []
        for name in file.names where name.hasPrefix(prefix) {
            let rest = name.dropFirst(prefix.count)
            let dot = rest.firstIndex(of: ".")!
            let index = Int(rest[..<dot])!
            items.append(.init(name: "\(index + 1)\(rest[dot...])", tensor: try file.tensor(name)))
        }
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("darkroom-taesd-\(UUID().uuidString).safetensors")
        try SafetensorsWriter.write(items, to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        let original = try TinyDecoder.load(url)
        XCTAssertEqual(original.config.latentChannels, 4)
        XCTAssertEqual(original.config.decoderBlockOutChannels, [16, 16, 16, 16])
        let g = try Golden("img2img", "taesd.safetensors")
        assertClose(original(try g.tensor("latent")), try g.tensor("decoded"), atol: 1e-4, "original layout decoded")
        // A diffusers file passed directly is pointed at its folder.
        XCTAssertThrowsError(try TinyDecoder.load(Self.folder.appendingPathComponent("diffusion_pytorch_model.safetensors"))) {
            XCTAssertTrue("\($0)".contains("folder"), "\($0)")
        }
    }

    func testConfigRejectsWhatIsNotImplemented() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("darkroom-taesd-config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("config.json")
        for (json, key) in [(#"{"act_fn": "gelu"}"#, "act_fn"), (#"{"upsample_fn": "bilinear"}"#, "upsample_fn"),
                            (#"{"decoder_block_out_channels": [64, 32, 64, 64]}"#, "decoder_block_out_channels"),
                            (#"{"num_decoder_blocks": [3, 3, 1]}"#, "decoder_block_out_channels")] {
            try Data(json.utf8).write(to: url)
            XCTAssertThrowsError(try AutoencoderTinyConfig.load(url), json) { XCTAssertTrue("\($0)".contains(key), "\($0)") }
        }
        try Data(#"{"shift_factor": null}"#.utf8).write(to: url)
        let c = try AutoencoderTinyConfig.load(url)
        XCTAssertEqual(c.decoderBlockOutChannels, [64, 64, 64, 64])
        XCTAssertEqual(c.shiftFactor, 0)
        XCTAssertEqual(c.act, .relu)
    }
}
