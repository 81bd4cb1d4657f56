import XCTest
@testable import Kernels

/// conv2d against a direct 7-loop convolution in Double.
/// Tolerance: 1e-5 relative to Σ|w·x| + |bias| + |residual| per output element.
/// Pinned to the im2col path (WinogradTests covers the other one for 3×3 stride 1).
final class ConvTests: XCTestCase {
    private var savedAlgorithm = Conv3x3Algorithm.auto
    override func setUp() { savedAlgorithm = Conv3x3Algorithm.current; Conv3x3Algorithm.current = .im2col }
    override func tearDown() { Conv3x3Algorithm.current = savedAlgorithm }

    struct Shape {
        var batch = 1
        var cin: Int, h: Int, w: Int, cout: Int, kh: Int, kw: Int
        var sh = 1, sw = 1, pt = 0, pl = 0, pb = 0, pr = 0
        var bias = true
    }

    static func reference(_ s: Shape, x: [Float], wt: [Float], bias: [Float]?, residual: [Float]?) -> (y: [Double], mag: [Double]) {
        let oh = (s.h + s.pt + s.pb - s.kh) / s.sh + 1, ow = (s.w + s.pl + s.pr - s.kw) / s.sw + 1
        var y = [Double](repeating: 0, count: s.batch * s.cout * oh * ow)
        var mag = y
        for n in 0..<s.batch { for co in 0..<s.cout { for oy in 0..<oh { for ox in 0..<ow {
            var acc = 0.0, m = 0.0
            for ci in 0..<s.cin { for ky in 0..<s.kh { for kx in 0..<s.kw {
                let iy = oy * s.sh - s.pt + ky, ix = ox * s.sw - s.pl + kx
                if iy < 0 || iy >= s.h || ix < 0 || ix >= s.w { continue }
                let p = Double(wt[((co * s.cin + ci) * s.kh + ky) * s.kw + kx]) * Double(x[((n * s.cin + ci) * s.h + iy) * s.w + ix])
                acc += p; m += abs(p)
            } } }
            let idx = ((n * s.cout + co) * oh + oy) * ow + ox
            if let bias { acc += Double(bias[co]); m += abs(Double(bias[co])) }
            if let residual { acc += Double(residual[idx]); m += abs(Double(residual[idx])) }
            y[idx] = acc; mag[idx] = m
        } } } }
        return (y, mag)
    }

    func check(_ s: Shape, threads: Int = 2, residual useResidual: Bool = false, packed: Bool = false, seed: UInt64,
               file: StaticString = #filePath, line: UInt = #line) {
        var rng = TestRNG(seed)
        let x = rng.array(s.batch * s.cin * s.h * s.w)
        let wt = rng.array(s.cout * s.cin * s.kh * s.kw)
        let bias = s.bias ? rng.array(s.cout) : nil
        let oh = (s.h + s.pt + s.pb - s.kh) / s.sh + 1, ow = (s.w + s.pl + s.pr - s.kw) / s.sw + 1
        let residual = useResidual ? rng.array(s.batch * s.cout * oh * ow) : nil
        var y = [Float](repeating: .nan, count: s.batch * s.cout * oh * ow)
        withThreads(threads) {
            x.withUnsafeBufferPointer { xp in wt.withUnsafeBufferPointer { wp in y.withUnsafeMutableBufferPointer { yp in
            withOptionalPointer(bias) { bp in withOptionalPointer(residual) { rp in
                if packed {
                    let pw = PackedMatrix(a: wp.baseAddress!, lda: s.cin * s.kh * s.kw, m: s.cout, k: s.cin * s.kh * s.kw)
                    conv2d(input: xp.baseAddress!, batch: s.batch, inChannels: s.cin, height: s.h, width: s.w,
                           weight: pw, bias: bp, kernelH: s.kh, kernelW: s.kw, strideH: s.sh, strideW: s.sw,
                           padTop: s.pt, padLeft: s.pl, padBottom: s.pb, padRight: s.pr, output: yp.baseAddress!, residual: rp)
                } else if useResidual {
                    conv2d(input: xp.baseAddress!, batch: s.batch, inChannels: s.cin, height: s.h, width: s.w,
                           weight: wp.baseAddress!, bias: bp, outChannels: s.cout, kernelH: s.kh, kernelW: s.kw,
                           strideH: s.sh, strideW: s.sw, padTop: s.pt, padLeft: s.pl, padBottom: s.pb, padRight: s.pr,
                           output: yp.baseAddress!, residual: rp)
                } else {
                    conv2d(input: xp.baseAddress!, batch: s.batch, inChannels: s.cin, height: s.h, width: s.w,
                           weight: wp.baseAddress!, bias: bp, outChannels: s.cout, kernelH: s.kh, kernelW: s.kw,
                           strideH: s.sh, strideW: s.sw, padTop: s.pt, padLeft: s.pl, padBottom: s.pb, padRight: s.pr,
                           output: yp.baseAddress!)
                }
            } }
            } } }
        }
        let (ref, mag) = Self.reference(s, x: x, wt: wt, bias: bias, residual: residual)
        assertClose(y, ref, scale: mag, tol: 1e-5, "conv \(s) residual \(useResidual) packed \(packed)", file: file, line: line)
    }

