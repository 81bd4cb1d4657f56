import XCTest
@testable import Kernels

/// groupNorm / layerNorm against Double two-pass references.
/// Tolerance: 1e-5 relative to |normalised value·gamma| + |beta| (+ SiLU applied on top).
final class NormalizationTests: XCTestCase {
    func testGroupNorm() {
        for (batch, channels, spatial, groups) in [(2, 8, 17, 4), (1, 6, 1, 3), (1, 32, 100, 32), (2, 12, 1000, 3)] {
            for silu in [false, true] {
                for inPlace in [false, true] {
                    var rng = TestRNG(UInt64(channels * spatial + (silu ? 1 : 0)))
                    // Offset mean: the normalisation must not lose precision to a large mean.
                    let x = rng.array(batch * channels * spatial).map { $0 * 3 + 50 }
                    let gamma = rng.array(channels), beta = rng.array(channels)
                    var y = inPlace ? x : [Float](repeating: .nan, count: x.count)
                    withThreads(2) {
                        if inPlace {
                            y.withUnsafeMutableBufferPointer { yp in
                                groupNorm(x: yp.baseAddress!, out: yp.baseAddress!, batch: batch, channels: channels, spatial: spatial,
                                          groups: groups, eps: 1e-5, gamma: gamma, beta: beta, silu: silu)
                            }
                        } else {
                            groupNorm(x: x, out: &y, batch: batch, channels: channels, spatial: spatial,
                                      groups: groups, eps: 1e-5, gamma: gamma, beta: beta, silu: silu)
                        }
                    }
                    var want = [Double](repeating: 0, count: x.count), mag = want
                    let cpg = channels / groups
                    for b in 0..<batch { for g in 0..<groups {
                        let base = (b * channels + g * cpg) * spatial, n = cpg * spatial
                        let mean = (0..<n).reduce(0.0) { $0 + Double(x[base + $1]) } / Double(n)
                        let v = (0..<n).reduce(0.0) { let d = Double(x[base + $1]) - mean; return $0 + d * d } / Double(n)
                        let rstd = 1 / (v + 1e-5).squareRoot()
                        for c in 0..<cpg { for s in 0..<spatial {
                            let ch = g * cpg + c, idx = base + c * spatial + s
                            let t = (Double(x[idx]) - mean) * rstd * Double(gamma[ch])
                            var r = t + Double(beta[ch])
                            if silu { r = r / (1 + exp(-r)) }
                            want[idx] = r; mag[idx] = abs(t) + abs(Double(beta[ch])) + 1e-3
                        } }
                    } }
                    assertClose(y, want, scale: mag, tol: 1e-5, "groupNorm \(batch)×\(channels)×\(spatial) g\(groups) silu \(silu)")
                }
            }
        }
    }

    func testLayerNorm() {
        for (rows, cols) in [(1, 1), (3, 7), (77, 768), (10, 320), (5, 33)] {
            var rng = TestRNG(UInt64(rows * 1000 + cols))
            let x = rng.array(rows * cols).map { $0 * 2 - 5 }
            let gamma = rng.array(cols), beta = rng.array(cols)
            var y = x
            withThreads(2) {
                y.withUnsafeMutableBufferPointer { yp in
                    layerNorm(x: yp.baseAddress!, out: yp.baseAddress!, rows: rows, cols: cols, eps: 1e-5, gamma: gamma, beta: beta)
                }
            }
            var want = [Double](repeating: 0, count: x.count), mag = want
            for r in 0..<rows {
                let row = (0..<cols).map { Double(x[r * cols + $0]) }
                let mean = row.reduce(0, +) / Double(cols)
                let v = row.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(cols)
                let rstd = 1 / (v + 1e-5).squareRoot()
                for j in 0..<cols {
                    let t = (row[j] - mean) * rstd * Double(gamma[j])
                    // Magnitude: the input's scale after normalisation, (|x − mean| + |mean|)·rstd·|gamma| + |beta|
                    // (float inputs carry ulp(|x|) of the mean into every output).
                    want[r * cols + j] = t + Double(beta[j])
                    mag[r * cols + j] = (abs(row[j] - mean) + abs(mean)) * rstd * abs(Double(gamma[j])) + abs(Double(beta[j])) + 1e-3
                }
            }
            assertClose(y, want, scale: mag, tol: 1e-5, "layerNorm \(rows)×\(cols)")
        }
    }
}
