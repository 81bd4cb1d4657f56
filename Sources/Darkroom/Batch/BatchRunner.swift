import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How a batch is written.
public struct BatchOptions: Sendable {
    /// The folder the images and the manifest go to (created if needed).
    public var output: URL
    public var namePattern: FileNamePattern
    /// This machine's share of the jobs.
    public var shard: Shard
    /// Images that go through the UNet together (jobs with the same size, steps, sampler and
    /// guidance on/off); 1 renders one at a time. Images are the same either way.
    public var batchSize: Int

    public init(output: URL, namePattern: FileNamePattern? = nil, shard: Shard = .all, batchSize: Int = 1) {
        self.output = output
        self.namePattern = namePattern ?? (try! FileNamePattern())
        self.shard = shard
        self.batchSize = max(1, batchSize)
    }
}

/// What a batch is about to do, after looking at the folder.
public struct BatchPlan: Sendable {
    /// Jobs of this shard.
    public var total: Int
    /// Jobs to render, in order, with the name each will get (before collision suffixes).
    public var toMake: [(job: BatchJob, file: String)]
    /// Jobs whose complete PNG is already in the folder.
    public var done: [(job: BatchJob, file: String)]
    /// Jobs the model cannot render (e.g. a size it does not support), with the reason.
    public var invalid: [(job: BatchJob, message: String)]
}

/// Progress of a batch, reported synchronously on the thread that runs it.
public enum BatchEvent: Sendable {
    /// The folder has been checked; rendering starts.
    case planned(BatchPlan)
    /// The jobs that now go through the UNet together.
    case started([BatchJob])
    /// Before each denoising step (and when encoding/decoding) of the current jobs.
    case step([BatchJob], GenerationProgress)
    /// An image is written and recorded in the manifest.
    case finished(BatchJob, file: String, seconds: Double)
    /// A job could not be rendered; the batch goes on.
    case failed(BatchJob, message: String)
}

/// The outcome of `BatchRunner.run`.
public struct BatchSummary: Sendable {
    public var total = 0
    public var made = 0
    /// Already complete in the folder.
    public var skipped = 0
    /// Jobs the model refused before rendering.
    public var invalid = 0
    /// Jobs that failed while rendering or writing.
    public var failed = 0
    /// Stopped by `cancel()`; the unfinished jobs are left for a rerun.
    public var cancelled = false
    /// A write error that stopped the batch (full disk, unwritable folder): every later image
    /// would fail the same way. The job it stopped at is not counted as failed: it is left,
    /// with the rest, for a rerun.
    public var stoppedBy: DarkroomError?
    /// Where the batch stopped ("prompts.jsonl:12", or "job 11").
    public var stoppedAt: String?
    public var seconds: Double = 0
    /// "source: message" for every invalid or failed job.
    public var messages: [String] = []
    /// Jobs not made (cancelled or stopped), left for a rerun.
    public var remaining: Int { max(0, total - made - skipped - invalid - failed) }
}

/// Runs a list of jobs into a folder: skips images already there, renders the rest (several at
/// once with `batchSize`), writes each PNG atomically under a name that never replaces a
/// different image, and appends a manifest record per image.
///
/// ```swift
/// let pipeline = try StableDiffusionPipeline(folder: modelURL)
/// let file = try PromptFile.load(promptsURL)
/// let (jobs, problems) = file.jobs(defaults: BatchDefaults(steps: 20, width: 512, height: 512))
/// let runner = try BatchRunner(pipeline: pipeline, options: BatchOptions(output: outURL))
/// let summary = try runner.run(jobs) { event in
///     if case .finished(_, let file, _) = event { print(file) }
/// }
/// ```
/// `cancel()` (from any thread) stops at the next denoising step; the interrupted images are
/// discarded and a rerun with the same jobs makes them.
public final class BatchRunner: @unchecked Sendable {
    public let pipeline: StableDiffusionPipeline
    public let options: BatchOptions
    /// `ModelFingerprint.compute` of the model folder.
    public let modelHash: String
    private let lock = NSLock()
    private var cancelFlag = false
    /// Writes a PNG (complete, under a temporary name that `place` then links into place).
    /// Tests replace it to inject faults (a full disk, a folder that becomes unwritable).
    var writePNG: (RGBImage, [(key: String, value: String)], URL) throws -> Void = { try PNGFile.write($0, text: $1, to: $2) }
    /// Device and inode of the output folder while `run` holds it.
    private var folderIdentity: (dev: UInt64, ino: UInt64)?

