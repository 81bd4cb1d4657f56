import Foundation
import XCTest
@testable import Darkroom

/// Prompts through the pipeline: prompt modes, clip skip, chunk padding and batching by
/// conditioning length. The embeddings are checked against the A1111 port's goldens
/// (Tools/fixtures_prompts.py); plain prompts against diffusers' own (PipelineParityTests).
final class PipelinePromptTests: XCTestCase {
    static let pipelines: [String: StableDiffusionPipeline] = [
        "tiny-sd1": try! StableDiffusionPipeline(folder: TestPaths.model("tiny-sd1")),
        "tiny-sd2": try! StableDiffusionPipeline(folder: TestPaths.model("tiny-sd2")),
    ]
    static let long = Array(repeating: "a (red:1.2) cat,", count: 30).joined(separator: " ")

    /// The request's conditioning is the A1111 port's [negative, positive] pair (padded to the
    /// same chunk count) for clip skip 1 and 2, in auto mode and a1111 mode. Tolerance 1e-4, as
    /// PromptTests.
    func testRequestConditioningMatchesA1111Port() throws {
        for (name, pipeline) in Self.pipelines {
            let golden = try Golden("prompts", "\(name).safetensors")
            for p in try PromptTests.pairs() {
                let pair = p["name"] as! String
                for skip in [1, 2] {
                    for mode in [PromptMode.auto, .a1111] {
                        let r = GenerationRequest(prompt: p["prompt"] as! String, negativePrompt: p["negative"] as! String,
                                                  clipSkip: skip, promptMode: mode)
                        let z = try pipeline.encode(requests: [r], guidance: true)
                        let expected = Tensor.concat([try golden.tensor("pair.\(pair).negative.skip\(skip)"),
                                                      try golden.tensor("pair.\(pair).positive.skip\(skip)")])
                        assertClose(z, expected, atol: 1e-4, "\(name) \(pair) skip \(skip) \(mode)")
                        XCTAssertEqual(try pipeline.conditioningLength(r), expected.shape[1])
                    }
                }
            }
        }
    }

    /// auto runs diffusers' path for plain prompts (bit-identical to diffusers mode), A1111's
    /// for weights, BREAK or long prompts, also when only the negative prompt has them.
    func testAutoModeChoosesThePath() throws {
        let pipeline = Self.pipelines["tiny-sd1"]!
        let e = pipeline.promptEncoder
        XCTAssertEqual(try e.resolve(.auto, texts: ["a photo of a red heart, highly detailed", "", "style: photo, 12:30) done"]), .diffusers)
        for text in ["a (red) cat", "a [red] cat", "(cat:1.3)", "a BREAK b", "a \\(cat\\)", Self.long] {
            XCTAssertEqual(try e.resolve(.auto, texts: ["plain", text]), .a1111, text)
        }
        XCTAssertEqual(try e.resolve(.diffusers, texts: [Self.long]), .diffusers)
        let plain = GenerationRequest(prompt: "a red heart", negativePrompt: "blurry")
        var diffusers = plain
        diffusers.promptMode = .diffusers
        XCTAssertEqual(try pipeline.encode(requests: [plain], guidance: true).scalars,
                       try pipeline.encode(requests: [diffusers], guidance: true).scalars)
        // A long negative prompt pads the short prompt to its chunk count.
        let longNegative = GenerationRequest(prompt: "a red heart", negativePrompt: Self.long)
        XCTAssertEqual(try pipeline.encode(requests: [longNegative], guidance: true).shape, [2, 154, 32])
        diffusers.negativePrompt = Self.long
        XCTAssertEqual(try pipeline.encode(requests: [diffusers], guidance: true).shape, [2, 77, 32], "diffusers truncates")
        // Without guidance only the prompt is encoded: its own chunk count.
        XCTAssertEqual(try pipeline.encode(requests: [longNegative], guidance: false).shape, [1, 77, 32])
        XCTAssertEqual(try pipeline.conditioningLength(GenerationRequest(prompt: "x", negativePrompt: Self.long, guidanceScale: 1)), 77)
    }

