import Foundation
import XCTest
@testable import Darkroom

/// Image-to-image against diffusers' StableDiffusionImg2ImgPipeline on the tiny models, and the
/// Pillow Lanczos resize it applies to inputs (Fixtures/img2img/img2img.*, resize_*.png).
final class ImageToImageTests: XCTestCase {
    static let dir = TestPaths.fixtures.appendingPathComponent("img2img")

    static func png(_ name: String) throws -> RGBImage { try PNGFile.read(dir.appendingPathComponent(name)).image }

    func spec() throws -> ConfigFile { try ConfigFile.load(Self.dir.appendingPathComponent("img2img.json")) }

    func testLanczosResizeMatchesPillow() throws {
        guard case .array(let resizes)? = try spec().value("resizes") else { return XCTFail("no resizes") }
        XCTAssertEqual(resizes.count, 3)
        for r in resizes {
            guard case .string(let src)? = r["source"], case .string(let dst)? = r["target"],
                  case .number(let w)? = r["width"], case .number(let h)? = r["height"] else { return XCTFail("bad entry") }
            let expected = try Self.png(dst)
            let actual = try Self.png(src).resizedLanczos(width: Int(w), height: Int(h))
            XCTAssertEqual(actual.width, expected.width)
            XCTAssertEqual(actual.height, expected.height)
            // Pillow's fixed-point arithmetic is reproduced exactly: every byte equal.
            let differing = zip(actual.pixels, expected.pixels).filter { $0 != $1 }.count
            XCTAssertEqual(differing, 0, "\(src) → \(dst): \(differing) bytes differ")
        }
        let img = try Self.png("init_64x64.png")
        XCTAssertEqual(img.resizedLanczos(width: 64, height: 64), img, "same size is a copy")
    }

    struct Case {
        let key: String, model: String, sampler: SamplerKind, image: String
        let prompt: String, negative: String, seed: UInt64, steps: Int, strength: Float, scale: Float, eta: Float
        let width: Int, height: Int, tStart: Int, runTimesteps: [Float]
    }

    func cases() throws -> [Case] {
        guard case .object(let all)? = try spec().value("cases") else { throw DarkroomError.invalidArgument("no cases") }
        return try all.sorted(by: { $0.key < $1.key }).map { key, c in
            guard case .string(let model)? = c["model"], case .string(let sampler)? = c["sampler"],
                  case .string(let image)? = c["image"], case .string(let prompt)? = c["prompt"],
                  case .string(let negative)? = c["negative_prompt"], case .number(let seed)? = c["seed"],
                  case .number(let steps)? = c["steps"], case .number(let strength)? = c["strength"],
                  case .number(let scale)? = c["guidance_scale"], case .number(let eta)? = c["eta"],
                  case .number(let width)? = c["width"], case .number(let height)? = c["height"],
                  case .number(let tStart)? = c["t_start"], case .array(let run)? = c["run_timesteps"],
                  let kind = SamplerKind(name: sampler)
            else { throw DarkroomError.invalidArgument("\(key): incomplete case") }
            let ts: [Float] = run.compactMap { if case .number(let t) = $0 { return Float(t) } else { return nil } }
            return Case(key: key, model: model, sampler: kind, image: image, prompt: prompt, negative: negative,
                        seed: UInt64(seed), steps: Int(steps), strength: Float(strength), scale: Float(scale), eta: Float(eta),
                        width: Int(width), height: Int(height), tStart: Int(tStart), runTimesteps: ts)
        }
    }

    func request(_ c: Case) -> GenerationRequest {
        GenerationRequest(prompt: c.prompt, negativePrompt: c.negative, steps: c.steps, guidanceScale: c.scale,
                          seed: c.seed, eta: c.eta, sampler: c.sampler)
    }

