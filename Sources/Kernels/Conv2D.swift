/// 2-D convolution, NCHW, cross-correlation as in PyTorch's Conv2d (groups = 1, dilation = 1).
///   input  [batch, inChannels, height, width]
///   weight [outChannels, inChannels, kernelH, kernelW]
///   bias   [outChannels] or nil
///   output [batch, outChannels, outH, outW] with
///   outH = (height + padTop + padBottom - kernelH) / strideH + 1 (likewise outW).
/// Zero padding. The output is overwritten.
public func conv2d(
    input: UnsafePointer<Float>, batch: Int, inChannels: Int, height: Int, width: Int,
    weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
    outChannels: Int, kernelH: Int, kernelW: Int,
    strideH: Int = 1, strideW: Int = 1,
    padTop: Int, padLeft: Int, padBottom: Int, padRight: Int,
    output: UnsafeMutablePointer<Float>
) {
    let outH = (height + padTop + padBottom - kernelH) / strideH + 1
    let outW = (width + padLeft + padRight - kernelW) / strideW + 1
    let kk = inChannels * kernelH * kernelW
    let spatial = outH * outW
    // im2col into [kk, spatial] then GEMM: out[outC, spatial] = W[outC, kk] · cols.
    let cols = UnsafeMutablePointer<Float>.allocate(capacity: max(1, kk * spatial))
    defer { cols.deallocate() }
    for nb in 0..<batch {
        let src = input + nb * inChannels * height * width
        let colsP = SendablePointer(cols)
        let srcB = UncheckedBox(src)
        parallelFor(kk) { range in
            let src = srcB.value
            for r in range {
                let ci = r / (kernelH * kernelW)
                let ky = (r / kernelW) % kernelH
                let kx = r % kernelW
                let row = colsP.p + r * spatial
                for oy in 0..<outH {
                    let iy = oy * strideH - padTop + ky
                    if iy < 0 || iy >= height {
                        for ox in 0..<outW { row[oy * outW + ox] = 0 }
                        continue
                    }
                    let srow = src + (ci * height + iy) * width
                    for ox in 0..<outW {
                        let ix = ox * strideW - padLeft + kx
                        row[oy * outW + ox] = (ix >= 0 && ix < width) ? srow[ix] : 0
                    }
                }
            }
        }
        let dst = output + nb * outChannels * spatial
        sgemm(transA: false, transB: false, m: outChannels, n: spatial, k: kk,
              a: weight, lda: kk, b: UnsafePointer(cols), ldb: spatial, c: dst, ldc: spatial)
        if let bias {
            for co in 0..<outChannels {
                let bv = bias[co]
                let row = dst + co * spatial
                for i in 0..<spatial { row[i] += bv }
            }
        }
    }
}
