import Foundation
import XCTest
@testable import Darkroom

/// Guidance rescale against diffusers' `rescale_noise_cfg` and `StableDiffusionPipeline(...,
/// guidance_rescale=φ)` (Tools/fixtures_guidance_rescale.py, Fixtures/guidance_rescale/).
final class GuidanceRescaleTests: XCTestCase {
    static let dir = TestPaths.fixtures.appendingPathComponent("guidance_rescale")

    /// The formula on one image: within 1e-6 (float32 rounding of the two standard deviations).
    func testRescaleMatchesDiffusers() throws {
        let g = try SafetensorsFile(url: Self.dir.appendingPathComponent("rescale.safetensors"))
        let text = try g.tensor("unit.text")
        for (phi, key) in [(Float(0.3), "unit.phi30"), (0.7, "unit.phi70"), (1.0, "unit.phi100")] {
            let cfg = try g.tensor("unit.cfg")
            StableDiffusionPipeline.rescaleGuidance(cfg.data, text: text.data, count: cfg.count, phi: phi)
            assertClose(cfg, try g.tensor(key), atol: 1e-6, rtol: 1e-6, "rescale φ \(phi)")
        }
    }

    /// Whole pipelines: SD1 DDIM (φ 0.7), SD1 Euler (φ 1), SD2 v-prediction with zero-SNR betas
    /// (φ 0.7). Latents after every step within 1e-3 + 1e-4 relative and the image within 1e-3,
    /// as PipelineParityTests; rescale moves these images by 0.6 to 1.0, far beyond that.
    func testPipelineMatchesDiffusers() throws {
        let spec = try ConfigFile.load(Self.dir.appendingPathComponent("pipeline.json"))
        let g = try SafetensorsFile(url: Self.dir.appendingPathComponent("pipeline.safetensors"))
        guard case .object(let cases)? = spec.value("cases") else { return XCTFail("no cases") }
        XCTAssertEqual(cases.count, 3)
        var pipelines: [String: StableDiffusionPipeline] = [:]
        for (name, c) in cases {
            guard case .string(let model)? = c["model"], case .string(let prompt)? = c["prompt"],
                  case .string(let negative)? = c["negative_prompt"], case .number(let seed)? = c["seed"],
                  case .number(let steps)? = c["steps"], case .number(let scale)? = c["guidance_scale"],
                  case .number(let phi)? = c["guidance_rescale"], case .number(let size)? = c["size"]
            else { return XCTFail("\(name): incomplete case") }
            let sampler: SamplerKind
            if case .string(let s)? = c["sampler"] { sampler = try XCTUnwrap(SamplerKind(name: s)) } else { sampler = .ddim }
            let pipeline = try pipelines[model] ?? StableDiffusionPipeline(folder: TestPaths.model(model))
            pipelines[model] = pipeline
            let n = Int(size)
            let r = GenerationRequest(prompt: prompt, negativePrompt: negative, steps: Int(steps), guidanceScale: Float(scale),
                                      width: n, height: n, seed: UInt64(seed), sampler: sampler, guidanceRescale: Float(phi))
            var stepLatents: [Tensor] = []
            let result = try pipeline.generate(r, onStep: { stepLatents.append($0.latents[0]) })
            XCTAssertEqual(stepLatents.count, Int(steps))
            for (i, l) in stepLatents.enumerated() {
                assertClose(l, try g.tensor("\(name).latents.\(i)"), atol: 1e-3, rtol: 1e-4, "\(name) latents after step \(i)")
            }
            let expected = try g.tensor("\(name).image")  // [1, H, W, 3]
            var maxDiff: Float = 0
            for y in 0..<n { for x in 0..<n { for ch in 0..<3 {
                maxDiff = max(maxDiff, abs(result.pixels[(ch * n + y) * n + x] - expected[(y * n + x) * 3 + ch]))
            } } }
            XCTAssertLessThanOrEqual(maxDiff, 1e-3, "\(name): image max-abs diff \(maxDiff)")
            print("guidance rescale \(name): image max-abs diff \(maxDiff)")
            XCTAssertEqual(result.parameters[extra: "Guidance rescale"], formatNumber(Float(phi)))
        }
    }

    /// Without guidance there is nothing to rescale (diffusers applies it only with CFG); the
    /// range is checked.
    func testNoGuidanceAndRange() throws {
        let pipeline = try StableDiffusionPipeline(folder: TestPaths.model("tiny-sd1"))
        var r = GenerationRequest(prompt: "a red heart", steps: 2, guidanceScale: 1, width: 64, height: 64, seed: 1)
        let plain = try pipeline.generate(r)
        r.guidanceRescale = 0.7
        XCTAssertEqual(try pipeline.generate(r).pixels.scalars, plain.pixels.scalars)
        r.guidanceRescale = 1.5
        XCTAssertThrowsError(try pipeline.validate(r))
        r.guidanceRescale = -.infinity
        XCTAssertThrowsError(try pipeline.validate(r))
    }
}
