import Foundation
import XCTest
@testable import Darkroom

/// Long and weighted prompts against Tools/fixtures_prompts.py, a step-by-step Python port of
/// AUTOMATIC1111's parse_prompt_attention / tokenize_line / EmphasisOriginal / pad_cond_uncond
/// run with transformers' CLIPTokenizer and CLIPTextModel on Models/tiny-sd1 and tiny-sd2.
final class PromptTests: XCTestCase {
    static let models = ["tiny-sd1", "tiny-sd2"]
    static let dir = TestPaths.fixtures.appendingPathComponent("prompts")

    /// prompts.json: floats are Python repr strings, so Double(String) gives the exact value.
    static func doc() throws -> [String: Any] {
        let data = try Data(contentsOf: dir.appendingPathComponent("prompts.json"))
        return try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
    }
    static func cases() throws -> [[String: Any]] { try XCTUnwrap(doc()["cases"] as? [[String: Any]]) }
    static func pairs() throws -> [[String: Any]] { try XCTUnwrap(doc()["pairs"] as? [[String: Any]]) }

    static func encoder(_ model: String) throws -> PromptEncoder {
        let folder = TestPaths.model(model)
        let tokenizer = try CLIPTokenizer(directory: folder.appendingPathComponent("tokenizer"))
        let config = try CLIPTextConfig(ConfigFile.load(folder.appendingPathComponent("text_encoder/config.json")))
        let weights = try Weights.load(componentFolder: folder.appendingPathComponent("text_encoder"), stem: "model")
        return PromptEncoder(tokenizer: tokenizer, textEncoder: try CLIPTextModel(config: config, weights: weights))
    }

    static func double(_ s: Any) -> Double { Double(s as! String)! }

    // MARK: parse_prompt_attention

    func testParserMatchesA1111() throws {
        XCTAssertGreaterThanOrEqual(try Self.cases().count, 15)
        for c in try Self.cases() {
            let name = c["name"] as! String
            let expected = (c["parsed"] as! [[Any]]).map { PromptFragment($0[0] as! String, Self.double($0[1])) }
            // Exact: same texts, bit-identical Double weights (same multiplication order as Python).
            XCTAssertEqual(try PromptParser.parse(c["prompt"] as! String), expected, name)
        }
    }

    func testParserDocstringExamplesAndErrors() throws {
        // A1111's own doctests.
        XCTAssertEqual(try PromptParser.parse("an (important) word"),
                       [PromptFragment("an ", 1), PromptFragment("important", 1.1), PromptFragment(" word", 1)])
        XCTAssertEqual(try PromptParser.parse("(unnecessary)(parens)"), [PromptFragment("unnecessaryparens", 1.1)])
        XCTAssertEqual(try PromptParser.parse("\\(literal\\]"), [PromptFragment("(literal]", 1)])
        XCTAssertEqual(try PromptParser.parse("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."), [
            PromptFragment("a ", 1), PromptFragment("house", 1.5730000000000004), PromptFragment(" ", 1.1),
            PromptFragment("on", 1), PromptFragment(" a ", 1.1), PromptFragment("hill", 0.55),
            PromptFragment(", sun, ", 1.1), PromptFragment("sky", 1.4641000000000006), PromptFragment(".", 1.1)])
        XCTAssertEqual(try PromptParser.parse("a BREAK b"), [PromptFragment("a", 1), .breakMarker, PromptFragment("b", 1)])
        XCTAssertEqual(try PromptParser.parse(""), [PromptFragment("", 1)])
        // A bracket followed by a combining mark is still a bracket (scalars, not graphemes).
        XCTAssertEqual(try PromptParser.parse("(\u{301}x)"), [PromptFragment("\u{301}x", 1.1)])
        // Python's float() rejects these, so A1111 fails; so do we, with a message.
        XCTAssertThrowsError(try PromptParser.parse("(a:1.2.3)"))
        XCTAssertThrowsError(try PromptParser.parse("(a:.)"))
        // Without an open "(" the same text is literal.
        XCTAssertEqual(try PromptParser.parse("a:1.2.3)"), [PromptFragment("a:1.2.3)", 1)])
    }

    // MARK: tokenize_line

