import Foundation
import KernelsAVX512

// Winograd F(4×4, 3×3) convolution for 3×3 stride-1 convolutions.
//
// Contract (what `winogradConv3x3` computes): the same cross-correlation as `conv2d` with a 3×3
// kernel and stride 1, NCHW, any zero padding (padTop/padLeft place the input, outH/outW are
// the usual (H + pads − 2)), optional per-channel bias and an optional residual shaped like the
// output, added after the bias. Any H, W ≥ 1 (tiles past the image edge are zero-padded on the
// input side and clipped on the output side), any batch and channel counts. The input may be
// read through a nearest-neighbour upsampling (see `WinogradInput`), so Upsample2D never
// materialises the 4× larger tensor on this path.
//
// Algorithm: the output is cut into 4×4 tiles; tile t reads a 6×6 input patch d (stride 4,
// overlap 2). Per tile, Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A: 36 element products instead of 144
// multiply-adds, so after the transforms the work is 36 independent GEMMs
//   M[ξ] (outC × tiles) = U[ξ] (outC × inC) · V[ξ] (inC × tiles),  ξ = 0..<36,
// 2.25 multiply-adds per output value and input channel instead of 9: 4× fewer than direct
// convolution. Why F(4,3) and not F(2,3) or F(6,3): F(2,3) saves only 2.25×; F(6,3) saves
// 5.06× but needs 8 interpolation points (0, ±1, ±2, ±1/2, ∞) whose transform entries span
// about three orders of magnitude, which costs fp32 several bits. F(4,3) uses the points
// 0, ±1, ±2 and ∞ (Lavin & Gray 2015); its entries are at most 8 in magnitude, and in fp32 the
// result stays within about 1e-6 of the magnitude Σ|w·x| of the direct sum (measured in
// WinogradTests), well inside the parity tolerances against PyTorch.
//
// Execution, per block of tiles (the tile count is bounded so V stays a few MB):
//   1. input transform, parallel over input channels: 6 rows of the (padded, optionally
//      upsampled) image are staged in a row buffer, 8 horizontally adjacent tiles are
//      transformed at once (SIMD lanes = tiles) and stored straight into the GEMM's packed B
//      panel layout, so V[ξ] needs no packing;
//   2. per chunk of output channels (claimed by whichever worker is free when there is one tile
//      block; a fixed range per worker otherwise, so its U can serve every block): the filter
//      transform writes U for the chunk in the packed A panel layout, the 36 GEMMs run on the existing
//      register-tiled micro-kernel (single-threaded inside the worker, so the 36 products are
//      one parallel batch, not 36 dispatches), and the output transform adds bias and residual
//      and writes the 4×4 tiles (8 tiles per SIMD vector, interleaved into whole output rows).
//
// Filters are transformed on every call, not cached: a cached U would be 36/9 = 4× the layer's
// weights in fp32 (SD 1.5's U-Net would grow by ~3.4 GB, against a 2.5 GB budget for the whole
// render), and fp16 storage of U would add ~5e-4 relative error to every layer. The transform
// costs about 5 cycles per (outC, inC) pair against 36·tiles/16 cycles of GEMM per pair, i.e.
// ≤ 3 % whenever a block holds ≥ 128 tiles, and it is redone per tile block only when a worker's
// U does not fit its buffer (otherwise it is computed once per call).

/// Which algorithm 3×3 stride-1 convolutions use. `auto` picks Winograd when the image has
/// enough tiles and channels (see `winogradPreferred`); the environment variable
/// `DARKROOM_CONV3X3=im2col|winograd|auto` sets the initial value (tests pin both paths).
public enum Conv3x3Algorithm: String, Sendable {
    case auto, im2col, winograd

    nonisolated(unsafe) public static var current: Conv3x3Algorithm = {
        guard let s = ProcessInfo.processInfo.environment["DARKROOM_CONV3X3"], !s.isEmpty else { return .auto }
        if let v = Conv3x3Algorithm(rawValue: s.lowercased()) { return v }
        FileHandle.standardError.write("DARKROOM_CONV3X3=\(s) is not one of auto, im2col, winograd; using auto\n".data(using: .utf8)!)
        return .auto
    }()

    /// The path `auto` takes for a 3×3 stride-1 convolution of this shape.
    public static func autoChoice(batch: Int, inChannels: Int, outChannels: Int, outH: Int, outW: Int) -> Conv3x3Algorithm {
        winogradPreferred(batch: batch, inChannels: inChannels, outChannels: outChannels, outH: outH, outW: outW)
            ? .winograd : .im2col
    }
}

/// Whether `auto` runs a 3×3 stride-1 convolution with Winograd (measured with KernelBench's
/// `winograd` group, one thread): below 16 tiles the 16-wide GEMM panels are mostly padding and
/// the per-call filter transform is not amortised (1280 channels at 8×8, batch 2: 1.4–1.9×
/// slower; at 16 tiles 0.73× the im2col time); below 32 output channels the input transform,
/// paid once per input channel and tile, costs more than the multiply-adds it saves (VAE
/// conv_out 128→3: 1.1–1.7× slower). Few input channels are fine (conv_in 4→320: 0.5×).
/// The tile count is per image, not per batch, so the choice (and with it every output bit)
/// never depends on how many images share a call: a batch renders exactly the images its
/// members render alone.
func winogradPreferred(batch: Int, inChannels: Int, outChannels: Int, outH: Int, outW: Int) -> Bool {
    let tilesPerImage = ((outH + 3) / 4) * ((outW + 3) / 4)
    return tilesPerImage >= 16 && outChannels >= 32 && inChannels >= 1
}

/// Where a convolution's 3×3 weights come from: [outC, inC·9] rows with a row stride, or the
/// layer's packed (possibly Float16) matrix.
enum WinogradFilter {
    case dense(UnsafePointer<Float>, Int)
    case packed(PackedMatrix)
}

/// The convolution's input as stored, plus an optional nearest-neighbour resize applied on read:
/// logical pixel (y, x) of the height × width image is stored pixel (rowMap[y], colMap[x]) of a
/// srcH × srcW plane (PyTorch's `interpolate(mode: "nearest")` index rule).
struct WinogradInput {
    let base: UnsafePointer<Float>
    let channels: Int
    let height: Int, width: Int
    let srcH: Int, srcW: Int
    let rowMap: UnsafePointer<Int32>?
    let colMap: UnsafePointer<Int32>?
    /// Optional GroupNorm (+ SiLU) applied to every value read (padding stays 0): per plane
    /// (m, mLo, scale, shift), value = ((v − m) − mLo)·scale + shift, bit for bit groupNorm's.
    var norm: UnsafePointer<Float>? = nil
    var silu = false