    /// Clip skip reaches the text encoder, is validated against its depth and recorded as
    /// A1111's "Clip skip" only when it is not 1.
    func testClipSkipInGeneration() throws {
        let pipeline = Self.pipelines["tiny-sd1"]!   // 2 layers
        var r = GenerationRequest(prompt: "a red heart", negativePrompt: "blurry", steps: 2, width: 64, height: 64, seed: 5)
        let one = try pipeline.generate(r)
        XCTAssertNil(one.parameters[extra: "Clip skip"])
        r.clipSkip = 2
        let two = try pipeline.generate(r)
        XCTAssertEqual(two.parameters[extra: "Clip skip"], "2")
        XCTAssertNotEqual(one.pixels.scalars, two.pixels.scalars)
        // The same as feeding the penultimate layer's conditioning by hand.
        let (pos, neg) = try pipeline.promptEncoder.encode(prompt: r.prompt, negativePrompt: r.negativePrompt, clipSkip: 2)
        var (latents, generator) = pipeline.initialLatents(seed: r.seed, width: 64, height: 64)
        latents = try pipeline.denoise(latents: latents, embeddings: Tensor.concat([neg, pos]), request: r, generator: &generator)
        assertClose(StableDiffusionPipeline.unitPixels(pipeline.decode(latents)), two.pixels, atol: 1e-6, "clip skip 2 by hand")
        r.clipSkip = 3
        XCTAssertThrowsError(try pipeline.validate(r)) { XCTAssertTrue("\($0)".contains("clip skip 3"), "\($0)") }
        r.clipSkip = 0
        XCTAssertThrowsError(try pipeline.generate(r))
        r.clipSkip = 1
        r.prompt = "(a:1.2.3)"
        XCTAssertThrowsError(try pipeline.validate(r), "A1111's float() error surfaces in validation")
    }

    /// Long and weighted prompts render, and batch only with prompts of the same length; batched
    /// images equal single ones (1e-5, as BatchTests).
    func testLongPromptsBatchByConditioningLength() throws {
        let pipeline = Self.pipelines["tiny-sd1"]!
        let base = GenerationRequest(prompt: Self.long, negativePrompt: "", steps: 2, guidanceScale: 5, width: 64, height: 64, seed: 1)
        var other = base
        other.prompt = Self.long.replacingOccurrences(of: "red", with: "blue")
        other.seed = 2
        other.clipSkip = 2
        other.guidanceRescale = 0.5
        var short = base
        short.prompt = "a (red:1.2) cat"
        XCTAssertTrue(pipeline.canBatch(base, other))
        XCTAssertFalse(pipeline.canBatch(base, short), "154 vs 77 tokens")
        XCTAssertThrowsError(try pipeline.generate(batch: [base, short]))
        let singles = try [base, other].map { try pipeline.generate($0) }
        let batched = try pipeline.generate(batch: [base, other])
        for (s, b) in zip(singles, batched) {
            XCTAssertEqual(s.parameters, b.parameters)
            assertClose(b.pixels, s.pixels, atol: 1e-5, "long prompt batched vs single")
        }
        XCTAssertEqual(batched[1].parameters[extra: "Guidance rescale"], "0.5")
        XCTAssertNotEqual(singles[0].pixels.scalars, try pipeline.generate(short).pixels.scalars)
    }
}

/// The new keys of JSON Lines prompt files.
final class PromptFileSettingsTests: XCTestCase {
    func testClipSkipPromptModeAndGuidanceRescaleKeys() {
        let lines = [
            #"{"prompt": "a", "clip_skip": 2, "prompt_mode": "diffusers", "guidance_rescale": 0.7}"#,
            #"{"prompt": "b"}"#,
            #"{"prompt": "c", "clip_skip": 0}"#,
            #"{"prompt": "d", "prompt_mode": "comfy"}"#,
            #"{"prompt": "e", "guidance_rescale": 1.5}"#,
            #"{"prompt": "f", "clipskip": 2}"#,
            #"{"prompt": "g", "prompt_mode": "A1111"}"#,
        ]
        let f = PromptFile(data: Data(lines.joined(separator: "\n").utf8), path: "p.jsonl")
        let byLine = Dictionary(uniqueKeysWithValues: f.problems.map { ($0.source.line, $0.message) })
        XCTAssertEqual(Set(byLine.keys), [3, 4, 5, 6], "\(byLine)")
        XCTAssertTrue(byLine[3]!.contains("'clip_skip'"))
        XCTAssertTrue(byLine[4]!.contains("comfy") && byLine[4]!.contains("a1111"))
        XCTAssertTrue(byLine[5]!.contains("'guidance_rescale'"))
        XCTAssertTrue(byLine[6]!.contains("did you mean 'clip_skip'"))
        let defaults = BatchDefaults(steps: 2, width: 64, height: 64, clipSkip: 1, promptMode: .a1111, guidanceRescale: 0.2)
        let jobs = f.jobs(defaults: defaults).jobs
        let a = jobs.first { $0.request.prompt == "a" }!.request
        XCTAssertEqual([a.clipSkip], [2])
        XCTAssertEqual(a.promptMode, .diffusers)
        XCTAssertEqual(a.guidanceRescale, 0.7)
        let b = jobs.first { $0.request.prompt == "b" }!.request
        XCTAssertEqual(b.clipSkip, 1)
        XCTAssertEqual(b.promptMode, .a1111, "the command line's default")
        XCTAssertEqual(b.guidanceRescale, 0.2)
        XCTAssertEqual(jobs.first { $0.request.prompt == "g" }!.request.promptMode, .a1111)
    }
}
