// Kernel micro-benchmarks: GFLOP/s (or GB/s) of GEMM, conv, attention, norms, activations,
// as min / median / max over repeated runs. Run with:
//   swift run -c release KernelBench                 # everything
//   swift run -c release KernelBench peak gemm       # selected groups
//   swift run -c release KernelBench winograd threads=1
//   swift run -c release KernelBench torch-script    # prints the PyTorch twin of this benchmark
// Groups: peak, tile (AVX-512 tiles with operands in L1 vs the 16-lane FMA peak; TILE_KC sets
// their k), gemm, gemm1 (single-thread GEMM), packed, conv, winograd (im2col vs Winograd),
// attention, norm, eltwise; blocking (not in the default set: MC/KC/NC candidates, interleaved).
// Rates are min / median / max over the runs (wall clock), plus the median per CPU-second of
// our threads ("per core-s"), which discounts time other jobs on this shared machine took.
// Environment: DARKROOM_GEMM_MC / _KC / _NC override the GEMM cache blocking (for tuning).
import Foundation
import Kernels
import KernelsAVX512

#if canImport(Glibc)
import Glibc
#endif

@inline(never)
func clock(_ id: clockid_t) -> Double {
    var ts = timespec()
    clock_gettime(id, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}
func now() -> Double { clock(CLOCK_MONOTONIC) }
func cpuNow() -> Double { clock(CLOCK_PROCESS_CPUTIME_ID) }

/// Wall-clock and process CPU seconds of each run. On this shared machine other jobs steal the
/// cores; CPU time (summed over our threads) shows what the kernel does while it runs.
struct Timing {
    var wall: [Double] = []
    var cpu: [Double] = []
}

/// Runs `body` once to warm up, then repeatedly (≥ 3 runs, ~`budget` seconds, ≤ 15 runs).
func measure(budget: Double = 1.5, _ body: () -> Void) -> Timing {
    body()
    var t = Timing()
    let start = now()
    while t.wall.count < 3 || (now() - start < budget && t.wall.count < 15) {
        let c0 = cpuNow(), t0 = now()
        body()
        t.wall.append(now() - t0)
        t.cpu.append(cpuNow() - c0)
    }
    return t
}

/// Prints min / median / max of the wall-clock rate, then the median rate per CPU-second
/// ("per core": divide by nothing, it is already per core-second of our threads).
func report(_ name: String, work: Double, unit: String = "GFLOP/s", _ t: Timing) {
    let rates = t.wall.map { work / $0 / 1e9 }.sorted()
    let med = rates[rates.count / 2]
    let cpuRates = t.cpu.map { work / max($0, 1e-9) / 1e9 }.sorted()
    let pad = name.padding(toLength: 44, withPad: " ", startingAt: 0)
    let wallSorted = t.wall.sorted()
    print(String(format: "%@ %8.1f %8.1f %8.1f  %@ | per core-s %7.1f  (median %.3f ms, %d runs)",
                 pad, rates.first!, med, rates.last!, unit, cpuRates[cpuRates.count / 2],
                 wallSorted[wallSorted.count / 2] * 1e3, t.wall.count))
}

func header(_ title: String) {
    print("\n== \(title)   [min / median / max]")
}

final class Buffer {
    let p: UnsafeMutablePointer<Float>
    let count: Int
    init(_ count: Int, seed: UInt64 = 1) {
        self.count = count
        p = .allocate(capacity: max(count, 1))
        var s = seed &* 0x9E3779B97F4A7C15 | 1
        for i in 0..<count {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17
            p[i] = Float(Int64(bitPattern: s >> 11) % 2001) / 1000 - 1
        }
    }
    deinit { p.deallocate() }
}

// MARK: - FMA peak

/// Register-only FMA loop: 12 independent 8-wide accumulators, no memory traffic.
@inline(never)
func fmaPeakLoop(_ iters: Int, _ seed: Float) -> Float {
    let m = SIMD8<Float>(repeating: 0.999999), a = SIMD8<Float>(repeating: 1e-7)
    var c0 = SIMD8<Float>(repeating: seed), c1 = c0 + 1, c2 = c0 + 2, c3 = c0 + 3, c4 = c0 + 4, c5 = c0 + 5
    var c6 = c0 + 6, c7 = c0 + 7, c8 = c0 + 8, c9 = c0 + 9, c10 = c0 + 10, c11 = c0 + 11
    for _ in 0..<iters {
        c0 = c0.addingProduct(m, a); c1 = c1.addingProduct(m, a); c2 = c2.addingProduct(m, a)
        c3 = c3.addingProduct(m, a); c4 = c4.addingProduct(m, a); c5 = c5.addingProduct(m, a)
        c6 = c6.addingProduct(m, a); c7 = c7.addingProduct(m, a); c8 = c8.addingProduct(m, a)
        c9 = c9.addingProduct(m, a); c10 = c10.addingProduct(m, a); c11 = c11.addingProduct(m, a)
    }
    let s = c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11
    return s.sum()
}

func benchPeak() {
    header("FMA peak (register-only loop, 12 chains × 8 lanes)")
    let iters = 20_000_000
    let flops = Double(iters) * 12 * 8 * 2
    var sink: Float = 0
    let t1 = measure { sink += fmaPeakLoop(iters, sink) }
    report("1 thread", work: flops, t1)
    let workers = Threads.count
    let box = SinkBox()
    let t2 = measure {
        parallelFor(workers) { r in for w in r { box.store(w, fmaPeakLoop(iters, Float(w))) } }
    }
    report("\(workers) threads (total)", work: flops * Double(workers), t2)
    if sink == 42 { print(sink) }
}

final class SinkBox: @unchecked Sendable {
    var v = [Float](repeating: 0, count: 64)
    func store(_ i: Int, _ x: Float) { v[i % 64] = x }
}

/// The AVX-512 GEMM tile alone, its operands in L1 (kc 256: one 6x256 A panel, a 256x32 B pair),
/// against the 16-lane FMA ceiling: how much of the core the tile can use before memory matters.
func benchTile() {
    guard gemmUsesAVX512 else { print("tile: no AVX-512 on this CPU"); return }
    header("AVX-512 tile 6x32 (operands in L1) vs 16-lane FMA peak, 1 thread")
    let iters = 20_000_000
    var sink: Float = 0
    let tp = measure { sink += avx512FMAPeak(iters, sink) }
    report("FMA peak, 24 chains x 16 lanes", work: Double(iters) * 24 * 16 * 2, tp)
    let kc = Int(ProcessInfo.processInfo.environment["TILE_KC"] ?? "") ?? 256, calls = 20_000 * 256 / kc
    // 64-byte aligned, as the GEMM's packed panels are (a 16-float load then never splits a line).
    func buffer(_ n: Int) -> UnsafeMutablePointer<Float> {
        UnsafeMutableRawPointer.allocate(byteCount: n * 4, alignment: 64).bindMemory(to: Float.self, capacity: n)
    }
    let a = buffer(6 * kc), b = buffer(32 * kc), c = buffer(6 * 48)
    for i in 0..<(6 * kc) { a[i] = Float(i % 7) * 0.01 }
    for i in 0..<(32 * kc) { b[i] = Float(i % 5) * 0.01 }
    let tt = measure {
        for _ in 0..<calls { avx512Tile6x32(kc, a, 1, 6, b, b + 16 * kc, c, 48, accumulate: true) }
    }
    report("tile 6x32, kc 256, packed A (rs 1, ks 6)", work: Double(calls) * 6 * 32 * Double(kc) * 2, tt)
    let a2 = buffer(6 * kc)
    a2.update(from: a, count: 6 * kc)
    let c2 = buffer(12 * 48)
    let t12 = measure {
        for _ in 0..<calls { avx512Tile12x32(kc, a, a2, 1, 6, b, b + 16 * kc, c2, 48, accumulate: true) }
    }
    report("tile 12x32, kc 256, two packed A panels", work: Double(calls) * 12 * 32 * Double(kc) * 2, t12)
    let a12 = buffer(12 * kc)
    a12.update(from: a, count: 6 * kc); (a12 + 6 * kc).update(from: a, count: 6 * kc)
    let t12p = measure {
        for _ in 0..<calls { avx512Tile12x32Packed(kc, a12, b, b + 16 * kc, c2, 48, accumulate: true) }
    }
    report("tile 12x32 packed (fixed strides), kc 256", work: Double(calls) * 12 * 32 * Double(kc) * 2, t12p)
    if sink == 42 || c[0] == 42 { print(sink) }
}

// MARK: - GEMM

struct GemmShape {
    let name: String
    let m: Int, n: Int, k: Int
    var transA = false, transB = false
}

let gemmShapes: [GemmShape] = [
    GemmShape(name: "square 4096³", m: 4096, n: 4096, k: 4096),
    GemmShape(name: "1x1 conv / linear 4096×320×320", m: 4096, n: 320, k: 320),
    GemmShape(name: "ff 4096×1280×320", m: 4096, n: 1280, k: 320),
    GemmShape(name: "3x3 conv 320×4096×2880", m: 320, n: 4096, k: 2880),
    GemmShape(name: "3x3 conv 1024×640×5760", m: 1024, n: 640, k: 5760),
    GemmShape(name: "attention-like 4096×4096×40", m: 4096, n: 4096, k: 40),
    GemmShape(name: "linear xWᵀ 4096×320×320 (transB)", m: 4096, n: 320, k: 320, transB: true),
    GemmShape(name: "linear xWᵀ 4096×1280×320 (transB)", m: 4096, n: 1280, k: 320, transB: true),
    GemmShape(name: "clip xWᵀ 154×3072×768 (transB)", m: 154, n: 3072, k: 768, transB: true),
    GemmShape(name: "transA 1024×1024×1024", m: 1024, n: 1024, k: 1024, transA: true),
]

func benchGemm(threads: Int) {
    let saved = Threads.count
    Threads.count = threads
    defer { Threads.count = saved }
    header("sgemm, \(threads) thread(s)")
    for s in gemmShapes {
        let a = Buffer(s.m * s.k, seed: 1), b = Buffer(s.k * s.n, seed: 2), c = Buffer(s.m * s.n, seed: 3)
        let lda = s.transA ? s.m : s.k, ldb = s.transB ? s.k : s.n
        let flops = 2.0 * Double(s.m) * Double(s.n) * Double(s.k)
        let t = measure(budget: s.m * s.n * s.k > 20_000_000_000 ? 6 : 2) {
            sgemm(transA: s.transA, transB: s.transB, m: s.m, n: s.n, k: s.k,
                  a: a.p, lda: lda, b: b.p, ldb: ldb, c: c.p, ldc: s.n)
        }
        report("\(s.name)", work: flops, t)
    }
}

func benchPacked() {
    header("sgemm with pre-packed weights (PackedMatrix) and fused epilogue")
    for (m, n, k) in [(4096, 320, 320), (4096, 1280, 320), (2048, 640, 640), (512, 1280, 1280), (128, 1280, 1280), (154, 3072, 768), (2, 1280, 320)] {
        let x = Buffer(m * k, seed: 1), w = Buffer(n * k, seed: 2), bias = Buffer(n, seed: 4), c = Buffer(m * n, seed: 3)
        let flops = 2.0 * Double(m) * Double(n) * Double(k)
        let t0 = measure {
            sgemm(transA: false, transB: true, m: m, n: n, k: k, a: x.p, lda: k, b: w.p, ldb: k, c: c.p, ldc: n)
            addRowBias(c.p, rows: m, cols: n, bias: bias.p)
        }
        report("x·Wᵀ + bias, separate \(m)×\(n)×\(k)", work: flops, t0)
        let packed = PackedMatrix(b: w.p, ldb: k, transposed: true, k: k, n: n)
        let t1 = measure {
            sgemm(m: m, n: n, k: k, a: x.p, lda: k, b: packed, c: c.p, ldc: n,
                  epilogue: GemmEpilogue(columnBias: bias.p))
        }
        report("x·Wᵀ + bias, packed+fused \(m)×\(n)×\(k)", work: flops, t1)
        let packedHalf = PackedMatrix(b: w.p, ldb: k, transposed: true, k: k, n: n, storage: .float16)
        let t2 = measure {
            sgemm(m: m, n: n, k: k, a: x.p, lda: k, b: packedHalf, c: c.p, ldc: n,
                  epilogue: GemmEpilogue(columnBias: bias.p))
        }
        report("x·Wᵀ + bias, packed fp16 \(m)×\(n)×\(k)", work: flops, t2)
    }
}

// MARK: - Cache blocking

/// The U-Net's products at 512 px (batch 2) under several cache blockings, interleaved: each
/// round runs every shape once per blocking, so a drift in the machine's speed (other tenants)
/// hits all blockings alike. Prints, per blocking, the median over rounds of its CPU time
/// relative to the first blocking's in the same round, per shape and in total.
/// `KB_BLOCKING="96,256,512 96,384,256"` lists the blockings (MC,KC,NC; the first is the
/// reference); `KB_ROUNDS` the rounds (default 7).
func benchBlocking() {
    let env = ProcessInfo.processInfo.environment
    let spec = env["KB_BLOCKING"] ?? "96,256,512 96,384,512 96,256,256 192,256,512"
    let configs: [(mc: Int, kc: Int, nc: Int)] = spec.split(separator: " ").compactMap { item in
        let v = item.split(separator: ",").compactMap { Int($0) }
        return v.count == 3 ? (v[0], v[1], v[2]) : nil
    }
    let rounds = Int(env["KB_ROUNDS"] ?? "") ?? 7
    guard !configs.isEmpty else { print("KB_BLOCKING: no MC,KC,NC triples"); return }
    header("cache blocking, \(Threads.count) thread(s), \(rounds) interleaved rounds: CPU time vs \(configs[0])")
    let saved = gemmCacheBlocking
    defer { gemmCacheBlocking = saved }
    // Linear layers x·Wᵀ (fp16 packed weights as the model holds them) and Winograd 3x3 convs.
    let linears: [(String, Int, Int, Int)] = [
        ("linear 8192×320×320", 8192, 320, 320), ("geglu in 8192×2560×320", 8192, 2560, 320),
        ("ff out 8192×320×1280", 8192, 320, 1280), ("linear 2048×640×640", 2048, 640, 640),
        ("geglu in 2048×5120×640", 2048, 5120, 640), ("linear 512×1280×1280", 512, 1280, 1280),
    ]
    let convs: [(String, Int, Int, Int, Int)] = [
        ("conv 320 @64×64 ×2", 2, 320, 320, 64), ("conv 640 @32×32 ×2", 2, 640, 640, 32),
        ("conv 1280 @16×16 ×2", 2, 1280, 1280, 16), ("conv 2560→1280 @16×16 ×2", 2, 2560, 1280, 16),
    ]
    var jobs: [(name: String, run: [() -> Void])] = []
    var keep: [AnyObject] = []
    for (name, m, n, k) in linears {
        let x = Buffer(m * k, seed: 1), w = Buffer(n * k, seed: 2), c = Buffer(m * n, seed: 3)
        keep += [x, w, c]
        let packed: [PackedMatrix] = configs.map { cfg in
            gemmCacheBlocking = cfg
            return PackedMatrix(b: w.p, ldb: k, transposed: true, k: k, n: n, storage: .float16)
        }
        jobs.append((name, packed.map { pm in { sgemm(m: m, n: n, k: k, a: x.p, lda: k, b: pm, c: c.p, ldc: n) } }))
    }
    for (name, b, cin, cout, hw) in convs {
        let x = Buffer(b * cin * hw * hw, seed: 1), wt = Buffer(cout * cin * 9, seed: 2)
        for i in 0..<wt.count { wt.p[i] *= 0.05 }
        let y = Buffer(b * cout * hw * hw, seed: 4)
        keep += [x, wt, y]
        let packed: [PackedMatrix] = configs.map { cfg in
            gemmCacheBlocking = cfg
            return PackedMatrix(a: wt.p, lda: cin * 9, m: cout, k: cin * 9, storage: .float16)
        }
        jobs.append((name, packed.map { pm in {
            conv2d(input: x.p, batch: b, inChannels: cin, height: hw, width: hw, weight: pm, bias: nil,
                   kernelH: 3, kernelW: 3, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1, output: y.p)
        } }))
    }
    // cpu[config][job][round]
    var cpu = [[[Double]]](repeating: [[Double]](repeating: [], count: jobs.count), count: configs.count)
    for round in 0...rounds {
        for (ci, cfg) in configs.enumerated() {
            gemmCacheBlocking = cfg
            for (ji, job) in jobs.enumerated() {
                let c0 = cpuNow()
                job.run[ci]()
                if round > 0 { cpu[ci][ji].append(cpuNow() - c0) }   // round 0 warms up
            }
        }
    }
    func median(_ v: [Double]) -> Double { let s = v.sorted(); return s[s.count / 2] }
    func cell(_ s: String) -> String { String(repeating: " ", count: max(1, 14 - s.count)) + s }
    var line = "shape".padding(toLength: 28, withPad: " ", startingAt: 0) + cell("ref ms")
    for cfg in configs.dropFirst() { line += cell("\(cfg.mc),\(cfg.kc),\(cfg.nc)") }
    print(line)
    for ji in 0...jobs.count {
        let name = ji < jobs.count ? jobs[ji].name : "total"
        let series: (Int) -> [Double] = { ci in
            ji < jobs.count ? cpu[ci][ji] : (0..<rounds).map { r in cpu[ci].reduce(0) { $0 + $1[r] } }
        }
        var row = name.padding(toLength: 28, withPad: " ", startingAt: 0) + cell(String(format: "%.1f", median(series(0)) * 1e3))
        for ci in 1..<configs.count {
            let ratios = zip(series(ci), series(0)).map { $0 / $1 }
            row += cell(String(format: "%.3f", median(ratios)))
        }
        print(row)
    }
    withExtendedLifetime(keep) {}
}

// MARK: - Conv

func benchConv() {
    header("conv2d (batch 1)")
    let cases: [(String, Int, Int, Int, Int, Int, Int, Int)] = [
        // name, cin, h, w, cout, kernel, stride, pad
        ("3x3 320→320 @64×64", 320, 64, 64, 320, 3, 1, 1),
        ("3x3 640→640 @32×32", 640, 32, 32, 640, 3, 1, 1),
        ("3x3 1280→1280 @16×16", 1280, 16, 16, 1280, 3, 1, 1),
        ("1x1 640→320 @64×64", 640, 64, 64, 320, 1, 1, 0),
        ("3x3 s2 320→320 @64×64", 320, 64, 64, 320, 3, 2, 1),
        ("3x3 4→320 @64×64 (conv_in)", 4, 64, 64, 320, 3, 1, 1),
        ("3x3 512→512 @128×128 (VAE)", 512, 128, 128, 512, 3, 1, 1),
        ("3x3 128→128 @512×512 (VAE)", 128, 512, 512, 128, 3, 1, 1),
    ]
    for (name, cin, h, w, cout, kk, s, p) in cases {
        let oh = (h + 2 * p - kk) / s + 1, ow = (w + 2 * p - kk) / s + 1
        let x = Buffer(cin * h * w, seed: 1), wt = Buffer(cout * cin * kk * kk, seed: 2)
        let bias = Buffer(cout, seed: 3), y = Buffer(cout * oh * ow, seed: 4)
        let flops = 2.0 * Double(cout) * Double(oh * ow) * Double(cin * kk * kk)
        let t = measure(budget: flops > 1e11 ? 4 : 2) {
            conv2d(input: x.p, batch: 1, inChannels: cin, height: h, width: w, weight: wt.p, bias: bias.p,
                   outChannels: cout, kernelH: kk, kernelW: kk, strideH: s, strideW: s,
                   padTop: p, padLeft: p, padBottom: p, padRight: p, output: y.p)
        }
        report(name, work: flops, t)
    }
}

// MARK: - Winograd vs im2col

/// 3x3 stride-1 pad-1 convolutions of the SD VAE decoder and U-Net, fp16 packed weights as the
/// model layers hold them, both algorithms in the same run. GFLOP/s count the direct
/// convolution's 2·outC·inC·9·H·W FLOPs (as PyTorch's FLOP counters do) for both paths, so
/// Winograd's rate is "effective" and can exceed the machine's FMA peak.
func benchWinograd() {
    header("3x3 conv: im2col vs Winograd F(4x4,3x3), fp16 packed weights, effective GFLOP/s")
    let cases: [(String, Int, Int, Int, Int, Int)] = [
        // name, batch, cin, cout, h, w
        ("VAE 128→128 @256×256", 1, 128, 128, 256, 256),
        ("VAE 256→256 @128×128", 1, 256, 256, 128, 128),
        ("VAE 512→512 @64×64", 1, 512, 512, 64, 64),
        ("VAE 512→512 @128×128", 1, 512, 512, 128, 128),
        ("UNet 320→320 @64×64 ×2", 2, 320, 320, 64, 64),
        ("UNet 640→640 @32×32 ×2", 2, 640, 640, 32, 32),
        ("UNet 1280→1280 @16×16 ×2", 2, 1280, 1280, 16, 16),
        ("UNet 2560→1280 @16×16 ×2", 2, 2560, 1280, 16, 16),
        ("UNet 1280→1280 @16×16 ×1", 1, 1280, 1280, 16, 16),
        ("UNet 1280→1280 @8×8 ×2", 2, 1280, 1280, 8, 8),
        ("UNet 640→640 @16×16 ×2 (256 px)", 2, 640, 640, 16, 16),
        ("UNet 4→320 @64×64 ×2 (conv_in)", 2, 4, 320, 64, 64),
        ("UNet 320→320 @32×32 ×2 (256 px)", 2, 320, 320, 32, 32),
        ("VAE 128→3 @256×256 (conv_out)", 1, 128, 3, 256, 256),
        ("VAE 4→512 @32×32 (conv_in)", 1, 4, 512, 32, 32),
    ]
    let saved = Conv3x3Algorithm.current
    defer { Conv3x3Algorithm.current = saved }
    // KB_CASE=substring runs only the matching cases (for profiling one shape).
    let only = ProcessInfo.processInfo.environment["KB_CASE"]
    for (name, n, cin, cout, h, w) in cases where only.map({ name.contains($0) }) ?? true {
        let x = Buffer(n * cin * h * w, seed: 1), wt = Buffer(cout * cin * 9, seed: 2)
        for i in 0..<wt.count { wt.p[i] *= 0.05 }
        let bias = Buffer(cout, seed: 3), y = Buffer(n * cout * h * w, seed: 4), r = Buffer(n * cout * h * w, seed: 5)
        let packed = PackedMatrix(a: wt.p, lda: cin * 9, m: cout, k: cin * 9, storage: .float16)
        let flops = 2.0 * Double(n * cout * h * w) * Double(cin * 9)
        var medians: [Double] = []
        var outputs: [[Float]] = []
        for algo in [Conv3x3Algorithm.im2col, .winograd] {
            Conv3x3Algorithm.current = algo
            let t = measure(budget: flops > 5e10 ? 3 : 1.5) {
                conv2d(input: x.p, batch: n, inChannels: cin, height: h, width: w, weight: packed, bias: bias.p,
                       kernelH: 3, kernelW: 3, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1, output: y.p, residual: r.p)
            }
            report("\(name) \(algo)", work: flops, t)
            medians.append(t.wall.sorted()[t.wall.count / 2])
            outputs.append(Array(UnsafeBufferPointer(start: y.p, count: y.count)))
        }
        var maxDiff: Float = 0, maxAbs: Float = 0
        for i in 0..<outputs[0].count {
            maxDiff = max(maxDiff, abs(outputs[0][i] - outputs[1][i])); maxAbs = max(maxAbs, abs(outputs[0][i]))
        }
        let auto = Conv3x3Algorithm.autoChoice(batch: n, inChannels: cin, outChannels: cout, outH: h, outW: w)
        print(String(format: "    winograd / im2col time %.2fx   max |diff| %.2e of max |y| %.2e   auto picks %@",
                     medians[1] / medians[0], maxDiff, maxAbs, auto.rawValue))
    }
}

// MARK: - Attention

func benchAttention() {
    header("attention (flops = 4·Lq·Lk·d per head)")
    let cases: [(String, Int, Int, Int, Int, Int)] = [
        // name, batch, heads, Lq, Lk, d
        ("self 2×8 heads 4096×4096 d40", 2, 8, 4096, 4096, 40),
        ("self 1×5 heads 4096×4096 d64", 1, 5, 4096, 4096, 64),
        ("self 2×8 heads 1024×1024 d80", 2, 8, 1024, 1024, 80),
        ("cross 2×8 heads 4096×77 d40", 2, 8, 4096, 77, 40),
        ("clip causal 2×12 heads 77×77 d64", 2, 12, 77, 77, 64),
        ("vae 1 head 4096×4096 d512", 1, 1, 4096, 4096, 512),
    ]
    for (name, b, h, lq, lk, d) in cases {
        let inner = h * d
        let q = Buffer(b * lq * inner, seed: 1), k = Buffer(b * lk * inner, seed: 2), v = Buffer(b * lk * inner, seed: 3)
        let o = Buffer(b * lq * inner, seed: 4)
        let causal = name.contains("causal")
        let flops = 4.0 * Double(b * h) * Double(lq) * Double(lk) * Double(d)
        let t = measure(budget: 3) {
            attention(q: q.p, qRowStride: inner, k: k.p, kRowStride: inner, v: v.p, vRowStride: inner,
                      out: o.p, outRowStride: inner, batch: b, heads: h, queryLength: lq, keyLength: lk,
                      headDim: d, scale: 1 / Float(d).squareRoot(), causal: causal)
        }
        report(name, work: flops, t)
    }
}

// MARK: - Norms and elementwise (GB/s of input + output traffic)

func benchNorm() {
    header("normalisation (GB/s, read + write)")
    do {
        let c = 320, s = 64 * 64, n = 2
        let x = Buffer(n * c * s), y = Buffer(n * c * s), g = Buffer(c), bt = Buffer(c)
        let bytes = Double(n * c * s * 8)
        report("groupNorm 2×320×64×64, 32 groups", work: bytes, unit: "GB/s", measure {
            groupNorm(x: x.p, out: y.p, batch: n, channels: c, spatial: s, groups: 32, eps: 1e-5, gamma: g.p, beta: bt.p)
        })
        report("groupNorm+SiLU 2×320×64×64", work: bytes, unit: "GB/s", measure {
            groupNorm(x: x.p, out: y.p, batch: n, channels: c, spatial: s, groups: 32, eps: 1e-5, gamma: g.p, beta: bt.p, silu: true)
        })
    }
    do {
        let rows = 2 * 4096, cols = 320
        let x = Buffer(rows * cols), y = Buffer(rows * cols), g = Buffer(cols), bt = Buffer(cols)
        report("layerNorm 8192×320", work: Double(rows * cols * 8), unit: "GB/s", measure {
            layerNorm(x: x.p, out: y.p, rows: rows, cols: cols, eps: 1e-5, gamma: g.p, beta: bt.p)
        })
    }
}

func benchEltwise() {
    header("elementwise (GB/s, read + write)")
    let n = 2 * 4096 * 1280
    let x = Buffer(n), y = Buffer(n), z = Buffer(n)
    for act in [Activation.silu, .gelu, .geluTanh, .quickGelu] {
        y.p.update(from: x.p, count: n)
        report("activate \(act) \(n)", work: Double(n * 8), unit: "GB/s", measure { activate(y.p, count: n, act) })
    }
    let rows = 2 * 4096, d = 1280
    let g = Buffer(rows * 2 * d), go = Buffer(rows * d)
    report("geglu 8192×2560→1280", work: Double(rows * 3 * d * 4), unit: "GB/s", measure { geglu(g.p, rows: rows, dim: d, out: go.p) })
    report("add \(n)", work: Double(n * 12), unit: "GB/s", measure { add(x.p, y.p, out: z.p, count: n) })
    let bias = Buffer(1280)
    report("addRowBias 8192×1280", work: Double(rows * d * 8), unit: "GB/s", measure { addRowBias(z.p, rows: rows, cols: d, bias: bias.p) })
    report("upsampleNearest2x 640×32×32", work: Double(640 * 32 * 32 * 20), unit: "GB/s", measure {
        upsampleNearest2x(x.p, planes: 640, height: 32, width: 32, out: y.p)
    })
    report("transpose 2×320×4096", work: Double(2 * 320 * 4096 * 8), unit: "GB/s", measure {
        transpose(x.p, batch: 2, rows: 320, cols: 4096, out: y.p)
    })
}


/// The same shapes in PyTorch, for a side-by-side comparison. Print it and run it with the
/// project's reference venv (torch.set_num_threads matches Threads.count):
///   swift run -c release KernelBench torch-script > /tmp/kb_torch.py
///   Tools/.venv/bin/python /tmp/kb_torch.py 2
/// (Kept inside this file: a .py file in the target directory would make SwiftPM warn.)
let torchScript = #"""
import sys, time, statistics
import torch
import torch.nn.functional as F
threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.set_num_threads(threads)
torch.manual_seed(0)

def measure(fn, budget=2.0):
    fn()
    walls, cpus = [], []
    start = time.perf_counter()
    while len(walls) < 3 or (time.perf_counter() - start < budget and len(walls) < 15):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0); cpus.append(time.process_time() - c0)
    return walls, cpus

