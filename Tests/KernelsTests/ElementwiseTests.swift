import XCTest
@testable import Kernels

/// Vector math and elementwise kernels against Double references.
final class ElementwiseTests: XCTestCase {
    /// Inputs spanning the interesting ranges, including the tails of each function.
    func samples() -> [Float] {
        var xs: [Float] = [0, -0.0, 1e-30, -1e-30, 1e-7, -1e-7, 0.5, -0.5, 1, -1, 2.5, -2.5, 10, -10, 20, -20, 40, -40]
        var rng = TestRNG(5)
        for _ in 0..<4000 { xs.append(rng.next() * 12) }
        for _ in 0..<1000 { xs.append(rng.next() * 90) }
        for _ in 0..<3 { xs.append(rng.next()) }   // odd count: exercises the vector tail
        return xs
    }

    func testExp() {
        var worst = 0.0
        var rng = TestRNG(6)
        var xs: [Float] = [0, 1, -1, 88.7, -87.3, 0.34657, -0.34657]
        for _ in 0..<20000 { xs.append(rng.next() * 87) }
        for x in xs {
            let got = Double(vexp(F8(repeating: x))[0]), want = exp(Double(x))
            worst = max(worst, abs(got - want) / want)
        }
        // ≤ 2 ulp (float ulp at 1 is 1.19e-7; relative ulp ≤ 1.19e-7).
        XCTAssertLessThan(worst, 2.4e-7, "vexp worst relative error \(worst)")
        XCTAssertEqual(vexp(F8(repeating: 89))[0], .infinity)
        XCTAssertEqual(vexp(F8(repeating: -110))[0], 0)
        XCTAssertEqual(vexp(F8(repeating: -Float.infinity))[0], 0)
        XCTAssertEqual(vexp(F8(repeating: Float.infinity))[0], .infinity)
        XCTAssertTrue(vexp(F8(repeating: .nan))[0].isNaN)
        // Subnormal results keep their value (e^-100 ≈ 3.7e-44).
        let sub = Double(vexp(F8(repeating: -100))[0])
        XCTAssertEqual(sub, exp(-100.0), accuracy: 2e-45)

        var worst2 = 0.0
        for _ in 0..<20000 {
            let x = rng.next() * 120
            let got = Double(vexp2(F8(repeating: x))[0]), want = exp2(Double(x))
            worst2 = max(worst2, abs(got - want) / want)
        }
        XCTAssertLessThan(worst2, 2.4e-7, "vexp2 worst relative error \(worst2)")

        // Softmax's 2^x on x ≤ 0: ≤ 2 ulp down to −126, tiny positive (not NaN) below.
        var worst3 = 0.0
        for _ in 0..<20000 {
            let x = -abs(rng.next()) * 126
            let got = Double(vexp2NonPositive(F8(repeating: x))[0]), want = exp2(Double(x))
            worst3 = max(worst3, abs(got - want) / want)
        }
        XCTAssertLessThan(worst3, 2.4e-7, "vexp2NonPositive worst relative error \(worst3)")
        XCTAssertEqual(vexp2NonPositive(F8(repeating: 0))[0], 1)
        let far = vexp2NonPositive(F8(repeating: -.infinity))[0]
        XCTAssertTrue(far >= 0 && far < 1e-37)
    }