    init(_ base: UnsafePointer<Float>, channels: Int, height: Int, width: Int) {
        self.base = base; self.channels = channels
        self.height = height; self.width = width
        srcH = height; srcW = width
        rowMap = nil; colMap = nil
    }

    init(_ base: UnsafePointer<Float>, channels: Int, srcH: Int, srcW: Int, height: Int, width: Int,
         rowMap: UnsafePointer<Int32>, colMap: UnsafePointer<Int32>) {
        self.base = base; self.channels = channels
        self.height = height; self.width = width
        self.srcH = srcH; self.srcW = srcW
        self.rowMap = rowMap; self.colMap = colMap
    }

    /// Logical pixel (y, x) of plane `plane` (image n, channel c → n·channels + c); in bounds.
    @inline(__always) func at(_ plane: Int, _ y: Int, _ x: Int) -> Float {
        let sy = rowMap.map { Int($0[y]) } ?? y
        let sx = colMap.map { Int($0[x]) } ?? x
        let v = base[(plane * srcH + sy) * srcW + sx]
        return norm == nil ? v : normalized(F8(repeating: v), plane)[0]
    }

    /// The GroupNorm (+ SiLU) of 8 values of `plane` (norm must be set).
    @inline(__always) func normalized(_ v: F8, _ plane: Int) -> F8 {
        let a = norm! + 4 * plane
        let y = fma8((v - F8(repeating: a[0])) - F8(repeating: a[1]), F8(repeating: a[2]), F8(repeating: a[3]))
        return silu ? vsilu(y) : y
    }

    /// Writes logical row y of `plane` into dst[0..<width].
    func copyRow(_ plane: Int, _ y: Int, into dst: UnsafeMutablePointer<Float>) {
        copyRawRow(plane, y, into: dst)
        if norm != nil { mapF8(UnsafePointer(dst), dst, width) { normalized($0, plane) } }
    }

    @inline(__always) func copyRawRow(_ plane: Int, _ y: Int, into dst: UnsafeMutablePointer<Float>) {
        let sy = rowMap.map { Int($0[y]) } ?? y
        let src = base + (plane * srcH + sy) * srcW
        guard let colMap else {
            dst.update(from: src, count: width)
            return
        }
        if width == 2 * srcW {
            var x = 0
            while x + 8 <= srcW {
                let v = ld8(src + x)
                st8(dst + 2 * x, F8(v[0], v[0], v[1], v[1], v[2], v[2], v[3], v[3]))
                st8(dst + 2 * x + 8, F8(v[4], v[4], v[5], v[5], v[6], v[6], v[7], v[7]))
                x += 8
            }
            while x < srcW { dst[2 * x] = src[x]; dst[2 * x + 1] = src[x]; x += 1 }
        } else {
            for x in 0..<width { dst[x] = src[Int(colMap[x])] }
        }
    }
}

/// Buffer sizes (in floats) that bound Winograd's working memory; DARKROOM_WINOGRAD_V_KB,
/// _U_KB, _M_KB and _TILES override them for tuning. With the defaults every SD 1.5 VAE layer computes
/// its U once per call (≤ 36·512·512 floats = 38 MB), and the U-Net layers at 512 px whose U
/// is larger (640 and 1280 channels) have few enough tiles for V to hold all of them, so no
/// transform is ever repeated there either.
struct WinogradBlocking: Sendable {
    /// Transformed input V of one tile block (shared by all workers).
    var vFloats: Int
    /// Transformed filters U, all workers together (each holds its share).
    var uFloats: Int
    /// GEMM results M of one row chunk, per worker.
    var mFloats: Int
    /// U budget when a block has at most `fewTiles` tiles (16×16 latents and smaller). Each U
    /// value then feeds so few multiply-adds that writing a U of tens of MB to L3 and reading it
    /// back costs more than the GEMM (SD 1.5 at 512 px: filter transform 1.0 s vs GEMM 0.6 s of
    /// CPU time in the 1280-channel layers); a chunk that stays in L2 is transformed once, used
    /// at once, and V (a few MB with so few tiles) is cheap to stream again per chunk. With more
    /// tiles the larger U wins: KernelBench winograd, per core-second, 2 MB vs 40 MB of U:
    /// 1280→1280 at 16×16 ×2 93-98 vs 74-82 GFLOP, ×1 57-64 vs 28-32; 640→640 at 32×32 ×2
    /// 93-110 vs 145-151.
    var uFloatsFewTiles: Int = 2 * 1024 * 256
    var fewTiles: Int = 64
    /// Most tiles in a block: more make the M rows per chunk (bounded by mFloats) too few for
    /// the GEMM to reuse its V panels.
    var maxTiles: Int = 512
    /// With a single tile block, output channels go in chunks to whichever worker is free
    /// (`parallelGuided`); false keeps one fixed range per worker.
    var claimsChunks = true

    static func fromEnvironment() -> WinogradBlocking {
        func env(_ name: String, _ defKB: Int) -> Int {
            if let s = ProcessInfo.processInfo.environment[name], let v = Int(s), v > 0 { return v * 256 }
            return defKB * 256
        }
        return WinogradBlocking(vFloats: env("DARKROOM_WINOGRAD_V_KB", 40 * 1024),
                                uFloats: env("DARKROOM_WINOGRAD_U_KB", 40 * 1024),
                                mFloats: env("DARKROOM_WINOGRAD_M_KB", 8 * 1024),
                                uFloatsFewTiles: env("DARKROOM_WINOGRAD_U_FEW_KB", 2 * 1024),
                                maxTiles: max(16, Int(ProcessInfo.processInfo.environment["DARKROOM_WINOGRAD_TILES"] ?? "") ?? 512),
                                claimsChunks: ProcessInfo.processInfo.environment["DARKROOM_WINOGRAD_CHUNKS"] != "0")
    }
}

/// Mutable so tests can force several tile blocks and channel chunks on small shapes.
nonisolated(unsafe) var winogradBlocking = WinogradBlocking.fromEnvironment()

// MARK: - Transforms (SIMD lanes are independent tiles or filter rows)

