import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A fingerprint of a model folder for the batch manifest: which weights made an image.
///
/// Method `sampled-sha256-v1`: SHA-256 over, for every file of `model_index.json` and the
/// `tokenizer/`, `text_encoder/`, `unet/`, `vae/` and `scheduler/` folders (`.json`, `.txt`,
/// `.safetensors`; sorted by relative path): the relative path, the size, and
/// - for weight files: the whole safetensors header (names, dtypes, shapes, offsets) plus 16
///   evenly spaced 4 KiB samples of the tensor data;
/// - for other files: 16 such samples, or every byte of a file up to 64 KiB (configs).
///
/// Why sampled: hashing every byte of a 2-4 GB checkpoint takes tens of seconds, and a batch
/// should start at once. Retrained or fine-tuned weights differ throughout the data, so the
/// samples tell them apart; what the method cannot see is an edit of bytes between samples
/// that keeps every size and shape. It is *not* A1111's "Model hash" (a full-file SHA-256) and is never written as one.
public enum ModelFingerprint {
    public static let method = "sampled-sha256-v1"

    static let components = ["tokenizer", "text_encoder", "unet", "vae", "scheduler"]
    static let sampleCount = 16
    static let sampleBytes = 4 << 10
    static let fullLimit = 64 << 10

    /// The fingerprint as "sha256s:<64 hex digits>" of a model folder, or of a single-file
    /// checkpoint (hashed like one weight file). Throws `DarkroomError.io` if a file cannot be read.
    public static func compute(folder: URL) throws -> String {
        var files: [String] = ["model_index.json"]
        let fm = FileManager.default
        var isDir: ObjCBool = false
        var root = folder
        if fm.fileExists(atPath: folder.path, isDirectory: &isDir), !isDir.boolValue {
            files = [folder.lastPathComponent]
            root = folder.deletingLastPathComponent()
        }
        for c in components where isDir.boolValue {
            let names = (try? fm.contentsOfDirectory(atPath: folder.appendingPathComponent(c).path)) ?? []
            for n in names where !n.hasPrefix(".") && (n.hasSuffix(".json") || n.hasSuffix(".txt") || n.hasSuffix(".safetensors")) {
                files.append("\(c)/\(n)")
            }
        }
        var hasher = SHA256()
        for rel in files.sorted() {
            let path = root.appendingPathComponent(rel).path
            let fd = open(path, O_RDONLY)
            guard fd >= 0 else { throw DarkroomError.io(path: path, reason: "cannot read: \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            var st = stat()
            guard fstat(fd, &st) == 0 else { throw DarkroomError.io(path: path, reason: "cannot stat") }
            let size = Int(st.st_size)
            hasher.update("\(rel)\u{0}\(size)\u{0}")
            if rel.hasSuffix(".safetensors"), size >= 8 {
                let lenBytes = try read(fd, at: 0, count: 8, path: path)
                let headerLength = lenBytes.enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
                let dataStart = min(size, 8 + max(0, min(headerLength, size)))
                hasher.update(try read(fd, at: 0, count: dataStart, path: path))
                let dataSize = size - dataStart
                if dataSize <= sampleCount * sampleBytes {
                    try hashRange(fd, from: dataStart, count: dataSize, into: &hasher, path: path)
                } else {
                    let stride = (dataSize - sampleBytes) / (sampleCount - 1)
                    for s in 0..<sampleCount {
                        hasher.update(try read(fd, at: dataStart + s * stride, count: sampleBytes, path: path))
                    }
                }
            } else if size <= fullLimit {
                try hashRange(fd, from: 0, count: size, into: &hasher, path: path)
            } else {
                let stride = (size - sampleBytes) / (sampleCount - 1)
                for s in 0..<sampleCount { hasher.update(try read(fd, at: s * stride, count: sampleBytes, path: path)) }
            }
        }
        return "sha256s:" + SHA256.hex(hasher.finalize())
    }

    private static func hashRange(_ fd: Int32, from: Int, count: Int, into hasher: inout SHA256, path: String) throws {
        var offset = from
        let end = from + count
        while offset < end {
            let n = min(1 << 20, end - offset)
            hasher.update(try read(fd, at: offset, count: n, path: path))
            offset += n
        }
    }

    private static func read(_ fd: Int32, at offset: Int, count: Int, path: String) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, count - done, off_t(offset + done)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw DarkroomError.io(path: path, reason: "read failed or file shrank while hashing") }
            done += n
        }
        return out
    }
}
