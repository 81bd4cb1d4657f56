import Foundation

/// A JSON value as the tokenizer files need it. A small parser of our own instead of
/// JSONSerialization: vocab.json has 49,408 keys and tokenizer.json ~100k small values, and a
/// byte-level parser loads them several times faster and reports the byte offset of an error.
enum TokenizerJSON: Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([TokenizerJSON])
    /// Keys in file order (Python's json keeps it); duplicate keys keep the last value, as
    /// Python's json does.
    case object(TokenizerJSONObject)

    var string: String? { if case .string(let s) = self { return s } else { return nil } }
    var bool: Bool? { if case .bool(let b) = self { return b } else { return nil } }
    var array: [TokenizerJSON]? { if case .array(let a) = self { return a } else { return nil } }
    var object: TokenizerJSONObject? { if case .object(let o) = self { return o } else { return nil } }
    var isNull: Bool { self == .null }
    /// The value as an exact integer, or nil (also for 1e30 and 1.5).
    var int: Int? {
        guard case .number(let d) = self, d.rounded() == d, abs(d) < 9.0e15 else { return nil }
        return Int(d)
    }

    /// A short name of the kind, for error messages.
    var kind: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .number: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

/// A JSON object that remembers key order.
struct TokenizerJSONObject: Equatable {
    private(set) var keys: [String] = []
    private var values: [String: TokenizerJSON] = [:]

    init() {}

    subscript(key: String) -> TokenizerJSON? { values[key] }

    mutating func set(_ key: String, _ value: TokenizerJSON) {
        if values.updateValue(value, forKey: key) == nil { keys.append(key) }
    }

    var count: Int { keys.count }
    /// Key/value pairs in file order.
    var entries: [(key: String, value: TokenizerJSON)] { keys.map { ($0, values[$0]!) } }
}

/// Recursive-descent JSON parser over UTF-8 bytes (RFC 8259, plus what Python's json accepts
/// and writes: NaN/Infinity are rejected since no tokenizer file has them).
struct TokenizerJSONParser {
    struct Failure: Error { let offset: Int; let reason: String }

    private let bytes: UnsafeBufferPointer<UInt8>
    private var pos = 0
    private var depth = 0

    private init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    /// Parses a whole file's contents; throws `DarkroomError.invalidFile` naming `path`.
    static func parse(_ data: Data, path: String) throws -> TokenizerJSON {
        do {
            return try data.withUnsafeBytes { raw in
                var parser = TokenizerJSONParser(raw.bindMemory(to: UInt8.self))
                return try parser.parseDocument()
            }
        } catch let f as Failure {
            throw DarkroomError.invalidFile(path: path, reason: "invalid JSON at byte \(f.offset): \(f.reason)")
        }
    }

    /// Parses a flat `{"token": id, ...}` object straight into a dictionary (the vocab.json fast
    /// path: no intermediate values). Later duplicates win, as in Python.
    static func parseVocab(_ data: Data, path: String) throws -> [String: Int] {
        do {
            return try data.withUnsafeBytes { raw in
                var parser = TokenizerJSONParser(raw.bindMemory(to: UInt8.self))
                return try parser.parseFlatIntObject()
            }
        } catch let f as Failure {
            throw DarkroomError.invalidFile(path: path, reason: "invalid JSON at byte \(f.offset): \(f.reason)")
        }
    }

    private func fail(_ reason: String) -> Failure { Failure(offset: pos, reason: reason) }

