// swift-tools-version:6.0
import PackageDescription

// The kernels are written with SIMD types; without a CPU target swiftc lowers them to SSE2 and
// never emits FMA. Haswell (AVX2 + FMA + F16C) is the x86-64-v3 baseline, so the default build
// runs on any x86-64-v3 machine. On other architectures the compiler's default is kept.
#if arch(x86_64)
let cpuFlags: [String] = ["-target-cpu", "haswell"]
let cCPUFlags: [String] = ["-mavx2", "-mfma", "-mf16c"]
#else
let cpuFlags: [String] = []
let cCPUFlags: [String] = []
#endif

#if arch(x86_64)
let avx512CPUFlags: [String] = ["-target-cpu", "skylake-avx512"]
#else
let avx512CPUFlags: [String] = []
#endif
let avx512: [SwiftSetting] = [
    .unsafeFlags(avx512CPUFlags),
    .unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release)),
]

let optimize: [SwiftSetting] = [
    .unsafeFlags(cpuFlags),
    .unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release)),
]

let package = Package(
    name: "Darkroom",
    products: [
        .library(name: "Darkroom", targets: ["Darkroom"]),
        .executable(name: "darkroom", targets: ["DarkroomCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // Pure Swift SIMD kernels on flat buffers; no model knowledge.
        // Optimised even in debug builds: the test suite runs real (tiny) models through them.
        .target(name: "Kernels", dependencies: ["KernelsAVX512"], swiftSettings: optimize + [.unsafeFlags(["-O"], .when(configuration: .debug))]),
        // The AVX-512 GEMM tile, compiled for AVX-512 CPUs; Kernels calls it only on such a CPU.
        .target(name: "KernelsAVX512", swiftSettings: avx512 + [.unsafeFlags(["-O"], .when(configuration: .debug))]),
        // libpng behind a small C shim that turns longjmp errors into return codes.
        .target(
            name: "CPNG",
            cSettings: [.unsafeFlags(cCPUFlags)],
            linkerSettings: [.linkedLibrary("png16")]
        ),
        // The library: tensors, weights, tokenizer, models, schedulers, pipeline, image IO.
        .target(name: "Darkroom", dependencies: ["Kernels", "CPNG"], swiftSettings: optimize),
        // The `darkroom` command.
        .executableTarget(
            name: "DarkroomCLI",
            dependencies: ["Darkroom", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: optimize
        ),
        // Per-component timings on a model folder (Tools/bench/compare.py runs it beside PyTorch).
        .executableTarget(name: "DarkroomBench", dependencies: ["Darkroom"], path: "Benchmarks/DarkroomBench", swiftSettings: optimize),
        .executableTarget(name: "KernelBench", dependencies: ["Kernels", "KernelsAVX512"], path: "Benchmarks/KernelBench", swiftSettings: optimize),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels", "KernelsAVX512"], swiftSettings: optimize),
        .testTarget(
            name: "DarkroomTests",
            dependencies: ["Darkroom", "DarkroomCLI"],
            exclude: ["Fixtures"],
            swiftSettings: optimize
        ),
    ]
)