/// Bᵀ·d for one 6-vector (Lavin's F(4,3) input transform).
@inline(__always)
func winogradInputRow(_ d0: F8, _ d1: F8, _ d2: F8, _ d3: F8, _ d4: F8, _ d5: F8)
    -> (F8, F8, F8, F8, F8, F8) {
    let four = F8(repeating: 4), five = F8(repeating: -5), two = F8(repeating: 2)
    let o0 = fma8(four, d0, fma8(five, d2, d4))
    let o5 = fma8(four, d1, fma8(five, d3, d5))
    let s12 = d1 + d2, s34 = d3 + d4
    let o1 = fma8(F8(repeating: -4), s12, s34)
    let o2 = fma8(four, d1 - d2, d4 - d3)
    let e = d4 - d2, f = d3 - d1
    let o3 = fma8(two, f, e)
    let o4 = fma8(-two, f, e)
    return (o0, o1, o2, o3, o4, o5)
}

/// Aᵀ·m for one 6-vector (output transform).
@inline(__always)
func winogradOutputRow(_ m0: F8, _ m1: F8, _ m2: F8, _ m3: F8, _ m4: F8, _ m5: F8) -> (F8, F8, F8, F8) {
    let a = m1 + m2, b = m1 - m2, c = m3 + m4, d = m3 - m4
    return (m0 + a + c, fma8(F8(repeating: 2), d, b), fma8(F8(repeating: 4), c, a),
            fma8(F8(repeating: 8), d, b + m5))
}

/// G·g for one 3-vector (filter transform).
@inline(__always)
func winogradFilterRow(_ g0: F8, _ g1: F8, _ g2: F8) -> (F8, F8, F8, F8, F8, F8) {
    let s = g0 + g2
    let p = fma8(F8(repeating: 1 / 24), g0, g2 * (1 / 6))
    let q = g1 * (1 / 12)
    return (g0 * 0.25, (s + g1) * (-1 / 6), (s - g1) * (-1 / 6), p + q, p - q, g2)
}

// MARK: - GEMM operands over the pre-packed buffers

/// A operand: U[ξ] already in MR-row panels (k blocked like the GEMM, rows padded to MR).
struct WinogradA: GemmPackA {
    let base: UnsafePointer<Float>
    let padded: Int
    /// First row used (a multiple of MR): the GEMM's row 0 is U's row `rowOffset`.
    let rowOffset: Int
    @inline(__always)
    func packA(_ i0: Int, _ mc: Int, _ p0: Int, _ kc: Int, _ dst: UnsafeMutablePointer<Float>) -> APanels {
        .packed(base + p0 * padded + (rowOffset + i0) * kc, kc: kc)
    }
}

// MARK: - Driver

/// Everything one call needs, shared by the workers (read-only except the disjoint outputs).
final class WinogradPlan: @unchecked Sendable {
    let x: WinogradInput
    let filter: WinogradFilter
    let bias: UnsafePointer<Float>?
    let residual: UnsafePointer<Float>?
    let output: UnsafeMutablePointer<Float>
    let batch: Int, cin: Int, cout: Int
    let padTop: Int, padLeft: Int
    let outH: Int, outW: Int
    let tilesH: Int, tilesW: Int, tilesPerImage: Int, totalTiles: Int
    /// k blocking of the 36 GEMMs (same rule as the GEMM driver).
    let kcV: Int
    /// Tiles per block (multiple of NR) and the stride between the 36 V matrices.
    let tileBlock: Int, vStride: Int
    /// Row buffer width: 4·tilesW plus room for the 8-tile vector loads.
    let rowWidth: Int
    /// M row stride (tileBlock + NR keeps rows off 4 KB aliasing).
    let ldm: Int
    /// Workers split the output channels; each transforms its filters in chunks of uRows rows
    /// (its whole range when that fits the U budget: then once per call) and runs the GEMMs and
    /// the output transform in sub-chunks of mRows rows.
    let workers: Int
    let uRows: Int, mRows: Int
    let uStride: Int, mStride: Int
    /// With a single tile block and several workers, output channels go out in chunks (at most
    /// uRows) to whichever worker is free, instead of one fixed range per worker.
    let dynamicChunks: Bool

    init(x: WinogradInput, batch: Int, filter: WinogradFilter, bias: UnsafePointer<Float>?,
         residual: UnsafePointer<Float>?, outChannels: Int, padTop: Int, padLeft: Int,
         outH: Int, outW: Int, output: UnsafeMutablePointer<Float>, blocking: WinogradBlocking) {
        self.x = x; self.filter = filter; self.bias = bias; self.residual = residual; self.output = output
        self.batch = batch; cin = x.channels; cout = outChannels
        self.padTop = padTop; self.padLeft = padLeft; self.outH = outH; self.outW = outW
        tilesH = (outH + 3) / 4; tilesW = (outW + 3) / 4
        tilesPerImage = tilesH * tilesW
        totalTiles = batch * tilesPerImage
        kcV = max(1, kBlockSize(max(cin, 1)))
        let maxTiles = max(gemmNR, min(blocking.maxTiles, blocking.vFloats / (36 * max(cin, 1))) / gemmNR * gemmNR)
        let blocks = (totalTiles + maxTiles - 1) / maxTiles
        let perBlock = (totalTiles + blocks - 1) / blocks
        tileBlock = (perBlock + gemmNR - 1) / gemmNR * gemmNR
        vStride = skewedStride(cin * tileBlock)
        rowWidth = (4 * tilesW + 48 + 31) / 32 * 32
        ldm = tileBlock + gemmNR
        // Output channels go to workers, U chunks and M chunks in pairs of 6-row panels, so the
        // GEMM runs the 12x32 AVX-512 tile on all rows but a chunk's last (an odd panel count per
        // worker, e.g. 27 of 320 channels' 54, ended every chunk in a half-speed 6-row tile).
        let pairs = (cout + 2 * gemmMR - 1) / (2 * gemmMR)
        workers = max(1, min(Threads.count, pairs))
        let maxPairsPerWorker = (pairs + workers - 1) / workers
        func balanced(_ total: Int, _ maxPer: Int) -> Int {
            let chunks = (total + maxPer - 1) / maxPer
            return (total + chunks - 1) / chunks
        }
        let uFloats = tileBlock <= blocking.fewTiles ? min(blocking.uFloats, blocking.uFloatsFewTiles) : blocking.uFloats
        let uPairs = balanced(maxPairsPerWorker, max(1, uFloats / workers / (36 * max(cin, 1) * 2 * gemmMR)))
        let mPairs = balanced(uPairs, max(1, blocking.mFloats / (36 * ldm * 2 * gemmMR)))
        uRows = uPairs * 2 * gemmMR
        mRows = mPairs * 2 * gemmMR
        uStride = skewedStride(uRows * cin)
        mStride = skewedStride(mRows * ldm)
        dynamicChunks = workers > 1 && totalTiles <= tileBlock && blocking.claimsChunks
    }

