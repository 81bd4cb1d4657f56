import XCTest
@testable import Darkroom

/// The A1111 `parameters` text. Expected strings follow AUTOMATIC1111's `create_infotext` and
/// `parse_generation_parameters`; the quoted values and regex splits were checked against
/// Python's `json.dumps(..., ensure_ascii=False)` and A1111's `re_param.findall`.
final class GenerationParametersTests: XCTestCase {
    func testLayoutMatchesA1111() {
        let p = GenerationParameters(
            prompt: "a cat in a hat", negativePrompt: "blurry, lowres", steps: 20, sampler: "DDIM", cfgScale: 7.5,
            seed: 42, width: 512, height: 768, model: "tiny-sd",
            extra: [.init("Eta", "0"), .init("Clip skip", "2"), .init("Model hash", "abc123"),
                    .init("Darkroom version", "0.1.0")])
        XCTAssertEqual(p.a1111Text, """
            a cat in a hat
            Negative prompt: blurry, lowres
            Steps: 20, Sampler: DDIM, CFG scale: 7.5, Seed: 42, Size: 512x768, Model hash: abc123, Model: tiny-sd, \
            Eta: 0, Clip skip: 2, Darkroom version: 0.1.0
            """)
    }

    func testNoNegativeLineAndIntegralCFG() {
        var p = GenerationParameters(prompt: "a dog", steps: 30, sampler: "Euler a", cfgScale: 7, seed: 18446744073709551615,
                                     width: 64, height: 64)
        XCTAssertEqual(p.a1111Text, "a dog\nSteps: 30, Sampler: Euler a, CFG scale: 7, Seed: 18446744073709551615, Size: 64x64")
        p.cfgScale = 0.1
        XCTAssertTrue(p.a1111Text.contains("CFG scale: 0.1, "))
        p.cfgScale = 12.25
        XCTAssertTrue(p.a1111Text.contains("CFG scale: 12.25, "))
        // An empty prompt: A1111 strips the leading newline.
        p.prompt = ""
        XCTAssertEqual(p.a1111Text, "Steps: 30, Sampler: Euler a, CFG scale: 12.25, Seed: 18446744073709551615, Size: 64x64")
    }

