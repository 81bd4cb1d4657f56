import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Element types a safetensors file may hold that Darkroom reads.
public enum SafetensorsDType: String, Sendable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16", f64 = "F64"
    case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8", u8 = "U8", bool = "BOOL"

    public var byteSize: Int {
        switch self {
        case .f64, .i64: return 8
        case .f32, .i32: return 4
        case .f16, .bf16, .i16: return 2
        case .i8, .u8, .bool: return 1
        }
    }
}

/// A read-only, memory-mapped safetensors file. The header is validated completely before any
/// tensor is touched: length cap, strict JSON (no duplicate names), known dtypes, shapes whose
/// byte size (computed without overflow) equals the data range, ranges inside the file and not
/// overlapping.
public final class SafetensorsFile: @unchecked Sendable {
    public struct Entry: Sendable {
        public let dtype: SafetensorsDType
        public let shape: [Int]
        /// Byte range inside the data section (after the header).
        public let begin: Int
        public let end: Int
        public var count: Int { shape.reduce(1, *) }
    }

    public let path: String
    public let entries: [String: Entry]
    /// Names in the order of their data offsets.
    public let names: [String]
    public let metadata: [String: String]

    private let base: UnsafeMutableRawPointer?
    private let mappedLength: Int
    private let dataStart: Int

    /// Headers larger than this are refused (real checkpoints have headers well under 10 MB).
    public static let maxHeaderBytes = 100 << 20

    public init(url: URL) throws {
        path = url.path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            if errno == ENOENT { throw DarkroomError.fileNotFound(path: path) }
            throw DarkroomError.io(path: path, reason: "cannot open: \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw DarkroomError.io(path: path, reason: "cannot stat") }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw DarkroomError.invalidFile(path: path, reason: "not a regular file")
        }
        let size = Int(st.st_size)
        guard size >= 8 else {
            throw DarkroomError.invalidFile(path: path, reason: "truncated: \(size) bytes, shorter than the 8-byte header length")
        }
        guard let m = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), m != MAP_FAILED else {
            throw DarkroomError.io(path: path, reason: "cannot memory-map: \(String(cString: strerror(errno)))")
        }
        base = m
        mappedLength = size
        do {
            let parsed = try SafetensorsFile.parseHeader(base: UnsafeRawPointer(m), fileSize: size, path: path)
            entries = parsed.entries
            names = parsed.names
            metadata = parsed.metadata
            dataStart = parsed.dataStart
        } catch {
            munmap(m, size)
            throw error
        }
    }

    deinit {
        if let base { munmap(base, mappedLength) }
    }

    struct Header {
        var entries: [String: Entry]
        var names: [String]
        var metadata: [String: String]
        var dataStart: Int
    }

    static func parseHeader(base: UnsafeRawPointer, fileSize: Int, path: String) throws -> Header {
        func bad(_ r: String) -> DarkroomError { .invalidFile(path: path, reason: r) }
        var n: UInt64 = 0
        for i in 0..<8 { n |= UInt64(base.load(fromByteOffset: i, as: UInt8.self)) << (8 * UInt64(i)) }
        guard n <= UInt64(maxHeaderBytes) else { throw bad("header length \(n) exceeds the \(maxHeaderBytes)-byte limit (not a safetensors file?)") }
        guard n <= UInt64(fileSize - 8) else {
            throw bad("truncated: the header claims \(n) bytes but the file has \(fileSize - 8) after the length field")
        }
        let headerLen = Int(n)
        let bytes = [UInt8](UnsafeRawBufferPointer(start: base + 8, count: headerLen))
        let json: JSONValue
        do { json = try JSONParser.parse(bytes: bytes, maxDepth: 8) } catch let e as JSONParseError {
            throw bad("header is not valid JSON: \(e.description)")
        }
        guard case .object(let members) = json else { throw bad("header is not a JSON object") }
        let dataStart = 8 + headerLen
        let dataSize = fileSize - dataStart
        var entries: [String: Entry] = [:]
        var metadata: [String: String] = [:]
        for (name, v) in members {
            if name == "__metadata__" {
                guard case .object(let kv) = v else { throw bad("__metadata__ is not an object") }
                for (k, mv) in kv {
                    guard case .string(let s) = mv else { throw bad("__metadata__ value for '\(k)' is not a string") }
                    metadata[k] = s
                }
                continue
            }
            guard case .object = v else { throw bad("entry '\(name)' is not an object") }
            guard case .string(let dt)? = v["dtype"] else { throw bad("entry '\(name)' has no dtype") }
            guard let dtype = SafetensorsDType(rawValue: dt) else { throw bad("entry '\(name)' has unsupported dtype \(dt)") }
            guard case .array(let dims)? = v["shape"] else { throw bad("entry '\(name)' has no shape") }
            guard dims.count <= 8 else { throw bad("entry '\(name)' has \(dims.count) dimensions") }
            var shape: [Int] = []
            var elements = 1
            for d in dims {
                guard case .number(let x) = d, x >= 0, x == x.rounded(), x < 1e15 else {
                    throw bad("entry '\(name)' has an invalid shape")
                }
                shape.append(Int(x))
                let (p, o) = elements.multipliedReportingOverflow(by: Int(x))
                guard !o else { throw bad("entry '\(name)' shape \(shape) overflows") }
                elements = p
            }
            guard case .array(let offs)? = v["data_offsets"], offs.count == 2,
                  case .number(let b) = offs[0], case .number(let e) = offs[1],
                  b >= 0, e >= b, b == b.rounded(), e == e.rounded(), e < 1e15
            else { throw bad("entry '\(name)' has invalid data_offsets") }
            let begin = Int(b), end = Int(e)
            let (bytesNeeded, o) = elements.multipliedReportingOverflow(by: dtype.byteSize)
            guard !o, bytesNeeded == end - begin else {
                throw bad("entry '\(name)': \(dtype.rawValue) shape \(shape) needs \(o ? "too many" : String(bytesNeeded)) bytes but data_offsets span \(end - begin)")
            }
            guard end <= dataSize else {
                throw bad("entry '\(name)' data_offsets [\(begin), \(end)] run past the end of the data (\(dataSize) bytes): file truncated or header corrupt")
            }
            entries[name] = Entry(dtype: dtype, shape: shape, begin: begin, end: end)
        }
        let names = entries.keys.sorted { (entries[$0]!.begin, $0) < (entries[$1]!.begin, $1) }
        var last = 0
        for name in names {
            let e = entries[name]!
            if e.begin == e.end { continue }
            guard e.begin >= last else { throw bad("entry '\(name)' overlaps another tensor's data") }
            last = e.end
        }
        return Header(entries: entries, names: names, metadata: metadata, dataStart: dataStart)
    }

    /// Raw bytes of a tensor inside the mapping.
    public func rawBytes(_ name: String) -> UnsafeRawBufferPointer? {
        guard let e = entries[name], let base else { return nil }
        return UnsafeRawBufferPointer(start: base + dataStart + e.begin, count: e.end - e.begin)
    }

    /// A tensor widened to float32 (F32, F16, BF16, F64 and integer types are converted).
    public func tensor(_ name: String) throws -> Tensor {
        guard let e = entries[name], let raw = rawBytes(name) else {
            throw DarkroomError.weight(path: path, key: name, reason: "missing")
        }
        let t = Tensor(shape: e.shape)
        convertToFloat(raw, dtype: e.dtype, count: e.count, into: t.data)
        releasePages(raw)
        return t
    }

    /// Tells the kernel the mapped pages of `raw` are not needed any more: weights are read once
    /// and repacked, so the file's pages need not stay resident beside the packed copy (this keeps
    /// peak memory near the model's size instead of twice it). Reading again re-faults them.
    public func releasePages(_ raw: UnsafeRawBufferPointer) {
        guard let start = raw.baseAddress, raw.count > 0 else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let lo = (Int(bitPattern: start) + page - 1) / page * page  // only whole pages inside the range
        let hi = (Int(bitPattern: start) + raw.count) / page * page
        if hi > lo { madvise(UnsafeMutableRawPointer(bitPattern: lo), hi - lo, MADV_DONTNEED) }
    }

    /// Integer tensor values (I64/I32/...), for token ids in fixtures.
    public func integers(_ name: String) throws -> [Int] {
        guard let e = entries[name], let raw = rawBytes(name) else {
            throw DarkroomError.weight(path: path, key: name, reason: "missing")
        }
        switch e.dtype {
        case .i64: return (0..<e.count).map { Int(raw.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)) }
        case .i32: return (0..<e.count).map { Int(raw.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self)) }
        default:
            let t = try tensor(name)
            return t.scalars.map { Int($0) }
        }
    }
}