    public init(pipeline: StableDiffusionPipeline, options: BatchOptions) throws {
        self.pipeline = pipeline
        self.options = options
        modelHash = try ModelFingerprint.compute(folder: pipeline.model.folder)
    }

    /// Requests a stop at the next denoising step. Safe from any thread.
    public func cancel() {
        lock.lock(); cancelFlag = true; lock.unlock()
    }

    public var isCancelled: Bool {
        lock.lock(); defer { lock.unlock() }
        return cancelFlag
    }

    /// Runs this shard's share of `jobs`. Throws only when the batch cannot start (folder not
    /// writable, another process writing the same folder and shard); per-job problems are in
    /// the summary. A write error (full disk, the folder removed or made unwritable) stops the
    /// batch with `stoppedBy` set: every image written so far is complete and recorded, and a
    /// rerun makes the rest.
    public func run(_ jobs: [BatchJob], observer: @escaping (BatchEvent) -> Void = { _ in }) throws -> BatchSummary {
        let began = Date()
        let out = options.output
        try Self.prepareFolder(out)
        let folderLock = try FolderLock(folder: out, shard: options.shard)
        defer { folderLock.release() }
        folderIdentity = Self.identity(out)
        defer { folderIdentity = nil }
        let writer = try ManifestWriter(url: out.appendingPathComponent(options.shard.manifestName))
        var recorded = Set<String>()
        for m in Manifest.files(in: out) {
            if let r = try? Manifest.read(m) { for rec in r.records { recorded.insert(rec.file) } }
        }

        let plan = self.plan(jobs)
        var summary = BatchSummary()
        summary.total = plan.total
        var folders = Set([out.path])
        for (_, f) in plan.toMake { folders.insert(out.appendingPathComponent(f).deletingLastPathComponent().path) }
        for f in folders { Self.removeStaleTemporaries(in: URL(fileURLWithPath: f)) }
        summary.invalid = plan.invalid.count
        summary.skipped = plan.done.count
        for (job, m) in plan.invalid { summary.messages.append("\(job.source.map { "\($0)" } ?? "job \(job.index)"): \(m)") }
        observer(.planned(plan))
        for (job, m) in plan.invalid { observer(.failed(job, message: m)) }

        // Complete images whose record was lost (killed between the rename and the append).
        for (job, file) in plan.done where !recorded.contains(file) {
            if let p = try? parameters(for: job) { try? writer.append(record(job, file: file, parameters: p, seconds: nil, batchSize: 1)) }
        }

        var queue = plan.toMake[...]
        batches: while !queue.isEmpty {
            if isCancelled { summary.cancelled = true; break }
            var group = [queue.removeFirst()]
            // Image-to-image jobs run one at a time (each has its own start).
            while group.count < options.batchSize, group[0].job.initImage == nil, let next = queue.first, next.job.initImage == nil,
                  pipeline.canBatch(group[0].job.request, next.job.request) {
                group.append(queue.removeFirst())
            }
            let jobsInGroup = group.map(\.job)
            observer(.started(jobsInGroup))
            let results: [GeneratedImage]
            do {
                let progress: (GenerationProgress) -> Bool = { p in
                    observer(.step(jobsInGroup, p))
                    return !self.isCancelled
                }
                if let start = jobsInGroup[0].initImage {
                    let image = try PNGFile.read(start.url).image
                    results = [try pipeline.generate(jobsInGroup[0].request, initImage: image, strength: start.strength,
                                                     encoder: pipeline.model.vaeEncoder(), progress: progress)]
                } else {
                    results = try pipeline.generate(batch: jobsInGroup.map(\.request), progress: progress,
                                                    releasingWeights: queue.isEmpty)  // the last batch
                }
            } catch DarkroomError.cancelled {
                summary.cancelled = true
                break batches
            } catch {
                for j in jobsInGroup {
                    let m = (error as? DarkroomError)?.description ?? "\(error)"
                    summary.failed += 1
                    summary.messages.append("\(j.source.map { "\($0)" } ?? "job \(j.index)"): \(m)")
                    observer(.failed(j, message: m))
                }
                continue
            }
            for ((job, base), result) in zip(group, results) {
                do {
                    let file = try place(result.image, parametersText: result.parameters.a1111Text, base: base, jobIndex: job.index)
                    try writer.append(record(job, file: file, parameters: result.parameters, seconds: result.seconds, batchSize: group.count))
                    summary.made += 1
                    observer(.finished(job, file: file, seconds: result.seconds))
                } catch let e as DarkroomError {
                    let at = job.source.map { "\($0)" } ?? "job \(job.index)"
                    if case .io = e {
                        summary.stoppedBy = e
                        summary.stoppedAt = at
                        break batches
                    }
                    summary.failed += 1
                    summary.messages.append("\(at): \(e.description)")
                    observer(.failed(job, message: e.description))
                }
            }
        }
        summary.seconds = Date().timeIntervalSince(began)
        return summary
    }

