import Foundation

/// Every failure Darkroom reports. Each case names the file (or input) and what is wrong, so
/// the CLI can print one clear line and exit non-zero.
public enum DarkroomError: Error, CustomStringConvertible, Equatable {
    /// A file or folder that should exist does not.
    case fileNotFound(path: String)
    /// A file exists but its contents are malformed (truncated, bad header, bad JSON, ...).
    case invalidFile(path: String, reason: String)
    /// A config file has a missing, mistyped or out-of-range key.
    case invalidConfig(path: String, key: String, reason: String)
    /// A config asks for something Darkroom does not implement.
    case unsupported(path: String, key: String, value: String)
    /// A weight is missing or has the wrong shape or dtype.
    case weight(path: String, key: String, reason: String)
    /// A user-supplied argument is out of range or inconsistent.
    case invalidArgument(String)
    /// Reading or writing failed (permissions, disk full, ...).
    case io(path: String, reason: String)
    /// The caller cancelled the operation (progress callback or signal).
    case cancelled

    public var description: String {
        switch self {
        case .fileNotFound(let p): return "\(p): no such file or folder"
        case .invalidFile(let p, let r): return "\(p): \(r)"
        case .invalidConfig(let p, let k, let r): return "\(p): key '\(k)': \(r)"
        case .unsupported(let p, let k, let v): return "\(p): key '\(k)' = \(v) is not supported"
        case .weight(let p, let k, let r): return "\(p): weight '\(k)': \(r)"
        case .invalidArgument(let m): return m
        case .io(let p, let r): return "\(p): \(r)"
        case .cancelled: return "cancelled"
        }
    }
}