    func testQuotingLikeJSONDumps() {
        XCTAssertEqual(GenerationParameters.quote("plain value"), "plain value")
        XCTAssertEqual(GenerationParameters.quote("a: 1, b: 2"), #""a: 1, b: 2""#)
        XCTAssertEqual(GenerationParameters.quote("k:v"), #""k:v""#)
        // json.dumps("say \"hi\", ok\\ \x01 \x7f é\t\n", ensure_ascii=False)
        XCTAssertEqual(GenerationParameters.quote("say \"hi\", ok\\ \u{01} \u{7F} \u{E9}\t\n"),
                       "\"say \\\"hi\\\", ok\\\\ \\u0001 \u{7F} \u{E9}\\t\\n\"")
        // Darkroom's one extension: a leading quote is protected so it survives reading.
        XCTAssertEqual(GenerationParameters.quote("\"x\""), #""\"x\"""#)
        for s in ["a: 1, b: 2", "say \"hi\", ok\\ \u{01}\u{08}\u{0C}\r\n\t", "\u{1F600}, \u{65E5}", "\"x\""] {
            XCTAssertEqual(GenerationParameters.jsonUnquote(GenerationParameters.jsonString(s)), s)
        }
        XCTAssertEqual(GenerationParameters.jsonUnquote(#""\ud83d\ude00 \u00e9""#), "\u{1F600} \u{E9}")
        XCTAssertNil(GenerationParameters.jsonUnquote(#""a" "b""#))  // not one JSON string
        XCTAssertNil(GenerationParameters.jsonUnquote("\"a\nb\""))  // raw control character
        XCTAssertNil(GenerationParameters.jsonUnquote(#""\x""#))
    }

    func testParameterPairsLikeRegexFindall() {
        // Expected from A1111's re_param.findall on the same line (Python 3).
        let line = #"Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 7, Lora hashes: "add_detail: 7c6bad76eb54, more_details: 3b8aa1d351ef", Empty: , Weird: "unterminated, x: 1, Version: v1.6.0"#
        let pairs = GenerationParameters.parameterPairs(line)
        XCTAssertEqual(pairs.map(\.0), ["Steps", "Sampler", "CFG scale", "Lora hashes", "Empty", "Weird", "Version"])
        XCTAssertEqual(pairs.map(\.1), ["28", "DPM++ 2M Karras", "7", #""add_detail: 7c6bad76eb54, more_details: 3b8aa1d351ef""#,
                                        "", #""unterminated"#, "v1.6.0"])
    }

    func testParsesA1111DocstringExample() throws {
        // The example in A1111's parse_generation_parameters docstring.
        let text = """
            girl with an artist's beret, determined, blue eyes, desert scene, computer monitors, heavy makeup, by Alphonse Mucha and Charlie Bowater, ((eyeshadow)), (coquettish), detailed, intricate
            Negative prompt: ugly, fat, obese, chubby, (((deformed))), [blurry], bad anatomy, disfigured, poorly drawn face, mutation, mutated, (extra_limb), (ugly), (poorly drawn hands), messy drawing
            Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b
            """
        let p = try GenerationParameters(parsing: text)
        XCTAssertTrue(p.prompt.hasPrefix("girl with an artist's beret"))
        XCTAssertTrue(p.prompt.hasSuffix("detailed, intricate"))
        XCTAssertTrue(p.negativePrompt.hasPrefix("ugly, fat"))
        XCTAssertTrue(p.negativePrompt.hasSuffix("messy drawing"))
        XCTAssertEqual(p.steps, 20)
        XCTAssertEqual(p.sampler, "Euler a")
        XCTAssertEqual(p.cfgScale, 7)
        XCTAssertEqual(p.seed, 965400086)
        XCTAssertEqual([p.width, p.height], [512, 512])
        XCTAssertNil(p.model)
        XCTAssertEqual(p.extra, [.init("Model hash", "45dee52b")])
        XCTAssertEqual(p.a1111Text, text, "an A1111 text is written back unchanged")
    }

    func testParsesModernA1111TextWithQuotedValues() throws {
        let text = """
            masterpiece, best quality, 1girl, <lora:add_detail:0.6>
            Negative prompt: (worst quality:1.4), lowres, easynegative
            Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 3405691582, Face restoration: CodeFormer, \
            Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.5, Clip skip: 2, \
            Hires upscale: 2, Hires resize: 1024x1536, Lora hashes: "add_detail: 7c6bad76eb54, more_details: 3b8aa1d351ef", \
            TI hashes: "easynegative: c74b4e810b03", Version: v1.6.0
            """
        let p = try GenerationParameters(parsing: text)
        XCTAssertEqual(p.prompt, "masterpiece, best quality, 1girl, <lora:add_detail:0.6>")
        XCTAssertEqual(p.negativePrompt, "(worst quality:1.4), lowres, easynegative")
        XCTAssertEqual(p.steps, 28)
        XCTAssertEqual(p.sampler, "DPM++ 2M Karras")
        XCTAssertEqual(p.cfgScale, 6.5)
        XCTAssertEqual(p.seed, 3405691582)
        XCTAssertEqual([p.width, p.height], [512, 768])
        XCTAssertEqual(p.model, "v1-5-pruned-emaonly")
        XCTAssertEqual(p[extra: "Lora hashes"], "add_detail: 7c6bad76eb54, more_details: 3b8aa1d351ef")
        XCTAssertEqual(p[extra: "TI hashes"], "easynegative: c74b4e810b03")
        XCTAssertEqual(p[extra: "Hires resize"], "1024x1536")
        XCTAssertEqual(p.extra.map(\.key), ["Face restoration", "Model hash", "Denoising strength", "Clip skip", "Hires upscale",
                                            "Hires resize", "Lora hashes", "TI hashes", "Version"])
        XCTAssertEqual(p.a1111Text, text)
    }

    func testMultiLinePromptsAndMissingNegative() throws {
        let text = "line one\n  line two  \r\nline three\nSteps: 5, Sampler: DDIM, CFG scale: 1, Seed: 0, Size: 8x16"
        let p = try GenerationParameters(parsing: text)
        XCTAssertEqual(p.prompt, "line one\nline two\nline three", "lines are stripped, as A1111 does")
        XCTAssertEqual(p.negativePrompt, "")
        XCTAssertEqual([p.steps, p.width, p.height], [5, 8, 16])

        let neg = try GenerationParameters(parsing: "p1\np2\nNegative prompt: n1\nn2\nSteps: 5, Sampler: DDIM, CFG scale: 1.5, Seed: 9, Size: 8x8")
        XCTAssertEqual(neg.prompt, "p1\np2")
        XCTAssertEqual(neg.negativePrompt, "n1\nn2")

        // Only a negative prompt.
        let onlyNeg = try GenerationParameters(parsing: "Negative prompt: bad\nSteps: 5, Sampler: DDIM, CFG scale: 2, Seed: 1, Size: 8x8")
        XCTAssertEqual(onlyNeg.prompt, "")
        XCTAssertEqual(onlyNeg.negativePrompt, "bad")
    }

    func testRoundTrips() throws {
        let cases = [
            GenerationParameters(prompt: "a", steps: 1, sampler: "DDIM", cfgScale: 7.5, seed: 42, width: 512, height: 512),
            GenerationParameters(prompt: "multi\nline, prompt: with (weights:1.2)", negativePrompt: "neg\nover lines",
                                 steps: 50, sampler: "PNDM", cfgScale: 1, seed: UInt64.max, width: 64, height: 32,
                                 model: "my, model: v2",
                                 extra: [.init("Lora hashes", "a: 1, b: 2"), .init("Eta", "0.0"),
                                         .init("Note", "has \"quotes\" and \\ backslash"), .init("Quoted", "\"start")]),
            GenerationParameters(prompt: "", negativePrompt: "", steps: 20, sampler: "Euler a", cfgScale: 0.1, seed: 0,
                                 width: 8, height: 8, model: "m", extra: [.init("Image CFG scale", "1.5"),
                                                                           .init("Face restoration", "GFPGAN")]),
            GenerationParameters(prompt: "\u{732B} caf\u{E9} \u{1F3A8}", negativePrompt: "\u{FF0C}", steps: 3,
                                 sampler: "DPM++ 2M", cfgScale: 12.345, seed: 7, width: 1024, height: 576),
        ]
        for p in cases {
            let text = p.a1111Text
            let back = try GenerationParameters(parsing: text)
            XCTAssertEqual(back, p, text)
            XCTAssertEqual(back.a1111Text, text)
        }
    }

    func testRejectsTextWithoutParameters() {
        XCTAssertThrowsError(try GenerationParameters(parsing: "just a prompt"))
        XCTAssertThrowsError(try GenerationParameters(parsing: "p\nSteps: 20, Sampler: DDIM, CFG scale: 7"))  // no Seed
        XCTAssertThrowsError(try GenerationParameters(parsing: "p\nSteps: x, Sampler: DDIM, CFG scale: 7, Seed: 1, Size: 8x8"))
        XCTAssertThrowsError(try GenerationParameters(parsing: "p\nSteps: 2, Sampler: DDIM, CFG scale: 7, Seed: -1, Size: 8x8"))
        XCTAssertThrowsError(try GenerationParameters(parsing: "p\nSteps: 2, Sampler: DDIM, CFG scale: 7, Seed: 1, Size: 8 x 8"))
        do {
            _ = try GenerationParameters(parsing: "p\nSteps: 20, Sampler: DDIM, CFG scale: 7, Size: 8x8")
            XCTFail("no Seed")
        } catch let e as DarkroomError {
            guard case .invalidArgument(let m) = e else { return XCTFail("\(e)") }
            XCTAssertTrue(m.contains("'Seed'"), m)
        } catch {
            XCTFail("\(error)")
        }
    }

    func testExtraSubscript() {
        var p = GenerationParameters(prompt: "a", steps: 1, sampler: "DDIM", cfgScale: 1, seed: 1, width: 8, height: 8)
        p[extra: "Eta"] = "0"
        p[extra: "Clip skip"] = "2"
        p[extra: "Eta"] = "0.5"
        XCTAssertEqual(p.extra, [.init("Eta", "0.5"), .init("Clip skip", "2")])
        p[extra: "Eta"] = nil
        XCTAssertEqual(p.extra, [.init("Clip skip", "2")])
        XCTAssertNil(p[extra: "Eta"])
    }

    func testParametersSurviveAPNG() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("darkroom-gp-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let p = GenerationParameters(prompt: "\u{732B}, a cat", negativePrompt: "dog", steps: 20, sampler: "DDIM",
                                     cfgScale: 7.5, seed: 42, width: 2, height: 1, model: "tiny")
        let url = dir.appendingPathComponent("p.png")
        try PNGFile.write(RGBImage(width: 2, height: 1, pixels: [1, 2, 3, 4, 5, 6]), text: [("parameters", p.a1111Text)], to: url)
        let text = try PNGFile.read(url).text
        XCTAssertEqual(try GenerationParameters(parsing: XCTUnwrap(text["parameters"])), p)
    }
}
