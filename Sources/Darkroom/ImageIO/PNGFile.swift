import CPNG
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Header facts of a PNG and the text chunks that precede its image data.
public struct PNGInfo: Sendable, Equatable {
    public var width: Int
    public var height: Int
    /// 1, 2, 4, 8 or 16.
    public var bitDepth: Int
    /// PNG colour type: 0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA.
    public var colorType: Int
    public var interlaced: Bool
    public var text: [String: String]
}

/// PNG files through libpng (via the CPNG shim, which turns libpng's longjmp errors into codes).
public enum PNGFile {
    /// Writes an 8-bit RGB PNG with text chunks (tEXt when the value is Latin-1, iTXt otherwise,
    /// as PIL and AUTOMATIC1111 do). Keys must be 1-79 printable Latin-1 characters.
    ///
    /// Writes atomically: a temporary file in the same folder (name starting with "." and ending
    /// ".tmp"), fsync, then rename over `url`, so a crash never leaves a partial PNG under the final
    /// name. Errors (unwritable folder, disk full) are `DarkroomError.io` naming the path; the
    /// temporary file is removed.
    public static func write(_ image: RGBImage, text: [(key: String, value: String)], to url: URL) throws {
        let path = url.path
        guard image.width > 0, image.height > 0, image.width <= Int(Int32.max), image.height <= Int(Int32.max),
              image.pixels.count == image.width * image.height * 3
        else {
            throw DarkroomError.invalidArgument(
                "\(path): cannot write a \(image.width)x\(image.height) image with \(image.pixels.count) bytes")
        }
        for (key, value) in text where key.utf8.contains(0) || value.utf8.contains(0) {
            throw DarkroomError.invalidArgument("\(path): PNG text chunk '\(key)' contains a NUL character")
        }
        let folder = url.deletingLastPathComponent()
        let temp = folder.appendingPathComponent(temporaryName(for: url.lastPathComponent)).path

        var err = [CChar](repeating: 0, count: errLength)
        let rc = withCStringArray(text.map(\.key)) { keys in
            withCStringArray(text.map(\.value)) { values in
                image.pixels.withUnsafeBufferPointer { px in
                    dr_png_write_rgb8(temp, px.baseAddress, UInt32(image.width), UInt32(image.height),
                                      keys, values, Int32(text.count), &err, errLength)
                }
            }
        }
        // On failure the shim has already removed the temporary file it created.
        if rc != Int32(DR_PNG_OK) {
            let reason = message(err)
            switch Int(rc) {
            case Int(DR_PNG_ERR_ARGUMENT): throw DarkroomError.invalidArgument("\(path): \(reason)")
            default: throw DarkroomError.io(path: path, reason: reason)
            }
        }
        if rename(temp, path) != 0 {
            let reason = String(cString: strerror(errno))
            unlink(temp)
            throw DarkroomError.io(path: path, reason: "cannot move the written PNG into place: \(reason)")
        }
        // Make the rename itself durable. Not every file system supports fsync on a folder; the
        // image is complete either way, so failures here are ignored.
        let dirFD = open(folder.path, O_RDONLY | O_DIRECTORY)
        if dirFD >= 0 {
            _ = fsync(dirFD)
            close(dirFD)
        }
    }

    /// Reads any PNG (palette, grey, grey+alpha, RGB, RGBA, 1-16 bits, interlaced) as 8-bit RGB
    /// plus its text chunks (tEXt, zTXt, iTXt; if a key repeats, the last one wins, as in PIL).
    /// 16-bit samples are rounded to 8 bits, alpha is composited over white, gamma is ignored.
    /// Images with more than `maxPixels` pixels (or a side longer than that) are rejected from the
    /// header alone, before any allocation.
    public static func read(_ url: URL, maxPixels: Int = 8192 * 8192) throws -> (image: RGBImage, text: [String: String]) {
        let path = url.path
        let (side, pixels) = try limits(maxPixels, path: path)
        var out = dr_png_image()
        var err = [CChar](repeating: 0, count: errLength)
        let rc = dr_png_read_rgb8(path, side, side, pixels, &out, &err, errLength)
        if rc != Int32(DR_PNG_OK) { throw error(rc, err, path: path) }
        defer { dr_png_image_free(&out) }
        let count = Int(out.width) * Int(out.height) * 3
        let bytes = Array(UnsafeBufferPointer(start: out.rgb, count: count))
        let image = RGBImage(width: Int(out.width), height: Int(out.height), pixels: bytes)
        return (image, textDictionary(out.text, Int(out.text_count)))
    }