    /// Output rows of worker w (split in pairs of MR-row panels).
    func rows(of w: Int) -> Range<Int> {
        let unit = 2 * gemmMR
        let pairs = (cout + unit - 1) / unit
        let lo = pairs * w / workers * unit, hi = min(cout, pairs * (w + 1) / workers * unit)
        return lo..<max(lo, hi)
    }

    /// Image, tile row and tile column of global tile index t.
    @inline(__always) func locate(_ t: Int) -> (n: Int, ty: Int, tx: Int) {
        let n = t / tilesPerImage, r = t - n * tilesPerImage
        let ty = r / tilesW
        return (n, ty, r - ty * tilesW)
    }

    // MARK: Input transform

    /// V for input channels `channels` of the tiles [start, start + count) (count ≤ tileBlock;
    /// columns past count up to the panel end are filled too, with the tiles that follow or zeros).
    func inputTransform(channels: Range<Int>, start: Int, count: Int, v: UnsafeMutablePointer<Float>) {
        let rowBuf = scratchPool.take(12 * rowWidth + 36 * 8 * 2 + 64)
        defer { scratchPool.give(rowBuf) }
        let rb = rowBuf.pointer                  // 6 padded rows, then the same rows split by phase
        let tmp = rb + 12 * rowWidth             // 36 × 8 lanes: staged patch (slow path)
        // Whole 16-tile panels, so the GEMM never reads unset columns.
        let groups = (count + gemmNR - 1) / gemmNR * 2
        // Groups of 8 tiles inside one tile row are transformed from staged rows, a run of them
        // per channel: a channel's stores then touch only that run's panels (36 matrices × a few
        // pages), not the whole block's, which keeps the TLB working set small.
        let wide = gemmUsesAVX512
        var g = 0
        while g < groups {
            let t0 = start + g * 8
            let (n, ty, tx) = locate(t0)
            if t0 < totalTiles && tx + 8 <= tilesW {
                let run = min(groups - g, (tilesW - tx) / 8)
                for ci in channels {
                    stageRows(plane: n * cin + ci, ty: ty, into: rb)
                    var k = 0
                    while k < run {
                        // Phase c of staged row r holds padded columns 4j + c: lane l of
                        // d(r, c) is column 4·(tx + l) + c, so every load is contiguous.
                        let base = UnsafePointer(rb + 6 * rowWidth + tx + 8 * k)
                        let q = rowWidth / 4
                        if wide, (g + k) & 1 == 0, k + 1 < run {
                            // Both halves of a 16-tile panel at once (same bits).
                            avx512WinogradInput16(base, rowStride: rowWidth, phaseStride: q,
                                                  vPanel(ci: ci, group: g + k, v: v), vStride: vStride)
                            k += 2
                            continue
                        }
                        transformPatch({ r, c in ld8(base + r * rowWidth + (c & 3) * q + (c >> 2)) },
                                       ci: ci, group: g + k, v: v)
                        k += 1
                    }
                }
                g += run
                continue
            }
            // Tiles that wrap to the next tile row or image, or lie past the last tile.
            for ci in channels {
                for l in 0..<8 {
                    let t = t0 + l
                    if t >= totalTiles {
                        for e in 0..<36 { tmp[e * 8 + l] = 0 }
                        continue
                    }
                    let (n, ty, tx) = locate(t)
                    let plane = n * cin + ci
                    for r in 0..<6 {
                        let y = 4 * ty - padTop + r
                        for c in 0..<6 {
                            let xx = 4 * tx - padLeft + c
                            let inside = y >= 0 && y < x.height && xx >= 0 && xx < x.width
                            tmp[(r * 6 + c) * 8 + l] = inside ? x.at(plane, y, xx) : 0
                        }
                    }
                }
                transformPatch({ r, c in ld8(tmp + (r * 6 + c) * 8) }, ci: ci, group: g, v: v)
            }
            g += 1
        }
    }

    /// Where channel ci of 8-tile group g starts in V[0] (packed B layout: 16-tile panels per k block).
    @inline(__always)
    func vPanel(ci: Int, group g: Int, v: UnsafeMutablePointer<Float>) -> UnsafeMutablePointer<Float> {
        let kb = ci / kcV, p0 = kb * kcV, kc = min(kcV, cin - p0)
        return v + p0 * tileBlock + (ci - p0) * gemmNR + (g >> 1) * gemmNR * kc + (g & 1) * 8
    }

    /// V = Bᵀ·d·B for the 8 tiles of group g (lane = tile; d(r, c) loads row r, column c of
    /// their 6×6 patches), stored for channel ci in the packed B layout of the 36 matrices.
    /// Computed column by column of d·B straight from the loads: staging d·B in memory and
    /// reading it back lost to failed store-to-load forwarding whenever LLVM split a store.
    @inline(__always)
    func transformPatch(_ d: (Int, Int) -> F8, ci: Int, group g: Int, v: UnsafeMutablePointer<Float>) {
        let dst = vPanel(ci: ci, group: g, v: v)
        @inline(__always) func put(_ j: Int, _ w0: F8, _ w1: F8, _ w2: F8, _ w3: F8, _ w4: F8, _ w5: F8) {
            let o = winogradInputRow(w0, w1, w2, w3, w4, w5)
            st8(dst + j * vStride, o.0)
            st8(dst + (6 + j) * vStride, o.1)
            st8(dst + (12 + j) * vStride, o.2)
            st8(dst + (18 + j) * vStride, o.3)
            st8(dst + (24 + j) * vStride, o.4)
            st8(dst + (30 + j) * vStride, o.5)
        }
        let four = F8(repeating: 4), minusFive = F8(repeating: -5), two = F8(repeating: 2)
        // Column 0 of d·B: 4·d0 − 5·d2 + d4.
        @inline(__always) func c0(_ r: Int) -> F8 { fma8(four, d(r, 0), fma8(minusFive, d(r, 2), d(r, 4))) }
        put(0, c0(0), c0(1), c0(2), c0(3), c0(4), c0(5))
        // Columns 1 and 2: −4·(d1 + d2) + (d3 + d4) and 4·(d1 − d2) + (d4 − d3).
        @inline(__always) func c12(_ r: Int) -> (F8, F8) {
            let d1 = d(r, 1), d2 = d(r, 2), d3 = d(r, 3), d4 = d(r, 4)
            return (fma8(-four, d1 + d2, d3 + d4), fma8(four, d1 - d2, d4 - d3))
        }
        do {
            let a0 = c12(0), a1 = c12(1), a2 = c12(2), a3 = c12(3), a4 = c12(4), a5 = c12(5)
            put(1, a0.0, a1.0, a2.0, a3.0, a4.0, a5.0)
            put(2, a0.1, a1.1, a2.1, a3.1, a4.1, a5.1)
        }
        // Columns 3 and 4: ±2·(d3 − d1) + (d4 − d2).
        @inline(__always) func c34(_ r: Int) -> (F8, F8) {
            let d1 = d(r, 1), d2 = d(r, 2), d3 = d(r, 3), d4 = d(r, 4)
            let e = d4 - d2, f = d3 - d1
            return (fma8(two, f, e), fma8(-two, f, e))
        }
        do {
            let a0 = c34(0), a1 = c34(1), a2 = c34(2), a3 = c34(3), a4 = c34(4), a5 = c34(5)
            put(3, a0.0, a1.0, a2.0, a3.0, a4.0, a5.0)
            put(4, a0.1, a1.1, a2.1, a3.1, a4.1, a5.1)
        }
        // Column 5: 4·d1 − 5·d3 + d5.
        @inline(__always) func c5(_ r: Int) -> F8 { fma8(four, d(r, 1), fma8(minusFive, d(r, 3), d(r, 5))) }
        put(5, c5(0), c5(1), c5(2), c5(3), c5(4), c5(5))
    }