    func testImageToImageMatchesDiffusers() throws {
        let g = try Golden("img2img", "img2img.safetensors")
        let all = try cases()
        XCTAssertEqual(Set(all.map(\.sampler)), [.ddim, .eulerA, .dpmpp2mKarras, .euler])
        var pipelines: [String: (StableDiffusionPipeline, VAEEncoder)] = [:]
        for c in all {
            if pipelines[c.model] == nil {
                let p = try StableDiffusionPipeline(folder: TestPaths.model(c.model))
                pipelines[c.model] = (p, try p.loadVAEEncoder())
            }
            let (pipeline, encoder) = pipelines[c.model]!
            let r = request(c)
            let initImage = try Self.png(c.image)
            let what = c.key

            // Plan: size (the image's, rounded down to a multiple of 8) and schedule start.
            let plan = try pipeline.plan(r, initImage: initImage, strength: c.strength)
            XCTAssertEqual(plan.width, c.width, what)
            XCTAssertEqual(plan.height, c.height, what)
            XCTAssertEqual(plan.startStep, c.tStart, what)
            XCTAssertEqual(plan.stepsRun, c.runTimesteps.count, what)
            XCTAssertEqual(plan.resizesImage, initImage.width != c.width || initImage.height != c.height, what)

            // Preprocessing (including the Lanczos resize of the 70x52 input) is exact.
            let image = StableDiffusionPipeline.preprocess(initImage, width: plan.width, height: plan.height)
            assertClose(image, try g.tensor("\(what).image_in"), atol: 0, "\(what) preprocessed image")

            // Stage by stage, so a failure says where the paths part.
            let dist = encoder(image)
            assertClose(dist.mean, try g.tensor("\(what).mean"), atol: 1e-4, "\(what) encoder mean")
            var gen = TorchGenerator(seed: c.seed)
            assertClose(encoder.latents(for: image, generator: &gen), try g.tensor("\(what).image_latents"), atol: 1e-4,
                        "\(what) image latents (first draw)")
            assertClose(gen.randn(shape: dist.mean.shape), try g.tensor("\(what).noise"), atol: 0, "\(what) noise (second draw)")
            var (latents, sampler, generator) = try pipeline.imageToImageStart(r, image: image, plan: plan, encoder: encoder)
            // Relative: the Euler case at strength 1 starts at σ ≈ 4096 (zero terminal SNR).
            assertClose(latents, try g.tensor("\(what).noisy_latents"), atol: 1e-4, rtol: 1e-6, "\(what) noisy latents")
            XCTAssertEqual(Array(sampler.timesteps[plan.startStep...]), c.runTimesteps, what)
            let embeddings = try pipeline.encode(prompt: c.prompt, negativePrompt: c.negative, guidance: pipeline.usesGuidance(c.scale))
            var stepLatents: [Tensor] = []
            var reported: [Int] = []
            latents = try pipeline.denoise(latents: latents, embeddings: embeddings, request: r, sampler: sampler,
                                           startStep: plan.startStep, generator: &generator,
                                           progress: { reported.append($0.step); return true },
                                           onStep: { _, l in stepLatents.append(l) })
            XCTAssertEqual(reported, Array(0...plan.stepsRun), "\(what): progress counts the steps run, then decoding")
            XCTAssertEqual(stepLatents.count, c.runTimesteps.count, what)
            for (i, l) in stepLatents.enumerated() {
                assertClose(l, try g.tensor("\(what).latents.\(i)"), atol: 1e-3, rtol: 1e-4, "\(what) latents after step \(i)")
            }

            // End to end through the public entry point: image within 1e-3 (float, [0, 1]).
            let result = try pipeline.generate(r, initImage: initImage, strength: c.strength, encoder: encoder)
            let expected = try g.tensor("\(what).image")  // [1, H, W, 3]
            let (h, w) = (c.height, c.width)
            XCTAssertEqual(result.pixels.shape, [1, 3, h, w])
            var maxDiff: Float = 0
            for y in 0..<h { for x in 0..<w { for ch in 0..<3 {
                maxDiff = max(maxDiff, abs(result.pixels[(ch * h + y) * w + x] - expected[(y * w + x) * 3 + ch]))
            } } }
            XCTAssertLessThanOrEqual(maxDiff, 1e-3, "\(what): image max-abs diff \(maxDiff)")
            XCTAssertEqual(result.image.width, w)
            XCTAssertEqual(result.image.height, h)
            XCTAssertEqual(result.parameters[extra: "Denoising strength"], c.strength.description)
            XCTAssertEqual(result.parameters.sampler, c.sampler.a1111Name)
        }
    }

    func testPublicEntryPointLoadsTheEncoder() throws {
        // The convenience overload (encoder loaded from vae/) gives the same image.
        let c = try cases().first { $0.key == "tiny-sd1.ddim" }!
        let pipeline = try StableDiffusionPipeline(folder: TestPaths.model(c.model))
        let initImage = try Self.png(c.image)
        let a = try pipeline.generate(request(c), initImage: initImage, strength: c.strength)
        let b = try pipeline.generate(request(c), initImage: initImage, strength: c.strength, encoder: pipeline.loadVAEEncoder())
        XCTAssertEqual(a.pixels.scalars, b.pixels.scalars)
        // Cancelling from the progress callback stops the run.
        XCTAssertThrowsError(try pipeline.generate(request(c), initImage: initImage, strength: c.strength,
                                                   progress: { $0.phase != .denoising })) { error in
            XCTAssertEqual(error as? DarkroomError, .cancelled)
        }
    }

