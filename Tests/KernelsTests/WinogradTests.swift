import XCTest
@testable import Kernels

/// Winograd F(4×4, 3×3) against the direct convolution twin in ConvTests (Double).
/// Tolerance: 2e-5 relative to Σ|w·x| + |bias| + |residual| per output element (the im2col
/// path is held to 1e-5; the transforms' constants up to 8 and the 1/6, 1/12, 1/24 filter
/// entries cost about a bit more of fp32; the worst error measured over these shapes is printed
/// by `testErrorScale` and stays near 2e-6).
final class WinogradTests: XCTestCase {
    typealias Shape = ConvTests.Shape
    enum Weights { case dense, packed, packedHalf }

    private var savedAlgorithm = Conv3x3Algorithm.auto
    private var savedBlocking = winogradBlocking
    override func setUp() {
        savedAlgorithm = Conv3x3Algorithm.current
        savedBlocking = winogradBlocking
        Conv3x3Algorithm.current = .winograd
    }
    override func tearDown() {
        Conv3x3Algorithm.current = savedAlgorithm
        winogradBlocking = savedBlocking
    }

    /// Runs conv2d on the Winograd path and returns the worst error as a multiple of the
    /// magnitude (and fails above `tol`).
    @discardableResult
    func check(_ s: Shape, threads: Int = 2, residual useResidual: Bool = false, weights: Weights = .dense,
               tol: Double = 2e-5, seed: UInt64, file: StaticString = #filePath, line: UInt = #line) -> Double {
        precondition(s.kh == 3 && s.kw == 3 && s.sh == 1 && s.sw == 1)
        var rng = TestRNG(seed)
        let x = rng.array(s.batch * s.cin * s.h * s.w)
        var wt = rng.array(s.cout * s.cin * 9)
        if weights == .packedHalf { wt = wt.map { Float(Float16($0)) } }   // what the kernel sees
        let bias = s.bias ? rng.array(s.cout) : nil
        let oh = s.h + s.pt + s.pb - 2, ow = s.w + s.pl + s.pr - 2
        let residual = useResidual ? rng.array(s.batch * s.cout * oh * ow) : nil
        var y = [Float](repeating: .nan, count: s.batch * s.cout * oh * ow)
        withThreads(threads) {
            x.withUnsafeBufferPointer { xp in wt.withUnsafeBufferPointer { wp in y.withUnsafeMutableBufferPointer { yp in
            withOptionalPointer(bias) { bp in withOptionalPointer(residual) { rp in
                switch weights {
                case .dense:
                    conv2d(input: xp.baseAddress!, batch: s.batch, inChannels: s.cin, height: s.h, width: s.w,
                           weight: wp.baseAddress!, bias: bp, outChannels: s.cout, kernelH: 3, kernelW: 3,
                           padTop: s.pt, padLeft: s.pl, padBottom: s.pb, padRight: s.pr, output: yp.baseAddress!, residual: rp)
                case .packed, .packedHalf:
                    let pw = PackedMatrix(a: wp.baseAddress!, lda: s.cin * 9, m: s.cout, k: s.cin * 9,
                                          storage: weights == .packed ? .float32 : .float16)
                    conv2d(input: xp.baseAddress!, batch: s.batch, inChannels: s.cin, height: s.h, width: s.w,
                           weight: pw, bias: bp, kernelH: 3, kernelW: 3,
                           padTop: s.pt, padLeft: s.pl, padBottom: s.pb, padRight: s.pr, output: yp.baseAddress!, residual: rp)
                }
            } }
            } } }
        }
        let (ref, mag) = ConvTests.reference(s, x: x, wt: wt, bias: bias, residual: residual)
        assertClose(y, ref, scale: mag, tol: tol, "winograd \(s) residual \(useResidual) weights \(weights)", file: file, line: line)
        var worst = 0.0
        for i in 0..<y.count { worst = max(worst, abs(Double(y[i]) - ref[i]) / max(mag[i], 1e-30)) }
        return worst
    }

