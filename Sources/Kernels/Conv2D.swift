/// 2-D convolution, NCHW, cross-correlation as in PyTorch's Conv2d (groups = 1, dilation = 1).
///   input  [batch, inChannels, height, width]
///   weight [outChannels, inChannels, kernelH, kernelW]
///   bias   [outChannels] or nil
///   output [batch, outChannels, outH, outW] with
///   outH = (height + padTop + padBottom - kernelH) / strideH + 1 (likewise outW).
/// Zero padding. The output is overwritten.
///
/// Implementation: per image, out[outC, outH·outW] = W[outC, inC·kh·kw] · cols as one GEMM, with
/// the bias fused into the GEMM's store. 1×1 stride-1 unpadded convolutions multiply the image
/// directly (no copy). Other shapes are implicit GEMMs: the GEMM's B-packing step gathers each
/// kc × nc block of the virtual im2col matrix straight from the image, so the full columns
/// matrix (k²× the input) never exists; memory is bounded by one zero-padded copy of one image.
/// 3×3 stride-1 convolutions with enough tiles and channels run as Winograd F(4×4, 3×3) instead
/// (Winograd.swift; `Conv3x3Algorithm.current` / DARKROOM_CONV3X3 force either path).
public func conv2d(
    input: UnsafePointer<Float>, batch: Int, inChannels: Int, height: Int, width: Int,
    weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
    outChannels: Int, kernelH: Int, kernelW: Int,
    strideH: Int = 1, strideW: Int = 1,
    padTop: Int, padLeft: Int, padBottom: Int, padRight: Int,
    output: UnsafeMutablePointer<Float>
) {
    conv2dImpl(DenseA(weight, inChannels * kernelH * kernelW, false), winograd: .dense(weight, inChannels * kernelH * kernelW),
               input: input, batch: batch, inChannels: inChannels, height: height, width: width,
               bias: bias, residual: nil, outChannels: outChannels, kernelH: kernelH, kernelW: kernelW,
               strideH: strideH, strideW: strideW,
               padTop: padTop, padLeft: padLeft, padBottom: padBottom, padRight: padRight, output: output)
}

/// `conv2d` with an optional residual fused into the store: output = conv(input) + bias + residual,
/// residual shaped like the output (ResnetBlock2D's `input_tensor + hidden_states`). The residual
/// must not overlap `output`.
public func conv2d(
    input: UnsafePointer<Float>, batch: Int, inChannels: Int, height: Int, width: Int,
    weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
    outChannels: Int, kernelH: Int, kernelW: Int,
    strideH: Int = 1, strideW: Int = 1,
    padTop: Int, padLeft: Int, padBottom: Int, padRight: Int,
    output: UnsafeMutablePointer<Float>, residual: UnsafePointer<Float>?
) {
    conv2dImpl(DenseA(weight, inChannels * kernelH * kernelW, false), winograd: .dense(weight, inChannels * kernelH * kernelW),
               input: input, batch: batch, inChannels: inChannels, height: height, width: width,
               bias: bias, residual: residual, outChannels: outChannels, kernelH: kernelH, kernelW: kernelW,
               strideH: strideH, strideW: strideW,
               padTop: padTop, padLeft: padLeft, padBottom: padBottom, padRight: padRight, output: output)
}

/// `conv2d` with the weight pre-packed (`PackedMatrix(a: weight, lda: inC·kh·kw, m: outC,
/// k: inC·kh·kw)`), e.g. to keep it as Float16. outChannels = weight.rows.
public func conv2d(
    input: UnsafePointer<Float>, batch: Int, inChannels: Int, height: Int, width: Int,
    weight: PackedMatrix, bias: UnsafePointer<Float>?,
    kernelH: Int, kernelW: Int,
    strideH: Int = 1, strideW: Int = 1,
    padTop: Int, padLeft: Int, padBottom: Int, padRight: Int,
    output: UnsafeMutablePointer<Float>, residual: UnsafePointer<Float>? = nil
) {
    precondition(weight.role == .a && weight.cols == inChannels * kernelH * kernelW,
                 "packed conv weight is \(weight.rows)×\(weight.cols), expected k = \(inChannels * kernelH * kernelW)")
    precondition(weight.kc == max(1, kBlockSize(max(weight.cols, 1))), "packed with a different k blocking")
    conv2dImpl(PackedA(m: weight), winograd: .packed(weight),
               input: input, batch: batch, inChannels: inChannels, height: height, width: width,
               bias: bias, residual: residual, outChannels: weight.rows, kernelH: kernelH, kernelW: kernelW,
               strideH: strideH, strideW: strideW,
               padTop: padTop, padLeft: padLeft, padBottom: padBottom, padRight: padRight, output: output)
}