/// Widens `count` values of `dtype` to float32.
func convertToFloat(_ raw: UnsafeRawBufferPointer, dtype: SafetensorsDType, count: Int, into out: UnsafeMutablePointer<Float>) {
    guard count > 0, let src = raw.baseAddress else { return }
    switch dtype {
    case .f32:
        UnsafeMutableRawPointer(out).copyMemory(from: src, byteCount: count * 4)
    case .f16:
        for i in 0..<count { out[i] = Float(Float16(bitPattern: src.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))) }
    case .bf16:
        for i in 0..<count {
            out[i] = Float(bitPattern: UInt32(src.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)) << 16)
        }
    case .f64:
        for i in 0..<count { out[i] = Float(src.loadUnaligned(fromByteOffset: i * 8, as: Double.self)) }
    case .i64:
        for i in 0..<count { out[i] = Float(src.loadUnaligned(fromByteOffset: i * 8, as: Int64.self)) }
    case .i32:
        for i in 0..<count { out[i] = Float(src.loadUnaligned(fromByteOffset: i * 4, as: Int32.self)) }
    case .i16:
        for i in 0..<count { out[i] = Float(src.loadUnaligned(fromByteOffset: i * 2, as: Int16.self)) }
    case .i8:
        for i in 0..<count { out[i] = Float(src.load(fromByteOffset: i, as: Int8.self)) }
    case .u8, .bool:
        for i in 0..<count { out[i] = Float(src.load(fromByteOffset: i, as: UInt8.self)) }
    }
}