    func testPointwise() {
        check(Shape(batch: 2, cin: 5, h: 7, w: 9, cout: 11, kh: 1, kw: 1), seed: 1)
        check(Shape(cin: 33, h: 4, w: 16, cout: 7, kh: 1, kw: 1, bias: false), threads: 1, seed: 2)
    }

    func testThreeByThreePadded() {
        // Width 32: 16-column panels lie in one output row (vector path); width 9/5: they straddle rows.
        check(Shape(batch: 2, cin: 3, h: 6, w: 32, cout: 8, kh: 3, kw: 3, pt: 1, pl: 1, pb: 1, pr: 1), seed: 3)
        check(Shape(cin: 4, h: 9, w: 9, cout: 17, kh: 3, kw: 3, pt: 1, pl: 1, pb: 1, pr: 1), seed: 4)
        check(Shape(cin: 2, h: 5, w: 5, cout: 3, kh: 3, kw: 3, pt: 1, pl: 1, pb: 1, pr: 1, bias: false), threads: 1, seed: 5)
        check(Shape(cin: 40, h: 8, w: 16, cout: 13, kh: 3, kw: 3, pt: 1, pl: 1, pb: 1, pr: 1), seed: 6)   // k = 360: two k blocks
    }

    func testStrideTwoAndAsymmetricPadding() {
        // diffusers' Downsample2D with padding 0 pads (0, 1, 0, 1) = right/bottom only.
        check(Shape(batch: 2, cin: 3, h: 8, w: 8, cout: 5, kh: 3, kw: 3, sh: 2, sw: 2, pt: 0, pl: 0, pb: 1, pr: 1), seed: 7)
        check(Shape(cin: 4, h: 9, w: 7, cout: 6, kh: 3, kw: 3, sh: 2, sw: 2, pt: 1, pl: 1, pb: 1, pr: 1), seed: 8)
        check(Shape(cin: 2, h: 7, w: 10, cout: 3, kh: 2, kw: 3, sh: 1, sw: 2, pt: 2, pl: 0, pb: 0, pr: 1), seed: 9)
        check(Shape(cin: 3, h: 6, w: 6, cout: 4, kh: 1, kw: 1, sh: 2, sw: 2), seed: 10)
    }

    func testUnpaddedAndLargeKernels() {
        check(Shape(cin: 3, h: 10, w: 12, cout: 4, kh: 3, kw: 3), seed: 11)
        check(Shape(cin: 2, h: 9, w: 9, cout: 3, kh: 5, kw: 5, pt: 2, pl: 2, pb: 2, pr: 2), seed: 12)
        check(Shape(cin: 1, h: 3, w: 3, cout: 1, kh: 3, kw: 3, pt: 1, pl: 1, pb: 1, pr: 1), seed: 13)
    }