func conv2dImpl<PA: GemmPackA>(
    _ wa: PA, winograd: WinogradFilter?,
    input: UnsafePointer<Float>, batch: Int, inChannels: Int, height: Int, width: Int,
    bias: UnsafePointer<Float>?, residual: UnsafePointer<Float>?,
    outChannels: Int, kernelH: Int, kernelW: Int,
    strideH: Int, strideW: Int,
    padTop: Int, padLeft: Int, padBottom: Int, padRight: Int,
    output: UnsafeMutablePointer<Float>
) {
    let outH = (height + padTop + padBottom - kernelH) / strideH + 1
    let outW = (width + padLeft + padRight - kernelW) / strideW + 1
    guard batch > 0, outChannels > 0, outH > 0, outW > 0 else { return }
    if kernelH == 3 && kernelW == 3 && strideH == 1 && strideW == 1, let winograd {
        let use: Bool
        switch Conv3x3Algorithm.current {
        case .im2col: use = false
        case .winograd: use = true
        case .auto: use = winogradPreferred(batch: batch, inChannels: inChannels, outChannels: outChannels, outH: outH, outW: outW)
        }
        if use {
            winogradConv3x3(WinogradInput(input, channels: inChannels, height: height, width: width), batch: batch,
                            filter: winograd, bias: bias, residual: residual, outChannels: outChannels,
                            padTop: padTop, padLeft: padLeft, padBottom: padBottom, padRight: padRight, output: output)
            return
        }
    }
    let kk = inChannels * kernelH * kernelW
    let spatial = outH * outW
    let inPlane = height * width
    let direct = kernelH == 1 && kernelW == 1 && strideH == 1 && strideW == 1
        && padTop == 0 && padLeft == 0 && padBottom == 0 && padRight == 0
    // Padded image geometry (only the rows/columns the windows can reach).
    let hp = max(height + padTop + padBottom, (outH - 1) * strideH + kernelH)
    let wp = max(width + padLeft + padRight, (outW - 1) * strideW + kernelW)
    let needsPadCopy = !direct && (padTop | padLeft | padBottom | padRight) != 0
    // Small feature maps (the U-Net's 16×16 and 8×8 levels at 512 px): images in groups, one
    // product per group, each image's pixels padded to whole 16-column panels. Image by image,
    // the weights (A) were widened from fp16 and streamed for a few hundred multiply-adds per
    // weight, and a 4×4 map (16 columns) could not fill the 32-column AVX-512 tile. The path and
    // an image's column positions depend on the map size only, not on the batch: an image gets
    // the same bits in any batch (a 2×2 map alone would run the 6x8 tail kernel, whose sum order
    // differs).
    let srcPlane = needsPadCopy ? hp * wp : inPlane
    let imageStride = inChannels * srcPlane
    let perImage = (spatial + gemmNR - 1) / gemmNR * gemmNR
    if perImage <= batchedConvMaxSpatial && imageStride < Int(Int32.max) {
        let group = max(1, min(batchedConvMaxColumns / perImage, batch, Int(Int32.max) / imageStride))
        let padAll = needsPadCopy ? scratchPool.take(group * imageStride) : nil
        defer { if let padAll { scratchPool.give(padAll) } }
        withScratch(outChannels * group * perImage) { tmp in
            var n0 = 0
            while n0 < batch {
                let g = min(group, batch - n0)
                var src = input + n0 * inChannels * inPlane
                if let padAll {
                    for i in 0..<g {
                        padImage(src + i * inChannels * inPlane, channels: inChannels, height: height, width: width,
                                 top: padTop, left: padLeft, hp: hp, wp: wp, into: padAll.pointer + i * imageStride)
                    }
                    src = UnsafePointer(padAll.pointer)
                }
                let packer = Im2colB(src: src, height: needsPadCopy ? hp : height, width: needsPadCopy ? wp : width,
                                     kernelH: kernelH, kernelW: kernelW, strideH: strideH, strideW: strideW, outW: outW,
                                     spatial: spatial, columnsPerImage: perImage, imageStride: imageStride)
                let cols = g * perImage
                gemmDispatch(wa, packer, m: outChannels, n: cols, k: kk, alpha: 1, beta: 0, c: tmp, ldc: cols,
                             epilogue: GemmEpilogue(rowBias: bias))
                // [outChannels, images × perImage] → [images, outChannels, spatial], plus the residual.
                let first = n0 * outChannels
                let io = UncheckedBox((UnsafePointer(tmp), SendablePointer(output), residual))
                parallelFor(g * outChannels, minChunk: max(1, 16384 / spatial)) { range in
                    let (tmp, out, residual) = io.value
                    for t in range {
                        let i = t / outChannels, co = t % outChannels
                        let from = tmp + co * cols + i * perImage
                        let dst = out.p + (first + t) * spatial
                        if let residual { add(from, residual + (first + t) * spatial, out: dst, count: spatial) }   // ≤ 256: inline
                        else { dst.update(from: from, count: spatial) }
                    }
                }
                n0 += g
            }
        }
        return
    }
    let padBuf = needsPadCopy ? scratchPool.take(inChannels * hp * wp) : nil
    defer { if let padBuf { scratchPool.give(padBuf) } }

    for nb in 0..<batch {
        let img = input + nb * inChannels * inPlane
        let dst = output + nb * outChannels * spatial
        let epi = GemmEpilogue(rowBias: bias, residual: residual.map { $0 + nb * outChannels * spatial },
                               residualStride: spatial)
        if direct {
            gemmDispatch(wa, DenseB(img, spatial, false), m: outChannels, n: spatial, k: kk,
                         alpha: 1, beta: 0, c: dst, ldc: spatial, epilogue: epi)
            continue
        }
        var src = img
        var srcH = height, srcW = width
        if let padBuf {
            padImage(img, channels: inChannels, height: height, width: width,
                     top: padTop, left: padLeft, hp: hp, wp: wp, into: padBuf.pointer)
            src = UnsafePointer(padBuf.pointer)
            srcH = hp; srcW = wp
        }
        let packer = Im2colB(src: src, height: srcH, width: srcW, kernelH: kernelH, kernelW: kernelW,
                             strideH: strideH, strideW: strideW, outW: outW, spatial: spatial, columnsPerImage: spatial,
                             imageStride: 0)
        gemmDispatch(wa, packer, m: outChannels, n: spatial, k: kk,
                     alpha: 1, beta: 0, c: dst, ldc: spatial, epilogue: epi)
    }
}

