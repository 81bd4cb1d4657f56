import Foundation
import XCTest
@testable import Darkroom

/// img2img lines in batch files (`init_image`, `strength`) and the model's own VAE encoder.
final class BatchImageToImageTests: XCTestCase {
    var tmp: URL!

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("darkroom-batch-i2i-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: tmp)
    }

    static let pipeline = BatchTests.pipeline

    func testInitImageLines() throws {
        let inits = tmp.appendingPathComponent("inits")
        try FileManager.default.createDirectory(at: inits, withIntermediateDirectories: true)
        let source = try PNGFile.read(TestPaths.fixtures.appendingPathComponent("img2img/init_70x52.png")).image
        try PNGFile.write(source, text: [], to: inits.appendingPathComponent("a.png"))
        let lines = [
            #"{"prompt": "a blue heart", "init_image": "inits/a.png", "strength": 0.5, "steps": 4, "seed": 9, "count": 2}"#,
            #"{"prompt": "a red heart", "seed": 3}"#,
            #"{"prompt": "same size", "init_image": "inits/a.png", "width": 64, "height": 40, "steps": 2, "seed": 1}"#,
            #"{"prompt": "no image", "strength": 0.5}"#,
            #"{"prompt": "missing", "init_image": "inits/none.png"}"#,
            #"{"prompt": "zero", "init_image": "inits/a.png", "strength": 0}"#,
        ]
        let promptsURL = tmp.appendingPathComponent("p.jsonl")
        try (lines.joined(separator: "\n") + "\n").write(to: promptsURL, atomically: true, encoding: .utf8)
        let file = try PromptFile.load(promptsURL)
        let byLine = Dictionary(uniqueKeysWithValues: file.problems.map { ($0.source.line, $0.message) })
        XCTAssertEqual(Set(byLine.keys), [4, 6], "\(byLine)")
        XCTAssertTrue(byLine[4]!.contains("needs an 'init_image'"))
        XCTAssertTrue(byLine[6]!.contains("'strength'"))
        let jobs = file.jobs(defaults: BatchDefaults(steps: 2, width: 64, height: 64)).jobs
        XCTAssertEqual(jobs.count, 5)
        XCTAssertEqual(jobs[0].initImage, BatchJob.InitImage(url: inits.appendingPathComponent("a.png").standardizedFileURL, strength: 0.5))
        XCTAssertNil(jobs[0].request.width, "img2img takes the init image's size")
        XCTAssertNil(jobs[2].initImage)
        XCTAssertEqual(jobs[3].request.width, 64)
        XCTAssertEqual(jobs[3].initImage?.strength, PromptFile.defaultStrength)

        let out = tmp.appendingPathComponent("out")
        let runner = try BatchRunner(pipeline: Self.pipeline, options: BatchOptions(output: out, batchSize: 4))
        let plan = runner.plan(jobs)
        XCTAssertEqual(plan.invalid.count, 1)
        XCTAssertTrue(plan.invalid[0].message.contains("none.png"), plan.invalid[0].message)
        var groups: [[Int]] = []
        let summary = try runner.run(jobs) { if case .started(let js) = $0 { groups.append(js.map(\.index)) } }
        XCTAssertEqual([summary.made, summary.invalid, summary.failed], [4, 1, 0])
        XCTAssertEqual(groups, [[0], [1], [2], [3]], "img2img jobs run alone")

        // Each image is what pipeline.generate(initImage:) makes from the same request.
        let records = try Manifest.read(out.appendingPathComponent("manifest.jsonl")).records
        for k in [0, 1, 3] {
            let job = jobs[k]
            let record = try XCTUnwrap(records.first { $0.index == job.index })
            XCTAssertEqual(record.initImage, job.initImage?.url.path)
            XCTAssertEqual(record.strength, job.initImage?.strength)
            let written = try PNGFile.read(out.appendingPathComponent(record.file))
            let direct = try Self.pipeline.generate(job.request, initImage: source, strength: job.initImage!.strength)
            XCTAssertEqual(written.image, direct.image, "job \(k)")
            XCTAssertEqual(written.text["parameters"], direct.parameters.a1111Text)
            XCTAssertEqual([record.width, record.height], k == 3 ? [64, 40] : [64, 48])
        }
        XCTAssertEqual(try GenerationParameters(parsing: try PNGFile.read(out.appendingPathComponent(records.first { $0.index == 0 }!.file))
            .text["parameters"]!)[extra: "Denoising strength"], "0.5")
        // A rerun makes nothing new.
        let again = try BatchRunner(pipeline: Self.pipeline, options: BatchOptions(output: out)).run(jobs)
        XCTAssertEqual([again.made, again.skipped], [0, 4])
    }

    /// The model keeps one VAE encoder, read from a folder's vae/ or a checkpoint's
    /// first_stage_model: a lossless single-file tiny-sd2 encodes exactly as its folder.
    func testModelOwnsTheEncoderForFoldersAndCheckpoints() throws {
        let folder = try StableDiffusionModel(folder: TestPaths.model("tiny-sd2"))
        let file = try StableDiffusionModel(checkpoint: TestPaths.fixtures.appendingPathComponent("singlefile/tiny-sd2.safetensors"),
                                            options: CheckpointOptions(configFolder: TestPaths.model("tiny-sd2")))
        let image = StableDiffusionPipeline.preprocess(try PNGFile.read(TestPaths.fixtures.appendingPathComponent("img2img/init_64x64.png")).image,
                                                       width: 64, height: 64)
        let a = try folder.vaeEncoder()(image).mean, b = try file.vaeEncoder()(image).mean
        XCTAssertEqual(a.shape, [1, 4, 8, 8])
        XCTAssertEqual(a.scalars, b.scalars)
        XCTAssertEqual(try folder.vaeEncoder()(image).mean.scalars, a.scalars, "the kept encoder")
        // And matches diffusers' encoder on the same weights (Fixtures/img2img, 1e-4 as VAEEncoderTests).
        let g = try SafetensorsFile(url: TestPaths.fixtures.appendingPathComponent("img2img/vae_encoder_tiny-sd2.safetensors"))
        assertClose(try file.vaeEncoder()(try g.tensor("image")).mean, try g.tensor("mean"), atol: 1e-4, "single-file encoder vs diffusers")
    }
}
