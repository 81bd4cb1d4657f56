import Darkroom
import Foundation

/// Where images go: one .png file, or a folder with A1111-style names.
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
    /// given, otherwise `NNNNN-SEED-prompt-words.png` with the next free number in the folder.
    func url(index: Int, seed: UInt64, prompt: String) -> URL {
        if isFile {
            if count == 1 { return url }
            let stem = url.deletingPathExtension().lastPathComponent
            return url.deletingLastPathComponent().appendingPathComponent("\(stem)-\(index + 1).png")
        }
        let next = nextNumber()
        return url.appendingPathComponent(String(format: "%05d", next) + "-\(seed)-\(FileNaming.slug(prompt)).png")
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

enum FileNaming {
    /// Prompt words safe for any file system: lower-case letters and digits of any script kept,
    /// everything else collapsed to '-', at most 60 bytes of UTF-8 cut on a character boundary.
    static func slug(_ prompt: String, maxBytes: Int = 60) -> String {
        var out = ""
        var dash = false
        for ch in prompt.lowercased() {
            if ch.isLetter || ch.isNumber {
                let s = String(ch)
                if out.utf8.count + s.utf8.count + (dash && !out.isEmpty ? 1 : 0) > maxBytes { break }
                if dash && !out.isEmpty { out += "-" }
                out += s
                dash = false
            } else {
                dash = true
            }
        }
        return out.isEmpty ? "image" : out
    }
}

/// A one-line progress bar on stderr: steps, steps/s and time left; redrawn in place on a terminal.
final class ProgressBar: @unchecked Sendable {
    let enabled: Bool
    let tty: Bool
    private var lastDraw = Date.distantPast

    init(enabled: Bool) {
        self.enabled = enabled
        tty = isatty(STDERR_FILENO) != 0
    }

    func update(image: Int, of images: Int, progress p: GenerationProgress) {
        guard enabled, tty else { return }
        let now = Date()
        guard now.timeIntervalSince(lastDraw) > 0.1 || p.phase != .denoising else { return }
        lastDraw = now
        let width = 24
        let frac = p.totalSteps > 0 ? Double(p.step) / Double(p.totalSteps) : 0
        let filled = Int(frac * Double(width))
        let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
        var line = images > 1 ? "image \(image + 1)/\(images) " : ""
        switch p.phase {
        case .encoding: line += "encoding prompt"
        case .decoding: line += "\(bar) decoding"
        case .denoising:
            line += "\(bar) \(p.step)/\(p.totalSteps) steps"
            if p.step > 0, p.elapsed > 0 {
                let rate = Double(p.step) / p.elapsed
                let left = Double(p.totalSteps - p.step) / rate
                line += String(format: "  %.2f steps/s  %@ left", rate, formatDuration(left))
            }
        }
        FileHandle.standardError.write(Data("\r\u{1B}[2K\(line)".utf8))
    }

    func clear() {
        guard enabled, tty else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[2K".utf8))
    }

    /// Clears the bar and reports a finished file on stdout (scripts can collect the paths).
    func finish(line: String) {
        clear()
        FileHandle.standardOutput.write(Data("\(line)\n".utf8))
    }
}

func formatDuration(_ s: Double) -> String {
    guard s.isFinite, s >= 0 else { return "?" }
    let t = Int(s.rounded())
    return t >= 3600 ? String(format: "%d:%02d:%02d", t / 3600, (t / 60) % 60, t % 60) : String(format: "%d:%02d", t / 60, t % 60)
}