    /// Batches whose feature maps are small run as one product with the images' pixels side by
    /// side (`batchedConvMaxColumns`); larger ones image by image. Both, with padding, stride,
    /// residual and packed weights; a row split (many output channels, few columns) that
    /// shares one im2col B between the threads.
    func testBatchedColumnsAndPerImage() {
        check(Shape(batch: 3, cin: 64, h: 4, w: 4, cout: 200, kh: 3, kw: 3, pt: 1, pl: 1, pb: 1, pr: 1), threads: 3, residual: true, seed: 18)
        check(Shape(batch: 3, cin: 64, h: 4, w: 4, cout: 200, kh: 3, kw: 3, pt: 1, pl: 1, pb: 1, pr: 1), threads: 2, packed: true, seed: 19)
        check(Shape(batch: 2, cin: 40, h: 8, w: 8, cout: 150, kh: 1, kw: 1), threads: 2, residual: true, seed: 20)
        check(Shape(batch: 4, cin: 8, h: 9, w: 11, cout: 30, kh: 3, kw: 3, sh: 2, sw: 2, pt: 1, pl: 1, pb: 1, pr: 1), seed: 21)
        // 2 × 24 × 24 = 1152 columns: per image.
        check(Shape(batch: 2, cin: 6, h: 24, w: 24, cout: 20, kh: 3, kw: 3, pt: 1, pl: 1, pb: 1, pr: 1), residual: true, seed: 22)
        check(Shape(batch: 2, cin: 6, h: 24, w: 24, cout: 20, kh: 1, kw: 1), residual: true, packed: true, seed: 23)
    }

    /// An image's output bits must not depend on the batch it is in (a batch renderer promises
    /// the same picture for any --batch-size): maps whose pixel count is not a multiple of 16
    /// are the case where the columns' kernel could change with the batch.
    func testAnImageGetsTheSameBitsInAnyBatch() {
        var rng = TestRNG(31)
        for (h, w, cin, cout) in [(2, 2, 24, 20), (5, 7, 16, 30), (10, 10, 8, 12), (20, 20, 4, 8)] {
            let batch = 3
            let x = rng.array(batch * cin * h * w), wt = rng.array(cout * cin * 9), bias = rng.array(cout)
            let residual = rng.array(batch * cout * h * w)
            func conv(_ first: Int, _ count: Int) -> [UInt32] {
                var y = [Float](repeating: .nan, count: count * cout * h * w)
                withThreads(2) {
                    conv2d(input: x.withUnsafeBufferPointer { $0.baseAddress! } + first * cin * h * w, batch: count,
                           inChannels: cin, height: h, width: w, weight: wt, bias: bias, outChannels: cout,
                           kernelH: 3, kernelW: 3, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1, output: &y,
                           residual: residual.withUnsafeBufferPointer { $0.baseAddress! } + first * cout * h * w)
                }
                return y.map(\.bitPattern)
            }
            let all = conv(0, batch)
            let plane = cout * h * w
            for i in 0..<batch {
                XCTAssertEqual(conv(i, 1), Array(all[(i * plane)..<((i + 1) * plane)]), "\(h)×\(w): image \(i) alone vs in a batch of 3")
            }
            XCTAssertEqual(conv(0, 2), Array(all[0..<(2 * plane)]), "\(h)×\(w): batch of 2 vs 3")
        }
    }

    func testResidualAndPackedWeights() {
        check(Shape(batch: 2, cin: 6, h: 8, w: 16, cout: 9, kh: 3, kw: 3, pt: 1, pl: 1, pb: 1, pr: 1), residual: true, seed: 14)
        check(Shape(batch: 2, cin: 6, h: 5, w: 7, cout: 9, kh: 1, kw: 1), residual: true, seed: 15)
        check(Shape(batch: 2, cin: 6, h: 8, w: 16, cout: 9, kh: 3, kw: 3, pt: 1, pl: 1, pb: 1, pr: 1), packed: true, seed: 16)
        check(Shape(cin: 5, h: 6, w: 6, cout: 7, kh: 3, kw: 3, sh: 2, sw: 2, pt: 0, pl: 0, pb: 1, pr: 1), residual: true, packed: true, seed: 17)
    }
}
