import Darkroom
import Foundation

/// Where `render` puts images: one .png file, or a folder with A1111-style names.
struct OutputTarget {
    let isFile: Bool
    let url: URL
    let count: Int

    init(path: String?, count: Int) {
        let p = path ?? FileManager.default.currentDirectoryPath
        var isDir: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: p, isDirectory: &isDir)
        isFile = p.lowercased().hasSuffix(".png") && !(exists && isDir.boolValue)
        url = URL(fileURLWithPath: p)
        self.count = count
    }

    /// Creates the folder (or the file's folder) and checks it is writable, before any work.
    func prepare() throws {
        let dir = isFile ? url.deletingLastPathComponent() : url
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

    /// The file for image `index`: `name.png` (or `name-2.png`, ... for several) when a file was
    /// given, otherwise `NNNNN-SEED-prompt-words.png` with the next free number in the folder
    /// (as AUTOMATIC1111 numbers its outputs; `darkroom batch` numbers by job instead).
    func url(index: Int, seed: UInt64, prompt: String) -> URL {
        if isFile {
            if count == 1 { return url }
            let stem = url.deletingPathExtension().lastPathComponent
            return url.deletingLastPathComponent().appendingPathComponent("\(stem)-\(index + 1).png")
        }
        return folderName(number: nextNumber(), seed: seed, prompt: prompt)
    }

    /// The files for the images of `jobs`, decided before they are rendered (previews go next
    /// to them): in a folder, consecutive numbers from the next free one.
    func urls(for jobs: [BatchJob]) -> [URL] {
        if isFile { return jobs.map { url(index: $0.index, seed: $0.request.seed, prompt: $0.request.prompt) } }
        let first = nextNumber()
        return jobs.enumerated().map { k, job in folderName(number: first + k, seed: job.request.seed, prompt: job.request.prompt) }
    }

    private func folderName(number: Int, seed: UInt64, prompt: String) -> URL {
        url.appendingPathComponent(String(format: "%05d", number) + "-\(seed)-\(FileNamePattern.slug(prompt)).png")
    }

    private func nextNumber() -> Int {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []
        var highest = -1
        for n in names where n.hasSuffix(".png") {
            let digits = n.prefix { $0.isASCII && $0.isNumber }
            if digits.count == 5, let v = Int(digits) { highest = max(highest, v) }
        }
        return highest + 1
    }
}

/// Progress on stderr, in one of three modes:
/// - bar on a terminal: a batch bar (images done/total, images/min, time left) above a bar for
///   the current image's steps, redrawn in place; written files still go to stdout above them;
/// - bar elsewhere (logs): one line per finished image with the same figures;
/// - jsonl: one JSON object per event (`plan`, `start`, `step`, `image`, `skip`, `error`,
///   `summary`), for scripts;
/// - quiet: nothing but errors.
/// Written files are always listed on stdout, one per line, so scripts can collect them.
final class ProgressDisplay: @unchecked Sendable {
    let mode: ProgressMode
    let tty: Bool
    private var drawn = false
    private var lastDraw = Date.distantPast
    /// When the first image started (the rate leaves model loading out).
    private var began: Date?

    // Batch figures.
    private var total = 0
    private var toMake = 0
    private var done = 0
    private var made = 0
    private var failed = 0
    private var firstMadeAt: Date?
    // Current image(s).
    private var label = ""
    private var progress: GenerationProgress?

    init(mode: ProgressMode, tty: Bool = isatty(STDERR_FILENO) != 0) {
        self.mode = mode
        self.tty = tty
    }

    private func err(_ s: String) { FileHandle.standardError.write(Data(s.utf8)) }

    func event(_ name: String, _ fields: [(String, JSONText)]) {
        guard mode == .jsonl else { return }
        err(JSONText.object([("event", .string(name))] + fields).serialized + "\n")
    }

    /// The work ahead: `total` images, of which `skipped` are already there.
    func plan(total: Int, toMake: Int, skipped: Int, invalid: Int) {
        self.total = total
        self.toMake = toMake
        done = skipped
        event("plan", [("total", .int(Int64(total))), ("to_make", .int(Int64(toMake))), ("skipped", .int(Int64(skipped))),
                       ("invalid", .int(Int64(invalid)))])
    }

    func skipped(index: Int, file: String) {
        event("skip", [("index", .int(Int64(index))), ("file", .string(file))])
    }

    func started(indices: [Int], label: String) {
        self.label = label
        progress = nil
        if began == nil { began = Date() }
        event("start", [("indices", .array(indices.map { .int(Int64($0)) }))])
        draw(force: true)
    }

    func step(indices: [Int], _ p: GenerationProgress) {
        progress = p
        if mode == .jsonl {
            let phase: String
            switch p.phase {
            case .encoding: phase = "encode"
            case .denoising: phase = "denoise"
            case .decoding: phase = "decode"
            }
            event("step", [("indices", .array(indices.map { .int(Int64($0)) })), ("phase", .string(phase)),
                           ("step", .int(Int64(p.step))), ("steps", .int(Int64(p.totalSteps))),
                           ("elapsed", .double((p.elapsed * 1000).rounded() / 1000))])
        }
        draw(force: p.phase != .denoising)
    }

