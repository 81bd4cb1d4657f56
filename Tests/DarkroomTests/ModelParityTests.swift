import Foundation
import XCTest
@testable import Darkroom

/// Each model component against diffusers/transformers outputs on the same tiny random weights
/// (Tools/make_tiny_models.py). SD1 style: conv projection, quick_gelu, fp32 weights; SD2 style:
/// linear projection, gelu, per-block heads, fp16 weights, legacy VAE attention keys.
final class ModelParityTests: XCTestCase {
    static let models = ["tiny-sd1", "tiny-sd2"]

    func testTextEncoderMatchesTransformers() throws {
        for name in Self.models {
            let folder = TestPaths.model(name)
            let config = try CLIPTextConfig(ConfigFile.load(folder.appendingPathComponent("text_encoder/config.json")))
            let weights = try Weights.load(componentFolder: folder.appendingPathComponent("text_encoder"), stem: "model")
            let model = try CLIPTextModel(config: config, weights: weights)
            XCTAssertEqual(weights.unusedKeys, [], "\(name): every text encoder weight is bound")
            let g = try Golden(name, "text_encoder.safetensors")
            let ids = try g.file.integers("input_ids")
            let seq = ids.count / 2
            let rows = [Array(ids[0..<seq]), Array(ids[seq...])]
            // Tolerance: float32 with different summation order, activations O(1).
            assertClose(try model(rows), try g.tensor("last_hidden_state"), atol: 1e-4, "\(name) last_hidden_state")
            let states = try model.hiddenStates(rows)
            for i in 0..<states.count where g.has("hidden_states.\(i)") {
                assertClose(states[i], try g.tensor("hidden_states.\(i)"), atol: 1e-4, "\(name) hidden_states.\(i)")
            }
        }
    }

    func testUNetMatchesDiffusers() throws {
        for name in Self.models {
            let folder = TestPaths.model(name)
            let config = try UNetConfig.load(folder.appendingPathComponent("unet/config.json"))
            let weights = try Weights.load(componentFolder: folder.appendingPathComponent("unet"), stem: "diffusion_pytorch_model")
            let unet = try UNet2DConditionModel(config: config, weights: weights)
            XCTAssertEqual(weights.unusedKeys, [], "\(name): every UNet weight is bound")
            let g = try Golden(name, "unet.safetensors")
            var seen: [String: Tensor] = [:]
            let out = unet(try g.tensor("sample"), timestep: try g.tensor("timestep")[0],
                           context: try g.tensor("encoder_hidden_states")) { seen[$0] = $1 }
            // Relative tolerance: 1e-4 of the largest reference magnitude of each tensor.
            for (key, value) in seen.sorted(by: { $0.key < $1.key }) where g.has(key) {
                assertClose(value, try g.tensor(key), atol: 0, rtol: 1e-4, "\(name) \(key)")
            }
            XCTAssertTrue(g.has("down_blocks.0") && seen["down_blocks.0"] != nil, "intermediates were compared")
            assertClose(out, try g.tensor("out"), atol: 0, rtol: 1e-4, "\(name) unet out")
        }
    }

    /// The UNet reuses freed activations' storage within a call (ActivationPool). With every size
    /// pooled and reused storage filled with NaN, an op that read memory it had not written would
    /// turn the output into NaN; the output must instead be bit-identical to a run without reuse
    /// (and so still match diffusers, checked above).
    func testUNetWithReusedActivationsIsBitIdentical() throws {
        let pool = ActivationPool.shared
        let (savedMinimum, savedLimit) = (pool.minimumBytes, pool.limitBytes)
        defer { pool.minimumBytes = savedMinimum; pool.limitBytes = savedLimit; pool.poisonReused = false }
        for name in Self.models {
            let folder = TestPaths.model(name)
            let config = try UNetConfig.load(folder.appendingPathComponent("unet/config.json"))
            let weights = try Weights.load(componentFolder: folder.appendingPathComponent("unet"), stem: "diffusion_pytorch_model")
            let unet = try UNet2DConditionModel(config: config, weights: weights)
            let g = try Golden(name, "unet.safetensors")
            let (sample, t, ctx) = (try g.tensor("sample"), try g.tensor("timestep")[0], try g.tensor("encoder_hidden_states"))
            pool.limitBytes = 0
            let fresh = unet(sample, timestep: t, context: ctx)
            pool.minimumBytes = 1
            pool.limitBytes = 1 << 30
            pool.poisonReused = true
            let before = pool.reuses
            let pooled = unet(sample, timestep: t, context: ctx)
            XCTAssertGreaterThan(pool.reuses - before, 10, "\(name): activations were reused")
            XCTAssertEqual(pooled.shape, fresh.shape)
            XCTAssertTrue((0..<fresh.count).allSatisfy { pooled[$0].bitPattern == fresh[$0].bitPattern }, "\(name): reuse changed the output")
        }
    }

    func testVAEDecoderMatchesDiffusers() throws {
        for name in Self.models {
            let folder = TestPaths.model(name)
            let config = try VAEConfig.load(folder.appendingPathComponent("vae/config.json"))
            let weights = try Weights.load(componentFolder: folder.appendingPathComponent("vae"), stem: "diffusion_pytorch_model")
            let vae = try VAEDecoder(config: config, weights: weights)
            XCTAssertEqual(weights.unusedKeys, [], "\(name): every VAE decoder weight is bound (encoder ignored)")
            let g = try Golden(name, "vae.safetensors")
            var seen: [String: Tensor] = [:]
            let out = vae(try g.tensor("latent")) { seen[$0] = $1 }
            for (key, value) in seen.sorted(by: { $0.key < $1.key }) where g.has(key) {
                assertClose(value, try g.tensor(key), atol: 1e-4, rtol: 1e-5, "\(name) \(key)")
            }
            assertClose(out, try g.tensor("decoded"), atol: 1e-4, "\(name) vae decoded")
        }
    }
}