    /// Copies the 6 input rows of tile row ty (zero outside the image) into the row buffer,
    /// column x of the image at buffer column x + padLeft, then splits each row by column phase:
    /// rb[6·rowWidth + r·rowWidth + c·(rowWidth/4) + j] = row r, padded column 4j + c. (Gathering
    /// every 4th column with SIMD lane inserts made LLVM scalarise the whole transform; this
    /// loop is a plain interleaved access that the loop vectoriser turns into shuffles.) The
    /// rows are built whole first so GroupNorm+SiLU runs 8 pixels per vector everywhere: reading
    /// the image straight into the phases left the edge columns to a scalar path, which at
    /// 16×16 or 32×32 was most of the row and cost a full vector SiLU per pixel.
    func stageRows(plane: Int, ty: Int, into rb: UnsafeMutablePointer<Float>) {
        let q = rowWidth / 4
        stagePaddedRows(plane: plane, ty: ty, into: rb)
        for r in 0..<6 {
            let src = UnsafePointer(rb + r * rowWidth)
            let p0 = rb + 6 * rowWidth + r * rowWidth
            let p1 = p0 + q, p2 = p0 + 2 * q, p3 = p0 + 3 * q
            for j in 0..<q {
                p0[j] = src[4 * j]; p1[j] = src[4 * j + 1]; p2[j] = src[4 * j + 2]; p3[j] = src[4 * j + 3]
            }
        }
    }

    /// The 6 input rows of tile row ty, zero-padded: rb[r·rowWidth + padLeft + x] = logical pixel
    /// x (resized and normalised as `x` says), zeros outside the image.
    func stagePaddedRows(plane: Int, ty: Int, into rb: UnsafeMutablePointer<Float>) {
        for r in 0..<6 {
            let row = rb + r * rowWidth
            let y = 4 * ty - padTop + r
            if y < 0 || y >= x.height {
                row.update(repeating: 0, count: rowWidth)
                continue
            }
            let l = min(padLeft, rowWidth)
            row.update(repeating: 0, count: l)
            if x.width <= rowWidth - l {
                x.copyRow(plane, y, into: row + l)
                (row + l + x.width).update(repeating: 0, count: rowWidth - l - x.width)
            } else {
                // Only possible with huge right padding cut off by the output width: copy a prefix.
                for xx in 0..<(rowWidth - l) { row[l + xx] = x.at(plane, y, xx) }
            }
        }
    }

    // MARK: Filter transform