def report(name, work, t, unit="GFLOP/s"):
    walls, cpus = t
    rates = sorted(work / w / 1e9 for w in walls)
    cpu = sorted(work / max(c, 1e-9) / 1e9 for c in cpus)
    print(f"{name:<44} {rates[0]:8.1f} {rates[len(rates)//2]:8.1f} {rates[-1]:8.1f}  {unit} | per core-s {cpu[len(cpu)//2]:7.1f}  (median {sorted(walls)[len(walls)//2]*1e3:.3f} ms, {len(walls)} runs)")

print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
print("\n== torch.matmul   [min / median / max]")
shapes = [("square 4096³", 4096, 4096, 4096, False, False),
          ("1x1 conv / linear 4096×320×320", 4096, 320, 320, False, False),
          ("ff 4096×1280×320", 4096, 1280, 320, False, False),
          ("3x3 conv 320×4096×2880", 320, 4096, 2880, False, False),
          ("3x3 conv 1024×640×5760", 1024, 640, 5760, False, False),
          ("attention-like 4096×4096×40", 4096, 4096, 40, False, False),
          ("linear xWᵀ 4096×320×320 (transB)", 4096, 320, 320, False, True),
          ("linear xWᵀ 4096×1280×320 (transB)", 4096, 1280, 320, False, True),
          ("clip xWᵀ 154×3072×768 (transB)", 154, 3072, 768, False, True),
          ("transA 1024×1024×1024", 1024, 1024, 1024, True, False)]
