import Foundation

/// A JSON value to write, with members in a fixed order and integers kept exact (seeds go up to
/// 2^64 − 1, beyond what a Double holds). Used for the manifest, `--json` output and JSON-lines
/// progress, so that every line is one compact object a script can read.
public indirect enum JSONText: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    case uint(UInt64)
    /// Written in its shortest round-trip form ("7.5", "0.3").
    case float(Float)
    case double(Double)
    case string(String)
    case array([JSONText])
    case object([(String, JSONText)])

    public static func == (a: JSONText, b: JSONText) -> Bool { a.serialized == b.serialized }

    /// Compact JSON (no spaces, no newline), non-ASCII characters written as UTF-8.
    public var serialized: String {
        var out = ""
        write(to: &out)
        return out
    }

    func write(to out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .uint(let u): out += String(u)
        case .float(let f): out += f.isFinite ? (f == f.rounded() && abs(f) < 1e9 ? String(Int64(f)) : "\(f)") : "null"
        case .double(let d): out += d.isFinite ? (d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : "\(d)") : "null"
        case .string(let s): Self.quote(s, into: &out)
        case .array(let items):
            out += "["
            for (i, v) in items.enumerated() {
                if i > 0 { out += "," }
                v.write(to: &out)
            }
            out += "]"
        case .object(let members):
            out += "{"
            for (i, (k, v)) in members.enumerated() {
                if i > 0 { out += "," }
                Self.quote(k, into: &out)
                out += ":"
                v.write(to: &out)
            }
            out += "}"
        }
    }

    /// RFC 8259 string escaping. U+2028/U+2029 are escaped too so the text is also valid JavaScript.
    static func quote(_ s: String, into out: inout String) {
        out += "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 || u.value == 0x2028 || u.value == 0x2029 || u.value == 0x7F {
                    let hex = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        out += "\""
    }
}

extension JSONParser {
    /// The raw text of a top-level member's value in a JSON object (e.g. `"seed": 18446744073709551615`
    /// gives "18446744073709551615"), for numbers too large for the parser's Double. The text must
    /// already be valid JSON (parse it first); nil when the key is not a top-level member.
    static func rawMember(_ key: String, in bytes: [UInt8]) -> String? {
        var i = 0
        var depth = 0
        func skipString() -> (Int, Int) {
            let start = i + 1
            i += 1
            while i < bytes.count, bytes[i] != UInt8(ascii: "\"") {
                i += bytes[i] == UInt8(ascii: "\\") ? 2 : 1
            }
            let end = i
            i += 1
            return (start, end)
        }
        var expectKey = false
        while i < bytes.count {
            let c = bytes[i]
            switch c {
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
                expectKey = c == UInt8(ascii: "{") && depth == 1
                i += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                depth -= 1
                i += 1
            case UInt8(ascii: ","):
                expectKey = depth == 1
                i += 1
            case UInt8(ascii: "\""):
                let (s, e) = skipString()
                guard depth == 1, expectKey else { continue }
                expectKey = false
                guard String(decoding: bytes[s..<e], as: UTF8.self) == key || JSONParser.unescapedKey(bytes[s..<e]) == key else { continue }
                // Skip to the value after ':'.
                while i < bytes.count, bytes[i] != UInt8(ascii: ":") { i += 1 }
                i += 1
                while i < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[i]) { i += 1 }
                let v = i
                while i < bytes.count, ![UInt8(ascii: ","), UInt8(ascii: "}"), 0x20, 0x09, 0x0A, 0x0D].contains(bytes[i]) { i += 1 }
                return String(decoding: bytes[v..<i], as: UTF8.self)
            default:
                i += 1
            }
        }
        return nil
    }

    /// A key with escapes (rare in keys; only used to match `rawMember`'s key robustly).
    private static func unescapedKey(_ raw: ArraySlice<UInt8>) -> String? {
        guard raw.contains(UInt8(ascii: "\\")) else { return nil }
        if case .string(let s)? = try? JSONParser.parse(bytes: [UInt8(ascii: "\"")] + Array(raw) + [UInt8(ascii: "\"")]) { return s }
        return nil
    }
}