/// Feature maps of at most this many pixels (rounded up to 16) run as products over groups of
/// images, of at most `batchedConvMaxColumns` columns each.
let batchedConvMaxSpatial = 256
let batchedConvMaxColumns = 1024

/// Copies an image into a zero-bordered [channels, hp, wp] buffer (top/left offsets given).
func padImage(_ x: UnsafePointer<Float>, channels: Int, height: Int, width: Int,
              top: Int, left: Int, hp: Int, wp: Int, into out: UnsafeMutablePointer<Float>) {
    let o = SendablePointer(out)
    let xb = UncheckedBox(x)
    parallelFor(channels, minChunk: max(1, 65536 / max(1, hp * wp))) { range in
        let x = xb.value
        for c in range {
            let plane = o.p + c * hp * wp
            let src = x + c * height * width
            for y in 0..<hp {
                let row = plane + y * wp
                let sy = y - top
                if sy < 0 || sy >= height {
                    row.update(repeating: 0, count: wp)
                    continue
                }
                let l = min(max(left, 0), wp)
                row.update(repeating: 0, count: l)
                let n = min(width, wp - l)
                (row + l).update(from: src + sy * width, count: n)
                if l + n < wp { (row + l + n).update(repeating: 0, count: wp - l - n) }
            }
        }
    }
}