for name, m, n, k, ta, tb in shapes:
    a = torch.randn(k, m).t() if ta else torch.randn(m, k)
    b = torch.randn(n, k).t() if tb else torch.randn(k, n)
    c = torch.empty(m, n)
    report(name, 2.0 * m * n * k, measure(lambda: torch.matmul(a, b, out=c), 6 if m * n * k > 2e10 else 2))

print("\n== F.conv2d (batch 1)   [min / median / max]")
for name, cin, h, w, cout, kk, s, p in [("3x3 320→320 @64×64", 320, 64, 64, 320, 3, 1, 1),
                                        ("3x3 640→640 @32×32", 640, 32, 32, 640, 3, 1, 1),
                                        ("3x3 1280→1280 @16×16", 1280, 16, 16, 1280, 3, 1, 1),
                                        ("1x1 640→320 @64×64", 640, 64, 64, 320, 1, 1, 0),
                                        ("3x3 s2 320→320 @64×64", 320, 64, 64, 320, 3, 2, 1),
                                        ("3x3 4→320 @64×64 (conv_in)", 4, 64, 64, 320, 3, 1, 1),
                                        ("3x3 512→512 @128×128 (VAE)", 512, 128, 128, 512, 3, 1, 1),
                                        ("3x3 128→128 @512×512 (VAE)", 128, 512, 512, 128, 3, 1, 1)]:
    x = torch.randn(1, cin, h, w); wt = torch.randn(cout, cin, kk, kk); bias = torch.randn(cout)
    oh = (h + 2 * p - kk) // s + 1; ow = (w + 2 * p - kk) // s + 1
    flops = 2.0 * cout * oh * ow * cin * kk * kk
    with torch.no_grad():
        report(name, flops, measure(lambda: F.conv2d(x, wt, bias, stride=s, padding=p), 4 if flops > 1e11 else 2))