    func testActivations() {
        let xs = samples()
        // Relative tolerances, plus 1.2e-7·|exponent argument|: rounding the argument of exp in
        // float (as PyTorch does too) costs ulp(arg) relative in the result, which dominates
        // when the result is far out in a tail.
        let tolerances: [(Activation, Double)] = [(.silu, 5e-7), (.quickGelu, 5e-7), (.geluTanh, 5e-7), (.gelu, 1e-6)]
        func argument(_ x: Double, _ act: Activation) -> Double {
            switch act {
            case .silu: return 0
            case .quickGelu: return 1.702 * x
            case .geluTanh: return 2 * 0.7978845608028654 * (x + 0.044715 * x * x * x)
            case .gelu: return 0
            }
        }
        for (act, tol) in tolerances {
            var y = xs
            withThreads(2) { activate(&y, count: y.count, act) }
            var worst = 0.0, at: Float = 0
            for (i, x) in xs.enumerated() {
                let want = referenceActivation(Double(x), act)
                // Results below 1e-30 come from exponentials at the edge of float range (e^88 and
                // beyond overflow to a 0 result, as in PyTorch's float formulas); compare those
                // absolutely.
                let floor = 1e-30
                let allowed = tol + (act == .geluTanh ? 3e-7 : 1.2e-7) * abs(argument(Double(x), act))
                let err = abs(Double(y[i]) - want) / max(abs(want), floor) / allowed * tol
                if err > worst { worst = err; at = x }
                XCTAssertEqual(applyActivation(x, act), y[i], "scalar and vector \(act) disagree at \(x)")
            }
            XCTAssertLessThan(worst, tol, "\(act) worst relative error \(worst) at x = \(at)")
        }
    }

    func testGeglu() {
        for (rows, d) in [(1, 1), (3, 7), (5, 40), (2, 1280)] {
            var rng = TestRNG(UInt64(rows * d))
            let x = rng.array(rows * 2 * d, scale: 4)
            var out = [Float](repeating: .nan, count: rows * d)
            withThreads(2) { geglu(x, rows: rows, dim: d, out: &out) }
            var want: [Double] = [], mag: [Double] = []
            for r in 0..<rows { for j in 0..<d {
                let h = Double(x[r * 2 * d + j]), g = Double(x[r * 2 * d + d + j])
                let w = h * referenceActivation(g, .gelu)
                want.append(w); mag.append(abs(h) * max(abs(g), 1e-3))
            } }
            assertClose(out, want, scale: mag, tol: 1e-6, "geglu \(rows)×\(d)")
        }
    }

    func testAddAndBias() {
        var rng = TestRNG(9)
        for n in [1, 7, 8, 17, 100_003] {
            let a = rng.array(n), b = rng.array(n)
            var out = [Float](repeating: .nan, count: n)
            withThreads(2) { add(a, b, out: &out, count: n) }
            XCTAssertEqual(out, zip(a, b).map { $0 + $1 })
            var inPlace = a
            inPlace.withUnsafeMutableBufferPointer { p in add(p.baseAddress!, b, out: p.baseAddress!, count: n) }
            XCTAssertEqual(inPlace, out)
        }
        for (rows, cols) in [(1, 1), (3, 7), (100, 33), (2, 1280)] {
            let x = rng.array(rows * cols), bias = rng.array(cols)
            var y = x
            withThreads(2) { addRowBias(&y, rows: rows, cols: cols, bias: bias) }
            for r in 0..<rows { for j in 0..<cols { XCTAssertEqual(y[r * cols + j], x[r * cols + j] + bias[j]) } }
        }
    }

    func testUpsample() {
        for (planes, h, w) in [(1, 1, 1), (3, 2, 5), (2, 4, 17), (5, 8, 8)] {
            let x = (0..<(planes * h * w)).map { Float($0) }
            var out = [Float](repeating: .nan, count: planes * 4 * h * w)
            withThreads(2) { upsampleNearest2x(x, planes: planes, height: h, width: w, out: &out) }
            for p in 0..<planes { for y in 0..<(2 * h) { for xx in 0..<(2 * w) {
                XCTAssertEqual(out[(p * 2 * h + y) * 2 * w + xx], x[(p * h + y / 2) * w + xx / 2])
            } } }
        }
    }

    func testTranspose() {
        for (batch, rows, cols) in [(1, 1, 1), (2, 3, 5), (1, 8, 8), (2, 17, 70), (1, 130, 9)] {
            let x = (0..<(batch * rows * cols)).map { Float($0) }
            var out = [Float](repeating: .nan, count: x.count)
            withThreads(2) { transpose(x, batch: batch, rows: rows, cols: cols, out: &out) }
            for b in 0..<batch { for i in 0..<rows { for j in 0..<cols {
                XCTAssertEqual(out[b * rows * cols + j * rows + i], x[b * rows * cols + i * cols + j])
            } } }
        }
    }
}
