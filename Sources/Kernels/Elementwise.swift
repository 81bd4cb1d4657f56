import Foundation

/// Activation functions as PyTorch defines them.
public enum Activation: Sendable {
    case silu        // x · σ(x)
    case gelu        // exact: 0.5 x (1 + erf(x/√2))
    case geluTanh    // tanh approximation
    case quickGelu   // x · σ(1.702 x)  (CLIP's quick_gelu)
}

/// In-place activation over n values. Vectorised (see SIMDMath.swift for accuracy: ≤ 1e-6
/// relative for GELU on |x| < 5.6, ≈ 3e-7 for the sigmoid-based ones), parallel in chunks.
public func activate(_ x: UnsafeMutablePointer<Float>, count n: Int, _ act: Activation) {
    let p = SendablePointer(x)
    parallelFor(n, minChunk: 16384) { r in
        let base = p.p + r.lowerBound
        activationLoop(UnsafePointer(base), base, r.count, act)
    }
}

/// dst[i] = act(src[i]); one specialised vector loop per activation, kept out of line (inlined
/// into larger functions LLVM tends to split the 8-wide code into 4-wide halves).
@inline(never)
func activationLoop(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, _ n: Int, _ act: Activation) {
    switch act {
    case .silu: mapF8(src, dst, n) { vsilu($0) }
    case .gelu: mapF8(src, dst, n) { vgelu($0) }
    case .geluTanh: mapF8(src, dst, n) { vgeluTanh($0) }
    case .quickGelu: mapF8(src, dst, n) { vquickGelu($0) }
    }
}

/// Scalar activation; evaluates the same vector code as `activate` so both agree bit for bit.
@inline(__always)
public func applyActivation(_ x: Float, _ act: Activation) -> Float {
    sactivate(x, act)
}

/// GEGLU: x [rows, 2·d] → out [rows, d] with out = x[:, :d] · gelu(x[:, d:]) (diffusers' GEGLU
/// splits the projection into hidden and gate halves in that order).
public func geglu(_ x: UnsafePointer<Float>, rows: Int, dim d: Int, out: UnsafeMutablePointer<Float>) {
    let o = SendablePointer(out)
    let xb = UncheckedBox(x)
    parallelFor(rows, minChunk: max(1, 8192 / max(d, 1))) { r in
        let x = xb.value
        for row in r { gegluRow(x + row * 2 * d, o.p + row * d, d) }
    }
}

@inline(never)
func gegluRow(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, _ d: Int) {
    var j = 0
    while j + 8 <= d {
        st8(dst + j, ld8(src + j) * vgelu(ld8(src + d + j)))
        j += 8
    }
    while j < d { dst[j] = src[j] * sactivate(src[d + j], .gelu); j += 1 }
}

/// out[i] = a[i] + b[i]. `out` may alias a or b.
public func add(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, count n: Int) {
    let o = SendablePointer(out)
    let box = UncheckedBox((a, b))
    parallelFor(n, minChunk: 32768) { r in
        let (a, b) = box.value
        var i = r.lowerBound
        while i + 8 <= r.upperBound { st8(o.p + i, ld8(a + i) + ld8(b + i)); i += 8 }
        while i < r.upperBound { o[i] = a[i] + b[i]; i += 1 }
    }
}

/// x[row, j] += bias[j] for x [rows, cols].
public func addRowBias(_ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int, bias: UnsafePointer<Float>) {
    let o = SendablePointer(x)
    let bb = UncheckedBox(bias)
    parallelFor(rows, minChunk: max(1, 32768 / max(cols, 1))) { r in
        let bias = bb.value
        for row in r {
            let p = o.p + row * cols
            var j = 0
            while j + 8 <= cols { st8(p + j, ld8(p + j) + ld8(bias + j)); j += 8 }
            while j < cols { p[j] += bias[j]; j += 1 }
        }
    }
}

/// Nearest-neighbour 2x upsampling, NCHW: x [planes, h, w] → out [planes, 2h, 2w].
public func upsampleNearest2x(_ x: UnsafePointer<Float>, planes: Int, height h: Int, width w: Int, out: UnsafeMutablePointer<Float>) {
    let o = SendablePointer(out)
    let xb = UncheckedBox(x)
    parallelFor(planes, minChunk: max(1, 8192 / max(1, h * w))) { r in
        let x = xb.value
        for p in r {
            let src = x + p * h * w
            let dst = o.p + p * 4 * h * w
            for y in 0..<h {
                let s = src + y * w
                let d0 = dst + (2 * y) * 2 * w
                var xx = 0
                while xx + 8 <= w {
                    let v = ld8(s + xx)
                    st8(d0 + 2 * xx, F8(v[0], v[0], v[1], v[1], v[2], v[2], v[3], v[3]))
                    st8(d0 + 2 * xx + 8, F8(v[4], v[4], v[5], v[5], v[6], v[6], v[7], v[7]))
                    xx += 8
                }
                while xx < w { let v = s[xx]; d0[2 * xx] = v; d0[2 * xx + 1] = v; xx += 1 }
                (d0 + 2 * w).update(from: d0, count: 2 * w)
            }
        }
    }
}

/// Transposes each of `batch` matrices [rows, cols] into [cols, rows] (NCHW ↔ tokens).
/// Works in 8×8 register tiles inside 64×64 cache tiles.
public func transpose(_ x: UnsafePointer<Float>, batch: Int, rows: Int, cols: Int, out: UnsafeMutablePointer<Float>) {
    let o = SendablePointer(out)
    let xb = UncheckedBox(x)
    let tile = 64
    let rowTiles = (rows + tile - 1) / tile
    parallelFor(batch * rowTiles, minChunk: max(1, 4096 / max(1, tile * cols))) { r in
        let x = xb.value
        for bt in r {
            let b = bt / rowTiles
            let i0 = (bt % rowTiles) * tile
            let i1 = min(rows, i0 + tile)
            let src = x + b * rows * cols
            let dst = o.p + b * rows * cols
            var j0 = 0
            while j0 < cols {
                let j1 = min(cols, j0 + tile)
                var i = i0
                while i + 8 <= i1 {
                    var j = j0
                    while j + 8 <= j1 {
                        let s = src + i * cols + j
                        let t = transpose8x8(ld8(s), ld8(s + cols), ld8(s + 2 * cols), ld8(s + 3 * cols),
                                             ld8(s + 4 * cols), ld8(s + 5 * cols), ld8(s + 6 * cols), ld8(s + 7 * cols))
                        let d = dst + j * rows + i
                        st8(d, t.0); st8(d + rows, t.1); st8(d + 2 * rows, t.2); st8(d + 3 * rows, t.3)
                        st8(d + 4 * rows, t.4); st8(d + 5 * rows, t.5); st8(d + 6 * rows, t.6); st8(d + 7 * rows, t.7)
                        j += 8
                    }
                    while j < j1 {
                        for ii in i..<(i + 8) { dst[j * rows + ii] = src[ii * cols + j] }
                        j += 1
                    }
                    i += 8
                }
                while i < i1 {
                    for j in j0..<j1 { dst[j * rows + i] = src[i * cols + j] }
                    i += 1
                }
                j0 = j1
            }
        }
    }
}