/// B operand of a convolution as GEMM: the virtual im2col matrix of (already padded) images,
///   cols[(ci·kh + ky)·kw + kx, n·columnsPerImage + oy·outW + ox] = src[n·imageStride + ci·plane + (oy·sh + ky)·width + ox·sw + kx],
/// packed block by block without materialising it; columns past an image's `spatial` pixels
/// (padding up to `columnsPerImage`) hold arbitrary values. Reads are in bounds by construction.
/// One image: columnsPerImage = spatial = outH·outW and any imageStride. Offsets are Int32.
struct Im2colB: GemmPackB {
    let src: UnsafePointer<Float>
    let height: Int, width: Int
    let kernelH: Int, kernelW: Int
    let strideH: Int, strideW: Int
    let outW: Int
    let spatial: Int
    let columnsPerImage: Int
    let imageStride: Int

    var copiesB: Bool { true }

    @inline(__always)
    func packB(_ p0: Int, _ kc: Int, _ j0: Int, _ nc: Int, _ dst: UnsafeMutablePointer<Float>) -> UnsafePointer<Float> {
        let panels = (nc + gemmNR - 1) / gemmNR
        let panelSize = gemmNR * kc
        let plane = height * width
        let khw = kernelH * kernelW
        // Source offset of every column's window origin; panels whose 16 columns are consecutive
        // in the source (stride 1, same output row) are copied with two vector loads.
        withUnsafeTemporaryAllocation(of: Int32.self, capacity: panels * gemmNR + panels) { tmp in
            let colOff = tmp.baseAddress!
            let contiguous = colOff + panels * gemmNR
            var image = j0 / columnsPerImage, pixel = j0 % columnsPerImage
            var oy = pixel / outW, ox = pixel % outW
            for j in 0..<nc {
                // Padding columns read the image's first window (in bounds; the result is dropped).
                colOff[j] = Int32(image * imageStride + (pixel < spatial ? oy * strideH * width + ox * strideW : 0))
                pixel += 1; ox += 1
                if ox == outW { ox = 0; oy += 1 }
                if pixel == columnsPerImage { pixel = 0; oy = 0; ox = 0; image += 1 }
            }
            for q in 0..<panels {
                let base = colOff[q * gemmNR]
                var ok: Int32 = (q + 1) * gemmNR <= nc ? 1 : 0
                if ok == 1 {
                    for l in 1..<gemmNR where colOff[q * gemmNR + l] != base + Int32(l) { ok = 0; break }
                }
                contiguous[q] = ok
            }
            var ci = p0 / khw, ky = (p0 % khw) / kernelW, kx = p0 % kernelW
            for p in 0..<kc {
                let s = src + ci * plane + ky * width + kx
                var d = dst + p * gemmNR
                for q in 0..<panels {
                    let jb = q * gemmNR
                    if contiguous[q] != 0 {
                        let sp = s + Int(colOff[jb])
                        st8(d, ld8(sp)); st8(d + 8, ld8(sp + 8))
                    } else {
                        let lanes = min(gemmNR, nc - jb)
                        for l in 0..<gemmNR { d[l] = l < lanes ? s[Int(colOff[jb + l])] : 0 }
                    }
                    d += panelSize
                }
                kx += 1
                if kx == kernelW {
                    kx = 0; ky += 1
                    if ky == kernelH { ky = 0; ci += 1 }
                }
            }
        }
        return UnsafePointer(dst)
    }
}