    func pad1(batch: Int = 1, cin: Int, h: Int, w: Int, cout: Int, bias: Bool = true) -> Shape {
        Shape(batch: batch, cin: cin, h: h, w: w, cout: cout, kh: 3, kw: 3, pt: 1, pl: 1, pb: 1, pr: 1, bias: bias)
    }

    func testSingleTileAndTinyImages() {
        check(pad1(cin: 3, h: 4, w: 4, cout: 5), seed: 1)        // exactly one tile
        check(pad1(cin: 2, h: 1, w: 1, cout: 3), seed: 2)        // 1×1 image: one clipped tile
        check(pad1(cin: 4, h: 3, w: 2, cout: 7, bias: false), threads: 1, seed: 3)
        check(pad1(cin: 1, h: 5, w: 6, cout: 1), seed: 4)
    }

    func testSizesNotMultipleOfFour() {
        check(pad1(cin: 5, h: 7, w: 9, cout: 11), seed: 5)
        check(pad1(cin: 6, h: 13, w: 11, cout: 10), threads: 1, seed: 6)
        check(pad1(cin: 3, h: 10, w: 38, cout: 4), seed: 7)     // 10 tiles per row: 8-tile groups wrap
        check(pad1(cin: 7, h: 6, w: 35, cout: 13), seed: 8)     // vector row path + clipped last tile
    }

    func testWideRowsUseTheVectorPaths() {
        // 64 and 36 columns: 16 and 9 tiles per row, so 8-tile groups run on the staged rows,
        // and the output interleave runs for the groups whose tiles are all inside.
        check(pad1(cin: 9, h: 8, w: 64, cout: 17), seed: 9)
        check(pad1(batch: 2, cin: 4, h: 12, w: 36, cout: 6), residual: true, seed: 10)
        // Runs of whole groups whose last tile is clipped (30 and 62 columns), with and without
        // residual, and the staged rows with 0 and 2 columns of left padding.
        check(pad1(cin: 5, h: 7, w: 30, cout: 9), seed: 31)
        check(pad1(batch: 2, cin: 5, h: 9, w: 62, cout: 7), residual: true, seed: 32)
        check(Shape(cin: 3, h: 6, w: 66, cout: 5, kh: 3, kw: 3), residual: true, seed: 33)
        check(Shape(cin: 3, h: 7, w: 62, cout: 5, kh: 3, kw: 3, pt: 2, pl: 2, pb: 0, pr: 0), seed: 34)
    }

    func testBatchBiasResidualAndOddChannels() {
        check(pad1(batch: 2, cin: 13, h: 9, w: 17, cout: 19), seed: 11)
        check(pad1(batch: 2, cin: 13, h: 9, w: 17, cout: 19, bias: false), residual: true, seed: 12)
        check(pad1(batch: 3, cin: 33, h: 5, w: 7, cout: 7), threads: 1, residual: true, seed: 13)
    }

    func testPackedAndHalfWeights() {
        check(pad1(batch: 2, cin: 6, h: 8, w: 16, cout: 9), weights: .packed, seed: 14)
        check(pad1(batch: 2, cin: 6, h: 8, w: 16, cout: 9), residual: true, weights: .packedHalf, seed: 15)
        // k = 9·40 = 360: the packed weight's k blocks (180) cut through a channel's 9 taps.
        check(pad1(cin: 40, h: 7, w: 12, cout: 13), weights: .packedHalf, seed: 16)
        check(pad1(cin: 31, h: 9, w: 9, cout: 25), weights: .packed, seed: 17)
    }

    func testManyInputChannelsSpanKBlocks() {
        // 300 input channels: two k blocks of 150 in the 36 GEMMs.
        check(pad1(cin: 300, h: 6, w: 10, cout: 8), seed: 18)
    }

    func testOtherPadding() {
        // Stride 1 with unpadded, one-sided and asymmetric padding.
        check(Shape(cin: 3, h: 9, w: 10, cout: 4, kh: 3, kw: 3), seed: 19)
        check(Shape(batch: 2, cin: 3, h: 8, w: 8, cout: 5, kh: 3, kw: 3, pt: 0, pl: 0, pb: 1, pr: 1), seed: 20)
        check(Shape(cin: 2, h: 7, w: 10, cout: 3, kh: 3, kw: 3, pt: 2, pl: 0, pb: 0, pr: 2), seed: 21)
    }