    /// U for output channels [co0, co0 + rows) into `u` (36 matrices, stride uStride, panels of
    /// MR rows with the k blocking kcV).
    func filterTransform(co0: Int, rows: Int, u: UnsafeMutablePointer<Float>) {
        let padded = (rows + gemmMR - 1) / gemmMR * gemmMR
        // Float16 weights: room for one panel's k block widened (+ slack for the last 8-wide load).
        let widenedCount: Int
        if case let .packed(m) = filter, m.f32 == nil { widenedCount = gemmMR * m.kc + 8 } else { widenedCount = 0 }
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 64 + 18 * 8 + widenedCount) { buf in
            let taps = buf.baseAddress!          // slow path: taps[t·6 + i] (+ zero tail)
            let tg = taps + 64                   // G·g rows: tg[(i·3 + b)·8]
            let widened = tg + 18 * 8            // the panel's current k block, as Float
            taps.update(repeating: 0, count: 64)
            var q = 0
            while q < padded {
                let r0 = co0 + q
                let mr = min(gemmMR, co0 + rows - r0)
                var widenedBlock = -1
                for ci in 0..<cin {
                    // Lanes 0..<6 are the panel's rows; lanes 6 and 7 hold the next tap (ignored).
                    let g = tapVectors(row0: r0, rows: mr, ci: ci, scratch: taps,
                                       widened: widened, widenedBlock: &widenedBlock)
                    // Columns of g: t = G·g (6 × 3).
                    do {
                        let o = winogradFilterRow(g.0, g.3, g.6)
                        st8(tg, o.0); st8(tg + 24, o.1); st8(tg + 48, o.2)
                        st8(tg + 72, o.3); st8(tg + 96, o.4); st8(tg + 120, o.5)
                    }
                    do {
                        let o = winogradFilterRow(g.1, g.4, g.7)
                        st8(tg + 8, o.0); st8(tg + 32, o.1); st8(tg + 56, o.2)
                        st8(tg + 80, o.3); st8(tg + 104, o.4); st8(tg + 128, o.5)
                    }
                    do {
                        let o = winogradFilterRow(g.2, g.5, g.8)
                        st8(tg + 16, o.0); st8(tg + 40, o.1); st8(tg + 64, o.2)
                        st8(tg + 88, o.3); st8(tg + 112, o.4); st8(tg + 136, o.5)
                    }
                    let kb = ci / kcV, p0 = kb * kcV, kc = min(kcV, cin - p0)
                    let dst = u + p0 * padded + q * kc + (ci - p0) * gemmMR
                    // Rows of t: U[i][j] = (t·Gᵀ)[i][j].
                    for i in 0..<6 {
                        let o = winogradFilterRow(ld8(tg + i * 24), ld8(tg + i * 24 + 8), ld8(tg + i * 24 + 16))
                        store6(dst + (i * 6) * uStride, o.0)
                        store6(dst + (i * 6 + 1) * uStride, o.1)
                        store6(dst + (i * 6 + 2) * uStride, o.2)
                        store6(dst + (i * 6 + 3) * uStride, o.3)
                        store6(dst + (i * 6 + 4) * uStride, o.4)
                        store6(dst + (i * 6 + 5) * uStride, o.5)
                    }
                }
                q += gemmMR
            }
        }
    }

    @inline(__always) func store6(_ p: UnsafeMutablePointer<Float>, _ v: F8) {
        UnsafeMutableRawPointer(p).storeBytes(of: v.lowHalf, as: SIMD4<Float>.self)
        UnsafeMutableRawPointer(p + 4).storeBytes(of: SIMD2<Float>(v[4], v[5]), as: SIMD2<Float>.self)
    }

    /// The 9 taps of input channel ci for output rows row0 ..< row0 + 6 as vectors (lane i =
    /// row row0 + i, zero for i ≥ rows; lanes 6 and 7 unspecified). Loaded straight from the
    /// packed weight (the vector loads must not read values just stored with another width:
    /// a failed store-to-load forward costs more than the whole transform). Float16 panels are
    /// widened a whole k block at a time into `widened` (`widenedBlock` names the block held
    /// there, −1 for none): converting 8 taps at a time inside this large function compiled to
    /// an outlined call per vector, with a vzeroupper, about a third of the transform's time.
    @inline(__always)
    func tapVectors(row0: Int, rows: Int, ci: Int, scratch taps: UnsafeMutablePointer<Float>,
                    widened: UnsafeMutablePointer<Float>, widenedBlock: inout Int)
        -> (F8, F8, F8, F8, F8, F8, F8, F8, F8) {
        if case let .packed(m) = filter {
            // Packed panels: element (row, p) of k block [pb, pb + kc) is at
            // pb·padded + (row / MR)·MR·kc + (p − pb)·MR + row % MR; the 6 rows of a panel are
            // contiguous and zero past the last row, so a channel's 9 taps are 54 consecutive
            // values unless a k block boundary cuts through them. (PackedMatrix keeps slack
            // after its panels, so reading 8 values at the last tap stays in bounds.)
            let p = ci * 9
            let pb = p / m.kc * m.kc
            if (p + 8) / m.kc * m.kc == pb {
                let kc = min(m.kc, m.cols - pb)
                let block = pb * m.padded + row0 * kc   // this panel's 6·kc values of the k block
                let s: UnsafePointer<Float>
                if let f = m.f32 {
                    s = UnsafePointer(f + block)
                } else {
                    if widenedBlock != pb {
                        widenHalf(m.f16! + block, widened, gemmMR * kc)
                        widenedBlock = pb
                    }
                    s = UnsafePointer(widened)
                }
                return taps9(s + (p - pb) * gemmMR)
            }
        }
        loadTaps(row0: row0, rows: rows, ci: ci, into: taps)
        return taps9(UnsafePointer(taps))
    }

    /// The 9 tap vectors of a channel whose taps are stored 6 rows at a time from `s`.
    @inline(__always) func taps9(_ s: UnsafePointer<Float>) -> (F8, F8, F8, F8, F8, F8, F8, F8, F8) {
        (ld8(s), ld8(s + 6), ld8(s + 12), ld8(s + 18), ld8(s + 24), ld8(s + 30), ld8(s + 36), ld8(s + 42), ld8(s + 48))
    }

    /// taps[t·6 + i] = weight[row0 + i, ci, t / 3, t % 3] for i < rows, 0 for rows ≤ i < 6.
    func loadTaps(row0: Int, rows: Int, ci: Int, into taps: UnsafeMutablePointer<Float>) {
        switch filter {
        case let .dense(w, ld):
            for i in 0..<gemmMR {
                if i < rows {
                    let s = w + (row0 + i) * ld + ci * 9
                    for t in 0..<9 { taps[t * 6 + i] = s[t] }
                } else {
                    for t in 0..<9 { taps[t * 6 + i] = 0 }
                }
            }
        case let .packed(m):
            let p = ci * 9
            for t in 0..<9 {
                let pt = p + t
                let pb = pt / m.kc * m.kc
                let off = pb * m.padded + row0 * min(m.kc, m.cols - pb) + (pt - pb) * gemmMR
                if let f = m.f32 {
                    (taps + t * 6).update(from: f + off, count: 6)
                } else {
                    widenHalf(m.f16! + off, taps + t * 6, 6)
                }
            }
        }
    }

    // MARK: Output transform

    /// Output channels [co0, co0 + rows) of tiles [start, start + count) from M.
    /// Runs of 8-tile groups inside one tile row go through a phase-split staging buffer
    /// (q[(i·4 + k)·qw + j] = pixel (4·ty + i, 4·(tx0 + j) + k)), which a plain interleaving
    /// loop then writes out with the bias already added and the residual added on the way.
    func outputTransform(co0: Int, rows: Int, start: Int, count: Int, m: UnsafePointer<Float>) {
        let qw = (tilesW + 15) / 8 * 8
        withScratch(16 * qw + 16 * 8) { buf in
            let q = buf
            let ys = q + 16 * qw                 // slow path: y[(i·4 + k)·8]
            let outPlane = outH * outW
            for r in 0..<rows {
                let co = co0 + r
                let bv = F8(repeating: bias?[co] ?? 0)
                let mrow = m + r * ldm
                // y[i][k] for the 8 tiles of group g (lanes = tiles), handed to `emit`; straight
                // from the loads of M, rows (0, 2) and (1, 3) of Aᵀ·M in two passes.
                @inline(__always) func group(_ g: Int, _ emit: (Int, F8, F8, F8, F8) -> Void) {
                    @inline(__always) func mv(_ a: Int, _ j: Int) -> F8 { ld8(mrow + (a * 6 + j) * mStride + g) }
                    let four = F8(repeating: 4), two = F8(repeating: 2), eight = F8(repeating: 8)
                    @inline(__always) func even(_ j: Int) -> (F8, F8) {
                        let a = mv(1, j) + mv(2, j), c = mv(3, j) + mv(4, j)
                        return (mv(0, j) + a + c, fma8(four, c, a))
                    }
                    do {
                        let e0 = even(0), e1 = even(1), e2 = even(2), e3 = even(3), e4 = even(4), e5 = even(5)
                        var o = winogradOutputRow(e0.0, e1.0, e2.0, e3.0, e4.0, e5.0)
                        emit(0, o.0 + bv, o.1 + bv, o.2 + bv, o.3 + bv)
                        o = winogradOutputRow(e0.1, e1.1, e2.1, e3.1, e4.1, e5.1)
                        emit(2, o.0 + bv, o.1 + bv, o.2 + bv, o.3 + bv)
                    }
                    @inline(__always) func odd(_ j: Int) -> (F8, F8) {
                        let b = mv(1, j) - mv(2, j), d = mv(3, j) - mv(4, j)
                        return (fma8(two, d, b), fma8(eight, d, b + mv(5, j)))
                    }
                    do {
                        let e0 = odd(0), e1 = odd(1), e2 = odd(2), e3 = odd(3), e4 = odd(4), e5 = odd(5)
                        var o = winogradOutputRow(e0.0, e1.0, e2.0, e3.0, e4.0, e5.0)
                        emit(1, o.0 + bv, o.1 + bv, o.2 + bv, o.3 + bv)
                        o = winogradOutputRow(e0.1, e1.1, e2.1, e3.1, e4.1, e5.1)
                        emit(3, o.0 + bv, o.1 + bv, o.2 + bv, o.3 + bv)
                    }
                }
                var g = 0
                while g < count {
                    let t0 = start + g
                    let (n, ty, tx) = locate(t0)
                    let plane = (n * cout + co) * outPlane
                    let run = tx + 8 <= tilesW ? min((count - g) / 8, (tilesW - tx) / 8) : 0
                    if run > 0 {
                        for k in 0..<run {
                            group(g + 8 * k) { i, y0, y1, y2, y3 in
                                let d = q + i * 4 * qw + 8 * k
                                st8(d, y0); st8(d + qw, y1); st8(d + 2 * qw, y2); st8(d + 3 * qw, y3)
                            }
                        }
                        let cols = min(32 * run, outW - 4 * tx)
                        for i in 0..<4 where 4 * ty + i < outH {
                            let off = plane + (4 * ty + i) * outW + 4 * tx
                            interleaveRow(q + i * 4 * qw, qw, cols: cols, residual: residual.map { $0 + off }, into: output + off)
                        }
                        g += 8 * run
                        continue
                    }
                    // A group that wraps to the next tile row or image, or is cut by count.
                    group(g) { i, y0, y1, y2, y3 in
                        st8(ys + (i * 4) * 8, y0); st8(ys + (i * 4 + 1) * 8, y1)
                        st8(ys + (i * 4 + 2) * 8, y2); st8(ys + (i * 4 + 3) * 8, y3)
                    }
                    for l in 0..<min(8, count - g) {
                        let (n, ty, tx) = locate(t0 + l)
                        let plane = (n * cout + co) * outPlane
                        for i in 0..<4 where 4 * ty + i < outH {
                            for k in 0..<4 where 4 * tx + k < outW {
                                let off = plane + (4 * ty + i) * outW + 4 * tx + k
                                var v = ys[(i * 4 + k) * 8 + l]
                                if let residual { v += residual[off] }
                                output[off] = v
                            }
                        }
                    }
                    g += 8
                }
            }
        }
    }

    /// dst[4j + k] = q[k·qw + j] (+ residual[4j + k]) for the first `cols` columns.
    @inline(__always)
    func interleaveRow(_ q: UnsafePointer<Float>, _ qw: Int, cols: Int, residual: UnsafePointer<Float>?,
                       into dst: UnsafeMutablePointer<Float>) {
        let q0 = q, q1 = q + qw, q2 = q + 2 * qw, q3 = q + 3 * qw
        let full = cols / 4
        if let residual {
            for j in 0..<full {
                dst[4 * j] = q0[j] + residual[4 * j]; dst[4 * j + 1] = q1[j] + residual[4 * j + 1]
                dst[4 * j + 2] = q2[j] + residual[4 * j + 2]; dst[4 * j + 3] = q3[j] + residual[4 * j + 3]
            }
            for c in (4 * full)..<cols { dst[c] = q[(c & 3) * qw + full] + residual[c] }
        } else {
            for j in 0..<full {
                dst[4 * j] = q0[j]; dst[4 * j + 1] = q1[j]; dst[4 * j + 2] = q2[j]; dst[4 * j + 3] = q3[j]
            }
            for c in (4 * full)..<cols { dst[c] = q[(c & 3) * qw + full] }
        }
    }

    // MARK: Run

    /// Output channels `chunk` (at most uRows) of the tiles [start, start + count): the filter
    /// transform into u (skipped when `filterReady`: u already holds this chunk's U), the 36
    /// GEMMs into M (after U in the same buffer) by sub-chunks of mRows, and the output
    /// transform. `timers` (profiling) accumulates filter, GEMM and output CPU nanoseconds.
    func convolveRows(_ chunk: Range<Int>, filterReady: Bool, u: UnsafeMutablePointer<Float>,
                      v: UnsafeMutablePointer<Float>, start: Int, count: Int, columns: Int,
                      timers: UnsafeMutablePointer<Int>?) {
        let m = u + 36 * uStride
        var ta = timers != nil ? cpuSeconds(CLOCK_THREAD_CPUTIME_ID) : 0
        @inline(__always) func lap(_ slot: Int) {
            guard let timers else { return }
            let tb = cpuSeconds(CLOCK_THREAD_CPUTIME_ID)
            timers[slot] += Int((tb - ta) * 1e9)
            ta = tb
        }
        if !filterReady { filterTransform(co0: chunk.lowerBound, rows: chunk.count, u: u) }
        lap(0)
        let padded = (chunk.count + gemmMR - 1) / gemmMR * gemmMR
        var r0 = 0
        while r0 < chunk.count {
            let mr = min(mRows, chunk.count - r0)
            for xi in 0..<36 {
                gemmWorker(WinogradA(base: UnsafePointer(u + xi * uStride), padded: padded, rowOffset: r0),
                           SharedB(base: UnsafePointer(v + xi * vStride), nPad: tileBlock),   // V[ξ], packed
                           rows: 0..<mr, cols: 0..<columns, k: cin, alpha: 1, beta: 0,
                           c: m + xi * mStride, ldc: ldm, epilogue: nil)
            }
            lap(1)
            outputTransform(co0: chunk.lowerBound + r0, rows: mr, start: start, count: count, m: UnsafePointer(m))
            lap(2)
            r0 += mr
        }
    }

    func run() {
        let prof = winogradProfile
        let tStart = prof ? monotonicSeconds() : 0
        let cpuStart = prof ? cpuSeconds(CLOCK_PROCESS_CPUTIME_ID) : 0
        let vBuf = scratchPool.take(36 * vStride + 64)
        defer { scratchPool.give(vBuf) }
        let vp = SendablePointer(vBuf.pointer)
        // Per-worker U and M buffers, kept across tile blocks (U is computed once per call when
        // a single chunk covers the worker's channel range).
        var wbufs: [(pointer: UnsafeMutablePointer<Float>, capacity: Int)] = []
        for _ in 0..<workers { wbufs.append(scratchPool.take(36 * (uStride + mStride) + 64)) }
        defer { for b in wbufs { scratchPool.give(b) } }
        let bufs = UncheckedBox(wbufs.map { $0.pointer })
        let state = UnsafeMutablePointer<Int>.allocate(capacity: workers * 4)
        state.initialize(repeating: 0, count: workers * 4)   // [w]: U valid flag; then 3 timers (ns) per worker
        defer { state.deallocate() }
        let st = SendablePointer(state)
        var inputSeconds = 0.0
        var start = 0
        while start < totalTiles {
            let count = min(tileBlock, totalTiles - start)
            // Whole 16-tile panels (V is filled up to them): every tile then goes through the
            // same 6×16 micro-kernel, whose summation order differs from the 6×8 tail kernel's,
            // so a tile's bits do not depend on where the batch puts it.
            let columns = (count + gemmNR - 1) / gemmNR * gemmNR
            let s = start
            // 1. Input transform, split over input channels (a few ranges per worker).
            let t0 = prof ? cpuSeconds(CLOCK_PROCESS_CPUTIME_ID) : 0
            parallelFor(cin, minChunk: max(1, 4096 / max(1, count))) { range in
                self.inputTransform(channels: range, start: s, count: count, v: vp.p)
            }
            if prof { inputSeconds += cpuSeconds(CLOCK_PROCESS_CPUTIME_ID) - t0 }
            // 2. Filter transform, 36 GEMMs, output transform, by chunks of output channels.
            if dynamicChunks {
                // One tile block: every chunk's U is used once, so chunks go to whichever worker
                // is free (on a shared machine a fixed half per core waits for the slower one),
                // large ones first (each streams all of V again), in whole pairs of MR-row panels.
                let unit = 2 * gemmMR
                parallelGuided((cout + unit - 1) / unit, workers: workers, maxChunk: uRows / unit) { w, pairs in
                    self.convolveRows(pairs.lowerBound * unit..<min(self.cout, pairs.upperBound * unit), filterReady: false,
                                      u: bufs.value[w], v: vp.p, start: s, count: count, columns: columns,
                                      timers: prof ? st.p + self.workers + 3 * w : nil)
                }
            } else {
                // Fixed channel ranges per worker, so a worker whose whole range fits its U buffer
                // transforms its filters once and reuses them in every tile block.
                parallelFor(workers) { range in
                    for w in range {
                        let rows = self.rows(of: w)
                        if rows.isEmpty { continue }
                        let u = bufs.value[w]
                        let single = rows.count <= self.uRows
                        var c0 = rows.lowerBound
                        while c0 < rows.upperBound {
                            let cr = min(self.uRows, rows.upperBound - c0)
                            self.convolveRows(c0..<(c0 + cr), filterReady: single && st[w] != 0, u: u, v: vp.p,
                                              start: s, count: count, columns: columns,
                                              timers: prof ? st.p + self.workers + 3 * w : nil)
                            st[w] = single ? 1 : 0
                            c0 += cr
                        }
                    }
                }
            }
            start += count
        }
        if prof {
            var f = 0.0, g = 0.0, o = 0.0
            for w in 0..<workers {
                f += Double(state[workers + 3 * w]) * 1e-9
                g += Double(state[workers + 3 * w + 1]) * 1e-9
                o += Double(state[workers + 3 * w + 2]) * 1e-9
            }
            let total = monotonicSeconds() - tStart
            let cpu = cpuSeconds(CLOCK_PROCESS_CPUTIME_ID) - cpuStart
            let line = String(format: "winograd %d→%d %dx%d ×%d: %.1f ms wall, %.1f ms CPU: input %.1f, filter %.1f, gemm %.1f, output %.1f ms CPU; %d tile blocks of %d, U rows %d, M rows %d, %d workers",
                              cin, cout, outH, outW, batch, total * 1e3, cpu * 1e3, inputSeconds * 1e3, f * 1e3, g * 1e3, o * 1e3,
                              (totalTiles + tileBlock - 1) / tileBlock, tileBlock, uRows, mRows, workers)
                + (dynamicChunks ? ", chunks claimed as workers free up\n" : "\n")
            FileHandle.standardError.write(line.data(using: .utf8)!)
        }
    }
}

