// Kernel micro-benchmarks (GFLOP/s of GEMM, conv, attention). Run with:
//   swift run -c release KernelBench
import Kernels
print("KernelBench: threads \(Threads.count)")