    /// Python's json.load refuses a file that is not UTF-8; so do we, once for the whole file,
    /// which lets every string be decoded without further checks.
    private func validateUTF8() throws {
        var offset = 0
        var decoder = UTF8()
        var iterator = bytes.makeIterator()
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue(let s): offset += UTF8.width(s)
            case .emptyInput: return
            case .error: throw Failure(offset: offset, reason: "the file is not valid UTF-8")
            }
        }
    }

    private mutating func skipWhitespace() {
        while pos < bytes.count {
            switch bytes[pos] {
            case 0x20, 0x09, 0x0A, 0x0D: pos += 1
            default: return
            }
        }
    }

    private mutating func parseDocument() throws -> TokenizerJSON {
        try validateUTF8()
        // A UTF-8 byte order mark is tolerated (some editors write one).
        if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF { pos = 3 }
        skipWhitespace()
        let value = try parseValue()
        skipWhitespace()
        guard pos == bytes.count else { throw fail("unexpected data after the JSON value") }
        return value
    }

    private mutating func parseFlatIntObject() throws -> [String: Int] {
        try validateUTF8()
        if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF { pos = 3 }
        skipWhitespace()
        guard pos < bytes.count, bytes[pos] == UInt8(ascii: "{") else { throw fail("expected an object of token -> id") }
        pos += 1
        var result: [String: Int] = [:]
        result.reserveCapacity(max(16, bytes.count / 16))
        skipWhitespace()
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "}") {
            pos += 1
        } else {
            while true {
                skipWhitespace()
                guard pos < bytes.count, bytes[pos] == UInt8(ascii: "\"") else { throw fail("expected a string key") }
                let key = try parseString()
                skipWhitespace()
                guard pos < bytes.count, bytes[pos] == UInt8(ascii: ":") else { throw fail("expected ':'") }
                pos += 1
                skipWhitespace()
                let valueStart = pos
                guard case .number(let d) = try parseValue(), d.rounded() == d, abs(d) < 9.0e15 else {
                    throw Failure(offset: valueStart, reason: "the id of token \(Self.quote(key)) is not an integer")
                }
                result[key] = Int(d)
                skipWhitespace()
                guard pos < bytes.count else { throw fail("unterminated object") }
                if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
                if bytes[pos] == UInt8(ascii: "}") { pos += 1; break }
                throw fail("expected ',' or '}'")
            }
        }
        skipWhitespace()
        guard pos == bytes.count else { throw fail("unexpected data after the JSON value") }
        return result
    }

    static func quote(_ s: String) -> String {
        "\"" + s.unicodeScalars.map { $0.value < 0x20 ? "\\u{\(String($0.value, radix: 16))}" : String($0) }.joined() + "\""
    }

    private mutating func parseValue() throws -> TokenizerJSON {
        guard pos < bytes.count else { throw fail("unexpected end of file") }
        switch bytes[pos] {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expectLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw fail("unexpected character")
        }
    }

    private mutating func expectLiteral(_ word: String) throws {
        for b in word.utf8 {
            guard pos < bytes.count, bytes[pos] == b else { throw fail("unexpected character") }
            pos += 1
        }
    }

    private mutating func enter() throws {
        depth += 1
        if depth > 512 { throw fail("nesting deeper than 512 levels") }
    }

    private mutating func parseObject() throws -> TokenizerJSON {
        try enter()
        defer { depth -= 1 }
        pos += 1
        var object = TokenizerJSONObject()
        skipWhitespace()
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object(object) }
        while true {
            skipWhitespace()
            guard pos < bytes.count, bytes[pos] == UInt8(ascii: "\"") else { throw fail("expected a string key") }
            let key = try parseString()
            skipWhitespace()
            guard pos < bytes.count, bytes[pos] == UInt8(ascii: ":") else { throw fail("expected ':'") }
            pos += 1
            skipWhitespace()
            object.set(key, try parseValue())
            skipWhitespace()
            guard pos < bytes.count else { throw fail("unterminated object") }
            if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
            if bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object(object) }
            throw fail("expected ',' or '}'")
        }
    }

    private mutating func parseArray() throws -> TokenizerJSON {
        try enter()
        defer { depth -= 1 }
        pos += 1
        var items: [TokenizerJSON] = []
        skipWhitespace()
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array(items) }
        while true {
            skipWhitespace()
            items.append(try parseValue())
            skipWhitespace()
            guard pos < bytes.count else { throw fail("unterminated array") }
            if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
            if bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array(items) }
            throw fail("expected ',' or ']'")
        }
    }

    private mutating func parseNumber() throws -> TokenizerJSON {
        let start = pos
        if bytes[pos] == UInt8(ascii: "-") { pos += 1 }
        var digits = 0
        var intValue = 0
        var exact = true
        while pos < bytes.count, bytes[pos] >= 0x30, bytes[pos] <= 0x39 {
            if digits < 15 { intValue = intValue * 10 + Int(bytes[pos] - 0x30) } else { exact = false }
            digits += 1
            pos += 1
        }
        guard digits > 0 else { throw fail("invalid number") }
        if pos < bytes.count, bytes[pos] == UInt8(ascii: ".") || bytes[pos] == UInt8(ascii: "e") || bytes[pos] == UInt8(ascii: "E") {
            exact = false
            if bytes[pos] == UInt8(ascii: ".") {
                pos += 1
                let fracStart = pos
                while pos < bytes.count, bytes[pos] >= 0x30, bytes[pos] <= 0x39 { pos += 1 }
                guard pos > fracStart else { throw fail("invalid number") }
            }
            if pos < bytes.count, bytes[pos] == UInt8(ascii: "e") || bytes[pos] == UInt8(ascii: "E") {
                pos += 1
                if pos < bytes.count, bytes[pos] == UInt8(ascii: "+") || bytes[pos] == UInt8(ascii: "-") { pos += 1 }
                let expStart = pos
                while pos < bytes.count, bytes[pos] >= 0x30, bytes[pos] <= 0x39 { pos += 1 }
                guard pos > expStart else { throw fail("invalid number") }
            }
        }
        if exact { return .number(Double(bytes[start] == UInt8(ascii: "-") ? -intValue : intValue)) }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<pos]), as: UTF8.self)
        guard let d = Double(text) else { throw Failure(offset: start, reason: "invalid number") }
        return .number(d)
    }

    private mutating func parseString() throws -> String {
        pos += 1  // opening quote
        let start = pos
        // Fast path: no escapes. (The whole file was checked to be UTF-8 up front.)
        while pos < bytes.count {
            let b = bytes[pos]
            if b == UInt8(ascii: "\"") {
                let slice = UnsafeBufferPointer(rebasing: bytes[start..<pos])
                pos += 1
                return String(decoding: slice, as: UTF8.self)
            }
            if b == UInt8(ascii: "\\") { break }
            if b < 0x20 { throw fail("control character in string") }
            pos += 1
        }
        // Slow path with escapes.
        var out: [UInt8] = Array(UnsafeBufferPointer(rebasing: bytes[start..<pos]))
        while pos < bytes.count {
            let b = bytes[pos]
            if b == UInt8(ascii: "\"") {
                pos += 1
                return String(decoding: out, as: UTF8.self)
            }
            if b < 0x20 { throw fail("control character in string") }
            if b != UInt8(ascii: "\\") { out.append(b); pos += 1; continue }
            pos += 1
            guard pos < bytes.count else { break }
            let e = bytes[pos]
            pos += 1
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var code = try parseHex4()
                if (0xD800..<0xDC00).contains(code), pos + 1 < bytes.count,
                   bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u") {
                    let save = pos
                    pos += 2
                    let low = try parseHex4()
                    if (0xDC00..<0xE000).contains(low) {
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    } else {
                        pos = save
                    }
                }
                // A lone surrogate cannot live in a Swift String; U+FFFD stands in for it.
                let scalar = Unicode.Scalar(code) ?? "\u{FFFD}"
                out.append(contentsOf: Array(String(scalar).utf8))
            default:
                throw Failure(offset: pos - 2, reason: "invalid escape")
            }
        }
        throw Failure(offset: start - 1, reason: "unterminated string")
    }

    private mutating func parseHex4() throws -> UInt32 {
        guard pos + 4 <= bytes.count else { throw fail("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[pos]
            let d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x41...0x46: d = UInt32(c - 0x41 + 10)
            case 0x61...0x66: d = UInt32(c - 0x61 + 10)
            default: throw fail("invalid \\u escape")
            }
            v = v << 4 | d
            pos += 1
        }
        return v
    }
}
