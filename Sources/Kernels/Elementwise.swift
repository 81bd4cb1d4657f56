import Foundation

/// Activation functions as PyTorch defines them.
public enum Activation: Sendable {
    case silu        // x · σ(x)
    case gelu        // exact: 0.5 x (1 + erf(x/√2))
    case geluTanh    // tanh approximation
    case quickGelu   // x · σ(1.702 x)  (CLIP's quick_gelu)
}

/// In-place activation over n values.
public func activate(_ x: UnsafeMutablePointer<Float>, count n: Int, _ act: Activation) {
    let p = SendablePointer(x)
    parallelFor(n, minChunk: 4096) { r in
        for i in r { p[i] = applyActivation(p[i], act) }
    }
}

@inline(__always)
public func applyActivation(_ x: Float, _ act: Activation) -> Float {
    switch act {
    case .silu: return x / (1 + expf(-x))
    case .gelu: return 0.5 * x * (1 + erff(x * 0.70710678118654752))
    case .geluTanh:
        return 0.5 * x * (1 + tanhf(0.7978845608028654 * (x + 0.044715 * x * x * x)))
    case .quickGelu: return x / (1 + expf(-1.702 * x))
    }
}

/// GEGLU: x [rows, 2·d] → out [rows, d] with out = x[:, :d] · gelu(x[:, d:]) (diffusers' GEGLU
/// splits the projection into hidden and gate halves in that order).
public func geglu(_ x: UnsafePointer<Float>, rows: Int, dim d: Int, out: UnsafeMutablePointer<Float>) {
    let o = SendablePointer(out)
    let xb = UncheckedBox(x)
    parallelFor(rows) { r in
        let x = xb.value
        for row in r {
            let src = x + row * 2 * d
            let dst = o.p + row * d
            for j in 0..<d { dst[j] = src[j] * applyActivation(src[d + j], .gelu) }
        }
    }
}

/// out[i] = a[i] + b[i]. `out` may alias a or b.
public func add(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, count n: Int) {
    let o = SendablePointer(out)
    let box = UncheckedBox((a, b))
    parallelFor(n, minChunk: 16384) { r in
        let (a, b) = box.value
        for i in r { o[i] = a[i] + b[i] }
    }
}

/// x[row, j] += bias[j] for x [rows, cols].
public func addRowBias(_ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int, bias: UnsafePointer<Float>) {
    let o = SendablePointer(x)
    let bb = UncheckedBox(bias)
    parallelFor(rows, minChunk: max(1, 16384 / max(cols, 1))) { r in
        let bias = bb.value
        for row in r { for j in 0..<cols { o[row * cols + j] += bias[j] } }
    }
}

/// Nearest-neighbour 2x upsampling, NCHW: x [planes, h, w] → out [planes, 2h, 2w].
public func upsampleNearest2x(_ x: UnsafePointer<Float>, planes: Int, height h: Int, width w: Int, out: UnsafeMutablePointer<Float>) {
    let o = SendablePointer(out)
    let xb = UncheckedBox(x)
    parallelFor(planes) { r in
        let x = xb.value
        for p in r {
            let src = x + p * h * w
            let dst = o.p + p * 4 * h * w
            for y in 0..<h {
                let d0 = dst + (2 * y) * 2 * w
                for xx in 0..<w { let v = src[y * w + xx]; d0[2 * xx] = v; d0[2 * xx + 1] = v }
                (d0 + 2 * w).update(from: d0, count: 2 * w)
            }
        }
    }
}

/// Transposes each of `batch` matrices [rows, cols] into [cols, rows] (NCHW ↔ tokens).
public func transpose(_ x: UnsafePointer<Float>, batch: Int, rows: Int, cols: Int, out: UnsafeMutablePointer<Float>) {
    let o = SendablePointer(out)
    let xb = UncheckedBox(x)
    parallelFor(batch * rows) { r in
        let x = xb.value
        for br in r {
            let b = br / rows, i = br % rows
            let src = x + (b * rows + i) * cols
            let dst = o.p + b * rows * cols + i
            for j in 0..<cols { dst[j * rows] = src[j] }
        }
    }
}
