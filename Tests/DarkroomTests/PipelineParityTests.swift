import Foundation
import XCTest
@testable import Darkroom

/// The whole text-to-image pipeline against diffusers' StableDiffusionPipeline with DDIM, same
/// weights, seeds and settings (Tests/DarkroomTests/Fixtures/tiny-sdN/pipeline.*).
final class PipelineParityTests: XCTestCase {
    func testPipelineMatchesDiffusers() throws {
        for name in ["tiny-sd1", "tiny-sd2"] {
            let pipeline = try StableDiffusionPipeline(folder: TestPaths.model(name))
            let spec = try ConfigFile.load(TestPaths.golden(name, "pipeline.json"))
            let g = try Golden(name, "pipeline.safetensors")
            guard case .object(let cases)? = spec.value("cases") else { return XCTFail("no cases") }
            XCTAssertGreaterThanOrEqual(cases.count, 2)
            for (caseName, c) in cases {
                guard case .string(let prompt)? = c["prompt"], case .string(let negative)? = c["negative_prompt"],
                      case .number(let seed)? = c["seed"], case .number(let steps)? = c["steps"],
                      case .number(let scale)? = c["guidance_scale"], case .number(let width)? = c["width"],
                      case .number(let height)? = c["height"], case .number(let eta)? = c["eta"]
                else { return XCTFail("\(caseName): incomplete case") }
                let request = GenerationRequest(prompt: prompt, negativePrompt: negative, steps: Int(steps),
                                                guidanceScale: Float(scale), width: Int(width), height: Int(height),
                                                seed: UInt64(seed), eta: Float(eta))
                let what = "\(name) \(caseName)"

                // Stage by stage, so a failure says where the paths part.
                let embeds = try pipeline.encode(prompt: prompt, negativePrompt: negative, guidance: pipeline.usesGuidance(request.guidanceScale))
                assertClose(embeds, try g.tensor("\(caseName).prompt_embeds"), atol: 1e-4, "\(what) prompt_embeds")
                var (latents, generator) = pipeline.initialLatents(seed: request.seed, width: Int(width), height: Int(height))
                assertClose(latents, try g.tensor("\(caseName).initial_latents"), atol: 1e-6, "\(what) initial latents")
                var stepLatents: [Tensor] = []
                latents = try pipeline.denoise(latents: latents, embeddings: embeds, request: request, generator: &generator, onStep: { _, l in
                    stepLatents.append(l)
                })
                XCTAssertEqual(stepLatents.count, Int(steps))
                for (i, l) in stepLatents.enumerated() {
                    assertClose(l, try g.tensor("\(caseName).latents.\(i)"), atol: 1e-3, rtol: 1e-4, "\(what) latents after step \(i)")
                }

                // End to end through the public entry point: image within 1e-3 (float, [0, 1]).
                let result = try pipeline.generate(request)
                let expected = try g.tensor("\(caseName).image")  // [1, H, W, 3]
                let h = Int(height), w = Int(width)
                XCTAssertEqual(result.pixels.shape, [1, 3, h, w])
                var maxDiff: Float = 0
                for y in 0..<h { for x in 0..<w { for ch in 0..<3 {
                    maxDiff = max(maxDiff, abs(result.pixels[(ch * h + y) * w + x] - expected[(y * w + x) * 3 + ch]))
                } } }
                XCTAssertLessThanOrEqual(maxDiff, 1e-3, "\(what): image max-abs diff \(maxDiff)")
                XCTAssertEqual(result.image.width, w)
                XCTAssertEqual(result.image.height, h)
            }
        }
    }
}
