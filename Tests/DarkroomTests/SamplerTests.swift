import Foundation
import XCTest
@testable import Darkroom

/// Euler, Euler ancestral, DPM++ 2M (Karras), PNDM and LCM against diffusers 0.42.1
/// (Tools/fixtures_samplers.py, Tests/DarkroomTests/Fixtures/samplers).
///
/// Tolerances: timesteps must be identical (integers, or numpy's float32 fractions); σ and
/// init_noise_sigma within 1 ulp; every scaled model input and the latents after every step of
/// whole loops (up to 25 steps, fake model, ancestral/LCM noise from the shared generator) within
/// 1e-6 relative (absolute floor 1e-6 for values below 1). The torch ops diffusers uses are
/// reproduced operation by operation, including MKL's float32 sqrt/log/exp, so on the project's
/// machines nearly every value is bit-identical (the test prints the count); the tolerance covers
/// MKL's CPU-dependent kernels (1 ulp) elsewhere. End to end on Models/tiny-sd1, the image must
/// match diffusers' StableDiffusionPipeline within 1e-3 (float [0, 1]), as the DDIM parity test.
final class SamplerTests: XCTestCase {
    private static let dir = TestPaths.fixtures.appendingPathComponent("samplers")

    private static func load(_ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: dir.appendingPathComponent(name))
        return try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    /// A base64 string of little-endian float32 bytes.
    private static func floats(_ any: Any?) -> [Float] {
        guard let s = any as? String, let d = Data(base64Encoded: s) else { return [] }
        return d.withUnsafeBytes { raw in
            (0..<(d.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
        }
    }

    private static func numbers(_ any: Any?) -> [Float] { ((any as? [Any]) ?? []).map { Float(truncating: $0 as! NSNumber) } }

    private static func config(_ dict: Any) throws -> SchedulerConfig {
        try SchedulerConfig.decode(JSONSerialization.data(withJSONObject: dict), path: "fixture")
    }

    /// The fixture's stand-in UNet: input * f32(0.25 + 0.5 t/T) + base * f32(1 - 0.75 t/T).
    private static func fakeModel(_ input: Tensor, _ base: Tensor, _ t: Float, _ tTrain: Int) -> Tensor {
        let k1 = Float(0.25 + 0.5 * Double(t) / Double(tTrain))
        let k2 = Float(1.0 - 0.75 * Double(t) / Double(tTrain))
        let out = Tensor(shape: input.shape)
        for i in 0..<input.count { out[i] = input[i] * k1 + base[i] * k2 }
        return out
    }

    private var exact = 0, compared = 0

    /// Bit-identical on the machine the goldens were made on (AMD Zen 3; the count is printed). On
    /// other CPUs torch's own float32 sqrt differs by 1 ulp (MKL starts from the hardware rsqrt
    /// estimate, whose tables differ between vendors), and zero-terminal-SNR schedules (σ_max 4096)
    /// amplify that to ~5e-5 relative (3.7e-4 on Euler a's first 4-step jump down from σ 4096);
    /// 1e-4 (zero-SNR: 1e-3) is still far below any formula error (≥ 1e-2).
    static let crossCPURelative: Float = 1e-4
    static let crossCPUUlps = 8

    private func assertClose(_ got: [Float], _ want: [Float], _ label: String, relative: Float = SamplerTests.crossCPURelative) {
        XCTAssertEqual(got.count, want.count, "\(label): count")
        var failures = 0
        for (g, w) in zip(got, want) {
            compared += 1
            if g.bitPattern == w.bitPattern { exact += 1; continue }
            if !(abs(g - w) <= relative * max(1, abs(w))) {
                failures += 1
                if failures <= 3 { XCTFail("\(label): got \(g) want \(w)") }
            }
        }
    }

    private static func ulps(_ a: Float, _ b: Float) -> Int {
        if a == b { return 0 }
        guard a.sign == b.sign, a.isFinite, b.isFinite else { return Int.max }
        return abs(Int(a.bitPattern) - Int(b.bitPattern))
    }

    /// σ values exposed by the σ-based samplers.
    private static func sigmas(_ s: any Sampler) -> [Float]? {
        if let e = s as? EulerDiscreteScheduler { return e.sigmas }
        if let e = s as? EulerAncestralDiscreteScheduler { return e.sigmas }
        if let d = s as? DPMSolverMultistepScheduler { return d.sigmas }
        return nil
    }

    func testGoldenLoops() throws {
        let root = try Self.load("samplers.json")
        let shape = (root["shape"] as! [NSNumber]).map(\.intValue)
        let seed = (root["seed"] as! NSNumber).uint64Value
        let base = Tensor(shape: shape, values: Self.floats(root["base"]))
        let cases = try XCTUnwrap(root["cases"] as? [[String: Any]])
        XCTAssertEqual(cases.count, 22)
        var loops = 0, expectedErrors = 0
        for c in cases {
            let samplerName = c["sampler"] as! String
            let kind = try XCTUnwrap(SamplerKind(rawValue: samplerName), samplerName)
            let cfg = try Self.config(c["config"]!)
            let tTrain = cfg.numTrainTimesteps
            for run in c["runs"] as! [[String: Any]] {
                let n = (run["steps"] as! NSNumber).intValue
                let what = "\(samplerName) \(c["config_name"]!) n=\(n)"
                if let err = run["error"] as? String {
                    // diffusers refuses this schedule (PNDM's Runge-Kutta warm-up with n < 4).
                    XCTAssertThrowsError(try kind.make(config: cfg, steps: n, eta: 0), "\(what): diffusers: \(err)")
                    expectedErrors += 1
                    continue
                }
                var s = try kind.make(config: cfg, steps: n, eta: 0)
                let wantTimesteps = Self.numbers(run["timesteps"])
                XCTAssertEqual(s.timesteps.count, wantTimesteps.count, "\(what) timesteps")
                for (g, w) in zip(s.timesteps, wantTimesteps) {
                    XCTAssertLessThanOrEqual(abs(g - w), 1e-5 * max(1, abs(w)), "\(what) timestep \(g) vs \(w)")
                }
                if let want = run["sigmas"] {
                    let got = try XCTUnwrap(Self.sigmas(s), what)
                    let wantSigmas = Self.numbers(want)
                    XCTAssertEqual(got.count, wantSigmas.count, "\(what) sigmas")
                    for (g, w) in zip(got, wantSigmas) { XCTAssertLessThanOrEqual(Self.ulps(g, w), Self.crossCPUUlps, "\(what) sigma \(g) vs \(w)") }
                }
                let wantInit = (run["init_noise_sigma"] as! NSNumber).floatValue
                XCTAssertLessThanOrEqual(Self.ulps(s.initNoiseSigma, wantInit), Self.crossCPUUlps, "\(what) init_noise_sigma \(s.initNoiseSigma) vs \(wantInit)")
                guard run["run_error"] == nil else { continue }  // diffusers fails mid-loop (see the script)

                // The loop as the pipeline runs it.
                let tolerance: Float = cfg.rescaleBetasZeroSnr ? 1e-3 : Self.crossCPURelative
                var g = TorchGenerator(seed: seed)
                var latents = g.randn(shape: shape)
                if s.initNoiseSigma != 1 { latents = latents.mapped { $0 * s.initNoiseSigma } }
                let inputs = (run["model_inputs"] as? [Any])?.map(Self.floats)
                let states = (run["latents"] as! [Any]).map(Self.floats)
                XCTAssertEqual(states.count, s.timesteps.count, "\(what): evaluations")
                for (i, t) in s.timesteps.enumerated() {
                    let input = s.scaleModelInput(latents, stepIndex: i)
                    if let inputs {
                        assertClose(input.scalars, inputs[i], "\(what) model input \(i)", relative: tolerance)
                    } else {
                        XCTAssertEqual(input.scalars, latents.scalars, "\(what): scale_model_input is the identity")
                    }
                    let output = Self.fakeModel(input, base, t, tTrain)
                    latents = s.step(modelOutput: output, stepIndex: i, sample: latents, generator: &g)
                    assertClose(latents.scalars, states[i], "\(what) latents after step \(i)", relative: tolerance)
                }
                loops += 1
            }
        }
        XCTAssertEqual(expectedErrors, 1)  // pndm ddim_folder n=1
        XCTAssertGreaterThanOrEqual(loops, 70)
        print("Sampler goldens: \(loops) loops, \(exact) of \(compared) values bit-identical to diffusers")
    }

    /// torch.log / torch.exp (MKL) reproductions: within 1 ulp everywhere, bit-identical on the
    /// project's machines (the count is printed).
    func testLogExpMatchTorch() throws {
        let math = try XCTUnwrap(try Self.load("samplers.json")["math"] as? [String: [String: Any]])
        for (name, f) in [("log", torchLog), ("exp", torchExp)] as [(String, (Float) -> Float)] {
            let xs = Self.floats(math[name]?["x"]), want = Self.floats(math[name]?["torch"])
            XCTAssertGreaterThan(xs.count, 1000)
            var same = 0, roundedDiffers = 0
            for (x, w) in zip(xs, want) {
                let got = f(x)
                if got.bitPattern == w.bitPattern { same += 1 }
                let rounded = name == "log" ? Float(Foundation.log(Double(x))) : Float(Foundation.exp(Double(x)))
                if rounded.bitPattern != w.bitPattern { roundedDiffers += 1 }
                XCTAssertLessThanOrEqual(Self.ulps(got, w), 1, "\(name)(\(x)): \(got) vs torch \(w)")
            }
            print("torch\(name.capitalized): \(same) of \(xs.count) bit-identical to torch "
                + "(a correctly rounded \(name) differs on \(roundedDiffers))")
            XCTAssertGreaterThan(roundedDiffers, 5, "fixture should exercise MKL's non-IEEE rounding")
        }
    }

    /// numpy's float32 log kernel (fractional Karras timesteps depend on it): bit-identical.
    func testNumpyLogMatches() throws {
        let math = try XCTUnwrap(try Self.load("samplers.json")["math"] as? [String: [String: Any]])
        let xs = Self.floats(math["numpy_log"]?["x"]), want = Self.floats(math["numpy_log"]?["numpy"])
        XCTAssertGreaterThan(xs.count, 1000)
        var roundedDiffers = 0
        for (x, w) in zip(xs, want) {
            XCTAssertEqual(numpyLogFloat(x).bitPattern, w.bitPattern, "np.log(\(x)): \(numpyLogFloat(x)) vs \(w)")
            if Float(Foundation.log(Double(x))).bitPattern != w.bitPattern { roundedDiffers += 1 }
        }
        XCTAssertGreaterThan(roundedDiffers, 100, "fixture should exercise numpy's non-IEEE rounding")
    }

    func testGuidanceScaleEmbedding() throws {
        let cases = try XCTUnwrap(try Self.load("samplers.json")["guidance_embedding"] as? [[String: Any]])
        XCTAssertEqual(cases.count, 5)
        for c in cases {
            let w = (c["guidance_scale"] as! NSNumber).floatValue
            let dim = (c["dimension"] as! NSNumber).intValue
            let got = LCMScheduler.guidanceScaleEmbedding(w - 1, dimension: dim)
            XCTAssertEqual(got.shape, [1, dim])
            let want = Self.floats(c["embedding"])
            // sin/cos of arguments up to ~14000 rad: torch's are within 1 ulp of the rounded ones.
            for (i, (g, e)) in zip(got.scalars, want).enumerated() {
                XCTAssertEqual(g, e, accuracy: 1e-6, "w=\(w) dim=\(dim) [\(i)]")
            }
        }
    }

    func testNamesAndConfigDefaults() throws {
        XCTAssertEqual(SamplerKind.allCases.map(\.rawValue), ["ddim", "euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "pndm", "lcm"])
        for k in SamplerKind.allCases {
            XCTAssertEqual(SamplerKind(name: k.rawValue), k)
            XCTAssertEqual(SamplerKind(name: k.a1111Name), k)
            XCTAssertEqual(SamplerKind(name: k.a1111Name.uppercased()), k)
        }
        XCTAssertEqual(SamplerKind(name: "Euler a"), .eulerA)
        XCTAssertEqual(SamplerKind(name: "DPM++ 2M Karras"), .dpmpp2mKarras)
        XCTAssertEqual(SamplerKind(name: "dpmpp-2m"), .dpmpp2m)
        XCTAssertEqual(SamplerKind(name: "plms"), .pndm)
        XCTAssertNil(SamplerKind(name: "heun"))

        // A config without timestep_spacing: DDIM and PNDM use leading, Euler and DPM linspace.
        let legacy = try SchedulerConfig.decode(Data(#"{"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "steps_offset": 1}"#.utf8), path: "legacy")
        XCTAssertFalse(legacy.has("timestep_spacing"))
        XCTAssertTrue(legacy.has("steps_offset"))
        XCTAssertEqual(try EulerDiscreteScheduler(config: legacy).config.timestepSpacing, .linspace)
        XCTAssertEqual(try PNDMScheduler(config: legacy).config.timestepSpacing, .leading)
        XCTAssertFalse(try PNDMScheduler(config: legacy).config.setAlphaToOne)
        XCTAssertFalse(try PNDMScheduler(config: legacy).config.skipPrkSteps)
        // LCM's own beta defaults apply when the file gives none.
        let lcm = try LCMScheduler(config: SchedulerConfig())
        XCTAssertEqual(lcm.config.betaSchedule, .scaledLinear)
        XCTAssertEqual(lcm.config.betaStart, 0.00085)
        // Setting a field in code counts as giving it.
        var set = SchedulerConfig()
        set.timestepSpacing = .leading
        XCTAssertEqual(try EulerDiscreteScheduler(config: set).config.timestepSpacing, .leading)
        XCTAssertEqual(SchedulerConfig(), try SchedulerConfig.decode(Data("{}".utf8), path: "other"))
    }

    func testUnsupportedOptionsAndStepCounts() throws {
        func config(_ json: String) throws -> SchedulerConfig {
            try SchedulerConfig.decode(Data(json.utf8), path: "x/scheduler_config.json")
        }
        func assertUnsupported(_ kind: SamplerKind, _ json: String, key: String, line: UInt = #line) throws {
            let c = try config(json)
            XCTAssertThrowsError(try kind.make(config: c, steps: 4, eta: 0), line: line) { error in
                guard case let DarkroomError.unsupported(path, k, _) = error else { return XCTFail("\(error)", line: line) }
                XCTAssertEqual(path, "x/scheduler_config.json", line: line)
                XCTAssertEqual(k, key, line: line)
            }
            // DDIM does not know these keys and ignores them, as its from_config does.
            XCTAssertNoThrow(try SamplerKind.ddim.make(config: c, steps: 4, eta: 0), line: line)
        }
        try assertUnsupported(.euler, #"{"interpolation_type": "log_linear"}"#, key: "interpolation_type")
        try assertUnsupported(.euler, #"{"use_exponential_sigmas": true}"#, key: "use_exponential_sigmas")
        try assertUnsupported(.euler, #"{"timestep_type": "continuous", "prediction_type": "v_prediction"}"#, key: "timestep_type")
        try assertUnsupported(.eulerA, #"{"prediction_type": "sample"}"#, key: "prediction_type")
        try assertUnsupported(.dpmpp2m, #"{"use_lu_lambdas": true}"#, key: "use_lu_lambdas")
        try assertUnsupported(.dpmpp2m, #"{"variance_type": "learned_range"}"#, key: "variance_type")
        try assertUnsupported(.pndm, #"{"prediction_type": "sample"}"#, key: "prediction_type")
        // The DPM names fix algorithm and order whatever the folder's DPM config says.
        XCTAssertNoThrow(try SamplerKind.dpmpp2m.make(config: config(#"{"algorithm_type": "sde-dpmsolver++", "solver_order": 3}"#), steps: 4, eta: 0))
        XCTAssertThrowsError(try DPMSolverMultistepScheduler(config: config(#"{"algorithm_type": "sde-dpmsolver++"}"#)))
        XCTAssertThrowsError(try SchedulerConfig.decode(Data(#"{"final_sigmas_type": "one"}"#.utf8), path: "x"))

        for kind in SamplerKind.allCases {
            XCTAssertThrowsError(try kind.make(config: SchedulerConfig(), steps: 0, eta: 0), "\(kind) 0 steps")
            XCTAssertThrowsError(try kind.make(config: SchedulerConfig(), steps: 1001, eta: 0), "\(kind) 1001 steps")
        }
        XCTAssertThrowsError(try SamplerKind.lcm.make(config: SchedulerConfig(), steps: 51, eta: 0))  // > original_inference_steps
        XCTAssertNoThrow(try SamplerKind.lcm.make(config: SchedulerConfig(), steps: 50, eta: 0))
        // PNDM with Runge-Kutta warm-up: 12 + (n − 3) evaluations, n >= 4.
        let prk = try SamplerKind.pndm.make(config: SchedulerConfig(), steps: 10, eta: 0)
        XCTAssertEqual(prk.timesteps.count, 19)
        XCTAssertThrowsError(try SamplerKind.pndm.make(config: SchedulerConfig(), steps: 3, eta: 0))
        var skip = SchedulerConfig()
        skip.skipPrkSteps = true
        XCTAssertEqual(try SamplerKind.pndm.make(config: skip, steps: 10, eta: 0).timesteps.count, 11)
    }

    /// Ancestral and LCM steps draw noise from the generator, the others do not.
    func testGeneratorUse() throws {
        let x = Tensor(shape: [1, 4, 4, 4], values: (0..<64).map { Float($0) / 64 })
        for kind in SamplerKind.allCases where kind != .ddim {
            var s = try kind.make(config: SchedulerConfig(), steps: 4, eta: 0)
            var g = TorchGenerator(seed: 9)
            _ = s.step(modelOutput: x, stepIndex: 0, sample: x, generator: &g)
            var fresh = TorchGenerator(seed: 9)
            let drew = g.nextUInt32() != fresh.nextUInt32()
            XCTAssertEqual(drew, kind == .eulerA || kind == .lcm, "\(kind)")
        }
    }

    /// StableDiffusionPipeline on Models/tiny-sd1 with each sampler against diffusers' pipeline
    /// with that scheduler (`from_config(pipe.scheduler.config)`): final latents within 1e-4
    /// (+1e-4 relative), image within 1e-3, as the DDIM pipeline test.
    func testPipelineMatchesDiffusers() throws {
        let spec = try Self.load("pipeline.json")
        let golden = try Golden("samplers", "pipeline.safetensors")
        let pipeline = try StableDiffusionPipeline(folder: TestPaths.model("tiny-sd1"))
        let cases = try XCTUnwrap(spec["cases"] as? [String: [String: Any]])
        XCTAssertEqual(Set(cases.keys), Set(SamplerKind.allCases.filter { $0 != .ddim }.map(\.rawValue)))
        let size = (spec["width"] as! NSNumber).intValue
        for (name, c) in cases.sorted(by: { $0.key < $1.key }) {
            let kind = try XCTUnwrap(SamplerKind(rawValue: name))
            let request = GenerationRequest(
                prompt: spec["prompt"] as! String, negativePrompt: spec["negative_prompt"] as! String,
                steps: (c["steps"] as! NSNumber).intValue, guidanceScale: (spec["guidance_scale"] as! NSNumber).floatValue,
                width: size, height: size, seed: (spec["seed"] as! NSNumber).uint64Value, sampler: kind)
            let embeddings = try pipeline.encode(prompt: request.prompt, negativePrompt: request.negativePrompt,
                                                 guidance: pipeline.usesGuidance(request.guidanceScale))
            var (latents, generator) = pipeline.initialLatents(seed: request.seed, width: size, height: size)
            var evaluations = 0
            latents = try pipeline.denoise(latents: latents, embeddings: embeddings, request: request,
                                           generator: &generator, onStep: { _, _ in evaluations += 1 })
            XCTAssertEqual(evaluations, (c["unet_evaluations"] as! NSNumber).intValue, name)
            DarkroomTests.assertClose(latents, try golden.tensor("\(name).latents"), atol: 1e-4, rtol: 1e-4, "\(name) final latents")

            let result = try pipeline.generate(request)
            XCTAssertEqual(result.parameters.sampler, kind.a1111Name)
            let expected = try golden.tensor("\(name).image")  // [1, H, W, 3]
            var maxDiff: Float = 0
            for y in 0..<size { for x in 0..<size { for ch in 0..<3 {
                maxDiff = max(maxDiff, abs(result.pixels[(ch * size + y) * size + x] - expected[(y * size + x) * 3 + ch]))
            } } }
            XCTAssertLessThanOrEqual(maxDiff, 1e-3, "\(name): image max-abs diff \(maxDiff)")
            print("pipeline \(name): image max-abs diff \(maxDiff)")
        }
    }
}
