import Foundation
import XCTest
@testable import Darkroom

/// TorchGenerator against torch 2.13's own `torch.randn` output (Tools/fixtures_scheduler.py).
/// Tolerance: none. Every value must have the same float32 bit pattern as torch's, for both of
/// torch's CPU kernels (AVX2 and the portable one), so a seed means the same latents.
final class RandomTests: XCTestCase {
    private static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/scheduler")

    private func loadRandn() throws -> [String: Any] {
        let data = try Data(contentsOf: RandomTests.fixtures.appendingPathComponent("randn.json"))
        return try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    private static func fnv1a64(_ bits: [UInt32]) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for w in bits {
            for k in 0..<4 {
                h ^= UInt64((w >> (8 * UInt32(k))) & 0xff)
                h = h &* 0x0000_0100_0000_01b3
            }
        }
        return h
    }

    private static func ints(_ any: Any?) -> [UInt32] {
        ((any as? [Any]) ?? []).map { UInt32(truncating: $0 as! NSNumber) }
    }

    /// Compares one draw with its golden description; returns the number of mismatching values seen.
    @discardableResult
    private func check(_ got: [Float], _ want: [String: Any], _ label: String) -> Int {
        let bits = got.map(\.bitPattern)
        let count = (want["count"] as! NSNumber).intValue
        XCTAssertEqual(bits.count, count, "\(label): count")
        guard bits.count == count else { return count }
        func compare(_ wantBits: [UInt32], at offset: Int, _ part: String) -> Int {
            var bad = 0
            for (k, w) in wantBits.enumerated() where bits[offset + k] != w {
                bad += 1
                if bad <= 3 {
                    XCTFail("\(label) \(part)[\(offset + k)]: got \(got[offset + k]) (0x\(String(bits[offset + k], radix: 16)))"
                        + " want \(Float(bitPattern: w)) (0x\(String(w, radix: 16)))")
                }
            }
            return bad
        }
        if want["bits"] != nil {
            return compare(RandomTests.ints(want["bits"]), at: 0, "value")
        }
        var bad = compare(RandomTests.ints(want["head"]), at: 0, "head")
        let tail = RandomTests.ints(want["tail"])
        bad += compare(tail, at: count - tail.count, "tail")
        bad += compare(RandomTests.ints(want["middle"]), at: (want["middle_offset"] as! NSNumber).intValue, "middle")
        let wantHash = UInt64(want["fnv1a64"] as! String)!
        XCTAssertEqual(RandomTests.fnv1a64(bits), wantHash, "\(label): hash of all \(count) bit patterns")
        // Sums only help to tell "a few ulps off" from "wrong stream" when the hash differs.
        let sum = got.reduce(0.0) { $0 + Double($1) }
        let sumSquares = got.reduce(0.0) { $0 + Double($1) * Double($1) }
        XCTAssertEqual(sum, (want["sum"] as! NSNumber).doubleValue, accuracy: 1e-9 * Double(count), "\(label): sum")
        XCTAssertEqual(sumSquares, (want["sum_squares"] as! NSNumber).doubleValue, accuracy: 1e-9 * Double(count),
                       "\(label): sum of squares")
        if RandomTests.fnv1a64(bits) != wantHash { bad += 1 }
        return bad
    }

    private func runGoldens(flavor: TorchGenerator.Flavor, key: String) throws {
        let root = try loadRandn()
        let set = try XCTUnwrap(root[key] as? [String: Any])
        let singles = try XCTUnwrap(set["single"] as? [[String: Any]])
        XCTAssertEqual(singles.count, 60)
        for s in singles {
            let seed = UInt64(s["seed"] as! String)!
            let count = (s["count"] as! NSNumber).intValue
            var g = TorchGenerator(seed: seed, flavor: flavor)
            check(g.randn(count: count), s, "\(key) seed \(seed) n \(count)")
        }
        let sequences = try XCTUnwrap(set["sequences"] as? [[String: Any]])
        XCTAssertEqual(sequences.count, 5)
        for q in sequences {
            let seed = UInt64(q["seed"] as! String)!
            var g = TorchGenerator(seed: seed, flavor: flavor)
            for (k, d) in (q["draws"] as! [[String: Any]]).enumerated() {
                let shape = (d["shape"] as! [NSNumber]).map(\.intValue)
                let t = g.randn(shape: shape)
                XCTAssertEqual(t.shape, shape)
                check(t.scalars, d, "\(key) seed \(seed) draw \(k) shape \(shape)")
            }
        }
    }

    func testAVX2KernelMatchesTorchBitForBit() throws {
        try runGoldens(flavor: .avx2, key: "avx2")
    }

    func testPortableKernelMatchesTorchBitForBit() throws {
        try runGoldens(flavor: .portable, key: "portable")
    }

    /// The engine alone, against the published MT19937 reference values (seed 5489: first output
    /// 3499211612, 10000th output 4123659995), independent of torch.
    func testMersenneTwisterReferenceSequence() {
        var g = TorchGenerator(seed: 5489)
        XCTAssertEqual(g.nextUInt32(), 3_499_211_612)
        for _ in 2..<10000 { _ = g.nextUInt32() }
        XCTAssertEqual(g.nextUInt32(), 4_123_659_995)
    }

    /// torch seeds MT19937 with the low 32 bits only, so 2^32 + 5 and 5 are the same stream.
    func testSeedUsesLow32Bits() {
        var a = TorchGenerator(seed: (1 << 32) + 5)
        var b = TorchGenerator(seed: 5)
        XCTAssertEqual(a.randn(count: 40), b.randn(count: 40))
        XCTAssertEqual(a.randn(count: 3), b.randn(count: 3))
    }

    /// The scalar path caches the sine half of each Box–Muller pair: a 1-value draw followed by
    /// another returns the pair of a single 2-value draw.
    func testScalarPathCachesSecondValue() {
        var a = TorchGenerator(seed: 9)
        var b = TorchGenerator(seed: 9)
        let pair = b.randn(count: 2)
        XCTAssertEqual(a.randn(count: 1) + a.randn(count: 1), pair)
    }
}