    /// This shard's jobs sorted into those to make, those already complete in the folder and
    /// those the model cannot render. Reads the folder, writes nothing.
    public func plan(_ jobs: [BatchJob]) -> BatchPlan {
        let out = options.output
        let mine = jobs.filter { options.shard.contains(jobIndex: $0.index) }
        var plan = BatchPlan(total: mine.count, toMake: [], done: [], invalid: [])
        for job in mine {
            let parameters: GenerationParameters
            do { parameters = try self.parameters(for: job) } catch {
                plan.invalid.append((job, (error as? DarkroomError)?.description ?? "\(error)"))
                continue
            }
            let base = options.namePattern.relativePath(for: job, parameters: parameters)
            if let existing = Self.existingImage(base: base, in: out, parametersText: parameters.a1111Text) {
                plan.done.append((job, existing))
            } else {
                plan.toMake.append((job, base))
            }
        }
        return plan
    }

    /// The parameters text a job's image carries (checking the job against the model): for an
    /// image-to-image job its size comes from the init image's PNG header, and it records the
    /// strength.
    public func parameters(for job: BatchJob) throws -> GenerationParameters {
        guard let start = job.initImage else {
            _ = try pipeline.validate(job.request)
            return pipeline.parameters(for: job.request)
        }
        let info = try PNGFile.info(start.url)
        let p = try pipeline.plan(job.request, initImageWidth: info.width, initImageHeight: info.height, strength: start.strength)
        return pipeline.parameters(for: job.request, plan: p, strength: start.strength)
    }

    func record(_ job: BatchJob, file: String, parameters p: GenerationParameters, seconds: Double?, batchSize: Int) -> ManifestRecord {
        ManifestRecord(file: file, index: job.index, source: job.source?.description, request: job.request,
                       width: p.width, height: p.height, model: pipeline.model.name,
                       modelPath: pipeline.model.folder.standardizedFileURL.path, modelHash: modelHash,
                       seconds: seconds, batchSize: batchSize, shard: options.shard.description,
                       initImage: job.initImage?.url.path, strength: job.initImage?.strength)
    }

    // MARK: - Files

    static func identity(_ dir: URL) -> (dev: UInt64, ino: UInt64)? {
        var st = stat()
        guard stat(dir.path, &st) == 0 else { return nil }
        return (UInt64(st.st_dev), UInt64(st.st_ino))
    }

    static func prepareFolder(_ dir: URL) throws {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        if fm.fileExists(atPath: dir.path, isDirectory: &isDir) {
            guard isDir.boolValue else { throw DarkroomError.io(path: dir.path, reason: "exists and is not a folder") }
        } else {
            do { try fm.createDirectory(at: dir, withIntermediateDirectories: true) } catch {
                throw DarkroomError.io(path: dir.path, reason: "cannot create the output folder")
            }
        }
        guard fm.isWritableFile(atPath: dir.path) else { throw DarkroomError.io(path: dir.path, reason: "output folder is not writable") }
    }

    /// Whether `url` is a complete PNG (ends with its IEND chunk, header and text readable)
    /// whose `parameters` text is exactly `parametersText`.
    public static func isComplete(_ url: URL, parametersText: String) -> Bool {
        guard let info = try? PNGFile.info(url), info.text["parameters"] == parametersText else { return false }
        guard let h = FileHandle(forReadingAtPath: url.path) else { return false }
        defer { try? h.close() }
        guard let end = try? h.seekToEnd(), end >= 12 else { return false }
        try? h.seek(toOffset: end - 12)
        let tail = h.readData(ofLength: 12)
        return [UInt8](tail) == [0, 0, 0, 0, 0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82]
    }

    /// The name under which a complete image for this job already exists: the base name or one
    /// of its "-N" alternatives (taken when another image held the name).
    static func existingImage(base: String, in dir: URL, parametersText: String) -> String? {
        for n in 1...1000 {
            let rel = n == 1 ? base : FileNamePattern.alternative(base, number: n)
            let url = dir.appendingPathComponent(rel)
            guard FileManager.default.fileExists(atPath: url.path) else { return nil }
            if isComplete(url, parametersText: parametersText) { return rel }
        }
        return nil
    }