/// `conv2d` (3×3 or any kernel, pre-packed weight) applied to the nearest-neighbour resize of
/// `input` ([batch, inChannels, height, width]) to upHeight × upWidth, PyTorch's
/// `interpolate(mode: "nearest")` index rule (source = ⌊dst · in / out⌋ in float): diffusers'
/// Upsample2D. When the convolution runs as Winograd the resize happens while its input rows
/// are staged, so the resized image (4× the input for 2× upsampling) is never materialised;
/// otherwise it is built in a scratch buffer first.
public func conv2dUpsampledNearest(
    input: UnsafePointer<Float>, batch: Int, inChannels: Int, height: Int, width: Int,
    upHeight: Int, upWidth: Int,
    weight: PackedMatrix, bias: UnsafePointer<Float>?,
    kernelH: Int, kernelW: Int,
    padTop: Int, padLeft: Int, padBottom: Int, padRight: Int,
    output: UnsafeMutablePointer<Float>, residual: UnsafePointer<Float>? = nil
) {
    precondition(height > 0 && width > 0 && upHeight > 0 && upWidth > 0, "empty resize")
    let rowMap = nearestIndexMap(from: height, to: upHeight)
    let colMap = nearestIndexMap(from: width, to: upWidth)
    defer { rowMap.deallocate(); colMap.deallocate() }
    let outH = upHeight + padTop + padBottom - kernelH + 1
    let outW = upWidth + padLeft + padRight - kernelW + 1
    if kernelH == 3 && kernelW == 3 && outH > 0 && outW > 0 {
        let use: Bool
        switch Conv3x3Algorithm.current {
        case .im2col: use = false
        case .winograd: use = true
        case .auto: use = winogradPreferred(batch: batch, inChannels: inChannels, outChannels: weight.rows, outH: outH, outW: outW)
        }
        if use && batch > 0 {
            precondition(weight.role == .a && weight.cols == inChannels * 9,
                         "packed conv weight is \(weight.rows)×\(weight.cols), expected k = \(inChannels * 9)")
            winogradConv3x3(WinogradInput(input, channels: inChannels, srcH: height, srcW: width,
                                          height: upHeight, width: upWidth,
                                          rowMap: UnsafePointer(rowMap), colMap: UnsafePointer(colMap)),
                            batch: batch, filter: .packed(weight), bias: bias, residual: residual, outChannels: weight.rows,
                            padTop: padTop, padLeft: padLeft, padBottom: padBottom, padRight: padRight, output: output)
            return
        }
    }
    let planes = batch * inChannels
    let up = scratchPool.take(planes * upHeight * upWidth)
    defer { scratchPool.give(up) }
    let o = SendablePointer(up.pointer)
    let box = UncheckedBox((input, UnsafePointer(rowMap), UnsafePointer(colMap)))
    parallelFor(planes, minChunk: max(1, 8192 / max(1, upHeight * upWidth))) { r in
        let (x, rows, cols) = box.value
        for p in r {
            let src = x + p * height * width
            let dst = o.p + p * upHeight * upWidth
            for y in 0..<upHeight {
                let s = src + Int(rows[y]) * width, d = dst + y * upWidth
                for xx in 0..<upWidth { d[xx] = s[Int(cols[xx])] }
            }
        }
    }
    conv2d(input: up.pointer, batch: batch, inChannels: inChannels, height: upHeight, width: upWidth,
           weight: weight, bias: bias, kernelH: kernelH, kernelW: kernelW,
           padTop: padTop, padLeft: padLeft, padBottom: padBottom, padRight: padRight, output: output, residual: residual)
}

/// dst → src index of a nearest-neighbour resize from n to m: ⌊dst · (n / m)⌋ computed in
/// Float, clamped to n − 1 (exactly dst / 2 for m = 2n).
func nearestIndexMap(from n: Int, to m: Int) -> UnsafeMutablePointer<Int32> {
    let map = UnsafeMutablePointer<Int32>.allocate(capacity: max(1, m))
    let scale = Float(n) / Float(m)
    for i in 0..<m { map[i] = Int32(m == 2 * n ? i / 2 : min(Int(Float(i) * scale), n - 1)) }
    return map
}

/// GroupNorm (affine, as `groupNorm`) and optional SiLU applied to a convolution's input.
public struct InputGroupNorm: @unchecked Sendable {
    public var groups: Int
    public var eps: Float
    public var gamma: UnsafePointer<Float>
    public var beta: UnsafePointer<Float>
    public var silu: Bool

    public init(groups: Int, eps: Float, gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>, silu: Bool) {
        self.groups = groups; self.eps = eps; self.gamma = gamma; self.beta = beta; self.silu = silu
    }
}

