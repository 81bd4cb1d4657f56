import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One finished image in a batch folder's manifest (one JSON object per line).
public struct ManifestRecord: Sendable, Equatable {
    /// The PNG, relative to the output folder.
    public var file: String
    public var index: Int
    /// "prompts-file:line", when the job came from a file.
    public var source: String?
    public var prompt: String
    public var negativePrompt: String
    public var seed: UInt64
    public var steps: Int
    public var guidanceScale: Float
    public var width: Int
    public var height: Int
    /// The sampler's CLI name (`SamplerKind.rawValue`).
    public var sampler: String
    public var eta: Float
    /// A1111's clip skip (1 = none), diffusers' guidance_rescale, the prompt mode's raw value.
    public var clipSkip: Int
    public var guidanceRescale: Float
    public var promptMode: String
    /// img2img jobs: the init image's path and the strength (nil for text-to-image).
    public var initImage: String?
    public var strength: Float?
    /// The model's name (its folder name, as in the PNG), path and fingerprint.
    public var model: String
    public var modelPath: String
    public var modelHash: String
    public var modelHashMethod: String
    /// Rendering time per image (a batch of B shares its time equally); nil when the record was
    /// added later for a complete image that had none (the process was killed in between).
    public var seconds: Double?
    public var batchSize: Int
    /// "K/N".
    public var shard: String
    /// When the record was written, ISO 8601 UTC.
    public var created: String

    public init(file: String, index: Int, source: String?, request r: GenerationRequest, width: Int, height: Int,
                model: String, modelPath: String, modelHash: String, modelHashMethod: String = ModelFingerprint.method,
                seconds: Double?, batchSize: Int, shard: String, created: Date = Date(), initImage: String? = nil, strength: Float? = nil) {
        self.file = file
        self.index = index
        self.source = source
        prompt = r.prompt
        negativePrompt = r.negativePrompt
        seed = r.seed
        steps = r.steps
        guidanceScale = r.guidanceScale
        self.width = width
        self.height = height
        sampler = r.sampler.rawValue
        eta = r.eta
        clipSkip = r.clipSkip
        guidanceRescale = r.guidanceRescale
        promptMode = r.promptMode.rawValue
        self.initImage = initImage
        self.strength = strength
        self.model = model
        self.modelPath = modelPath
        self.modelHash = modelHash
        self.modelHashMethod = modelHashMethod
        self.seconds = seconds
        self.batchSize = batchSize
        self.shard = shard
        self.created = Self.timestamp(created)
    }

    static func timestamp(_ d: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        f.timeZone = TimeZone(identifier: "UTC")
        return f.string(from: d)
    }

    public var json: JSONText {
        .object([
            ("file", .string(file)), ("index", .int(Int64(index))), ("source", source.map { .string($0) } ?? .null),
            ("prompt", .string(prompt)), ("negative_prompt", .string(negativePrompt)), ("seed", .uint(seed)),
            ("steps", .int(Int64(steps))), ("guidance_scale", .float(guidanceScale)), ("width", .int(Int64(width))),
            ("height", .int(Int64(height))), ("sampler", .string(sampler)), ("eta", .float(eta)),
            ("clip_skip", .int(Int64(clipSkip))), ("guidance_rescale", .float(guidanceRescale)), ("prompt_mode", .string(promptMode)),
            ("init_image", initImage.map { .string($0) } ?? .null), ("strength", strength.map { .float($0) } ?? .null),
            ("model", .string(model)), ("model_path", .string(modelPath)), ("model_hash", .string(modelHash)),
            ("model_hash_method", .string(modelHashMethod)),
            ("seconds", seconds.map { .double(($0 * 1000).rounded() / 1000) } ?? .null),
            ("batch_size", .int(Int64(batchSize))), ("shard", .string(shard)), ("created", .string(created)),
        ])
    }

    /// Parses a manifest line; nil when it is not a complete record.
    public init?(line: String) {
        let bytes = Array(line.utf8)
        guard let v = try? JSONParser.parse(bytes: bytes), case .object = v else { return nil }
        func str(_ k: String) -> String? { if case .string(let s)? = v[k] { return s } else { return nil } }
        func num(_ k: String) -> Double? { if case .number(let d)? = v[k] { return d } else { return nil } }
        guard let file = str("file"), let index = num("index"), let prompt = str("prompt"), let seedD = num("seed"),
              let steps = num("steps"), let cfg = num("guidance_scale"), let width = num("width"), let height = num("height")
        else { return nil }
        self.file = file
        self.index = Int(index)
        source = str("source")
        self.prompt = prompt
        negativePrompt = str("negative_prompt") ?? ""
        if seedD < 9007199254740992 { seed = UInt64(seedD) }
        else { guard let raw = JSONParser.rawMember("seed", in: bytes), let s = UInt64(raw) else { return nil }; seed = s }
        self.steps = Int(steps)
        guidanceScale = Float(cfg)
        self.width = Int(width)
        self.height = Int(height)
        sampler = str("sampler") ?? ""
        eta = Float(num("eta") ?? 0)
        clipSkip = Int(num("clip_skip") ?? 1)
        guidanceRescale = Float(num("guidance_rescale") ?? 0)
        promptMode = str("prompt_mode") ?? PromptMode.auto.rawValue
        initImage = str("init_image")
        strength = num("strength").map { Float($0) }
        model = str("model") ?? ""
        modelPath = str("model_path") ?? ""
        modelHash = str("model_hash") ?? ""
        modelHashMethod = str("model_hash_method") ?? ""
        seconds = num("seconds")
        batchSize = Int(num("batch_size") ?? 1)
        shard = str("shard") ?? "1/1"
        created = str("created") ?? ""
    }
}

