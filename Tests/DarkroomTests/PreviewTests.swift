import Foundation
import XCTest
@testable import Darkroom

/// The step callback's x̂₀ estimate that previews decode.
final class PreviewTests: XCTestCase {
    /// x_t = √ᾱ·x₀ + √(1−ᾱ)·ε: the estimate recovers x₀ from ε (epsilon), from v = √ᾱ·ε − √(1−ᾱ)·x₀
    /// (v_prediction) and is the output itself for sample prediction; fractional timesteps
    /// interpolate ᾱ. Within 1e-4 (float32 arithmetic on values of order 1).
    func testEstimateInvertsTheForwardProcess() throws {
        var config = try SchedulerConfig.load(from: TestPaths.model("tiny-sd1").appendingPathComponent("scheduler/scheduler_config.json"))
        let abar = DDIMScheduler(config: config).alphasCumprod
        let x0 = Tensor(shape: [1, 4, 2, 2], values: (0..<16).map { Float($0 % 7) / 3 - 1 })
        let eps = Tensor(shape: [1, 4, 2, 2], values: (0..<16).map { Float(($0 * 5) % 11) / 5 - 1 })
        for t in [1, 250, 601, 999] {
            let a = abar[t], sa = a.squareRoot(), sb = (1 - a).squareRoot()
            let xt = Tensor(shape: x0.shape, values: (0..<16).map { sa * x0[$0] + sb * eps[$0] })
            let v = Tensor(shape: x0.shape, values: (0..<16).map { sa * eps[$0] - sb * x0[$0] })
            config.predictionType = .epsilon
            assertClose(DenoisedEstimator(config: config).denoised(sample: xt, modelOutput: eps, timestep: Float(t)), x0,
                        atol: t == 999 ? 2e-3 : 1e-4, "epsilon t \(t)")
            config.predictionType = .vPrediction
            assertClose(DenoisedEstimator(config: config).denoised(sample: xt, modelOutput: v, timestep: Float(t)), x0, atol: 1e-4, "v t \(t)")
            config.predictionType = .sample
            XCTAssertEqual(DenoisedEstimator(config: config).denoised(sample: xt, modelOutput: x0, timestep: Float(t)).scalars, x0.scalars)
        }
        // Halfway between two timesteps: ᾱ halfway between theirs.
        config.predictionType = .epsilon
        let mid = (abar[500] + abar[501]) / 2
        let xt = Tensor(shape: x0.shape, values: (0..<16).map { mid.squareRoot() * x0[$0] + (1 - mid).squareRoot() * eps[$0] })
        assertClose(DenoisedEstimator(config: config).denoised(sample: xt, modelOutput: eps, timestep: 500.5), x0, atol: 1e-4, "t 500.5")
    }

    /// Through the pipeline: one report per step with every image of the batch; DDIM's last step
    /// lands at ᾱ₀ ≈ 0.999, so the final latents are within a few percent of the last x̂₀.
    func testStepReportsDuringGeneration() throws {
        let pipeline = try StableDiffusionPipeline(folder: TestPaths.model("tiny-sd1"))
        let rs = [GenerationRequest(prompt: "a red heart", steps: 4, width: 64, height: 64, seed: 1),
                  GenerationRequest(prompt: "a blue heart", steps: 4, width: 64, height: 64, seed: 2)]
        var reports: [DenoisingStep] = []
        let images = try pipeline.generate(batch: rs, onStep: { reports.append($0) })
        XCTAssertEqual(reports.map(\.stepsDone), [1, 2, 3, 4])
        XCTAssertEqual(reports.map(\.totalSteps), [4, 4, 4, 4])
        XCTAssertEqual(reports.map(\.timestep), [751, 501, 251, 1])
        let last = try XCTUnwrap(reports.last)
        XCTAssertEqual(last.latents.count, 2)
        XCTAssertEqual(last.denoised.count, 2)
        for j in 0..<2 {
            let (d, scale) = maxAbsDiff(last.denoised[j], last.latents[j])
            XCTAssertLessThan(d, 0.05 * scale, "x̂₀ at the last step vs the final latents")
            assertClose(StableDiffusionPipeline.unitPixels(pipeline.decode(last.latents[j])), images[j].pixels, atol: 0, "final latents")
        }
        // img2img reports only the steps it runs, with their absolute indices.
        var steps: [Int] = []
        let source = images[0].image
        _ = try pipeline.generate(rs[1], initImage: source, strength: 0.5, onStep: { steps.append($0.step) })
        XCTAssertEqual(steps, [2, 3])
    }
}