    func testSeveralTileBlocksAndChannelChunks() {
        // Tiny budgets: V holds 16 tiles (several blocks, the last one partial) and U/M a single
        // MR panel, so workers loop over channel chunks and redo the filter transform per block.
        winogradBlocking = WinogradBlocking(vFloats: 36 * 16 * 10, uFloats: 1, mFloats: 1)
        check(pad1(batch: 2, cin: 10, h: 17, w: 23, cout: 20), residual: true, seed: 22)
        check(pad1(cin: 10, h: 17, w: 23, cout: 20), threads: 1, weights: .packedHalf, seed: 23)
        // Large U/M budget, small V: U computed once per call and reused across tile blocks.
        winogradBlocking = WinogradBlocking(vFloats: 36 * 32 * 8, uFloats: 1 << 22, mFloats: 1 << 22)
        check(pad1(batch: 2, cin: 8, h: 21, w: 19, cout: 14), seed: 24)
        // Whole U per worker, M in single-panel sub-chunks (GEMMs start inside U's rows).
        winogradBlocking = WinogradBlocking(vFloats: 36 * 32 * 8, uFloats: 1 << 22, mFloats: 1)
        check(pad1(batch: 2, cin: 8, h: 21, w: 19, cout: 26), residual: true, seed: 29)
        check(pad1(cin: 8, h: 21, w: 19, cout: 26), threads: 1, weights: .packedHalf, seed: 30)
    }

    func testAutoDispatch() {
        XCTAssertTrue(winogradPreferred(batch: 1, inChannels: 128, outChannels: 128, outH: 256, outW: 256))
        XCTAssertTrue(winogradPreferred(batch: 1, inChannels: 1280, outChannels: 1280, outH: 16, outW: 16))
        XCTAssertFalse(winogradPreferred(batch: 2, inChannels: 1280, outChannels: 1280, outH: 8, outW: 8))
        XCTAssertFalse(winogradPreferred(batch: 8, inChannels: 1280, outChannels: 1280, outH: 8, outW: 8))  // per image
        XCTAssertTrue(winogradPreferred(batch: 2, inChannels: 4, outChannels: 320, outH: 64, outW: 64))
        XCTAssertFalse(winogradPreferred(batch: 1, inChannels: 128, outChannels: 3, outH: 512, outW: 512))
        XCTAssertEqual(Conv3x3Algorithm.autoChoice(batch: 1, inChannels: 8, outChannels: 8, outH: 64, outW: 64), .im2col)
        // auto on a shape it takes gives the Winograd result, on one it refuses the im2col one.
        Conv3x3Algorithm.current = .auto
        check(pad1(cin: 3, h: 16, w: 16, cout: 32), seed: 25)
        check(pad1(cin: 32, h: 16, w: 16, cout: 3), seed: 26)
    }

    func testChannelChunksClaimedByFreeWorkers() {
        // One tile block: output channels go out in chunks claimed by whichever worker is free,
        // shrinking to one pair of panels at the end (and capped by a small U budget with 40
        // input channels); the reference check covers every chunk (outputs start as NaN),
        // including a last one cut short by the channel count (50 and 37 channels).
        winogradBlocking = WinogradBlocking(vFloats: 1 << 22, uFloats: 36 * 40 * 24 * 3, mFloats: 36 * 24 * 64)
        for threads in [2, 3] {
            check(pad1(batch: 2, cin: 7, h: 11, w: 13, cout: 50), threads: threads, residual: true, seed: 41)
            check(pad1(cin: 40, h: 9, w: 9, cout: 37), threads: threads, weights: .packedHalf, seed: 42)
        }
        // The same bits as one fixed range per worker and as one thread: a row's sums do not
        // depend on which chunk or worker computes them.
        var rng = TestRNG(43)
        let (cin, cout, h, w) = (9, 61, 12, 10)
        let x = rng.array(2 * cin * h * w), wt = rng.array(cout * cin * 9), bias = rng.array(cout)
        func run(threads: Int, claims: Bool) -> [Float] {
            winogradBlocking.claimsChunks = claims
            var y = [Float](repeating: .nan, count: 2 * cout * h * w)
            withThreads(threads) {
                x.withUnsafeBufferPointer { xp in wt.withUnsafeBufferPointer { wp in bias.withUnsafeBufferPointer { bp in
                    y.withUnsafeMutableBufferPointer { yp in
                        conv2d(input: xp.baseAddress!, batch: 2, inChannels: cin, height: h, width: w,
                               weight: wp.baseAddress!, bias: bp.baseAddress!, outChannels: cout, kernelH: 3, kernelW: 3,
                               padTop: 1, padLeft: 1, padBottom: 1, padRight: 1, output: yp.baseAddress!)
                    }
                } } }
            }
            return y
        }
        let fixed = run(threads: 2, claims: false)
        XCTAssertFalse(fixed.contains { $0.isNaN })
        XCTAssertEqual(run(threads: 2, claims: true), fixed)
        XCTAssertEqual(run(threads: 3, claims: true), fixed)
        XCTAssertEqual(run(threads: 1, claims: true), fixed)
    }