print("\n== F.scaled_dot_product_attention (flops = 4·Lq·Lk·d per head)   [min / median / max]")
for name, b, hh, lq, lk, d in [("self 2×8 heads 4096×4096 d40", 2, 8, 4096, 4096, 40),
                               ("self 1×5 heads 4096×4096 d64", 1, 5, 4096, 4096, 64),
                               ("self 2×8 heads 1024×1024 d80", 2, 8, 1024, 1024, 80),
                               ("cross 2×8 heads 4096×77 d40", 2, 8, 4096, 77, 40),
                               ("clip causal 2×12 heads 77×77 d64", 2, 12, 77, 77, 64),
                               ("vae 1 head 4096×4096 d512", 1, 1, 4096, 4096, 512)]:
    q = torch.randn(b, hh, lq, d); k = torch.randn(b, hh, lk, d); v = torch.randn(b, hh, lk, d)
    causal = "causal" in name
    with torch.no_grad():
        report(name, 4.0 * b * hh * lq * lk * d, measure(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal), 3))
"""#

// MARK: - Main

// `threads=N` sets the worker count (default: all cores).
for a in CommandLine.arguments.dropFirst() where a.hasPrefix("threads=") {
    if let t = Int(a.dropFirst(8)), t > 0 { Threads.count = t }
}
let args = Set(CommandLine.arguments.dropFirst().filter { !$0.hasPrefix("threads=") })
if args.contains("torch-script") {
    print(torchScript)
    exit(0)
}
func wants(_ g: String) -> Bool { args.isEmpty || args.contains(g) }
print("KernelBench: threads \(Threads.count)")
if wants("peak") { benchPeak() }
if wants("tile") { benchTile() }
if wants("gemm") { benchGemm(threads: Threads.count) }
if wants("gemm1") { benchGemm(threads: 1) }
if wants("packed") { benchPacked() }
if args.contains("blocking") { benchBlocking() }
if wants("conv") { benchConv() }
if wants("winograd") { benchWinograd() }
if wants("attention") { benchAttention() }
if wants("norm") { benchNorm() }
if wants("eltwise") { benchEltwise() }