/// The stride between the 36 matrices of V, U or M: at least n floats, an odd number of cache
/// lines. The transforms write (and the output transform reads) all 36 at once; with a stride
/// that is a multiple of 4 KB (e.g. 128 channels × 2048 tiles) the 36 streams share one L1 set
/// and every access misses.
func skewedStride(_ n: Int) -> Int {
    let lines = (n + 15) / 16
    return (lines | 1) * 16
}

/// DARKROOM_WINOGRAD_PROFILE=1 prints a time breakdown of every Winograd call to stderr (CPU
/// time, which other jobs on a shared machine do not inflate).
let winogradProfile = ProcessInfo.processInfo.environment["DARKROOM_WINOGRAD_PROFILE"] == "1"

@inline(__always) func cpuSeconds(_ clock: clockid_t) -> Double {
    var ts = timespec()
    clock_gettime(clock, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

@inline(__always) func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// Winograd F(4×4, 3×3) convolution (contract at the top of this file). outH/outW follow
/// from the pads: H + padTop + padBottom − 2 and W + padLeft + padRight − 2.
func winogradConv3x3(_ x: WinogradInput, batch: Int, filter: WinogradFilter, bias: UnsafePointer<Float>?,
                     residual: UnsafePointer<Float>?, outChannels: Int,
                     padTop: Int, padLeft: Int, padBottom: Int, padRight: Int,
                     output: UnsafeMutablePointer<Float>) {
    let outH = x.height + padTop + padBottom - 2
    let outW = x.width + padLeft + padRight - 2
    guard batch > 0, outChannels > 0, outH > 0, outW > 0 else { return }
    if x.channels == 0 {
        // Empty sum: bias (+ residual) only.
        for n in 0..<batch {
            for co in 0..<outChannels {
                let p = output + (n * outChannels + co) * outH * outW
                for i in 0..<(outH * outW) {
                    p[i] = (bias?[co] ?? 0) + (residual?[(n * outChannels + co) * outH * outW + i] ?? 0)
                }
            }
        }
        return
    }
    WinogradPlan(x: x, batch: batch, filter: filter, bias: bias, residual: residual, outChannels: outChannels,
                 padTop: padTop, padLeft: padLeft, outH: outH, outW: outW, output: output,
                 blocking: winogradBlocking).run()
}
