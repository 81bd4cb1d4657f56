import Foundation
import XCTest
@testable import Darkroom

#if canImport(Glibc)
import Glibc
#endif

/// PNG writing/reading through libpng. Fixtures come from Tools/fixtures_png.py: hand-assembled
/// PNGs of every colour type with their expected 8-bit RGB (computed in Python, independently of
/// libpng), broken files, and RGBImage(decoded:) cases run through diffusers' VaeImageProcessor.
final class PNGTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/png")

    struct Expected: Decodable {
        struct Image: Decodable {
            let width: Int
            let height: Int
            let rgb: String
            let text: [String: String]
        }
        let images: [String: Image]
        let errors: [String: String]
    }

    var tempDir: URL!

    override func setUpWithError() throws {
        tempDir = FileManager.default.temporaryDirectory.appendingPathComponent("darkroom-png-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tempDir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        chmod(tempDir.path, 0o755)
        try? FileManager.default.removeItem(at: tempDir)
    }

    func loadExpected() throws -> Expected {
        let data = try Data(contentsOf: Self.fixtures.appendingPathComponent("expected.json"))
        return try JSONDecoder().decode(Expected.self, from: data)
    }

    static func bytes(hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var it = hex.utf8.makeIterator()
        while let a = it.next(), let b = it.next() {
            out.append(UInt8(String(decoding: [a, b], as: UTF8.self), radix: 16)!)
        }
        return out
    }

    /// Chunk types in file order, read straight from the bytes.
    static func chunkTypes(_ url: URL) throws -> [String] {
        let d = [UInt8](try Data(contentsOf: url))
        XCTAssertEqual(Array(d.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        var types: [String] = []
        var i = 8
        while i + 8 <= d.count {
            let len = d[i..<i + 4].reduce(0) { $0 << 8 | Int($1) }
            types.append(String(decoding: d[i + 4..<i + 8], as: UTF8.self))
            i += 12 + len
        }
        XCTAssertEqual(i, d.count, "chunks must tile the file exactly")
        return types
    }

    func folderContents() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: tempDir.path).sorted()
    }

    func randomImage(width: Int, height: Int, seed: UInt64) -> RGBImage {
        var state = seed
        let px = (0..<width * height * 3).map { _ -> UInt8 in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return UInt8(truncatingIfNeeded: state >> 56)
        }
        return RGBImage(width: width, height: height, pixels: px)
    }

    // MARK: - Round trip

    func testRoundTripPixelsAndText() throws {
        let image = randomImage(width: 37, height: 23, seed: 7)
        let params = "caf\u{E9} at dusk, (oil:1.2)\nNegative prompt: blurry\nSteps: 20, Sampler: DDIM, CFG scale: 7.5, Seed: 42, Size: 37x23"
        let text: [(key: String, value: String)] = [
            ("parameters", params),
            ("Prompt", "\u{732B}\u{3068}\u{72AC} \u{1F3A8} na\u{EF}ve"),  // not Latin-1 -> iTXt
            ("Software", "Darkroom"),
        ]
        let url = tempDir.appendingPathComponent("out.png")
        try PNGFile.write(image, text: text, to: url)

        let (read, readText) = try PNGFile.read(url)
        XCTAssertEqual(read, image, "pixels must survive the round trip bit for bit")
        XCTAssertEqual(readText, Dictionary(uniqueKeysWithValues: text.map { ($0.key, $0.value) }))
        // Latin-1 values are tEXt (what A1111/PIL write and every reader expects); the CJK one is iTXt.
        let types = try Self.chunkTypes(url)
        XCTAssertEqual(types.first, "IHDR")
        XCTAssertEqual(types.last, "IEND")
        XCTAssertEqual(types.filter { $0 == "tEXt" }.count, 2)
        XCTAssertEqual(types.filter { $0 == "iTXt" }.count, 1)
        XCTAssertLessThan(types.firstIndex(of: "tEXt")!, types.firstIndex(of: "IDAT")!, "text before the image data")
        XCTAssertEqual(try folderContents(), ["out.png"], "no temporary file may remain")

        let info = try PNGFile.info(url)
        XCTAssertEqual(info, PNGInfo(width: 37, height: 23, bitDepth: 8, colorType: 2, interlaced: false,
                                     text: readText))
    }

    func testOverwriteReplacesExistingFile() throws {
        let url = tempDir.appendingPathComponent("x.png")
        try PNGFile.write(randomImage(width: 4, height: 4, seed: 1), text: [], to: url)
        let second = randomImage(width: 3, height: 5, seed: 2)
        try PNGFile.write(second, text: [("k", "v")], to: url)
        let (read, text) = try PNGFile.read(url)
        XCTAssertEqual(read, second)
        XCTAssertEqual(text, ["k": "v"])
        XCTAssertEqual(try folderContents(), ["x.png"])
    }

    func testLargeImageRoundTrip() throws {
        // Several IDAT chunks and a real filter/zlib workload.
        let image = randomImage(width: 300, height: 211, seed: 99)
        let url = tempDir.appendingPathComponent("big.png")
        try PNGFile.write(image, text: [("parameters", String(repeating: "long prompt, ", count: 500))], to: url)
        XCTAssertEqual(try PNGFile.read(url).image, image)
    }

    // MARK: - Fixtures

    func testFixturesDecodeToExpectedPixels() throws {
        let expected = try loadExpected()
        XCTAssertGreaterThanOrEqual(expected.images.count, 15)
        for (name, e) in expected.images.sorted(by: { $0.key < $1.key }) {
            let url = Self.fixtures.appendingPathComponent(name)
            let (image, text) = try PNGFile.read(url)
            XCTAssertEqual(image.width, e.width, name)
            XCTAssertEqual(image.height, e.height, name)
            let want = Self.bytes(hex: e.rgb)
            XCTAssertEqual(image.pixels.count, want.count, name)
            let diffs = zip(image.pixels, want).enumerated().filter { $0.element.0 != $0.element.1 }
            XCTAssertTrue(diffs.isEmpty, "\(name): \(diffs.count) bytes differ, first at \(diffs.first.map { "\($0.offset): got \($0.element.0), want \($0.element.1)" } ?? "")")
            XCTAssertEqual(text, e.text, name)
        }
    }

    func testInfoReportsHeaderAndLeadingText() throws {
        let f = Self.fixtures
        let pal = try PNGFile.info(f.appendingPathComponent("palette2_interlaced.png"))
        XCTAssertEqual(pal, PNGInfo(width: 10, height: 7, bitDepth: 2, colorType: 3, interlaced: true, text: [:]))
        let g16 = try PNGFile.info(f.appendingPathComponent("grey16.png"))
        XCTAssertEqual([g16.width, g16.height, g16.bitDepth, g16.colorType], [4, 3, 16, 0])
        // info stops at the image data, so the tEXt chunk after IDAT ("Author") is not seen.
        let t = try PNGFile.info(f.appendingPathComponent("text_chunks.png"))
        XCTAssertEqual(Set(t.text.keys), ["parameters", "Comment", "Title", "Description"])
        XCTAssertEqual(t.text["Title"], "\u{65E5}\u{672C}\u{8A9E} \u{1F600}")
        XCTAssertThrowsError(try PNGFile.info(f.appendingPathComponent("huge_ihdr.png")))
    }

    // MARK: - Broken input

    func testBrokenFilesThrowInvalidFile() throws {
        let expected = try loadExpected()
        XCTAssertGreaterThanOrEqual(expected.errors.count, 12)
        for (name, fragment) in expected.errors.sorted(by: { $0.key < $1.key }) {
            let url = Self.fixtures.appendingPathComponent(name)
            XCTAssertThrowsError(try PNGFile.read(url), name) { error in
                guard case DarkroomError.invalidFile(let path, let reason) = error else {
                    return XCTFail("\(name): expected invalidFile, got \(error)")
                }
                XCTAssertEqual(path, url.path)
                XCTAssertFalse(reason.isEmpty, name)
                if !fragment.isEmpty {
                    XCTAssertTrue(reason.contains(fragment), "\(name): '\(reason)' should mention '\(fragment)'")
                }
            }
        }
    }

    func testHugeDimensionsRejectedFromHeader() throws {
        let url = Self.fixtures.appendingPathComponent("huge_ihdr.png")
        XCTAssertThrowsError(try PNGFile.read(url)) { error in
            XCTAssertEqual(error as? DarkroomError, .invalidFile(
                path: url.path,
                reason: "image is 100000x100000 = 10000000000 pixels, more than the limit of 67108864 pixels"))
        }
        XCTAssertThrowsError(try PNGFile.read(url, maxPixels: 1 << 31)) { error in
            XCTAssertEqual(error as? DarkroomError, .invalidFile(
                path: url.path,
                reason: "image is 100000x100000 = 10000000000 pixels, more than the limit of 2147483648 pixels"))
        }
        // A small valid file against small limits (rgba8.png is 5x4 = 20 pixels).
        let small = Self.fixtures.appendingPathComponent("rgba8.png")
        XCTAssertNoThrow(try PNGFile.read(small, maxPixels: 20))
        XCTAssertThrowsError(try PNGFile.read(small, maxPixels: 19)) { error in
            XCTAssertEqual(error as? DarkroomError, .invalidFile(
                path: small.path, reason: "image is 5x4 = 20 pixels, more than the limit of 19 pixels"))
        }
    }

    func testMissingFileIsFileNotFound() {
        let url = tempDir.appendingPathComponent("nope.png")
        XCTAssertThrowsError(try PNGFile.read(url)) { error in
            XCTAssertEqual(error as? DarkroomError, .fileNotFound(path: url.path))
        }
    }

    // MARK: - Write failures

    func testUnwritableFolderIsIOError() throws {
        let image = randomImage(width: 2, height: 2, seed: 3)
        let missing = tempDir.appendingPathComponent("no/such/folder/a.png")
        XCTAssertThrowsError(try PNGFile.write(image, text: [], to: missing)) { error in
            guard case DarkroomError.io(let path, let reason) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(path, missing.path)
            XCTAssertTrue(reason.contains("No such file"), reason)
        }
        // A "folder" that is a regular file.
        let file = tempDir.appendingPathComponent("plain")
        try Data("x".utf8).write(to: file)
        let under = file.appendingPathComponent("a.png")
        XCTAssertThrowsError(try PNGFile.write(image, text: [], to: under)) { error in
            guard case DarkroomError.io(let path, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(path, under.path)
        }
        // Permissions (meaningless for root, which ignores them).
        if geteuid() != 0 {
            let ro = tempDir.appendingPathComponent("ro")
            try FileManager.default.createDirectory(at: ro, withIntermediateDirectories: false)
            chmod(ro.path, 0o555)
            defer { chmod(ro.path, 0o755) }
            XCTAssertThrowsError(try PNGFile.write(image, text: [], to: ro.appendingPathComponent("a.png"))) {
                guard case DarkroomError.io = $0 else { return XCTFail("\($0)") }
            }
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: ro.path), [])
        }
        XCTAssertEqual(try folderContents(), ["plain"])
    }

    func testFailedRenameRemovesTemporaryFile() throws {
        // The PNG is written completely, then rename(2) fails because the target is a non-empty folder.
        let target = tempDir.appendingPathComponent("taken.png")
        try FileManager.default.createDirectory(at: target, withIntermediateDirectories: false)
        try Data("keep".utf8).write(to: target.appendingPathComponent("inside"))
        XCTAssertThrowsError(try PNGFile.write(randomImage(width: 8, height: 8, seed: 4), text: [], to: target)) { error in
            guard case DarkroomError.io(let path, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(path, target.path)
        }
        XCTAssertEqual(try folderContents(), ["taken.png"], "the temporary file must be removed")
    }

    func testDiskFullKeepsOldFileAndRemovesTemporaryFile() throws {
        // Simulate a full disk with RLIMIT_FSIZE: writes past the limit fail with EFBIG
        // (SIGXFSZ is ignored for the duration so the process survives).
        let url = tempDir.appendingPathComponent("kept.png")
        let old = randomImage(width: 4, height: 4, seed: 5)
        try PNGFile.write(old, text: [("v", "old")], to: url)
        let oldBytes = try Data(contentsOf: url)

        var saved = rlimit()
        XCTAssertEqual(getrlimit(Int32(RLIMIT_FSIZE.rawValue), &saved), 0)
        let oldHandler = signal(SIGXFSZ, SIG_IGN)
        var small = saved
        small.rlim_cur = 4096
        XCTAssertEqual(setrlimit(Int32(RLIMIT_FSIZE.rawValue), &small), 0)
        var thrown: Error?
        do {
            // Random pixels do not compress: ~30 KB, far past the 4 KB limit.
            try PNGFile.write(randomImage(width: 100, height: 100, seed: 6), text: [("v", "new")], to: url)
        } catch {
            thrown = error
        }
        XCTAssertEqual(setrlimit(Int32(RLIMIT_FSIZE.rawValue), &saved), 0)
        signal(SIGXFSZ, oldHandler)

        guard case DarkroomError.io(let path, let reason)? = thrown as? DarkroomError else {
            return XCTFail("expected an io error, got \(String(describing: thrown))")
        }
        XCTAssertEqual(path, url.path)
        XCTAssertTrue(reason.contains("too large") || reason.contains("write"), reason)
        XCTAssertEqual(try folderContents(), ["kept.png"], "the temporary file must be removed")
        XCTAssertEqual(try Data(contentsOf: url), oldBytes, "the previous image must be untouched")
    }

    func testInvalidTextKeysAndArguments() throws {
        let image = randomImage(width: 2, height: 2, seed: 8)
        let url = tempDir.appendingPathComponent("k.png")
        for key in ["", String(repeating: "k", count: 80), " lead", "trail ", "two  spaces", "\u{65E5}\u{672C}", "tab\there"] {
            XCTAssertThrowsError(try PNGFile.write(image, text: [(key, "v")], to: url), key) {
                guard case DarkroomError.invalidArgument = $0 else { return XCTFail("\(key): \($0)") }
            }
        }
        XCTAssertThrowsError(try PNGFile.write(image, text: [("k", "a\u{0}b")], to: url))
        XCTAssertThrowsError(try PNGFile.write(RGBImage(width: 0, height: 0, pixels: []), text: [], to: url))
        XCTAssertEqual(try folderContents(), [], "failed writes leave nothing behind")
        // The longest legal keyword and Latin-1 keywords are fine.
        try PNGFile.write(image, text: [(String(repeating: "k", count: 79), "v"), ("caf\u{E9}", "\u{E9}t\u{E9}")], to: url)
        XCTAssertEqual(try PNGFile.read(url).text, [String(repeating: "k", count: 79): "v", "caf\u{E9}": "\u{E9}t\u{E9}"])
    }

    func testTemporaryNameStaysShort() {
        let name = PNGFile.temporaryName(for: String(repeating: "\u{E9}", count: 200) + ".png")
        XCTAssertTrue(name.hasPrefix(".") && name.hasSuffix(".tmp"))
        XCTAssertLessThanOrEqual(name.utf8.count, 255)
    }

    // MARK: - RGBImage(decoded:)

    struct Decoded: Decodable {
        let shape: [Int]
        let input: [Float]
        let ties: Int
        let rgb: [UInt8]
    }

    func testDecodedMatchesDiffusersPostprocess() throws {
        let data = try Data(contentsOf: Self.fixtures.appendingPathComponent("decoded.json"))
        let d = try JSONDecoder().decode(Decoded.self, from: data)
        XCTAssertGreaterThan(d.ties, 10, "the fixture must contain exact .5 cases")
        let t = Tensor(shape: d.shape, values: d.input)
        let image = RGBImage(decoded: t)
        XCTAssertEqual(image.width, d.shape[3])
        XCTAssertEqual(image.height, d.shape[2])
        XCTAssertEqual(image.pixels, d.rgb, "exact match with diffusers (tolerance 0)")
        // [3, H, W] gives the same image; a batch splits into images.
        XCTAssertEqual(RGBImage(decoded: t.reshaped(Array(d.shape.dropFirst()))), image)
        let batch = Tensor.concat([t, Tensor(shape: d.shape, values: d.input.map { -$0 })])
        let images = RGBImage.images(decoded: batch)
        XCTAssertEqual(images.count, 2)
        XCTAssertEqual(images[0], image)
        XCTAssertEqual(images[1], RGBImage(decoded: Tensor(shape: d.shape, values: d.input.map { -$0 })))
    }

    func testDecodedKnownValues() {
        // One pixel per channel layout check: R, G, B planes become interleaved bytes.
        // Values: -1 -> 0, 1 -> 255, 0 -> 127.5 -> 128 (ties to even), clamping, NaN -> 0.
        let t = Tensor(shape: [1, 3, 1, 4], values: [
            -1, 1, 0, 5,  // R
            -7, 0.5, -0.5, .nan,  // G
            1, -1, 0.003921569, -0.003921569,  // B
        ])
        let image = RGBImage(decoded: t)
        XCTAssertEqual(image.width, 4)
        XCTAssertEqual(image.height, 1)
        // 0.5 -> 0.75 * 255 = 191.25 -> 191; -0.5 -> 63.75 -> 64; +-0.003921569 -> 127.5 +- 0.5.
        XCTAssertEqual(image.pixels, [0, 0, 255, 255, 191, 0, 128, 64, 128, 255, 0, 127])
        XCTAssertEqual(RGBImage.quantise(0), 128)
        XCTAssertEqual(RGBImage.quantise(-2 / 255), 126)  // exactly 126.5 in float32: ties to even
        XCTAssertEqual(RGBImage.quantise(3 / 255), 129)  // (3/255 * 0.5 + 0.5) * 255 = 129.0 in float32
    }
}