    /// Header and pre-image text chunks, without decoding pixels (cheap even for large files).
    public static func info(_ url: URL, maxPixels: Int = 8192 * 8192) throws -> PNGInfo {
        let path = url.path
        let (side, pixels) = try limits(maxPixels, path: path)
        var out = dr_png_info()
        var err = [CChar](repeating: 0, count: errLength)
        let rc = dr_png_read_info(path, side, side, pixels, &out, &err, errLength)
        if rc != Int32(DR_PNG_OK) { throw error(rc, err, path: path) }
        defer { dr_png_info_free(&out) }
        return PNGInfo(width: Int(out.width), height: Int(out.height), bitDepth: Int(out.bit_depth),
                       colorType: Int(out.color_type), interlaced: out.interlaced != 0,
                       text: textDictionary(out.text, Int(out.text_count)))
    }

    // MARK: - Helpers

    /// Size of the shim's error-message buffer.
    private static let errLength = 512

    /// The NUL-terminated message the shim left in `err`.
    private static func message(_ err: [CChar]) -> String {
        let bytes = err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Per-side and total limits for the shim: a side may not exceed the pixel budget either.
    private static func limits(_ maxPixels: Int, path: String) throws -> (UInt32, UInt64) {
        guard maxPixels > 0 else { throw DarkroomError.invalidArgument("\(path): maxPixels must be positive") }
        return (UInt32(min(maxPixels, Int(Int32.max))), UInt64(maxPixels))
    }

    private static func error(_ rc: Int32, _ err: [CChar], path: String) -> DarkroomError {
        let reason = message(err)
        switch Int(rc) {
        case Int(DR_PNG_ERR_NOT_FOUND): return .fileNotFound(path: path)
        case Int(DR_PNG_ERR_IO), Int(DR_PNG_ERR_MEMORY): return .io(path: path, reason: reason)
        case Int(DR_PNG_ERR_ARGUMENT): return .invalidArgument("\(path): \(reason)")
        default: return .invalidFile(path: path, reason: reason)
        }
    }

    private static func textDictionary(_ text: UnsafeMutablePointer<dr_png_text>?, _ count: Int) -> [String: String] {
        var result: [String: String] = [:]
        guard let text else { return result }
        for i in 0..<count {
            guard let k = text[i].key, let v = text[i].value else { continue }
            // Invalid UTF-8 in a hostile iTXt chunk is repaired with U+FFFD.
            result[String(cString: k)] = String(cString: v)
        }
        return result
    }

    /// ".<name>.<random>.tmp", with the name shortened so the whole stays under NAME_MAX (255 bytes).
    static func temporaryName(for name: String) -> String {
        var base = Substring(name)
        while base.utf8.count > 200 { base = base.dropLast() }
        let random = String(UInt64.random(in: 0...UInt64.max), radix: 16)
        return ".\(base).\(random).tmp"
    }

    /// Calls `body` with a NULL-free array of C strings that live for the duration of the call.
    private static func withCStringArray<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
        let copies: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
        defer { copies.forEach { free($0) } }
        let pointers: [UnsafePointer<CChar>?] = copies.map { $0.map { UnsafePointer($0) } }
        return pointers.withUnsafeBufferPointer { body($0.baseAddress) }
    }
}