    func testStrengthToSteps() throws {
        let pipeline = try StableDiffusionPipeline(folder: TestPaths.model("tiny-sd1"))
        let img = RGBImage(width: 64, height: 64, pixels: Array(repeating: 128, count: 64 * 64 * 3))
        // (steps, strength) → steps run, as Python's min(int(steps * strength), steps) on doubles.
        for (steps, strength, run) in [(4, 0.6, 2), (10, 0.7, 7), (10, 0.3, 3), (50, 0.75, 37), (20, 1.0, 20),
                                        (3, 0.34, 1), (7, 0.999, 6)] as [(Int, Float, Int)] {
            let p = try pipeline.plan(GenerationRequest(prompt: "", steps: steps), initImage: img, strength: strength)
            XCTAssertEqual(p.stepsRun, run, "steps \(steps) strength \(strength)")
            XCTAssertEqual(p.startStep, steps - run)
        }
    }

    func testSizeRules() throws {
        let pipeline = try StableDiffusionPipeline(folder: TestPaths.model("tiny-sd1"))
        func image(_ w: Int, _ h: Int) -> RGBImage { RGBImage(width: w, height: h, pixels: Array(repeating: 7, count: w * h * 3)) }
        let r = GenerationRequest(prompt: "x", steps: 4)
        // Default: the image's size rounded down to a multiple of 8, resized when it changes.
        var p = try pipeline.plan(r, initImage: image(70, 52), strength: 0.5)
        XCTAssertEqual([p.width, p.height], [64, 48])
        XCTAssertTrue(p.resizesImage)
        p = try pipeline.plan(r, initImage: image(64, 40), strength: 0.5)
        XCTAssertEqual([p.width, p.height], [64, 40])
        XCTAssertFalse(p.resizesImage)
        // An explicit size wins; the image is resized to it.
        var sized = r
        sized.width = 96
        sized.height = 32
        p = try pipeline.plan(sized, initImage: image(64, 40), strength: 0.5)
        XCTAssertEqual([p.width, p.height], [96, 32])
        XCTAssertTrue(p.resizesImage)
        let t = StableDiffusionPipeline.preprocess(image(64, 40), width: 96, height: 32)
        XCTAssertEqual(t.shape, [1, 3, 32, 96])
        XCTAssertEqual(t[0], 2 * (7 / 255 as Float) - 1, "a flat image stays flat through Lanczos")
        // An explicit size that is not a multiple of 8 is rejected.
        sized.width = 100
        XCTAssertThrowsError(try pipeline.plan(sized, initImage: image(64, 40), strength: 0.5)) { error in
            XCTAssertTrue("\(error)".contains("multiple of 8"), "\(error)")
        }
    }

    func testRejections() throws {
        let pipeline = try StableDiffusionPipeline(folder: TestPaths.model("tiny-sd1"))
        let img = RGBImage(width: 64, height: 64, pixels: Array(repeating: 0, count: 64 * 64 * 3))
        let r = GenerationRequest(prompt: "x", steps: 4)
        func rejects(_ r: GenerationRequest, _ image: RGBImage, _ strength: Float, _ needle: String, line: UInt = #line) {
            XCTAssertThrowsError(try pipeline.plan(r, initImage: image, strength: strength), line: line) { error in
                guard case DarkroomError.invalidArgument(let message) = error else { return XCTFail("\(error)", line: line) }
                XCTAssertTrue(message.contains(needle), "\(message)", line: line)
            }
        }
        for s in [0, -0.5, 1.01, .nan, .infinity] as [Float] { rejects(r, img, s, "strength") }
        rejects(r, img, 0.2, "no denoising step")  // int(4 × 0.2) = 0
        for kind in [SamplerKind.pndm, .lcm] {
            var k = r
            k.sampler = kind
            rejects(k, img, 0.5, "does not support img2img")
        }
        rejects(r, RGBImage(width: 5, height: 64, pixels: Array(repeating: 0, count: 5 * 64 * 3)), 0.5, "at least 8x8")
        rejects(r, RGBImage(width: 8200, height: 1, pixels: Array(repeating: 0, count: 8200 * 3)), 0.5, "8192")
        rejects(r, RGBImage(width: 0, height: 0, pixels: []), 0.5, "empty")
        // generate validates before loading the encoder or running anything.
        XCTAssertThrowsError(try pipeline.generate(r, initImage: img, strength: 0))
    }
}