    func testChunksMatchA1111() throws {
        for model in Self.models {
            let chunker = try Self.encoder(model).chunker
            for c in try Self.cases() {
                let name = "\(model) \(c["name"] as! String)"
                let per = c[model] as! [String: Any]
                for (weighting, key) in [(true, "")] + ((c["no_emphasis"] as! Bool) ? [(false, "_no_emphasis")] : []) {
                    let expected = per["chunks" + key] as! [[String: Any]]
                    let (chunks, count) = try chunker.chunks(c["prompt"] as! String, weighting: weighting)
                    XCTAssertEqual(count, per["token_count" + key] as! Int, "\(name)\(key) token count")
                    XCTAssertEqual(chunks.count, expected.count, "\(name)\(key) chunk count")
                    for (i, (got, want)) in zip(chunks, expected).enumerated() {
                        XCTAssertEqual(got.tokens, want["tokens"] as! [Int], "\(name)\(key) chunk \(i) tokens")
                        XCTAssertEqual(got.multipliers, (want["multipliers"] as! [Any]).map(Self.double), "\(name)\(key) chunk \(i) weights")
                    }
                    let sent = per["input_ids" + key] as! [[Int]]
                    XCTAssertEqual(chunks.map(chunker.inputIDs), sent, "\(name)\(key) ids sent to the text encoder")
                }
            }
        }
    }

    // MARK: embeddings

    func testEmbeddingsMatchA1111() throws {
        for model in Self.models {
            let encoder = try Self.encoder(model)
            let golden = try Golden("prompts", "\(model).safetensors")
            for c in try Self.cases() {
                let prompt = c["prompt"] as! String
                for skip in [1, 2] {
                    for (weighting, key) in [(true, "")] + ((c["no_emphasis"] as! Bool) ? [(false, "_no_emphasis")] : []) {
                        let name = "\(c["name"] as! String)\(key).skip\(skip)"
                        let z = try encoder.encode(prompt, clipSkip: skip, weighting: weighting)
                        // float32 with a different summation order; activations are O(1) after the LayerNorm.
                        assertClose(z, try golden.tensor(name), atol: 1e-4, "\(model) \(name)")
                    }
                }
            }
        }
    }

    func testPromptAndNegativePaddedToSameChunks() throws {
        for model in Self.models {
            let encoder = try Self.encoder(model)
            let golden = try Golden("prompts", "\(model).safetensors")
            for p in try Self.pairs() {
                let name = p["name"] as! String
                for skip in [1, 2] {
                    let (pos, neg) = try encoder.encode(prompt: p["prompt"] as! String, negativePrompt: p["negative"] as! String, clipSkip: skip)
                    XCTAssertEqual(pos.shape, neg.shape, "\(model) \(name)")
                    assertClose(pos, try golden.tensor("pair.\(name).positive.skip\(skip)"), atol: 1e-4, "\(model) \(name) positive skip \(skip)")
                    assertClose(neg, try golden.tensor("pair.\(name).negative.skip\(skip)"), atol: 1e-4, "\(model) \(name) negative skip \(skip)")
                }
            }
        }
    }

    // MARK: diffusers parity

    /// A prompt of at most 75 tokens without weighting syntax gets diffusers' exact embeddings in
    /// a1111 mode (bit-identical to diffusers mode, and within float tolerance of transformers).
    func testShortPlainPromptIsDiffusersExactly() throws {
        let words = "red blue green cat dog house tree sky sun moon river stone bird fish rain".split(separator: " ")
        let seventyFive = (0..<75).map { String(words[$0 % words.count]) }.joined(separator: " ")
        for model in Self.models {
            let encoder = try Self.encoder(model)
            XCTAssertEqual(encoder.tokenizer.tokenize(seventyFive).count, 75)
            for prompt in ["a photo of a red heart, highly detailed", "", seventyFive, "style: photo, 12:30) done"] {
                for skip in [1, 2] {
                    let a = try encoder.encode(prompt, clipSkip: skip, mode: .a1111)
                    let d = try encoder.encode(prompt, clipSkip: skip, mode: .diffusers)
                    XCTAssertEqual(a.shape, d.shape, "\(model) \(prompt)")
                    XCTAssertEqual(a.scalars, d.scalars, "\(model) \(prompt.prefix(20)) skip \(skip): a1111 and diffusers modes differ")
                }
                let (ap, an) = try encoder.encode(prompt: prompt, negativePrompt: "blurry", mode: .a1111)
                let (dp, dn) = try encoder.encode(prompt: prompt, negativePrompt: "blurry", mode: .diffusers)
                XCTAssertEqual(ap.scalars, dp.scalars, "\(model) pair positive")
                XCTAssertEqual(an.scalars, dn.scalars, "\(model) pair negative")
            }
            // Against transformers' own last_hidden_state for the same two texts.
            let g = try Golden(model, "text_encoder.safetensors")
            let reference = try g.tensor("last_hidden_state")
            let (pos, neg) = try encoder.encode(prompt: "a photo of a red heart, highly detailed", negativePrompt: "")
            assertClose(Tensor.concat([pos, neg]), reference, atol: 1e-4, "\(model) vs transformers")
        }
    }