    /// An image is written: its path goes to stdout.
    func finished(index: Int, path: String, seed: UInt64, seconds: Double) {
        made += 1
        done += 1
        if firstMadeAt == nil { firstMadeAt = Date() }
        event("image", [("index", .int(Int64(index))), ("file", .string(path)), ("seed", .uint(seed)),
                        ("seconds", .double((seconds * 1000).rounded() / 1000))])
        clear()
        FileHandle.standardOutput.write(Data("\(path)  (seed \(seed), \(String(format: "%.1f", seconds)) s)\n".utf8))
        if mode == .bar && !tty && total > 1 {
            err("darkroom: \(batchFigures())\n")
        }
        draw(force: true)
    }

    /// A job or line that failed; printed as an error line (with file:line when known).
    func failure(source: String?, message: String, index: Int? = nil) {
        failed += 1
        done += 1
        clear()
        if mode == .jsonl {
            event("error", [("source", source.map { .string($0) } ?? .null), ("index", index.map { .int(Int64($0)) } ?? .null),
                            ("message", .string(message))])
        } else {
            printError(source.map { "\($0): \(message)" } ?? message)
        }
        draw(force: true)
    }

    /// A problem that is not a job (e.g. a bad line before the batch starts).
    func problem(source: String, message: String) {
        clear()
        if mode == .jsonl {
            event("error", [("source", .string(source)), ("index", .null), ("message", .string(message))])
        } else {
            printError("\(source): \(message)")
        }
    }

    func summary(_ fields: [(String, JSONText)], text: String) {
        clear()
        event("summary", fields)
        if mode == .bar { printNote(text) }
    }

    /// Images per minute over the images made in this run.
    var rate: Double {
        guard let began else { return 0 }
        let minutes = Date().timeIntervalSince(began) / 60
        return minutes > 0 ? Double(made) / minutes : 0
    }

    private func batchFigures() -> String {
        var s = "\(done)/\(total) images"
        if made > 0 {
            let r = rate
            s += String(format: "  %.1f images/min", r)
            let left = Double(max(0, toMake - made - failed)) / max(r, 1e-9) * 60
            if toMake - made - failed > 0 { s += "  \(formatDuration(left)) left" }
        }
        return s
    }

    private func bar(_ fraction: Double, width: Int = 24) -> String {
        let f = min(max(fraction, 0), 1)
        let filled = Int(f * Double(width))
        return String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
    }

    private func draw(force: Bool) {
        guard mode == .bar, tty else { return }
        let now = Date()
        guard force || now.timeIntervalSince(lastDraw) > 0.1 else { return }
        lastDraw = now
        var imageLine = label
        if let p = progress {
            switch p.phase {
            case .encoding: imageLine += "  encoding prompt"
            case .decoding: imageLine += "  \(bar(1)) decoding"
            case .denoising:
                imageLine += "  \(bar(Double(p.step) / Double(max(1, p.totalSteps)))) \(p.step)/\(p.totalSteps) steps"
                if p.step > 0, p.elapsed > 0 {
                    let r = Double(p.step) / p.elapsed
                    imageLine += String(format: "  %.2f steps/s  %@ left", r, formatDuration(Double(p.totalSteps - p.step) / r))
                }
            }
        }
        let columns = terminalColumns()
        func fit(_ s: String) -> String { s.count > columns - 1 ? String(s.prefix(max(1, columns - 2))) + "…" : s }
        if total > 1 {
            let batchLine = "batch  \(bar(Double(done) / Double(max(1, total))))  \(batchFigures())"
            err("\r\u{1B}[2K\(fit(batchLine))\n\u{1B}[2K\(fit(imageLine))\u{1B}[1A\r")
        } else {
            err("\r\u{1B}[2K\(fit(imageLine))\r")
        }
        drawn = true
    }

    /// Removes the bars (before other output).
    func clear() {
        guard drawn else { return }
        err(total > 1 ? "\r\u{1B}[2K\n\u{1B}[2K\u{1B}[1A\r" : "\r\u{1B}[2K")
        drawn = false
    }

    private func terminalColumns() -> Int {
        var w = winsize()
        if ioctl(STDERR_FILENO, UInt(TIOCGWINSZ), &w) == 0, w.ws_col > 10 { return Int(w.ws_col) }
        return 100
    }
}

func formatDuration(_ s: Double) -> String {
    guard s.isFinite, s >= 0 else { return "?" }
    let t = Int(s.rounded())
    return t >= 3600 ? String(format: "%d:%02d:%02d", t / 3600, (t / 60) % 60, t % 60) : String(format: "%d:%02d", t / 60, t % 60)
}
