import Foundation
import XCTest
@testable import Darkroom

/// The AutoencoderKL encoder and its posterior against diffusers (Tools/fixtures_img2img.py,
/// Fixtures/img2img/vae_encoder_*.safetensors and distribution.safetensors).
final class VAEEncoderTests: XCTestCase {
    func testEncoderMatchesDiffusers() throws {
        for name in ["tiny-sd1", "tiny-sd2"] {
            let folder = TestPaths.model(name).appendingPathComponent("vae")
            let config = try VAEConfig.load(folder.appendingPathComponent("config.json"))
            let weights = try Weights.load(componentFolder: folder, stem: "diffusion_pytorch_model")
            let encoder = try VAEEncoder(config: config, weights: weights)
            XCTAssertEqual(weights.unusedKeys, [], "\(name): every encoder weight is bound (decoder ignored)")
            let g = try Golden("img2img", "vae_encoder_\(name).safetensors")
            var seen: [String: Tensor] = [:]
            let dist = encoder(try g.tensor("image")) { seen[$0] = $1 }
            // Tolerance: float32 with a different summation order, activations O(1..10).
            for key in ["encoder.conv_in", "encoder.down_blocks.0", "encoder.down_blocks.1", "encoder.down_blocks.2",
                        "encoder.down_blocks.3", "encoder.mid_block", "encoder.conv_norm_out", "encoder.conv_out", "quant_conv"] {
                guard let value = seen[key] else { XCTFail("\(name): \(key) not observed"); continue }
                assertClose(value, try g.tensor(key), atol: 1e-4, rtol: 1e-5, "\(name) \(key)")
            }
            assertClose(dist.mean, try g.tensor("mean"), atol: 1e-4, "\(name) mean")
            assertClose(dist.logvar, try g.tensor("logvar"), atol: 1e-4, "\(name) logvar")
            assertClose(dist.std, try g.tensor("std"), atol: 1e-4, "\(name) std")
            var gen = TorchGenerator(seed: 77)
            assertClose(dist.sample(generator: &gen), try g.tensor("sample_seed77"), atol: 1e-4, "\(name) sample(seed 77)")
            XCTAssertEqual(dist.mode.shape, [1, config.latentChannels, 6, 8])
        }
    }

    func testDistributionClampsAndSamples() throws {
        let g = try Golden("img2img", "distribution.safetensors")
        let dist = DiagonalGaussianDistribution(moments: try g.tensor("moments"))
        // Splitting and clamping are exact; exp differs from torch's vectorised one by an ulp or so.
        assertClose(dist.mean, try g.tensor("mean"), atol: 0, "mean")
        assertClose(dist.logvar, try g.tensor("logvar"), atol: 0, "logvar (clamped to [-30, 20])")
        XCTAssertEqual(dist.logvar.scalars.min(), -30)
        XCTAssertEqual(dist.logvar.scalars.max(), 20)
        assertClose(dist.std, try g.tensor("std"), atol: 0, rtol: 1e-6, "std")
        assertClose(dist.mode, try g.tensor("mode"), atol: 0, "mode")
        var gen = TorchGenerator(seed: 5)
        assertClose(dist.sample(generator: &gen), try g.tensor("sample_seed5"), atol: 0, rtol: 1e-6, "sample(seed 5)")
    }

    func testEncoderAndDecoderShareOneWeightsFile() throws {
        // How a model can own both halves: one Weights, each module ignoring the other's keys.
        let folder = TestPaths.model("tiny-sd1").appendingPathComponent("vae")
        let config = try VAEConfig.load(folder.appendingPathComponent("config.json"))
        let weights = try Weights.load(componentFolder: folder, stem: "diffusion_pytorch_model")
        _ = try VAEDecoder(config: config, weights: weights)
        _ = try VAEEncoder(config: config, weights: weights)
        XCTAssertEqual(weights.unusedKeys, [])
    }

    func testLatentsAreScaledSamples() throws {
        let pipeline = try StableDiffusionPipeline(folder: TestPaths.model("tiny-sd1"))
        let encoder = try pipeline.loadVAEEncoder()
        let g = try Golden("img2img", "vae_encoder_tiny-sd1.safetensors")
        var gen = TorchGenerator(seed: 77)
        let latents = encoder.latents(for: try g.tensor("image"), generator: &gen)
        let expected = try g.tensor("sample_seed77").mapped { $0 * 0.18215 }
        assertClose(latents, expected, atol: 1e-4, "sample × scaling_factor")
        // One draw of mean.count normals was taken: the next draw continues the stream.
        var reference = TorchGenerator(seed: 77)
        _ = reference.randn(count: latents.count)
        XCTAssertEqual(gen.randn(count: 20), reference.randn(count: 20))
    }

    func testWrongWeightShapesAreReported() throws {
        // tiny-sd2's weights under tiny-sd1's config: the first mismatching tensor is named.
        let config = try VAEConfig.load(TestPaths.model("tiny-sd1").appendingPathComponent("vae/config.json"))
        let weights = try Weights.load(componentFolder: TestPaths.model("tiny-sd2").appendingPathComponent("vae"),
                                       stem: "diffusion_pytorch_model")
        XCTAssertThrowsError(try VAEEncoder(config: config, weights: weights)) { error in
            XCTAssertTrue("\(error)".contains("encoder."), "\(error)")
        }
    }
}