/// Reading a batch folder's manifests.
public enum Manifest {
    /// The manifests in a folder: `manifest.jsonl` and the shards' `manifest-K-of-N.jsonl`.
    public static func files(in folder: URL) -> [URL] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        return names.filter { $0.hasPrefix("manifest") && $0.hasSuffix(".jsonl") }.sorted().map { folder.appendingPathComponent($0) }
    }

    /// The records of one manifest. A last line without its newline is the remains of a write
    /// the process did not finish (killed, power lost) and is ignored; `badLines` lists the
    /// numbers of other lines that are not records.
    public static func read(_ url: URL) throws -> (records: [ManifestRecord], badLines: [Int]) {
        // Only regular files: a manifest that is a device (/dev/zero, /dev/full) or a FIFO would never end.
        var st = stat()
        guard stat(url.path, &st) == 0 else {
            if errno == ENOENT { throw DarkroomError.fileNotFound(path: url.path) }
            throw DarkroomError.io(path: url.path, reason: "cannot read: \(String(cString: strerror(errno)))")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw DarkroomError.io(path: url.path, reason: "not a regular file") }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw DarkroomError.io(path: url.path, reason: "cannot read: \(error.localizedDescription)")
        }
        var records: [ManifestRecord] = []
        var bad: [Int] = []
        let bytes = [UInt8](data)
        var start = 0
        var number = 1
        for i in 0..<bytes.count where bytes[i] == 0x0A {
            let line = bytes[start..<i]
            if !line.allSatisfy({ $0 == 0x20 || $0 == 0x0D }) {
                if let s = String(validating: line, as: UTF8.self), let r = ManifestRecord(line: s) { records.append(r) } else { bad.append(number) }
            }
            start = i + 1
            number += 1
        }
        return (records, bad)
    }
}

/// Appends records to one manifest file, as its only writer.
///
/// Each record is one line written with a single `write` on an `O_APPEND` descriptor and then
/// `fsync`ed, so a crash leaves at most one torn last line, which `Manifest.read` ignores and
/// the next writer cuts off before appending. The file is locked (`flock`, exclusive) while
/// open: a second process for the same manifest (the same shard of the same folder) is refused
/// instead of interleaving.
public final class ManifestWriter: @unchecked Sendable {
    public let url: URL
    private let fd: Int32
    private let lock = NSLock()

    public init(url: URL) throws {
        self.url = url
        let path = url.path
        let fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw DarkroomError.io(path: path, reason: "cannot open the manifest: \(String(cString: strerror(errno)))") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let busy = errno == EWOULDBLOCK
            close(fd)
            throw DarkroomError.io(path: path, reason: busy
                ? "another darkroom process is writing this batch (same folder and shard); wait for it or use another --shard"
                : "cannot lock the manifest: \(String(cString: strerror(errno)))")
        }
        self.fd = fd
        try repairTail()
    }

    deinit { close(fd) }

    /// Cuts a torn last line (no newline) left by a killed writer, so the next record starts a line.
    private func repairTail() throws {
        var st = stat()
        guard fstat(fd, &st) == 0 else { return }
        let size = Int(st.st_size)
        guard size > 0 else { return }
        var last: UInt8 = 0
        guard pread(fd, &last, 1, off_t(size - 1)) == 1, last != 0x0A else { return }
        var keep = 0
        var end = size
        let chunk = 64 << 10
        var buf = [UInt8](repeating: 0, count: chunk)
        search: while end > 0 {
            let from = max(0, end - chunk)
            let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, end - from, off_t(from)) }
            guard n == end - from else { break }
            for i in stride(from: n - 1, through: 0, by: -1) where buf[i] == 0x0A {
                keep = from + i + 1
                break search
            }
            end = from
        }
        guard ftruncate(fd, off_t(keep)) == 0 else {
            throw DarkroomError.io(path: url.path, reason: "cannot cut the torn last line: \(String(cString: strerror(errno)))")
        }
    }

    /// Appends one record as one line and makes it durable.
    public func append(_ record: ManifestRecord) throws {
        let line = Array((record.json.serialized + "\n").utf8)
        lock.lock()
        defer { lock.unlock() }
        var st = stat()
        let before = fstat(fd, &st) == 0 ? Int(st.st_size) : -1
        var done = 0
        while done < line.count {
            let n = line.withUnsafeBytes { write(fd, $0.baseAddress! + done, line.count - done) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 {
                let reason = String(cString: strerror(errno))
                if before >= 0 { _ = ftruncate(fd, off_t(before)) }  // never leave half a line
                throw DarkroomError.io(path: url.path, reason: "cannot append to the manifest: \(reason)")
            }
            done += n
        }
        _ = fsync(fd)
    }
}
