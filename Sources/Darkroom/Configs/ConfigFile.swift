import Foundation

/// A `config.json` (or `model_index.json`) with typed getters that apply diffusers' default when a
/// key is missing or null, and throw an error naming the file and key when a value has the wrong
/// type or is out of range.
public struct ConfigFile: Sendable {
    public let path: String
    public let members: [String: JSONValue]

    /// Configs are small; anything larger than this is not a config.
    static let maxBytes = 4 << 20

    public static func load(_ url: URL) throws -> ConfigFile {
        let path = url.path
        guard FileManager.default.fileExists(atPath: path) else { throw DarkroomError.fileNotFound(path: path) }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw DarkroomError.io(path: path, reason: "cannot read: \(error.localizedDescription)")
        }
        guard data.count <= maxBytes else {
            throw DarkroomError.invalidFile(path: path, reason: "\(data.count) bytes is too large for a config file")
        }
        return try ConfigFile(path: path, data: data)
    }

    public init(path: String, data: Data) throws {
        self.path = path
        let value: JSONValue
        do { value = try JSONParser.parse(data) } catch let e as JSONParseError {
            throw DarkroomError.invalidFile(path: path, reason: e.description)
        }
        guard case .object(let m) = value else {
            throw DarkroomError.invalidFile(path: path, reason: "expected a JSON object, found \(value.typeName)")
        }
        self.members = Dictionary(m.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
    }

    /// The value, or nil when missing or null (diffusers treats both as "use the default").
    public func value(_ key: String) -> JSONValue? {
        guard let v = members[key] else { return nil }
        if case .null = v { return nil }
        return v
    }

    func bad(_ key: String, _ reason: String) -> DarkroomError {
        .invalidConfig(path: path, key: key, reason: reason)
    }

    public func int(_ key: String, default d: Int? = nil, range: ClosedRange<Int> = 0...(1 << 24)) throws -> Int {
        guard let v = value(key) else {
            if let d { return d }
            throw bad(key, "missing")
        }
        return try asInt(v, key: key, range: range)
    }

    func asInt(_ v: JSONValue, key: String, range: ClosedRange<Int>) throws -> Int {
        guard case .number(let d) = v, d == d.rounded(), abs(d) < 1e15 else {
            throw bad(key, "expected a whole number, found \(v.typeName)")
        }
        let n = Int(d)
        guard range.contains(n) else { throw bad(key, "\(n) is outside \(range.lowerBound)...\(range.upperBound)") }
        return n
    }

    public func double(_ key: String, default d: Double? = nil) throws -> Double {
        guard let v = value(key) else {
            if let d { return d }
            throw bad(key, "missing")
        }
        guard case .number(let x) = v else { throw bad(key, "expected a number, found \(v.typeName)") }
        return x
    }

    public func bool(_ key: String, default d: Bool? = nil) throws -> Bool {
        guard let v = value(key) else {
            if let d { return d }
            throw bad(key, "missing")
        }
        guard case .bool(let b) = v else { throw bad(key, "expected true or false, found \(v.typeName)") }
        return b
    }

    public func string(_ key: String, default d: String? = nil) throws -> String {
        guard let v = value(key) else {
            if let d { return d }
            throw bad(key, "missing")
        }
        guard case .string(let s) = v else { throw bad(key, "expected a string, found \(v.typeName)") }
        return s
    }

    /// A string that must be one of `allowed`; anything else is reported as unsupported.
    public func choice(_ key: String, default d: String, allowed: [String]) throws -> String {
        let s = try string(key, default: d)
        guard allowed.contains(s) else { throw DarkroomError.unsupported(path: path, key: key, value: "\"\(s)\"") }
        return s
    }

    public func stringList(_ key: String, default d: [String]? = nil) throws -> [String] {
        guard let v = value(key) else {
            if let d { return d }
            throw bad(key, "missing")
        }
        guard case .array(let items) = v else { throw bad(key, "expected a list of strings, found \(v.typeName)") }
        return try items.map {
            guard case .string(let s) = $0 else { throw bad(key, "expected a list of strings") }
            return s
        }
    }

    public func intList(_ key: String, default d: [Int]? = nil, range: ClosedRange<Int> = 0...(1 << 24)) throws -> [Int] {
        guard let v = value(key) else {
            if let d { return d }
            throw bad(key, "missing")
        }
        guard case .array(let items) = v else { throw bad(key, "expected a list of whole numbers, found \(v.typeName)") }
        return try items.map { try asInt($0, key: key, range: range) }
    }

    /// diffusers' "int or per-block list" fields (attention_head_dim, layers_per_block, ...):
    /// an int is repeated for every block; a list must have one entry per block.
    public func perBlock(_ key: String, blocks: Int, default d: Int?, range: ClosedRange<Int> = 1...(1 << 20)) throws -> [Int] {
        guard let v = value(key) else {
            if let d { return Array(repeating: d, count: blocks) }
            throw bad(key, "missing")
        }
        if case .array(let items) = v {
            guard items.count == blocks else { throw bad(key, "has \(items.count) entries for \(blocks) blocks") }
            return try items.map { try asInt($0, key: key, range: range) }
        }
        return Array(repeating: try asInt(v, key: key, range: range), count: blocks)
    }

    /// Throws `unsupported` when `key` is present with a value other than the ones Darkroom
    /// implements (nil/missing always accepted).
    public func require(_ key: String, in accepted: [JSONValue]) throws {
        guard let v = value(key) else { return }
        if !accepted.contains(v) {
            throw DarkroomError.unsupported(path: path, key: key, value: v.compactText)
        }
    }
}

extension JSONValue {
    /// Short JSON text for messages.
    var compactText: String {
        switch self {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .number(let d): return d == d.rounded() && abs(d) < 1e15 ? String(Int(d)) : String(d)
        case .string(let s): return "\"\(s)\""
        case .array(let a): return "[" + a.map(\.compactText).joined(separator: ", ") + "]"
        case .object: return "{...}"
        }
    }
}