    func testDiffusersModeTruncatesAndIgnoresSyntax() throws {
        let encoder = try Self.encoder("tiny-sd1")
        let long = Array(repeating: "cat", count: 100).joined(separator: " ")
        XCTAssertEqual(try encoder.encode(long, mode: .diffusers).shape, [1, 77, 32])
        XCTAssertEqual(try encoder.encode(long, mode: .a1111).shape, [1, 154, 32])
        let (p, n) = try encoder.encode(prompt: long, negativePrompt: "", mode: .diffusers)
        XCTAssertEqual(p.shape, [1, 77, 32])
        XCTAssertEqual(n.shape, [1, 77, 32])
        // "(cat:1.5)" is text to diffusers: it differs from a1111's weighted "cat" and from a1111
        // with weighting off (which also tokenizes the brackets) only in the weights.
        let plain = try encoder.encode("(cat:1.5)", mode: .diffusers)
        let unweighted = try encoder.encode("(cat:1.5)", mode: .a1111, weighting: false)
        XCTAssertEqual(plain.scalars, unweighted.scalars)
        XCTAssertNotEqual(plain.scalars, try encoder.encode("(cat:1.5)", mode: .a1111).scalars)
    }

    func testClipSkipRange() throws {
        let encoder = try Self.encoder("tiny-sd1")   // 2 layers
        XCTAssertThrowsError(try encoder.encode("cat", clipSkip: 0))
        XCTAssertThrowsError(try encoder.encode("cat", clipSkip: 3))
        XCTAssertThrowsError(try encoder.encode(prompt: "cat", negativePrompt: "", clipSkip: 3, mode: .diffusers))
        XCTAssertNotEqual(try encoder.encode("cat", clipSkip: 1).scalars, try encoder.encode("cat", clipSkip: 2).scalars)
    }

    func testCommaBacktrackCanBeTurnedOff() throws {
        let base = try Self.encoder("tiny-sd1")
        let off = PromptEncoder(tokenizer: base.tokenizer, textEncoderSource: base.textEncoderSource, commaPaddingBacktrack: 0)
        // 70 words, a comma (token 71), 10 more words: A1111 moves the 10 words to chunk 2.
        let prompt = Array(repeating: "cat", count: 70).joined(separator: " ") + ", " + Array(repeating: "dog", count: 10).joined(separator: " ")
        let on = try base.chunker.chunks(prompt).chunks
        let plain = try off.chunker.chunks(prompt).chunks
        XCTAssertEqual(on[0].tokens[71], base.chunker.commaTokenID)
        XCTAssertEqual(on[0].tokens[72], base.tokenizer.eosTokenID)
        XCTAssertEqual(on[1].tokens.dropFirst().prefix(10).count { $0 == base.tokenizer.tokenize("dog")[0] }, 10)
        XCTAssertNotEqual(plain[0].tokens[72], base.tokenizer.eosTokenID, "without backtracking chunk 1 is full")
    }

    /// The padded conditioning drives the UNet as diffusers' [negative, positive] batch: cross
    /// attention takes any number of context tokens.
    func testLongConditioningRunsThroughUNet() throws {
        let model = try StableDiffusionModel(folder: TestPaths.model("tiny-sd1"))
        let encoder = PromptEncoder(tokenizer: model.tokenizer, textEncoder: try model.textEncoder())
        let long = Array(repeating: "a (red:1.2) cat,", count: 30).joined(separator: " ")
        let (pos, neg) = try encoder.encode(prompt: long, negativePrompt: "blurry")
        XCTAssertEqual(pos.shape, [1, 154, 32])
        let context = Tensor.concat([neg, pos])
        let latents = Tensor(shape: [2, model.unetConfig.inChannels, 8, 8], values: (0..<(2 * model.unetConfig.inChannels * 64)).map { Float(($0 * 37) % 11) / 11 - 0.5 })
        let out = try model.unet()(latents, timestep: 500, context: context)
        XCTAssertEqual(out.shape, latents.shape)
        XCTAssertTrue(out.scalars.allSatisfy(\.isFinite))
    }
}