    func testBatchMembersMatchSingleImagesBitForBit() {
        // A batch must give exactly what its images give alone (CLI sharding relies on it):
        // per-tile arithmetic may not depend on the tile's block or on the batch size.
        winogradBlocking = WinogradBlocking(vFloats: 36 * 48 * 12, uFloats: 1 << 22, mFloats: 1 << 22)
        var rng = TestRNG(40)
        let (cin, cout, h, w) = (12, 10, 13, 21)
        let x = rng.array(3 * cin * h * w), wt = rng.array(cout * cin * 9), bias = rng.array(cout)
        func run(_ images: Range<Int>) -> [Float] {
            var y = [Float](repeating: 0, count: images.count * cout * h * w)
            x.withUnsafeBufferPointer { xp in wt.withUnsafeBufferPointer { wp in bias.withUnsafeBufferPointer { bp in
                y.withUnsafeMutableBufferPointer { yp in
                    conv2d(input: xp.baseAddress! + images.lowerBound * cin * h * w, batch: images.count, inChannels: cin,
                           height: h, width: w, weight: wp.baseAddress!, bias: bp.baseAddress!, outChannels: cout,
                           kernelH: 3, kernelW: 3, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1, output: yp.baseAddress!)
                }
            } } }
            return y
        }
        let all = run(0..<3)
        XCTAssertEqual(Array(all[0..<(cout * h * w)]), run(0..<1))
        XCTAssertEqual(Array(all[(cout * h * w)...]), run(1..<3))
        XCTAssertEqual(Array(all[(2 * cout * h * w)...]), run(2..<3))
    }

    /// On an AVX-512 CPU the input transform runs 16 tiles per vector and the GEMMs on the 16-wide
    /// tile: both paths must meet the reference and give the same bits.
    func testAVX512AndAVX2PathsBothMatch() {
        let saved = gemmUsesAVX512
        defer { gemmUsesAVX512 = saved }
        let shapes = [pad1(cin: 9, h: 8, w: 64, cout: 17), pad1(batch: 2, cin: 5, h: 9, w: 62, cout: 7),
                      pad1(cin: 20, h: 16, w: 16, cout: 40)]
        var outs: [[Float]] = []
        for path in saved ? [true, false] : [false] {
            gemmUsesAVX512 = path
            for (i, sh) in shapes.enumerated() { check(sh, residual: i == 1, seed: 60 + UInt64(i)) }
            var rng = TestRNG(64)
            let (cin, cout, h, w) = (7, 33, 12, 70)
            let x = rng.array(2 * cin * h * w), wt = rng.array(cout * cin * 9)
            var y = [Float](repeating: 0, count: 2 * cout * h * w)
            x.withUnsafeBufferPointer { xp in wt.withUnsafeBufferPointer { wp in y.withUnsafeMutableBufferPointer { yp in
                conv2d(input: xp.baseAddress!, batch: 2, inChannels: cin, height: h, width: w, weight: wp.baseAddress!,
                       bias: nil, outChannels: cout, kernelH: 3, kernelW: 3,
                       padTop: 1, padLeft: 1, padBottom: 1, padRight: 1, output: yp.baseAddress!)
            } } }
            outs.append(y)
        }
        if outs.count == 2 { XCTAssertEqual(outs[0], outs[1], "AVX-512 and AVX2 Winograd differ") }
    }

