import Foundation
import XCTest
@testable import Darkroom

/// CLIPTokenizer against Hugging Face's (transformers 5.23.0, tokenizers 0.23.3, no ftfy):
/// Fixtures/tokenizer/ids.json comes from Tools/fixtures_tokenizer.py. Ids must be equal, no
/// tolerance.
final class TokenizerTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures").appendingPathComponent("tokenizer")
    static let vocabFolder = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Models").appendingPathComponent("clip-tokenizer")

    struct Variant: Decodable {
        let bos: Int, eos: Int, pad: Int, pad_token: String, max_length: Int
    }
    struct Case: Decodable {
        let prompt: String
        let tokens: [String: [Int]]
        let encoded: [String: [Int]]
        let decoded: [String: String]
        /// decode(encoded, skip_special_tokens=True)
        let decoded_skip: [String: String]
    }
    struct Golden: Decodable {
        let variants: [String: Variant]
        let cases: [Case]
    }

    static let golden: Golden = {
        let data = try! Data(contentsOf: fixtures.appendingPathComponent("ids.json"))
        return try! JSONDecoder().decode(Golden.self, from: data)
    }()

    private var scratch: [URL] = []

    override func tearDown() {
        for url in scratch { try? FileManager.default.removeItem(at: url) }
        scratch = []
        super.tearDown()
    }

    func makeTempDir() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("darkroom-tok-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        scratch.append(url)
        return url
    }

    /// A tokenizer folder for variant `name`: json/ is used as committed (tokenizer.json only);
    /// the others are the committed config files plus vocab.json + merges.txt from Models/.
    func folder(_ name: String) throws -> URL {
        let src = Self.fixtures.appendingPathComponent(name)
        if name == "json" { return src }
        let dir = try makeTempDir()
        let fm = FileManager.default
        for file in try fm.contentsOfDirectory(atPath: src.path) {
            try fm.copyItem(at: src.appendingPathComponent(file), to: dir.appendingPathComponent(file))
        }
        for file in ["vocab.json", "merges.txt"] {
            try fm.copyItem(at: Self.vocabFolder.appendingPathComponent(file), to: dir.appendingPathComponent(file))
        }
        return dir
    }

    func describe(_ s: String) -> String {
        s.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? "\\u{\(String($0.value, radix: 16))}" : String($0) }.joined()
    }

    // MARK: Parity with Hugging Face

    func checkVariant(_ name: String) throws {
        let variant = try XCTUnwrap(Self.golden.variants[name])
        let tok = try CLIPTokenizer(directory: try folder(name))
        XCTAssertEqual(tok.bosTokenID, variant.bos)
        XCTAssertEqual(tok.eosTokenID, variant.eos)
        XCTAssertEqual(tok.padTokenID, variant.pad)
        XCTAssertEqual(tok.maxLength, variant.max_length)
        XCTAssertGreaterThanOrEqual(Self.golden.cases.count, 80)
        var failures = 0
        for c in Self.golden.cases {
            let expected = try XCTUnwrap(c.tokens[name])
            let got = tok.tokenize(c.prompt)
            if got != expected {
                failures += 1
                XCTFail("[\(name)] tokenize \"\(describe(c.prompt))\": got \(got), expected \(expected)")
            }
            let encoded = tok.encode(c.prompt)
            if encoded != c.encoded[name] {
                failures += 1
                XCTFail("[\(name)] encode \"\(describe(c.prompt))\": got \(encoded), expected \(c.encoded[name]!)")
            }
            XCTAssertEqual(encoded.count, 77)
            let decoded = tok.decode(expected)
            if decoded != c.decoded[name] {
                failures += 1
                XCTFail("[\(name)] decode \"\(describe(c.prompt))\": got \"\(describe(decoded))\", expected \"\(describe(c.decoded[name]!))\"")
            }
            let skipped = tok.decode(encoded, skipSpecialTokens: true)
            if skipped != c.decoded_skip[name] {
                failures += 1
                XCTFail("[\(name)] decode(skip) \"\(describe(c.prompt))\": got \"\(describe(skipped))\", expected \"\(describe(c.decoded_skip[name]!))\"")
            }
            if failures > 20 { return }
        }
    }

    /// SD1 layout: vocab.json + merges.txt, pad `<|endoftext|>`.
    func testSD1FolderMatchesHF() throws { try checkVariant("sd1") }
    /// SD2 layout: special_tokens_map.json sets pad `!`, which becomes an added token.
    func testSD2FolderMatchesHF() throws { try checkVariant("sd2") }
    /// transformers-4 config with added_tokens_decoder (special_tokens_map.json ignored).
    func testAddedTokensDecoderFolderMatchesHF() throws { try checkVariant("sdxl") }
    /// tokenizer.json + tokenizer_config.json only, as transformers 5 saves; pad `!`.
    func testTokenizerJSONFolderMatchesHF() throws {
        let dir = Self.fixtures.appendingPathComponent("json")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("vocab.json").path))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("merges.txt").path))
        try checkVariant("json")
    }

    /// The legacy "left right" string form of tokenizer.json merges gives the same ids.
    func testTokenizerJSONWithStringMerges() throws {
        let src = Self.fixtures.appendingPathComponent("json")
        var root = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: src.appendingPathComponent("tokenizer.json"))) as? [String: Any])
        var model = try XCTUnwrap(root["model"] as? [String: Any])
        let merges = try XCTUnwrap(model["merges"] as? [[String]])
        model["merges"] = merges.map { $0.joined(separator: " ") }
        root["model"] = model
        let dir = try makeTempDir()
        try JSONSerialization.data(withJSONObject: root).write(to: dir.appendingPathComponent("tokenizer.json"))
        try FileManager.default.copyItem(at: src.appendingPathComponent("tokenizer_config.json"), to: dir.appendingPathComponent("tokenizer_config.json"))
        let a = try CLIPTokenizer(directory: src)
        let b = try CLIPTokenizer(directory: dir)
        for c in Self.golden.cases.prefix(60) { XCTAssertEqual(a.tokenize(c.prompt), b.tokenize(c.prompt)) }
    }

    /// A folder with only vocab.json + merges.txt (no configs) uses CLIPTokenizer's defaults.
    func testBareVocabFolder() throws {
        let tok = try CLIPTokenizer(directory: Self.vocabFolder)
        XCTAssertEqual([tok.bosTokenID, tok.eosTokenID, tok.padTokenID, tok.maxLength], [49406, 49407, 49407, 77])
        // Same ids as the SD1 folder (HF: [3306, 1002, 748] for "hello world!!").
        XCTAssertEqual(tok.tokenize("hello world!!"), [3306, 1002, 748])
        XCTAssertEqual(tok.tokenize("a <|endoftext|> b"), [320, 49407, 321])
    }

    func testDecodeRoundTrip() throws {
        let tok = try CLIPTokenizer(directory: try folder("sd1"))
        XCTAssertEqual(tok.decode(tok.encode("A Photo of a Cat!"), skipSpecialTokens: true), "a photo of a cat !")
        XCTAssertTrue(tok.decode(tok.encode("hi")).hasPrefix("<|startoftext|>hi <|endoftext|>"))
    }

    func testConcurrentUseSharesCache() throws {
        let tok = try CLIPTokenizer(directory: try folder("sd1"))
        let prompts = Self.golden.cases.map(\.prompt)
        let expected = Self.golden.cases.map { $0.tokens["sd1"]! }
        let results = Results()
        DispatchQueue.concurrentPerform(iterations: 8) { k in
            for (i, p) in prompts.enumerated() where (i + k) % 2 == 0 {
                if tok.tokenize(p) != expected[i] { results.fail() }
            }
        }
        XCTAssertEqual(results.failures, 0)
    }

    private final class Results: @unchecked Sendable {
        private let lock = NSLock()
        private var count = 0
        func fail() { lock.lock(); count += 1; lock.unlock() }
        var failures: Int { lock.lock(); defer { lock.unlock() }; return count }
    }

    func testLoadIsFast() throws {
        let dir = try folder("sd1")
        let t0 = Date()
        _ = try CLIPTokenizer(directory: dir)
        let t1 = Date()
        _ = try CLIPTokenizer(directory: Self.fixtures.appendingPathComponent("json"))
        let t2 = Date()
        // Generous bounds for a debug build on a busy 2-core machine; release is ~10x faster.
        XCTAssertLessThan(t1.timeIntervalSince(t0), 5)
        XCTAssertLessThan(t2.timeIntervalSince(t1), 5)
    }

    // MARK: Errors

    func assertThrows(_ dir: URL, file: StaticString = #filePath, line: UInt = #line, _ check: (DarkroomError) -> Bool) {
        do {
            _ = try CLIPTokenizer(directory: dir)
            XCTFail("expected an error", file: file, line: line)
        } catch let e as DarkroomError {
            XCTAssertTrue(check(e), "unexpected error: \(e)", file: file, line: line)
        } catch {
            XCTFail("not a DarkroomError: \(error)", file: file, line: line)
        }
    }

    func write(_ text: String, _ name: String, in dir: URL) throws {
        try text.write(to: dir.appendingPathComponent(name), atomically: true, encoding: .utf8)
    }

    func testMissingFolder() throws {
        let dir = try makeTempDir().appendingPathComponent("nope")
        assertThrows(dir) { $0 == .fileNotFound(path: dir.path) }
    }

    func testFolderWithoutVocabulary() throws {
        let dir = try makeTempDir()
        try write("{}", "tokenizer_config.json", in: dir)
        assertThrows(dir) { if case .fileNotFound(let p) = $0 { return p.contains("vocab.json") } else { return false } }
        try FileManager.default.copyItem(at: Self.vocabFolder.appendingPathComponent("vocab.json"), to: dir.appendingPathComponent("vocab.json"))
        assertThrows(dir) { if case .fileNotFound(let p) = $0 { return p.contains("merges.txt") } else { return false } }
    }

    func testInvalidVocabJSON() throws {
        let dir = try makeTempDir()
        try write("{\"a\": 0, \"b\": ", "vocab.json", in: dir)
        try write("#version: 0.2\n", "merges.txt", in: dir)
        let vocab = dir.appendingPathComponent("vocab.json").path
        assertThrows(dir) { if case .invalidFile(let p, let r) = $0 { return p == vocab && r.contains("JSON") } else { return false } }
        try write("{\"a\": 0, \"b\": \"one\"}", "vocab.json", in: dir)
        assertThrows(dir) { if case .invalidFile(let p, let r) = $0 { return p == vocab && r.contains("\"b\"") } else { return false } }
        try write("[1, 2]", "vocab.json", in: dir)
        assertThrows(dir) { if case .invalidFile(let p, _) = $0 { return p == vocab } else { return false } }
    }

    func testBadMergesLine() throws {
        let dir = try makeTempDir()
        try FileManager.default.copyItem(at: Self.vocabFolder.appendingPathComponent("vocab.json"), to: dir.appendingPathComponent("vocab.json"))
        let merges = dir.appendingPathComponent("merges.txt").path
        try write("#version: 0.2\ni n\nt h e\n", "merges.txt", in: dir)
        assertThrows(dir) { if case .invalidFile(let p, let r) = $0 { return p == merges && r.contains("line 3") } else { return false } }
        try write("#version: 0.2\ni n\n\nt h\n", "merges.txt", in: dir)
        assertThrows(dir) { if case .invalidFile(let p, let r) = $0 { return p == merges && r.contains("line 3") } else { return false } }
        try write("#version: 0.2\ni n\nq\u{1F600} zz\n", "merges.txt", in: dir)
        assertThrows(dir) { if case .invalidFile(let p, let r) = $0 { return p == merges && r.contains("merge 2") } else { return false } }
        // CRLF line ends are fine.
        try write("#version: 0.2\r\ni n\r\nt h\r\n", "merges.txt", in: dir)
        let tok = try CLIPTokenizer(directory: dir)
        XCTAssertEqual(tok.tokenize("thx").count, 2)  // "th" + "x</w>"
        XCTAssertEqual(tok.tokenize("tax").count, 3)
    }

    func testBadConfigFiles() throws {
        let dir = try folder("sd1")
        let config = dir.appendingPathComponent("tokenizer_config.json").path
        try write("{\"model_max_length\": 77,", "tokenizer_config.json", in: dir)
        assertThrows(dir) { if case .invalidFile(let p, let r) = $0 { return p == config && r.contains("byte") } else { return false } }
        try write("{\"model_max_length\": \"77\"}", "tokenizer_config.json", in: dir)
        assertThrows(dir) { if case .invalidConfig(let p, let k, _) = $0 { return p == config && k == "model_max_length" } else { return false } }
        try write("{\"model_max_length\": 1}", "tokenizer_config.json", in: dir)
        assertThrows(dir) { if case .invalidConfig(_, let k, _) = $0 { return k == "model_max_length" } else { return false } }
        try write("{\"pad_token\": 5}", "tokenizer_config.json", in: dir)
        assertThrows(dir) { if case .invalidConfig(_, let k, _) = $0 { return k == "pad_token" } else { return false } }
        try write("{\"model_max_length\": 1000000000000000019884624838656}", "tokenizer_config.json", in: dir)
        XCTAssertEqual(try CLIPTokenizer(directory: dir).maxLength, 77)
    }

    func testBadTokenizerJSON() throws {
        let dir = try makeTempDir()
        let path = dir.appendingPathComponent("tokenizer.json").path
        try write("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", "tokenizer.json", in: dir)
        assertThrows(dir) { $0 == .unsupported(path: path, key: "model.type", value: "WordPiece") }
        try write("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [[\"a\"]]}}", "tokenizer.json", in: dir)
        assertThrows(dir) { if case .invalidConfig(let p, let k, _) = $0 { return p == path && k == "model.merges[0]" } else { return false } }
        try write("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}", "tokenizer.json", in: dir)
        // Byte symbols missing and no unk token: HF fails on the first such character.
        assertThrows(dir) { if case .invalidFile(let p, let r) = $0 { return p == path && r.contains("byte symbol") } else { return false } }
        try Data([0x7B, 0xFF, 0x7D]).write(to: URL(fileURLWithPath: path))
        assertThrows(dir) { if case .invalidFile(let p, let r) = $0 { return p == path && r.contains("UTF-8") } else { return false } }
    }

    /// Special tokens missing from the vocabulary get the next ids, as `tokenizers` assigns
    /// them (HF on a 2-token vocabulary: bos 2, eos = pad = 3).
    func testSpecialTokensOutsideVocabulary() throws {
        let full = try JSONSerialization.jsonObject(with: Data(contentsOf: Self.vocabFolder.appendingPathComponent("vocab.json"))) as! [String: Int]
        let bytesOnly = full.filter { $0.value < 512 }
        let root: [String: Any] = ["model": ["type": "BPE", "vocab": bytesOnly, "merges": [[String]]()], "added_tokens": [Any]()]
        let dir = try makeTempDir()
        try JSONSerialization.data(withJSONObject: root).write(to: dir.appendingPathComponent("tokenizer.json"))
        let tok = try CLIPTokenizer(directory: dir)
        XCTAssertEqual([tok.bosTokenID, tok.eosTokenID, tok.padTokenID], [512, 513, 513])
        XCTAssertEqual(tok.tokenize("ab <|endoftext|>"), [full["a"]!, full["b</w>"]!, 513])
        XCTAssertEqual(tok.decode([512, full["a"]!, 513]), "<|startoftext|>a<|endoftext|>")
    }

    func testNotAFolder() throws {
        let file = Self.vocabFolder.appendingPathComponent("vocab.json")
        assertThrows(file) { if case .invalidFile(let p, _) = $0 { return p == file.path } else { return false } }
    }
}
