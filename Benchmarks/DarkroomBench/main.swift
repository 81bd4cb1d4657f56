// Times Darkroom per component on a model folder, like Tools/bench/reference_bench.py times
// diffusers: text encoder (batch 2), one UNet step with guidance (batch 2), VAE decode (batch 1).
// Prints one JSON object (seconds, min/median/max) on stdout.
//
//   swift run -c release DarkroomBench --model M --size 512 --runs 3 [--threads 2] [--component unet,vae]
import Darkroom
import Foundation

func argument(_ name: String) -> String? {
    let args = CommandLine.arguments
    guard let i = args.firstIndex(of: name), i + 1 < args.count else { return nil }
    return args[i + 1]
}

func processCPUSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
}

/// Wall seconds per run (min/median/max) and the process CPU seconds of the median-wall run:
/// `cpu / median` is how many cores were busy on average, which shows serial stretches and
/// waiting on the slowest worker when it falls short of the thread count.
func timed(_ runs: Int, _ body: () -> Void) -> [String: Double] {
    body()  // warm-up
    var ts: [(wall: Double, cpu: Double)] = []
    for _ in 0..<runs {
        let t = Date(), c = processCPUSeconds()
        body()
        ts.append((Date().timeIntervalSince(t), processCPUSeconds() - c))
    }
    ts.sort { $0.wall < $1.wall }
    let mid = ts[ts.count / 2]
    return ["min": ts[0].wall, "median": mid.wall, "max": ts[ts.count - 1].wall, "runs": Double(runs),
            "cpu": mid.cpu, "busy_cores": mid.cpu / mid.wall]
}

func peakRSSMB() -> Double {
    var u = rusage()
    getrusage(RUSAGE_SELF.rawValue, &u)
    return Double(u.ru_maxrss) / 1024
}

guard let modelPath = argument("--model") else {
    FileHandle.standardError.write(Data("usage: DarkroomBench --model M [--size 512] [--runs 3] [--threads N] [--component text_encoder,unet,vae]\n".utf8))
    exit(2)
}
let size = Int(argument("--size") ?? "512") ?? 512
let runs = max(1, Int(argument("--runs") ?? "3") ?? 3)
if let t = argument("--threads").flatMap(Int.init) { Threads.count = t }
limitHeapRetention()  // as the CLI does
let components = Set((argument("--component") ?? "text_encoder,unet,vae").split(separator: ",").map(String.init))
let folder = URL(fileURLWithPath: modelPath)
var out: [String: Any] = ["threads": Threads.count, "size": size]

do {
    var g = TorchGenerator(seed: 0)
    if components.contains("text_encoder") {
        let config = try CLIPTextConfig(ConfigFile.load(folder.appendingPathComponent("text_encoder/config.json")))
        let model = try CLIPTextModel(config: config, weights: try Weights.load(componentFolder: folder.appendingPathComponent("text_encoder"), stem: "model"))
        let ids = (0..<2).map { r in (0..<77).map { (r * 7919 + $0 * 104729) % 49407 } }
        out["text_encoder"] = timed(runs) { _ = try? model(ids) }
    }
    if components.contains("unet") {
        let config = try UNetConfig.load(folder.appendingPathComponent("unet/config.json"))
        let unet = try UNet2DConditionModel(config: config, weights: try Weights.load(componentFolder: folder.appendingPathComponent("unet"), stem: "diffusion_pytorch_model"))
        let h = size / 8
        let x = g.randn(shape: [2, config.inChannels, h, h])
        let ctx = g.randn(shape: [2, 77, config.crossAttentionDim[0]])
        // Runs back to back like the steps of the pipeline's denoising loop (activations reused).
        out["unet"] = unet.reusingActivations { timed(runs) { _ = unet(x, timestep: 500, context: ctx) } }
    }
    if components.contains("vae") {
        let config = try VAEConfig.load(folder.appendingPathComponent("vae/config.json"))
        let vae = try VAEDecoder(config: config, weights: try Weights.load(componentFolder: folder.appendingPathComponent("vae"), stem: "diffusion_pytorch_model"))
        let h = size / 8
        let z = g.randn(shape: [1, config.latentChannels, h, h])
        out["vae"] = timed(runs) { _ = vae(z) }
    }
} catch {
    FileHandle.standardError.write(Data("DarkroomBench: \(error)\n".utf8))
    exit(1)
}
out["peak_rss_mb"] = peakRSSMB()
let data = try JSONSerialization.data(withJSONObject: out, options: [.sortedKeys])
print(String(decoding: data, as: UTF8.self))