    func testErrorScale() {
        // Larger sums, closer to the model's layers: the relative error must not grow with k.
        let e1 = check(pad1(cin: 64, h: 16, w: 16, cout: 16), seed: 27)
        let e2 = check(pad1(cin: 256, h: 8, w: 12, cout: 8), weights: .packed, seed: 28)
        print("winograd worst error / magnitude: cin 64: \(e1), cin 256: \(e2)")
    }
}

/// conv2dUpsampledNearest against resize-then-convolve with the naive twin, on both paths.
final class UpsampledConvTests: XCTestCase {
    private var savedAlgorithm = Conv3x3Algorithm.auto
    override func setUp() { savedAlgorithm = Conv3x3Algorithm.current }
    override func tearDown() { Conv3x3Algorithm.current = savedAlgorithm }

    func check(batch: Int, cin: Int, h: Int, w: Int, uh: Int, uw: Int, cout: Int, algorithm: Conv3x3Algorithm,
               residual useResidual: Bool = false, half: Bool = false, seed: UInt64,
               file: StaticString = #filePath, line: UInt = #line) {
        Conv3x3Algorithm.current = algorithm
        var rng = TestRNG(seed)
        let x = rng.array(batch * cin * h * w)
        var wt = rng.array(cout * cin * 9)
        if half { wt = wt.map { Float(Float16($0)) } }
        let bias = rng.array(cout)
        let residual = useResidual ? rng.array(batch * cout * uh * uw) : nil
        // The resized input, by the PyTorch rule (floor(dst * in / out) in float).
        var up = [Float](repeating: 0, count: batch * cin * uh * uw)
        let sy = Float(h) / Float(uh), sx = Float(w) / Float(uw)
        for p in 0..<(batch * cin) { for y in 0..<uh { for xx in 0..<uw {
            let iy = min(Int(Float(y) * sy), h - 1), ix = min(Int(Float(xx) * sx), w - 1)
            up[(p * uh + y) * uw + xx] = x[(p * h + iy) * w + ix]
        } } }
        var y = [Float](repeating: .nan, count: batch * cout * uh * uw)
        x.withUnsafeBufferPointer { xp in wt.withUnsafeBufferPointer { wp in y.withUnsafeMutableBufferPointer { yp in
            withOptionalPointer(residual) { rp in
                let pw = PackedMatrix(a: wp.baseAddress!, lda: cin * 9, m: cout, k: cin * 9, storage: half ? .float16 : .float32)
                withThreads(2) {
                    conv2dUpsampledNearest(input: xp.baseAddress!, batch: batch, inChannels: cin, height: h, width: w,
                                           upHeight: uh, upWidth: uw, weight: pw, bias: bias, kernelH: 3, kernelW: 3,
                                           padTop: 1, padLeft: 1, padBottom: 1, padRight: 1, output: yp.baseAddress!, residual: rp)
                }
            }
        } } }
        let s = ConvTests.Shape(batch: batch, cin: cin, h: uh, w: uw, cout: cout, kh: 3, kw: 3, pt: 1, pl: 1, pb: 1, pr: 1)
        let (ref, mag) = ConvTests.reference(s, x: up, wt: wt, bias: bias, residual: residual)
        assertClose(y, ref, scale: mag, tol: 2e-5, "upsampled conv \(h)×\(w)→\(uh)×\(uw) \(algorithm)", file: file, line: line)
    }

    func testTwiceAndOddSizes() {
        for algorithm in [Conv3x3Algorithm.winograd, .im2col] {
            check(batch: 2, cin: 5, h: 8, w: 16, uh: 16, uw: 32, cout: 7, algorithm: algorithm, seed: 1)   // vector 2× path
            check(batch: 1, cin: 3, h: 5, w: 7, uh: 10, uw: 14, cout: 4, algorithm: algorithm, residual: true, seed: 2)
            check(batch: 1, cin: 4, h: 5, w: 7, uh: 11, uw: 13, cout: 6, algorithm: algorithm, half: true, seed: 3)  // U-Net odd size
            check(batch: 2, cin: 3, h: 3, w: 20, uh: 6, uw: 40, cout: 5, algorithm: algorithm, residual: true, seed: 4)
        }
    }
}