/// `conv2d(groupNorm(input))` (pre-packed weight): ResnetBlock2D's norm → SiLU → conv. The
/// statistics take one pass over the input; on the Winograd path the normalisation (and SiLU)
/// is then applied while the input rows are staged, so the normalised tensor — as large as the
/// input — never exists. Otherwise it is built in a scratch buffer. Either way every value is
/// computed exactly as `groupNorm` computes it, so the result is the same bit for bit as
/// normalising first (zero padding is applied after the normalisation, as in PyTorch).
public func conv2d(
    input: UnsafePointer<Float>, batch: Int, inChannels: Int, height: Int, width: Int,
    normalizedBy norm: InputGroupNorm,
    weight: PackedMatrix, bias: UnsafePointer<Float>?,
    kernelH: Int, kernelW: Int,
    strideH: Int = 1, strideW: Int = 1,
    padTop: Int, padLeft: Int, padBottom: Int, padRight: Int,
    output: UnsafeMutablePointer<Float>, residual: UnsafePointer<Float>? = nil
) {
    precondition(norm.groups > 0 && inChannels % norm.groups == 0, "\(inChannels) channels in \(norm.groups) groups")
    let planes = batch * inChannels, spatial = height * width
    guard planes > 0, spatial > 0 else {
        conv2d(input: input, batch: batch, inChannels: inChannels, height: height, width: width, weight: weight, bias: bias,
               kernelH: kernelH, kernelW: kernelW, strideH: strideH, strideW: strideW,
               padTop: padTop, padLeft: padLeft, padBottom: padBottom, padRight: padRight, output: output, residual: residual)
        return
    }
    let affine = UnsafeMutablePointer<Float>.allocate(capacity: 4 * planes)
    defer { affine.deallocate() }
    groupNormAffine(x: input, batch: batch, channels: inChannels, spatial: spatial, groups: norm.groups, eps: norm.eps,
                    gamma: norm.gamma, beta: norm.beta, into: affine)
    let outH = height + padTop + padBottom - kernelH + 1
    let outW = width + padLeft + padRight - kernelW + 1
    if kernelH == 3 && kernelW == 3 && strideH == 1 && strideW == 1 && outH > 0 && outW > 0 {
        let use: Bool
        switch Conv3x3Algorithm.current {
        case .im2col: use = false
        case .winograd: use = true
        case .auto:
            // Also Winograd for few output channels when the input is large (the VAE's conv_out,
            // 128 → 3 at 512×512): im2col would need a normalised and a padded copy of the
            // input (270 MB there), Winograd a bounded buffer, for a 1.5× slower convolution
            // that is 0.1 % of the decoder's work.
            use = winogradPreferred(batch: batch, inChannels: inChannels, outChannels: weight.rows, outH: outH, outW: outW)
                || (inChannels * spatial >= 1 << 22 && ((outH + 3) / 4) * ((outW + 3) / 4) >= 16)
        }
        if use {
            precondition(weight.role == .a && weight.cols == inChannels * 9,
                         "packed conv weight is \(weight.rows)×\(weight.cols), expected k = \(inChannels * 9)")
            var x = WinogradInput(input, channels: inChannels, height: height, width: width)
            x.norm = UnsafePointer(affine)
            x.silu = norm.silu
            winogradConv3x3(x, batch: batch, filter: .packed(weight), bias: bias, residual: residual, outChannels: weight.rows,
                            padTop: padTop, padLeft: padLeft, padBottom: padBottom, padRight: padRight, output: output)
            return
        }
    }
    let normalized = scratchPool.take(planes * spatial)
    defer { scratchPool.give(normalized) }
    let o = SendablePointer(normalized.pointer)
    let box = UncheckedBox((input, UnsafePointer(affine)))
    let silu = norm.silu
    parallelFor(planes, minChunk: max(1, 16384 / spatial)) { r in
        let (x, a) = box.value
        for p in r {
            let c = a + 4 * p
            normalizeChannel(x + p * spatial, o.p + p * spatial, spatial, c[0], c[1], c[2], c[3], silu)
        }
    }
    conv2d(input: normalized.pointer, batch: batch, inChannels: inChannels, height: height, width: width,
           weight: weight, bias: bias, kernelH: kernelH, kernelW: kernelW, strideH: strideH, strideW: strideW,
           padTop: padTop, padLeft: padLeft, padBottom: padBottom, padRight: padRight, output: output, residual: residual)
}