    static let hostTag: String = {
        var buf = [CChar](repeating: 0, count: 256)
        gethostname(&buf, 255)
        let bytes = buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        let name = String(decoding: bytes, as: UTF8.self).unicodeScalars.map {
            ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) ? String($0) : "_"
        }.joined()
        return String((name.isEmpty ? "host" : name).prefix(64))
    }()

    /// Temporary names are ".darkroom-HOST-PID-INDEX.png" (and libpng's writer adds its own
    /// ".<that>.<random>.tmp"): hidden, and traceable to a process so that leftovers of a killed
    /// process on this machine can be removed by the next run.
    func temporaryURL(in dir: URL, jobIndex: Int) -> URL {
        dir.appendingPathComponent(".darkroom-\(Self.hostTag)-\(getpid())-\(jobIndex).png")
    }

    static func removeStaleTemporaries(in dir: URL) {
        let prefix = ".darkroom-\(hostTag)-"
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? [] {
            let rest: Substring
            if name.hasPrefix(prefix) { rest = name.dropFirst(prefix.count) }
            else if name.hasPrefix("." + prefix) { rest = name.dropFirst(prefix.count + 1) }
            else { continue }
            guard let pid = Int32(rest.prefix { $0.isASCII && $0.isNumber }), pid != getpid() else { continue }
            if kill(pid, 0) == -1 && errno == ESRCH { unlink(dir.appendingPathComponent(name).path) }
        }
    }

    /// Writes the PNG to a temporary file, then links it under the first free name of `base`,
    /// `base-2`, ... — `link` fails instead of replacing, so no image is ever overwritten, even
    /// by another process racing for the same name. If the name holds this very image (another
    /// process made the same job), that copy is kept. Returns the name used.
    func place(_ image: RGBImage, parametersText: String, base: String, jobIndex: Int) throws -> String {
        let out = options.output
        // A folder removed (or replaced) under a running batch is not silently made again: the
        // images before would be gone and the manifest's descriptor would point at a deleted file.
        if let held = folderIdentity {
            guard let now = Self.identity(out), now == held else {
                throw DarkroomError.io(path: out.path, reason: "the output folder was removed or replaced while the batch ran")
            }
        }
        let dir = out.appendingPathComponent(base).deletingLastPathComponent()
        if !FileManager.default.fileExists(atPath: dir.path) {
            do { try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true) } catch {
                throw DarkroomError.io(path: dir.path, reason: "cannot create the folder")
            }
        }
        let temp = temporaryURL(in: dir, jobIndex: jobIndex)
        defer { unlink(temp.path) }  // also after a failed write: never a partial file left behind
        do { try writePNG(image, [("parameters", parametersText)], temp) } catch DarkroomError.io(_, let reason) {
            // Name the image, not its temporary file.
            throw DarkroomError.io(path: out.appendingPathComponent(base).path, reason: reason)
        }
        for n in 1...1000 {
            let rel = n == 1 ? base : FileNamePattern.alternative(base, number: n)
            let final = out.appendingPathComponent(rel)
            if link(temp.path, final.path) == 0 {
                Self.syncFolder(dir)
                return rel
            }
            let err = errno
            if err == EEXIST {
                if Self.isComplete(final, parametersText: parametersText) { return rel }
                continue
            }
            if err == EPERM || err == EOPNOTSUPP || err == EMLINK || err == ENOSYS {
                // No hard links here (some network and FUSE file systems): check, then rename.
                // Only a process racing between the check and the rename could be replaced.
                if FileManager.default.fileExists(atPath: final.path) {
                    if Self.isComplete(final, parametersText: parametersText) { return rel }
                    continue
                }
                guard rename(temp.path, final.path) == 0 else {
                    throw DarkroomError.io(path: final.path, reason: "cannot move the PNG into place: \(String(cString: strerror(errno)))")
                }
                Self.syncFolder(dir)
                return rel
            }
            throw DarkroomError.io(path: final.path, reason: "cannot move the PNG into place: \(String(cString: strerror(err)))")
        }
        throw DarkroomError.io(path: out.appendingPathComponent(base).path, reason: "1000 other images already use this name")
    }

    static func syncFolder(_ dir: URL) {
        let fd = open(dir.path, O_RDONLY | O_DIRECTORY)
        if fd >= 0 { _ = fsync(fd); close(fd) }
    }
}