/// conv2d(normalizedBy:) against groupNorm followed by conv2d: the same bits on both paths.
final class NormalizedConvTests: XCTestCase {
    private var savedAlgorithm = Conv3x3Algorithm.auto
    override func setUp() { savedAlgorithm = Conv3x3Algorithm.current }
    override func tearDown() { Conv3x3Algorithm.current = savedAlgorithm }

    func check(batch: Int, cin: Int, h: Int, w: Int, cout: Int, groups: Int, silu: Bool, kernel: Int = 3, pad: Int = 1,
               algorithm: Conv3x3Algorithm, residual useResidual: Bool = false, seed: UInt64,
               file: StaticString = #filePath, line: UInt = #line) {
        Conv3x3Algorithm.current = algorithm
        var rng = TestRNG(seed)
        // An offset and a scale per channel, so the statistics matter.
        var x = rng.array(batch * cin * h * w)
        for i in 0..<x.count { x[i] = x[i] * Float(1 + (i / (h * w)) % 3) + Float((i / (h * w)) % 5) - 2 }
        let wt = rng.array(cout * cin * kernel * kernel), bias = rng.array(cout)
        let gamma = rng.array(cin), beta = rng.array(cin)
        let oh = h + 2 * pad - kernel + 1, ow = w + 2 * pad - kernel + 1
        let residual = useResidual ? rng.array(batch * cout * oh * ow) : nil
        let pw = wt.withUnsafeBufferPointer {
            PackedMatrix(a: $0.baseAddress!, lda: cin * kernel * kernel, m: cout, k: cin * kernel * kernel, storage: .float16)
        }
        var fused = [Float](repeating: .nan, count: batch * cout * oh * ow), plain = fused
        var normalized = [Float](repeating: 0, count: x.count)
        withThreads(2) {
            withOptionalPointer(residual) { rp in
                conv2d(input: x, batch: batch, inChannels: cin, height: h, width: w,
                       normalizedBy: InputGroupNorm(groups: groups, eps: 1e-6, gamma: gamma, beta: beta, silu: silu),
                       weight: pw, bias: bias, kernelH: kernel, kernelW: kernel,
                       padTop: pad, padLeft: pad, padBottom: pad, padRight: pad, output: &fused, residual: rp)
                groupNorm(x: x, out: &normalized, batch: batch, channels: cin, spatial: h * w, groups: groups, eps: 1e-6,
                          gamma: gamma, beta: beta, silu: silu)
                conv2d(input: normalized, batch: batch, inChannels: cin, height: h, width: w, weight: pw, bias: bias,
                       kernelH: kernel, kernelW: kernel, padTop: pad, padLeft: pad, padBottom: pad, padRight: pad,
                       output: &plain, residual: rp)
            }
        }
        XCTAssertEqual(fused, plain, "normalised conv \(batch)×\(cin)×\(h)×\(w) groups \(groups) silu \(silu) \(algorithm)",
                       file: file, line: line)
    }

    func testSameBitsAsNormalisingFirst() {
        for algorithm in [Conv3x3Algorithm.winograd, .im2col] {
            check(batch: 2, cin: 8, h: 12, w: 70, cout: 6, groups: 4, silu: true, algorithm: algorithm, residual: true, seed: 1)
            check(batch: 1, cin: 6, h: 9, w: 11, cout: 5, groups: 3, silu: false, algorithm: algorithm, seed: 2)
            check(batch: 1, cin: 4, h: 33, w: 35, cout: 9, groups: 2, silu: true, algorithm: algorithm, seed: 3)
        }
        check(batch: 2, cin: 4, h: 6, w: 7, cout: 3, groups: 2, silu: true, kernel: 1, pad: 0, algorithm: .auto, seed: 4)
    }
}
